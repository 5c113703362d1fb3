# Set-up and everyday commands. Only Python 3.11 and make are needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
BACKENDS := jax tensorflow torch
PYTEST_ARGS ?=
# Test files run in this many processes (pytest-xdist; 0 runs them in this one). Most
# of the suite's time is single-threaded (tracing, compiling, Python), so two
# processes use a 2-core machine better than one.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile
# Threads per test process: the cores shared among the workers. PyTorch (OpenMP) and
# TensorFlow otherwise start a thread per core in every worker, and on 2 cores the
# workers' small operations wait on each other: PyTorch's suite took 533 s with its
# default threads and 265 s with one per worker, TensorFlow's 364 s and 317 s. (JAX's
# took 783 s against 606 s with XLA's CPU kernels on one thread, so it keeps its own.)
TEST_THREADS ?= $(shell $(PYTHON) -c "import os; print(max(1, (os.cpu_count() or 1) // max(1, $(PYTEST_WORKERS))))")

.PHONY: demo test test-jax test-tensorflow test-torch lint legacy-files clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Demo needs one backend only (JAX), and matplotlib for its figures; the test set-up
# installs all three backends.
$(VENV)/.demo-installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[jax,plots]"
	touch $@

$(VENV)/.all-installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all]"
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/python -m keras_lmu demo

# Runs the whole suite once per backend and fails if any backend fails.
test: $(VENV)/.all-installed
	@failed=""; \
	for backend in $(BACKENDS); do \
		echo "=== tests on $$backend ==="; \
		$(MAKE) --no-print-directory test-$$backend || failed="$$failed $$backend"; \
	done; \
	if [ -n "$$failed" ]; then echo "tests failed on:$$failed"; exit 1; fi; \
	echo "tests passed on: $(BACKENDS)"

# JAX compiles every new trace of a loop or a step, and the suite's tests build many
# identical programs: a compilation cache shared by the run's processes (and removed
# after it) compiles each once. test_rnn_conventions.py's masked-halves tests took
# 154 s without it and 99 s with it, in one process.
test-jax: $(VENV)/.all-installed
	@cache=$$(mktemp -d); \
	KERAS_BACKEND=jax JAX_ENABLE_X64=1 JAX_COMPILATION_CACHE_DIR=$$cache \
		JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
		JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1 \
		$(PYTEST) $(PYTEST_ARGS); \
	status=$$?; rm -rf $$cache; exit $$status

test-tensorflow: $(VENV)/.all-installed
	KERAS_BACKEND=tensorflow TF_NUM_INTRAOP_THREADS=$(TEST_THREADS) \
		OMP_NUM_THREADS=$(TEST_THREADS) $(PYTEST) $(PYTEST_ARGS)

test-torch: $(VENV)/.all-installed
	KERAS_BACKEND=torch OMP_NUM_THREADS=$(TEST_THREADS) $(PYTEST) $(PYTEST_ARGS)

lint: $(VENV)/.all-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rebuilds tests/data/legacy with keras-lmu 0.9.0 in a separate environment.
legacy-files:
	$(PYTHON) -m venv /tmp/keras-lmu-0.9
	/tmp/keras-lmu-0.9/bin/pip install --quiet keras-lmu==0.9.0 h5py
	KERAS_BACKEND=tensorflow /tmp/keras-lmu-0.9/bin/python tests/data/make_legacy_files.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Benchmarks side by side with keras-lmu 0.9.0 (in benchmarks/peer-venv, created on
# demand) and LSTM; writes benchmarks/results/bench-*.json and docs/benchmarks.md.
# BENCH_ARGS="--quick" for a short check. About 25 minutes on 2 idle cores.
.PHONY: bench
bench: $(VENV)/.all-installed
	PYTHON=$(PYTHON) $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
