#!/usr/bin/env python
"""Training-step benchmarks of the LMU's parallel forms against the step-by-step recurrence.

Cases (``--cases``; all but ``m2m-size-theta`` by default):

``m2m-theta``
    trainable theta + memory_to_memory (memory_d 2, order 8, theta 64, Dense(16)
    hidden, every step returned, input (2048, 4), batch 16): ``LMUFeedforward``
    (FFT and scan) vs ``keras.layers.RNN(LMUCell)`` and the step-by-step form that
    ``LMU`` runs (``lmu-rnn``: the same loop, discretizing once per sequence).
``psmnist-theta``
    trainable theta, memory_d 1, order 256, theta 784, Dense(212) hidden, last step
    only, then Dense(10) and sparse cross-entropy; input (784, 1), batch 100:
    ``LMUFeedforward`` (one contraction over time) vs ``RNN(LMUCell)`` and
    ``lmu-rnn``. The recurrence takes seconds per step: 1 warm-up step and 2 timed steps (1 when
    the first took longer than ``--slow-limit``).
``scan``
    fixed theta, every step returned, no hidden component, batch 16: the chunked
    scan (``conv_mode="scan"``) vs the FFT for order {4, 8, 16, 64, 256} and
    memory_d 4 x order 16, T {256, 1024, 4096}; with memory_to_memory (T 1024)
    also vs ``lmu-rnn``. ``--scan-orders`` and ``--scan-steps`` replace the orders
    (memory_d 1, no memory_to_memory) and the lengths.
``conv-mode``
    fixed theta, every step returned, no hidden component; memory_d {1, 16} x
    order {64, 256} x steps {64, 128, 256, 1024, 4096}, batch 16: ``conv_mode="fft"``
    vs ``conv_mode="raw"`` with the full impulse response (``truncate_ir=None``).
``m2m-size``
    memory_to_memory, fixed theta, every step returned, no hidden component,
    steps 1024, batch 16, memory_d * order in {16, ..., 1024}: ``LMUFeedforward``
    (FFT) vs ``RNN(LMUCell)``.
``m2m-size-theta`` (only when named in ``--cases``)
    ``m2m-size`` with a trainable theta, memory_d * order in {16, ..., 256}.
``long``
    memory_d 1, order 256, theta 4096, no hidden component, batch 1, steps
    4096 / 16384 / 65536: training steps of the FFT and of the scan form, each in
    its own process, with the process's peak resident set size.
``psmnist-ff``
    fixed theta, the psMNIST model of ``psmnist-theta`` reading only the last
    step, batch 100 vs 400, each in its own process: peak resident set size.
    For contrast, the same model computing every step (FFT) and slicing the
    last one.
``masked``
    padded sequences behind ``keras.layers.Masking`` (each of the batch's
    sequences is padded after a random length between half and all of the
    steps), fixed theta: the parallel form under the mask (padding only, so the
    memory is computed with the masked inputs zeroed; the unmasked steps gathered
    to the end where only the last memory is read) vs the step-by-step loop that
    ``LMU`` runs (``lmu-rnn``, which holds the states at masked steps). Reading
    the last step (memory_d 1, order 128, Dense(128) hidden, 2 classes; input
    (512, 32), batch 32: the last-memory contraction) and every step (memory_d 4,
    order 64, no hidden component, mean over the unmasked steps; input (512, 8),
    batch 16: FFT and scan).

Every timed model is trained with ``model.train_on_batch`` (Adam, mean squared
error unless said otherwise); the first call (tracing/compiling) is reported
separately, a second call is a warm-up, and the following calls are timed. The
forms compared in one case are built together and timed in alternation, so that
the ratios come from the same stretch of machine load.

Usage::

    python benchmarks/parallel.py --backend jax --threads 1 --out jax.json
    python benchmarks/parallel.py --backend torch --quick --cases m2m-theta long

``--backend`` re-runs the script with ``KERAS_BACKEND`` set; without it the
backend in ``KERAS_BACKEND`` (Keras's default otherwise) is used. Results and
the recommended rules are in ``docs/benchmarks-parallel.md``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback

BACKENDS = ("jax", "tensorflow", "torch")
CASES = (
    "m2m-theta",
    "psmnist-theta",
    "scan",
    "conv-mode",
    "m2m-size",
    "long",
    "psmnist-ff",
    "masked",
)
#: Cases run only when named in ``--cases``.
EXTRA_CASES = ("m2m-size-theta",)
HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))


def positive_int(text: str) -> int:
    """``argparse`` type: an integer of 1 or more (a count or a size)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of 1 or more, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """``argparse`` type: a finite number above 0 (a time, a ratio or a limit)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, help="Keras backend (re-runs the script)")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=CASES + EXTRA_CASES,
        default=list(CASES),
        help=f"default: {' '.join(CASES)}",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=10, help="most timed steps per form (default 10)"
    )
    parser.add_argument(
        "--min-repeats",
        type=positive_int,
        default=3,
        help="fewest timed steps per form (default 3)",
    )
    parser.add_argument(
        "--budget",
        type=positive_float,
        default=2.5,
        help="seconds of timed steps aimed for per form: slow forms get fewer repeats, "
        "down to --min-repeats (default 2.5)",
    )
    parser.add_argument(
        "--slow-limit",
        type=positive_float,
        default=60.0,
        help="psmnist-theta: time 1 step of the recurrence instead of 2 when its first "
        "step took longer than this many seconds (default 60)",
    )
    parser.add_argument(
        "--raw-stop",
        type=positive_float,
        default=3.0,
        help="conv-mode: stop timing raw at longer sequences once it is this many times "
        "slower than fft (default 3)",
    )
    parser.add_argument(
        "--raw-max-macs",
        type=positive_float,
        default=2e10,
        help="conv-mode: skip raw where the direct convolution's forward pass needs more "
        "multiply-adds (batch*memory_d*steps^2*order) than this (default 2e10; tens of "
        "seconds per step)",
    )
    parser.add_argument(
        "--max-elements",
        type=positive_float,
        default=2**26,
        help="conv-mode: skip configurations whose memory sequence (batch*steps*memory_d"
        "*order) has more elements (default 2**26)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="threads for the backend's operations (default: the backend's choice); "
        "on a shared machine, PyTorch's default of one thread per core stalls whenever "
        "another process holds a core",
    )
    parser.add_argument(
        "--scan-orders",
        type=positive_int,
        nargs="+",
        help="scan: these orders only (memory_d 1, no memory_to_memory)",
    )
    parser.add_argument("--scan-steps", type=positive_int, nargs="+", help="scan: these lengths")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--out", help="write the results as JSON to this path")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- models --------------------------------------------------------------------------


def make_model(spec: dict, form: str):
    """A model and one batch of data for ``spec``, with the memory computed as ``form``.

    ``form`` is ``"rnn"`` (``keras.layers.RNN(LMUCell)``), ``"lmu-rnn"`` (the
    step-by-step form that ``LMU`` runs: the same loop, discretizing a trainable
    memory once per sequence), ``"fft"``, ``"raw"``, ``"scan"`` or ``"last"``
    (``LMUFeedforward``; the last-step contraction whenever only the last step is
    read).
    """
    import keras
    import numpy as np

    import keras_lmu

    seed_everything(spec.get("seed", 0))
    steps, features, batch = spec["steps"], spec["features"], spec["batch"]
    hidden = spec.get("hidden")
    hidden_cell = None if hidden is None else keras.layers.Dense(hidden)
    memory = dict(
        memory_d=spec["memory_d"],
        order=spec["order"],
        theta=spec["theta"],
        hidden_cell=hidden_cell,
        trainable_theta=spec.get("trainable_theta", False),
        memory_to_memory=spec.get("memory_to_memory", False),
    )
    return_sequences = spec["return_sequences"]
    if form == "rnn":
        layer = keras.layers.RNN(keras_lmu.LMUCell(**memory), return_sequences=return_sequences)
    elif form == "lmu-rnn":
        # LMU held to its step-by-step form (its inner loop layer, used alone, returns
        # the states too).
        layer = keras_lmu.LMU(**memory, return_sequences=return_sequences)
        layer.uses_parallel_form = lambda: False
    else:
        layer = keras_lmu.LMUFeedforward(
            **memory,
            return_sequences=return_sequences,
            conv_mode="fft" if form == "last" else form,
            truncate_ir=None,
        )
    inputs = keras.Input((steps, features))
    masked = spec.get("masked", False)
    outputs = layer(keras.layers.Masking(0.0)(inputs) if masked else inputs)
    head = spec.get("head")
    if head == "pool":  # mean over the steps: the loss reads every step
        outputs = keras.layers.GlobalAveragePooling1D()(outputs)
    elif head == "last":  # every step computed, only the last one used
        outputs = keras.layers.Lambda(lambda sequence: sequence[:, -1])(outputs)
    if spec.get("classes"):
        outputs = keras.layers.Dense(spec["classes"])(outputs)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss = "mse"
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(), loss=loss)
    if form == "lmu-rnn":
        # LMU draws its initial weights in another order than RNN(LMUCell) and
        # LMUFeedforward, which agree: start from theirs.
        reference, _, _ = make_model(spec, "rnn")
        model.set_weights(reference.get_weights())
    rng = np.random.default_rng(spec.get("seed", 0))
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    if masked:  # each sequence padded with zeros after half to all of the steps
        lengths = rng.integers(steps // 2, steps + 1, size=batch)
        x[np.arange(steps) >= lengths[:, None]] = 0.0
    if spec.get("classes"):
        y = rng.integers(0, spec["classes"], size=(batch,)).astype("int32")
    else:
        shape = (batch,) + tuple(model.output_shape[1:])
        y = rng.standard_normal(shape).astype("float32")
    return model, x, y


def set_threads(threads: int):
    """Limit the backend's intra-op threads; subprocesses inherit the setting.

    JAX reads its flag from the environment when it starts; TensorFlow and PyTorch
    are set by :func:`apply_threads` once imported.
    """
    os.environ["BENCHMARK_THREADS"] = str(threads)
    if os.environ.get("KERAS_BACKEND") == "jax":
        if threads != 1:
            raise SystemExit("--threads with JAX supports only 1")
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = flags.strip()


def apply_threads():
    threads = os.environ.get("BENCHMARK_THREADS")
    if not threads:
        return
    threads = int(threads)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)


def seed_everything(seed: int):
    """Seed Python and PyTorch (``keras.utils.set_random_seed`` would also import
    TensorFlow, which costs memory and time on the other backends); the data comes
    from NumPy generators seeded separately."""
    import random

    import keras

    random.seed(seed)  # Keras draws its default seeds from Python's generator
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def train_step(model, x, y) -> tuple[float, float]:
    """One ``train_on_batch``: (seconds, loss). It returns NumPy values, so the work is done."""
    start = time.perf_counter()
    loss = model.train_on_batch(x, y)
    elapsed = time.perf_counter() - start
    return elapsed, float(loss if not isinstance(loss, (list, tuple)) else loss[0])


def clear():
    import keras

    keras.backend.clear_session()
    gc.collect()


def summary(times: list[float]) -> dict:
    if not times:
        return {}
    ordered = sorted(times)

    def quantile(q):
        position = q * (len(ordered) - 1)
        low, high = math.floor(position), math.ceil(position)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "median_s": statistics.median(ordered),
        "p25_s": quantile(0.25),
        "p75_s": quantile(0.75),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "n": len(ordered),
    }


def time_forms(case: str, config: dict, spec: dict, forms: list, args, fixed: dict | None = None):
    """Train each form of ``spec`` in alternation; one result per form.

    ``fixed`` maps a form to ``(warmup_steps, timed_steps)``; other forms get 2
    warm-up steps (the first one is the compile step) and as many timed steps as
    ``--budget`` allows, between ``--min-repeats`` and ``--repeats``.
    """
    fixed = fixed or {}
    runs = []
    for form in forms:
        run = {"case": case, "config": config, "form": form, "times_s": [], "warmup_s": []}
        runs.append(run)
        try:
            model, x, y = make_model(spec, form)
            run["compile_s"], run["first_loss"] = train_step(model, x, y)
            warmups, timed = fixed.get(form, (2, None))
            for _ in range(warmups - 1):
                run["warmup_s"].append(train_step(model, x, y)[0])
            if timed is not None and run["compile_s"] > args.slow_limit and warmups == 1:
                timed = 1  # keep the whole run within minutes
                run.setdefault("warnings", []).append(
                    f"first step took {run['compile_s']:.0f} s > --slow-limit: 1 timed step"
                )
            if timed is None:
                last = run["warmup_s"][-1] if run["warmup_s"] else run["compile_s"]
                timed = min(args.repeats, max(args.min_repeats, math.ceil(args.budget / last)))
            run["_state"] = (model, x, y, timed)
        except Exception as error:  # noqa: BLE001 - report and go on
            run["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
    while True:
        pending = [r for r in runs if "_state" in r and len(r["times_s"]) < r["_state"][3]]
        if not pending:
            break
        for run in pending:
            model, x, y, _ = run["_state"]
            try:
                seconds, run["last_loss"] = train_step(model, x, y)
                run["times_s"].append(seconds)
            except Exception as error:  # noqa: BLE001
                run["error"] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
                del run["_state"]
    for run in runs:
        run.pop("_state", None)
        run.update(summary(run["times_s"]))
        run["load_average"] = os.getloadavg()[0]  # other processes on the machine
        for key in ("first_loss", "last_loss"):
            if key in run and not math.isfinite(run[key]):
                run.setdefault("warnings", []).append(f"{key} is {run[key]}")
    clear()
    return runs


def ratio(runs: list, slow: str, fast: str) -> float | None:
    by_form = {r["form"]: r for r in runs}
    if slow in by_form and fast in by_form:
        a, b = by_form[slow].get("median_s"), by_form[fast].get("median_s")
        if a and b:
            return a / b
    return None


# -- cases ----------------------------------------------------------------------------


def case_m2m_theta(args, report):
    steps = 256 if args.quick else 2048
    config = {"memory_d": 2, "order": 8, "theta": 64, "steps": steps, "batch": 16}
    spec = dict(config, features=4, hidden=16, trainable_theta=True, memory_to_memory=True)
    spec["return_sequences"] = True
    runs = time_forms("m2m-theta", config, spec, ["fft", "scan", "rnn", "lmu-rnn"], args)
    report.add(
        runs,
        ratios=[("rnn", "fft"), ("rnn", "scan"), ("lmu-rnn", "scan"), ("rnn", "lmu-rnn")],
    )


def case_psmnist_theta(args, report):
    steps, batch = (98, 20) if args.quick else (784, 100)
    config = {"memory_d": 1, "order": 256, "theta": steps, "steps": steps, "batch": batch}
    spec = dict(config, features=1, hidden=212, trainable_theta=True, classes=10)
    spec["return_sequences"] = False
    slow = {"rnn": (1, 2), "lmu-rnn": (1, 2)}
    runs = time_forms("psmnist-theta", config, spec, ["last", "rnn", "lmu-rnn"], args, fixed=slow)
    report.add(runs, ratios=[("rnn", "last"), ("lmu-rnn", "last"), ("rnn", "lmu-rnn")])


def case_scan(args, report):
    """The parallel scan against the FFT (and the step-by-step loop with memory_to_memory)."""
    grid_steps = (256,) if args.quick else (256, 1024, 4096)
    sizes = [(1, 8), (1, 64)] if args.quick else [(1, 4), (1, 8), (1, 16), (1, 64), (1, 256)]
    sizes += [] if args.quick else [(4, 16)]
    modes = (False, True)
    if args.scan_orders:
        sizes, modes = [(1, order) for order in args.scan_orders], (False,)
    grid_steps = tuple(args.scan_steps or grid_steps)
    for memory_to_memory in modes:
        for memory_d, order in sizes:
            for steps in grid_steps if not memory_to_memory else grid_steps[1:2]:
                config = {
                    "memory_d": memory_d,
                    "order": order,
                    "size": memory_d * order,
                    "steps": steps,
                    "batch": 16,
                    "memory_to_memory": memory_to_memory,
                }
                spec = dict(config, theta=steps, features=4, head="pool", return_sequences=True)
                forms = ["fft", "scan"] + (["lmu-rnn"] if memory_to_memory else [])
                runs = time_forms("scan", config, spec, forms, args)
                ratios = [("fft", "scan")] + ([("lmu-rnn", "scan")] if memory_to_memory else [])
                report.add(runs, ratios=ratios)


def case_conv_mode(args, report):
    grid_steps = (64, 256) if args.quick else (64, 128, 256, 1024, 4096)
    for memory_d in (1, 16):
        for order in (64, 256):
            raw_stopped = None
            for steps in grid_steps:
                config = {"memory_d": memory_d, "order": order, "steps": steps, "batch": 16}
                elements = 16 * steps * memory_d * order
                if elements > args.max_elements:
                    report.skip(config, "conv-mode", f"memory sequence has {elements} elements")
                    continue
                macs = 16 * memory_d * steps**2 * order
                if not raw_stopped and macs > args.raw_max_macs:
                    raw_stopped = f"direct convolution needs {macs:.1e} multiply-adds"
                forms = ["fft"] if raw_stopped else ["fft", "raw"]
                spec = dict(config, theta=steps, features=4, head="pool")
                spec["return_sequences"] = True
                runs = time_forms("conv-mode", config, spec, forms, args)
                if raw_stopped:
                    runs.append(
                        {
                            "case": "conv-mode",
                            "config": config,
                            "form": "raw",
                            "skipped": raw_stopped,
                        }
                    )
                report.add(runs, ratios=[("raw", "fft")])
                slower = ratio(runs, "raw", "fft")
                if not raw_stopped and slower is not None and slower >= args.raw_stop:
                    raw_stopped = f"raw already {slower:.1f}x slower than fft at steps={steps}"


def case_m2m_size(args, report):
    steps = 256 if args.quick else 1024
    sizes = (
        [(1, 16), (1, 64)]
        if args.quick
        else [(1, 16), (1, 64), (1, 128), (1, 256), (4, 64), (1, 512), (1, 1024)]
    )
    for memory_d, order in sizes:
        config = {
            "memory_d": memory_d,
            "order": order,
            "size": memory_d * order,
            "steps": steps,
            "batch": 16,
        }
        spec = dict(config, theta=steps, features=4, head="pool", memory_to_memory=True)
        spec["return_sequences"] = True
        runs = time_forms("m2m-size", config, spec, ["fft", "rnn"], args)
        report.add(runs, ratios=[("rnn", "fft")])


def case_m2m_size_theta(args, report):
    """``m2m-size`` with a trainable theta (the recurrence re-discretizes every step)."""
    steps = 256 if args.quick else 1024
    sizes = [(1, 16), (1, 64)] if args.quick else [(1, 16), (1, 64), (1, 128), (1, 256)]
    for memory_d, order in sizes:
        config = {
            "memory_d": memory_d,
            "order": order,
            "size": memory_d * order,
            "steps": steps,
            "batch": 16,
        }
        spec = dict(config, theta=steps, features=4, head="pool", memory_to_memory=True)
        spec.update(return_sequences=True, trainable_theta=True)
        runs = time_forms("m2m-size-theta", config, spec, ["fft", "rnn"], args)
        report.add(runs, ratios=[("rnn", "fft")])


def case_long(args, report):
    for steps in (1024, 4096) if args.quick else (4096, 16384, 65536):
        config = {"memory_d": 1, "order": 256, "theta": 4096, "steps": steps, "batch": 1}
        for form in ("fft", "scan"):
            spec = dict(config, features=1, head="pool", return_sequences=True, form=form, timed=2)
            report.add([run_in_subprocess("long", config, spec)])


def case_psmnist_ff(args, report):
    steps = 98 if args.quick else 784
    batches = (10, 40) if args.quick else (100, 400)
    for head, form in ((None, "last"), ("last", "fft")):
        for batch in batches:
            config = {
                "memory_d": 1,
                "order": 256,
                "theta": steps,
                "steps": steps,
                "batch": batch,
                "reads": "last step" if head is None else "every step",
            }
            # The contrast is slow (seconds per step): one timed step.
            spec = dict(
                config,
                features=1,
                hidden=212,
                classes=10,
                form=form,
                timed=2 if head is None else 1,
            )
            spec["return_sequences"] = head is not None
            if head is not None:
                spec["head"] = head
            report.add([run_in_subprocess("psmnist-ff", config, spec)])


def case_masked(args, report):
    steps = 128 if args.quick else 512
    last = {"memory_d": 1, "order": 128, "steps": steps, "batch": 32, "reads": "last step"}
    spec = dict(last, theta=steps, features=32, hidden=128, classes=2, masked=True)
    spec["return_sequences"] = False
    runs = time_forms("masked", last, spec, ["last", "lmu-rnn"], args)
    report.add(runs, ratios=[("lmu-rnn", "last")])
    every = {"memory_d": 4, "order": 64, "steps": steps, "batch": 16, "reads": "every step"}
    spec = dict(every, theta=steps, features=8, head="pool", masked=True, return_sequences=True)
    runs = time_forms("masked", every, spec, ["fft", "scan", "lmu-rnn"], args)
    report.add(runs, ratios=[("lmu-rnn", "fft"), ("lmu-rnn", "scan")])


def run_in_subprocess(case: str, config: dict, spec: dict) -> dict:
    """Train ``spec`` in a fresh process; its timings and peak resident set size."""
    run = {"case": case, "config": config, "form": spec["form"]}
    command = [sys.executable, HERE, "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        run["error"] = "timed out after 1200 s"
        return run
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        run["error"] = f"exit status {done.returncode}: {done.stderr.strip()[-2000:]}"
        return run
    run.update(json.loads(lines[-1][len("RESULT ") :]))
    run.update(summary(run["times_s"]))
    run["load_average"] = os.getloadavg()[0]
    return run


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def run_child(spec: dict):
    model, x, y = make_model(spec, spec["form"])
    result = {
        "rss_before_kib": _proc_status_kib("VmRSS"),
        # ru_maxrss so far: the peak of importing the backend and building the model
        "peak_before_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "threads": os.environ.get("BENCHMARK_THREADS"),
    }
    try:  # reset the high-water mark (Linux >= 4.0) so that the training's own peak shows
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        result["hwm_reset"] = True
    except OSError:
        result["hwm_reset"] = False
    result["compile_s"], result["first_loss"] = train_step(model, x, y)
    result["times_s"] = []
    for _ in range(spec["timed"]):
        seconds, result["last_loss"] = train_step(model, x, y)
        result["times_s"].append(seconds)
    # After the reset, ru_maxrss (like VmHWM) is the peak since the model was built.
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["vm_hwm_kib"] = _proc_status_kib("VmHWM")
    print("RESULT " + json.dumps(result), flush=True)


# -- reporting ------------------------------------------------------------------------


class Report:
    def __init__(self, args, meta):
        self.args = args
        self.data = {"meta": meta, "results": [], "ratios": []}

    def add(self, runs, ratios=()):
        self.data["results"].extend(runs)
        for slow, fast in ratios:
            value = ratio(runs, slow, fast)
            if value is not None:
                entry = {
                    "case": runs[0]["case"],
                    "config": runs[0]["config"],
                    "ratio": f"{slow}/{fast}",
                    "value": value,
                }
                self.data["ratios"].append(entry)
        for run in runs:
            print(format_run(run, ratio(runs, *ratios[0]) if ratios else None), flush=True)
        self.save()

    def skip(self, config, case, why):
        self.data["results"].append({"case": case, "config": config, "skipped": why})
        print(f"{case:14s} {format_config(config):44s} skipped: {why}", flush=True)
        self.save()

    def save(self):
        if self.args.out:
            os.makedirs(os.path.dirname(os.path.abspath(self.args.out)), exist_ok=True)
            with open(self.args.out, "w") as file:
                json.dump(self.data, file, indent=1)


def format_config(config: dict) -> str:
    short = {
        "memory_d": "d",
        "order": "n",
        "theta": "theta",
        "steps": "T",
        "batch": "b",
        "size": "dn",
        "reads": "",
    }
    return " ".join(
        f"{short.get(k, k)}={v}" if short.get(k, k) else str(v) for k, v in config.items()
    )


def format_run(run: dict, ratio_value=None) -> str:
    head = f"{run['case']:14s} {format_config(run['config']):44s} {run.get('form', ''):5s}"
    if "skipped" in run:
        return f"{head} skipped: {run['skipped']}"
    if "error" in run and not run.get("times_s"):
        return f"{head} ERROR: {run['error']}"
    text = (
        f"{head} first {run.get('compile_s', float('nan')):7.2f} s  median "
        f"{1000 * run['median_s']:9.1f} ms  [{1000 * run['p25_s']:.1f}-"
        f"{1000 * run['p75_s']:.1f}] n={run['n']}"
    )
    if "peak_rss_kib" in run:
        text += f"  peak RSS {run['peak_rss_kib'] / 1024:.0f} MiB"
        text += f" (VmHWM {run['vm_hwm_kib'] / 1024:.0f}; before training: RSS "
        text += f"{run['rss_before_kib'] / 1024:.0f}, peak {run['peak_before_kib'] / 1024:.0f})"
    if ratio_value is not None and run.get("form") in ("fft", "last"):
        text += f"  ratio {ratio_value:.2f}"
    if "error" in run:
        text += f"  ERROR: {run['error']}"
    return text


def metadata(args) -> dict:
    """Versions and settings, without importing Keras (see :func:`main`)."""
    from importlib import metadata as package_metadata

    versions = {}
    for name in ("keras", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "torch", "numpy"):
        try:  # without importing: importing TensorFlow would cost the other backends memory
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            pass
    return {
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "jax_enable_x64": os.environ.get("JAX_ENABLE_X64"),
        "versions": versions,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg()[0],
        "argv": sys.argv[1:],
        "args": {k: v for k, v in vars(args).items() if k != "child"},
    }


def _git_commit():
    """The checkout's commit, with ``-dirty`` when keras_lmu/ has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "keras_lmu"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if changes else "")


def accelerator() -> str | None:
    """The accelerator the child's backend computes on (``None`` on the CPU)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else f"{device.platform}: {device.device_kind}"
    if backend == "torch":
        import torch

        return f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else None
    import tensorflow as tf

    devices = tf.config.list_physical_devices("GPU")
    if not devices:
        return None
    details = tf.config.experimental.get_device_details(devices[0])
    return f"gpu: {details.get('device_name', devices[0].name)}"


def accelerator_memory() -> dict:
    """Bytes in use on the accelerator now and at the peak, as its backend counts them."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return {"now": stats.get("bytes_in_use"), "peak": stats.get("peak_bytes_in_use")}
    if backend == "torch":
        import torch

        return {"now": torch.cuda.memory_allocated(), "peak": torch.cuda.max_memory_allocated()}
    import tensorflow as tf

    info = tf.config.experimental.get_memory_info("GPU:0")
    return {"now": info["current"], "peak": info["peak"]}


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None):
    args = parse_args(argv)
    if args.backend and os.environ.get("KERAS_BACKEND") != args.backend:
        env = dict(os.environ, KERAS_BACKEND=args.backend)
        os.execve(sys.executable, [sys.executable, HERE, *sys.argv[1:]], env)
    if args.threads:
        set_threads(args.threads)
    if ROOT not in sys.path:  # measure this checkout's keras_lmu
        sys.path.insert(0, ROOT)
    if args.child:
        apply_threads()
        run_child(json.loads(args.child))
        return
    meta = metadata(args)
    print(
        f"backend {meta['backend']}, versions {meta['versions']}, "
        f"{meta['cpu_count']} CPUs, threads {args.threads or 'default'}, {meta['date']}",
        flush=True,
    )
    report = Report(args, meta)
    cases = {
        "m2m-theta": case_m2m_theta,
        "psmnist-theta": case_psmnist_theta,
        "scan": case_scan,
        "conv-mode": case_conv_mode,
        "m2m-size": case_m2m_size,
        "m2m-size-theta": case_m2m_size_theta,
        "long": case_long,
        "psmnist-ff": case_psmnist_ff,
        "masked": case_masked,
    }
    # The cases that measure memory in subprocesses go first, while this process is
    # small: on Linux a new process's ru_maxrss starts from its launcher's peak.
    in_subprocesses = [name for name in args.cases if name in ("long", "psmnist-ff")]
    ordered = in_subprocesses + [name for name in args.cases if name not in in_subprocesses]
    start = time.perf_counter()
    for name in ordered:
        if name not in in_subprocesses and "floatx" not in report.data["meta"]:
            apply_threads()
            import keras

            import keras_lmu

            report.data["meta"]["floatx"] = keras.config.floatx()
            report.data["meta"]["keras_lmu_file"] = keras_lmu.__file__
        case_start = time.perf_counter()
        cases[name](args, report)
        elapsed = time.perf_counter() - case_start
        report.data["meta"].setdefault("case_seconds", {})[name] = elapsed
        print(f"-- {name}: {elapsed:.0f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    report.data["meta"]["total_seconds"] = time.perf_counter() - start
    report.save()
    print_summary(report.data)


def print_summary(data: dict):
    print("\nratios (median of the slower form / median of the faster form):")
    for entry in data["ratios"]:
        print(
            f"  {entry['case']:14s} {format_config(entry['config']):44s} "
            f"{entry['ratio']:8s} {entry['value']:8.2f}"
        )
    conv = [e for e in data["ratios"] if e["case"] == "conv-mode"]
    if conv:
        print("\nconv-mode: longest sequence where raw beat fft, per memory_d/order:")
        groups = {}
        for entry in conv:
            c = entry["config"]
            groups.setdefault((c["memory_d"], c["order"]), []).append((c["steps"], entry["value"]))
        for (memory_d, order), values in sorted(groups.items()):
            faster = [steps for steps, value in values if value < 1]
            print(
                f"  memory_d={memory_d:<3d} order={order:<4d} raw faster at steps "
                f"{faster or 'none'}; raw/fft: " + ", ".join(f"T={s}: {v:.2f}" for s, v in values)
            )


if __name__ == "__main__":
    main()
