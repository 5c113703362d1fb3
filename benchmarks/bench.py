#!/usr/bin/env python
"""Benchmarks of this library side by side with keras-lmu 0.9.0 and a Keras LSTM.

Every case is timed for this library on JAX, TensorFlow and PyTorch and for
``keras-lmu`` 0.9.0 on TensorFlow. Both packages import as ``keras_lmu``, so
keras-lmu 0.9.0 runs from its own virtual environment, ``benchmarks/peer-venv``,
created on demand (``python3.11 -m venv benchmarks/peer-venv``, then
``pip install keras-lmu==0.9.0``). It is used as a black box, through its public
API only. Both libraries build the same model from the same arguments.

Cases (``--cases``; all by default; ``T`` steps, ``b`` batch):

``psmnist-rnn``
    input (784, 1), ``LMU(memory_d=1, order=256, theta=784,
    hidden_cell=SimpleRNNCell(212), hidden_to_memory=True, memory_to_memory=True)``,
    ``Dense(10)``, sparse cross-entropy; b 100. Step by step in both libraries.
``psmnist-ff``
    input (784, 1), ``LMU(1, 256, 784, hidden_cell=Dense(212))``, last step only,
    ``Dense(10)``; b 100.
``trainable-theta``
    ``psmnist-ff`` with ``trainable_theta=True`` (keras-lmu runs it step by step).
``seq-ff-fft``, ``seq-ff-raw``
    input (512, 32), ``LMUFeedforward(memory_d=32, order=256, theta=784,
    hidden_cell=None, conv_mode="fft" / "raw", truncate_ir=None)``, last step only,
    ``Dense(2)``; b 16. Reading only the last step, this library computes the last
    memory alone (one contraction over time) whatever ``conv_mode``, as for
    ``psmnist-ff``, ``trainable-theta`` and ``seq-lmu``; the report says so.
``seq-rnn``
    the same model as ``keras.layers.RNN(LMUCell(32, 256, 784, None))``.
``seq-lmu``
    the same model as ``LMU(32, 256, 784, None)`` with each library's default form
    (this library's ``conv_mode="auto"``).
``seq-ff-full``, ``seq-lmu-full``
    ``seq-ff-fft`` (``LMUFeedforward``'s default ``conv_mode``) and ``seq-lmu`` with
    ``return_sequences=True``, ``Dense(2)`` on every step.
``seq-ff-scan-full``
    ``seq-ff-full`` with ``conv_mode="scan"`` (the chunked scan, which ``LMU`` picks
    for this model on JAX and TensorFlow); keras-lmu, which has no such mode, runs its
    default, the FFT (its ``"raw"`` aborts on TensorFlow with oneDNN for
    ``memory_d=32``).
``seq-dense-full``
    no LMU: ``keras.layers.Dense(8192)`` on the ``seq-ff-full`` input, then
    ``Dense(2)`` on every step; b 16. It returns a sequence as large as
    ``seq-ff-full``'s memories with no convolution at all, so its peak memory is the
    least any layer returning that sequence needs under Keras on each backend: the
    sequence and its gradient are both held while the ``Dense(2)`` above computes
    its gradients (keras-lmu's environment runs the same model).
``long``
    input (T, 1), ``LMU(1, 256, theta=4096, None, return_sequences=True)``, mean over
    the steps, mean squared error; b 1, T in 1024, 4096, 16384, 65536
    (``--long-steps``): time and peak memory against T.
``lstm``
    input (784, 1), ``keras.layers.LSTM(212)``, ``Dense(10)``; b 100 (keras-lmu's
    environment runs the same Keras LSTM, as a reference).

Method. Every (case, size, library/backend) runs in its own process, so that the
process's peak resident set size (``resource.getrusage``) is its own; the report
gives it and its increase over the RSS after the imports and the model build. The
processes of one case are started one after the other; each imports, builds,
compiles (the first ``train_on_batch`` and the first ``predict_on_batch``, timed and
reported as compile/first-step time) and warms up (one more of each, not timed),
while the others wait idle. Then the timed steps alternate between the processes:
one ``train_on_batch`` and one ``predict_on_batch`` in each process in turn, the
order rotated every round, so that all libraries and backends share the same
stretch of machine load. Medians and min/max of the timed steps are reported.
Each process gets as many timed steps as ``--budget`` seconds allow, between
``--min-repeats`` and ``--repeats``; a process whose warm-up step took longer than
``--slow-limit`` seconds (keras-lmu's step-by-step trainable theta, the step-by-step
psMNIST model) gets only ``--slow-repeats`` timed steps (2), and the report says so;
one whose first step took longer than ``--warmup-limit`` seconds (20) runs no warm-up
step beyond that first, untimed one, and one whose first step took longer than
``--very-slow-limit`` (60 s: PyTorch's step-by-step psMNIST model) is timed once;
one whose first step took longer than ``--skip-limit`` (120 s: Keras's LSTM on PyTorch)
is not timed further, and the report gives that first step.
``--quick`` times one step of each kind per process.

Throughput. For each case the report gives a recurrence-equivalent GFLOP/s: the
FLOPs of the step-by-step recurrence over the time taken, whatever form computed the
case. Forward FLOPs = 2 x multiply-adds of every
step's matrix products (the memory's ``A m`` and encoder, the hidden layer or cell,
the LSTM's gates) times steps times batch, training counted as 3x forward. The parallel
forms do less work than the recurrence, so their "recurrence-equivalent" rate can
exceed the machine's float32 matmul peak, which is measured in the same run (NumPy,
2048 x 2048, best of 5, before every case).

Accelerators. Where a backend computes on a GPU, each process also reports the
accelerator (``accelerator`` in the JSON) and its peak bytes in use as the backend
counts them (JAX's ``memory_stats``, PyTorch's ``max_memory_allocated``, TensorFlow's
``get_memory_info``); the report adds them. ``benchmarks/gpu.sh`` runs this script and
the float32 accuracy check (``benchmarks/numerics.py``) on a GPU machine.

Usage::

    python benchmarks/bench.py                      # everything (about 25 minutes)
    python benchmarks/bench.py --quick --cases seq-ff-fft lstm
    python benchmarks/bench.py --backends jax --no-peer --tiny --out /tmp/b.json
    python benchmarks/bench.py --report-from benchmarks/results/bench-....json \
        --notes benchmarks/results/bench-notes-amd-epyc.md \
        --report docs/benchmarks-amd-epyc.md --plot docs/bench_long_amd_epyc.png

Writes ``benchmarks/results/bench-<UTC date/time>[-quick|-tiny].json`` (``--out``), the
report ``docs/benchmarks.md`` (``--report``) and the plot ``docs/bench_long.png``
(``--plot``); a ``--quick`` or ``--tiny`` run writes its report and plot next to its
JSON instead (``/tmp/b.md`` and ``/tmp/b-long.png`` for the third command).
``make bench`` runs the first command. The fourth writes a report again from a run's
JSON (several files: merged), with the notes of that run's machine; it names both
files to write, so that no other machine's report is overwritten.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import select
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)
BENCH_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH_DIR)
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

from parallel import (  # noqa: E402
    _cpu_name,
    _git_commit,
    _proc_status_kib,
    accelerator,
    accelerator_memory,
    positive_float,
    positive_int,
    seed_everything,
    summary,
)

BACKENDS = ("jax", "tensorflow", "torch")
CASES = (
    "psmnist-rnn",
    "psmnist-ff",
    "trainable-theta",
    "seq-ff-fft",
    "seq-ff-raw",
    "seq-rnn",
    "seq-lmu",
    "seq-ff-full",
    "seq-lmu-full",
    "seq-ff-scan-full",
    "seq-dense-full",
    "long",
    "lstm",
)
LONG_STEPS = (1024, 4096, 16384, 65536)
QUICK_LONG_STEPS = (1024, 4096)
PEER_VERSION = "0.9.0"
PEER_VENV = os.path.join(BENCH_DIR, "peer-venv")
PEER_PYTHON = os.path.join(PEER_VENV, "bin", "python")
PEER = "keras-lmu"
OWN = "keras-lmu3"
#: Seconds to wait for one command of a child (import, build and compile included).
CHILD_TIMEOUT_S = 1800


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", nargs="+", choices=CASES, default=list(CASES), help="default: all"
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=list(BACKENDS),
        help="backends for this library (keras-lmu always runs on TensorFlow)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip keras-lmu 0.9.0")
    parser.add_argument("--no-own", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one timed step of each kind per process, long only at T 1024 and 4096",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="shrink every size (steps <= 16, batch <= 4, order <= 8, units <= 8): "
        "a smoke test of the harness, in seconds; timings mean nothing",
    )
    parser.add_argument("--long-steps", type=positive_int, nargs="+", help=f"default {LONG_STEPS}")
    parser.add_argument("--repeats", type=positive_int, default=10, help="most timed steps (10)")
    parser.add_argument(
        "--min-repeats", type=positive_int, default=3, help="fewest timed steps (3)"
    )
    parser.add_argument(
        "--budget",
        type=positive_float,
        default=2.0,
        help="seconds of timed training steps aimed for per process; inference gets "
        "as many steps as training, at most --repeats (default 2)",
    )
    parser.add_argument(
        "--slow-limit",
        type=positive_float,
        default=3.0,
        help="a process whose warm-up training step took longer than this many seconds "
        "gets --slow-repeats timed steps (default 3)",
    )
    parser.add_argument("--slow-repeats", type=positive_int, default=2, help="default 2")
    parser.add_argument(
        "--warmup-limit",
        type=positive_float,
        default=20.0,
        help="no warm-up step beyond the first (untimed) one where that took longer than "
        "this many seconds, and --slow-repeats timed steps (default 20)",
    )
    parser.add_argument(
        "--skip-limit",
        type=positive_float,
        default=120.0,
        help="time nothing more where the first training step took longer than this many "
        "seconds; the report gives that first step (default 120)",
    )
    parser.add_argument(
        "--very-slow-limit",
        type=positive_float,
        default=60.0,
        help="one timed step where the first step took longer than this (default 60)",
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/bench-<date>.json)")
    parser.add_argument(
        "--report",
        help="markdown report (default docs/benchmarks.md; with --quick or --tiny, the "
        "JSON's path with .md)",
    )
    parser.add_argument(
        "--plot",
        help="plot of long (default docs/bench_long.png; with --quick or --tiny, the "
        "JSON's path with -long.png)",
    )
    parser.add_argument(
        "--report-from",
        metavar="JSON",
        nargs="+",
        help="only write the report, from earlier JSON files (several: merged in order, "
        "e.g. a full run and a re-run of some cases); needs --report and --plot, so that "
        "no other machine's report is overwritten",
    )
    parser.add_argument(
        "--notes",
        metavar="MARKDOWN",
        help="what is known of why a backend is slow on the machine of the run: a "
        "markdown file whose lines replace the report's general notes",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--matmul-peak", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report_from and not (args.report and args.plot):
        parser.error("--report-from needs --report and --plot: the files to write")
    if args.quick:
        args.repeats = args.min_repeats = args.slow_repeats = 1
    return args


# -- cases ----------------------------------------------------------------------------


def case_specs(case: str, args) -> list[dict]:
    """The model specifications of ``case``: one per size, shared by both libraries."""
    psmnist = {"steps": 784, "features": 1, "batch": 100, "classes": 10}
    seq = {"steps": 512, "features": 32, "batch": 16, "classes": 2}
    memory = {"memory_d": 1, "order": 256, "theta": 784}
    seq_memory = {"memory_d": 32, "order": 256, "theta": 784, "hidden": None}
    specs = {
        "psmnist-rnn": [
            dict(
                psmnist,
                **memory,
                layer="LMU",
                hidden="SimpleRNNCell",
                units=212,
                hidden_to_memory=True,
                memory_to_memory=True,
            )
        ],
        "psmnist-ff": [dict(psmnist, **memory, layer="LMU", hidden="Dense", units=212)],
        "trainable-theta": [
            dict(psmnist, **memory, layer="LMU", hidden="Dense", units=212, trainable_theta=True)
        ],
        "seq-ff-fft": [dict(seq, **seq_memory, layer="LMUFeedforward", conv_mode="fft")],
        "seq-ff-raw": [dict(seq, **seq_memory, layer="LMUFeedforward", conv_mode="raw")],
        "seq-rnn": [dict(seq, **seq_memory, layer="RNN(LMUCell)")],
        "seq-lmu": [dict(seq, **seq_memory, layer="LMU")],
        "seq-ff-full": [
            dict(seq, **seq_memory, layer="LMUFeedforward", return_sequences=True, per_step=True)
        ],
        "seq-lmu-full": [
            dict(seq, **seq_memory, layer="LMU", return_sequences=True, per_step=True)
        ],
        "seq-ff-scan-full": [
            dict(
                seq,
                **seq_memory,
                layer="LMUFeedforward",
                conv_mode="scan",
                peer_conv_mode="fft",
                return_sequences=True,
                per_step=True,
            )
        ],
        "long": [
            {
                "steps": steps,
                "features": 1,
                "batch": 1,
                "memory_d": 1,
                "order": 256,
                "theta": 4096,
                "hidden": None,
                "layer": "LMU",
                "return_sequences": True,
                "pool": True,
            }
            for steps in args.long_steps or (QUICK_LONG_STEPS if args.quick else LONG_STEPS)
        ],
        "seq-dense-full": [dict(seq, layer="Dense", units=8192, per_step=True)],
        "lstm": [dict(psmnist, layer="LSTM", units=212)],
    }[case]
    for index, spec in enumerate(specs):
        spec["case"] = case
        if args.tiny:
            shrink(spec)
            if case == "long":  # still one length per size
                spec["steps"] = 16 * 2**index
    return specs


def shrink(spec: dict):
    """The ``--tiny`` sizes: the same model, small enough to run in seconds."""
    limits = {"steps": 16, "batch": 4, "order": 8, "units": 8, "memory_d": 2, "features": 4}
    for key, limit in limits.items():
        if spec.get(key):
            spec[key] = min(spec[key], limit)
    if "theta" in spec:
        spec["theta"] = min(spec["theta"], 16)


def describe(spec: dict) -> str:
    """A short description of the size of ``spec``."""
    if spec["layer"] in ("LSTM", "Dense"):
        return f"{spec['layer']}({spec['units']}) T={spec['steps']} b={spec['batch']}"
    text = f"d={spec['memory_d']} n={spec['order']} theta={spec['theta']} "
    text += f"T={spec['steps']} b={spec['batch']}"
    return text


def layer_description(spec: dict) -> str:
    if spec["layer"] in ("LSTM", "Dense"):
        return f"keras.layers.{spec['layer']}({spec['units']})"
    hidden = "None" if not spec.get("hidden") else f"{spec['hidden']}({spec['units']})"
    args = [str(spec["memory_d"]), str(spec["order"]), str(spec["theta"]), hidden]
    for key in ("hidden_to_memory", "memory_to_memory", "trainable_theta", "return_sequences"):
        if spec.get(key):
            args.append(f"{key}=True")
    if spec.get("conv_mode"):
        args += [f'conv_mode="{spec["conv_mode"]}"', "truncate_ir=None"]
    if spec["layer"] == "RNN(LMUCell)":
        return f"RNN(LMUCell({', '.join(args[:4])}))"
    return f"{spec['layer']}({', '.join(args)})"


def recurrence_flops(spec: dict) -> float:
    """Forward FLOPs of one batch computed step by step (see the module docstring)."""
    steps, batch, features = spec["steps"], spec["batch"], spec["features"]
    units = spec.get("units") or 0
    if spec["layer"] == "LSTM":
        per_step = 2 * 4 * units * (features + units)
        outputs = units
    elif spec["layer"] == "Dense":
        per_step = 2 * units * features
        outputs = units
    else:
        memory_d, order = spec["memory_d"], spec["order"]
        state = memory_d * order
        encoder_inputs = features
        encoder_inputs += units if spec.get("hidden_to_memory") else 0
        encoder_inputs += state if spec.get("memory_to_memory") else 0
        per_step = 2 * memory_d * order * order + 2 * state + 2 * encoder_inputs * memory_d
        if spec.get("hidden") == "Dense":
            per_step += 2 * state * units
        elif spec.get("hidden") == "SimpleRNNCell":
            per_step += 2 * state * units + 2 * units * units
        outputs = units if spec.get("hidden") else state
    head = 2 * outputs * spec.get("classes", 1) * (steps if spec.get("per_step") else 1)
    return float(per_step * steps * batch + head * batch)


# -- child processes: one model each -----------------------------------------------------


def build_model(spec: dict):
    """The model of ``spec`` (with whichever ``keras_lmu`` is installed) and one batch."""
    import keras
    import numpy as np

    import keras_lmu

    seed_everything(0)
    steps, features, batch = spec["steps"], spec["features"], spec["batch"]
    return_sequences = bool(spec.get("return_sequences"))
    if spec["layer"] == "LSTM":
        layer = keras.layers.LSTM(spec["units"])
    elif spec["layer"] == "Dense":
        layer = keras.layers.Dense(spec["units"])
    else:
        hidden = spec.get("hidden")
        if hidden == "Dense":
            hidden_cell = keras.layers.Dense(spec["units"])
        elif hidden == "SimpleRNNCell":
            hidden_cell = keras.layers.SimpleRNNCell(spec["units"])
        else:
            hidden_cell = None
        memory = dict(
            memory_d=spec["memory_d"],
            order=spec["order"],
            theta=spec["theta"],
            hidden_cell=hidden_cell,
        )
        if spec["layer"] == "LMU":
            layer = keras_lmu.LMU(
                **memory,
                hidden_to_memory=bool(spec.get("hidden_to_memory")),
                memory_to_memory=bool(spec.get("memory_to_memory")),
                trainable_theta=bool(spec.get("trainable_theta")),
                return_sequences=return_sequences,
            )
        elif spec["layer"] == "LMUFeedforward":
            options = {}
            if spec.get("conv_mode"):
                options = {"conv_mode": spec["conv_mode"], "truncate_ir": None}
            layer = keras_lmu.LMUFeedforward(**memory, return_sequences=return_sequences, **options)
        elif spec["layer"] == "RNN(LMUCell)":
            layer = keras.layers.RNN(keras_lmu.LMUCell(**memory), return_sequences=return_sequences)
        else:
            raise ValueError(f"unknown layer {spec['layer']!r}")
    inputs = keras.Input((steps, features))
    outputs = layer(inputs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    if spec.get("pool"):
        outputs = keras.layers.GlobalAveragePooling1D()(outputs)
        loss = "mse"
    else:
        outputs = keras.layers.Dense(spec["classes"])(outputs)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(), loss=loss)
    if spec.get("pool"):
        y = rng.standard_normal((batch,) + tuple(model.output_shape[1:])).astype("float32")
    else:
        label_shape = (batch, steps) if spec.get("per_step") else (batch,)
        y = rng.integers(0, spec["classes"], size=label_shape).astype("int32")
    return model, x, y


def child_versions() -> dict:
    """Versions seen by a child (package metadata only)."""
    from importlib import metadata as package_metadata

    versions = {}
    for name in ("keras-lmu", "keras-lmu3", "keras", "tensorflow", "tensorflow-cpu", "jax"):
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            pass
    for name in ("torch", "numpy"):
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            pass
    return versions


def send(message: dict):
    print("BENCH " + json.dumps(message), flush=True)


def run_child(spec: dict):
    """Build, compile and warm up one model, then answer the parent's commands.

    Commands, one a line on stdin: ``train`` / ``predict`` (one timed call, answers
    its seconds), ``finish`` (answers the peak memory and exits).
    """
    started = time.perf_counter()
    import keras

    import keras_lmu

    imported = time.perf_counter()
    model, x, y = build_model(spec)
    built = time.perf_counter()
    info = {
        "import_s": imported - started,
        "build_s": built - imported,
        "rss_after_build_kib": _proc_status_kib("VmRSS"),
        "peak_rss_after_build_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "backend": keras.backend.backend(),
        "keras_lmu_file": keras_lmu.__file__,
        "versions": child_versions(),
        "parameters": int(model.count_params()),
        "accelerator": accelerator(),
    }
    if info["accelerator"]:
        info["accelerator_bytes_after_build"] = accelerator_memory()["now"]
    if hasattr(model.layers[1], "uses_parallel_form"):
        info["parallel_form"] = bool(model.layers[1].uses_parallel_form())
    start = time.perf_counter()
    info["first_loss"] = float(model.train_on_batch(x, y))
    info["compile_train_s"] = time.perf_counter() - start
    if info["compile_train_s"] > spec.get("skip_limit", math.inf):
        info["skipped"] = True  # too slow to time: only its first training step
        send({"ready": info})
        sys.stdin.readline()  # "finish"
        send(finish_message(info))
        return
    start = time.perf_counter()
    model.predict_on_batch(x)
    info["compile_predict_s"] = time.perf_counter() - start
    # A step-by-step model whose first step takes many seconds runs no warm-up step
    # beyond that first one (which is not timed either).
    info["warmup"] = info["compile_train_s"] <= spec.get("warmup_limit", math.inf)
    if info["warmup"]:
        start = time.perf_counter()
        model.train_on_batch(x, y)
        info["warmup_train_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model.predict_on_batch(x)
        info["warmup_predict_s"] = time.perf_counter() - start
    send({"ready": info})
    for line in sys.stdin:
        command = line.strip()
        if command == "train":
            start = time.perf_counter()
            loss = model.train_on_batch(x, y)
            send({"train_s": time.perf_counter() - start, "loss": float(loss)})
        elif command == "predict":
            start = time.perf_counter()
            model.predict_on_batch(x)
            send({"predict_s": time.perf_counter() - start})
        elif command == "finish":
            send(finish_message(info))
            return


def finish_message(info: dict) -> dict:
    message = {
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vm_hwm_kib": _proc_status_kib("VmHWM"),
        "rss_end_kib": _proc_status_kib("VmRSS"),
        "cpu_s": cpu_seconds(resource.RUSAGE_SELF),
    }
    if info.get("accelerator"):
        message["accelerator_peak_bytes"] = accelerator_memory()["peak"]
    return message


def cpu_seconds(who) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def matmul_peak() -> dict:
    """Float32 GFLOP/s of a NumPy 2048 x 2048 matrix product, best of 5."""
    import numpy as np

    size = 2048
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return {"gflops": 2 * size**3 / best / 1e9, "seconds": best, "size": size}


def spec_for(runner: dict, spec: dict) -> dict:
    """The model ``runner`` builds for ``spec``: keras-lmu takes ``peer_conv_mode``
    where this library's ``conv_mode`` is one that keras-lmu does not have."""
    if runner["library"] == PEER and "peer_conv_mode" in spec:
        return dict(spec, conv_mode=spec["peer_conv_mode"])
    return spec


class Child:
    """One benchmark process, driven line by line through its stdin and stdout."""

    def __init__(self, runner: dict, spec: dict):
        self.runner = runner
        self.spec = spec
        self.result = {
            "runner": runner["name"],
            "library": runner["library"],
            "backend": runner["backend"],
            "train_s": [],
            "predict_s": [],
        }
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, KERAS_BACKEND=runner["backend"], TF_CPP_MIN_LOG_LEVEL="2")
        env.pop("JAX_ENABLE_X64", None)
        command = [runner["python"], HERE, "--child", json.dumps(spec_for(runner, spec))]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            cwd=BENCH_DIR,
        )
        self.buffer = b""
        self.alive = True

    def read(self, timeout: float = CHILD_TIMEOUT_S) -> dict | None:
        """The child's next message, or None (recording why) if it died or hung."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                if line.startswith(b"BENCH "):
                    return json.loads(line[len(b"BENCH ") :])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.fail(f"no answer within {timeout:.0f} s")
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.process.wait()
                    self.fail(f"exited with status {self.process.returncode}")
                    return None
                self.buffer += chunk

    def ask(self, command: str) -> dict | None:
        if not self.alive:
            return None
        try:
            self.process.stdin.write((command + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            self.process.wait()
            self.fail(f"exited with status {self.process.returncode}")
            return None
        return self.read()

    def fail(self, why: str):
        self.alive = False
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr.seek(0)
        lines = [
            line
            for line in self.stderr.read().decode(errors="replace").splitlines()
            if line.strip()
        ]
        self.result["error"] = why
        self.result["error_message"] = error_message(lines)
        self.result["stderr_tail"] = "\n".join(lines[-15:])[-3000:]

    def close(self):
        if self.alive:
            message = self.ask("finish")
            if message:
                self.result.update(message)
            self.process.stdin.close()
            self.process.wait()
        self.stderr.close()


def error_message(lines: list[str]) -> str:
    """The most telling line of a child's stderr: its exception or abort message."""
    for line in reversed(lines):
        text = line.strip()
        if "Error" in text.split(":")[0] or "Exception" in text.split(":")[0]:
            return text[:500]
    for line in reversed(lines):
        if any(word in line for word in ("Check failed", "Abort", "abort", "Fatal", "F0000")):
            return line.strip()[:500]
    return lines[-1].strip()[:500] if lines else ""


def timed_repeats(seconds: float, args) -> int:
    return min(args.repeats, max(args.min_repeats, math.ceil(args.budget / max(seconds, 1e-6))))


def run_spec(spec: dict, runners: list[dict], args, rotation: int) -> list[dict]:
    """Time ``spec`` in one process per runner, the timed steps alternating between them."""
    order = runners[rotation % len(runners) :] + runners[: rotation % len(runners)]
    children = []
    for runner in order:  # one at a time: compile times are not shared with another process
        limits = {"warmup_limit": args.warmup_limit, "skip_limit": args.skip_limit}
        child = Child(runner, dict(spec, **limits))
        started = time.perf_counter()
        message = child.read()
        child.result["start_to_ready_s"] = time.perf_counter() - started
        if message is None:
            print(format_line(spec, child.result), flush=True)
            child.close()
            children.append(child)
            continue
        info = message["ready"]
        child.result.update(info)
        if info.get("skipped"):
            train_steps = 0
            child.result["note"] = (
                f"first training step {info['compile_train_s']:.0f} s > {args.skip_limit:g} s "
                "(--skip-limit): not timed further, no inference"
            )
        elif not info["warmup"]:
            train_steps = args.slow_repeats
            if info["compile_train_s"] > args.very_slow_limit:
                train_steps = 1
            child.result["note"] = (
                f"first step {info['compile_train_s']:.1f} s > {args.warmup_limit:g} s: "
                f"no warm-up step beyond it, {train_steps} timed step"
                + ("s" if train_steps > 1 else "")
            )
        elif info["warmup_train_s"] > args.slow_limit:
            train_steps = args.slow_repeats
            child.result["note"] = (
                f"warm-up step {info['warmup_train_s']:.1f} s > {args.slow_limit:g} s: "
                f"{train_steps} timed steps"
            )
        else:
            train_steps = timed_repeats(info["warmup_train_s"], args)
        child.result["planned_steps"] = train_steps
        children.append(child)
    for round_index in range(max((c.result.get("planned_steps", 0) for c in children), default=0)):
        shift = round_index % max(len(children), 1)
        for child in children[shift:] + children[:shift]:
            if not child.alive or round_index >= child.result["planned_steps"]:
                continue
            message = child.ask("train")
            if message is None:
                continue
            child.result["train_s"].append(message["train_s"])
            child.result["last_loss"] = message["loss"]
            message = child.ask("predict")
            if message is not None:
                child.result["predict_s"].append(message["predict_s"])
    results = []
    for child in children:
        child.close()
        result = child.result
        result["train"] = summary(result["train_s"])
        result["predict"] = summary(result["predict_s"])
        result["load_average"] = os.getloadavg()[0]
        for key in ("first_loss", "last_loss"):
            if key in result and not math.isfinite(result[key]):
                result.setdefault("warnings", []).append(f"{key} is {result[key]}")
        print(format_line(spec, result), flush=True)
        results.append(result)
    by_name = {r["runner"]: r for r in results}
    return [by_name[runner["name"]] for runner in runners if runner["name"] in by_name]


def format_line(spec: dict, result: dict) -> str:
    head = f"{spec['case']:15s} {describe(spec):36s} {result['runner']:22s}"
    if result.get("error") and not result.get("train_s"):
        return f"{head} ERROR {result['error']}: {result.get('error_message', '')}"
    if not result.get("train_s"):
        first = result.get("compile_train_s")
        return f"{head} no timed steps" + (f" (first step {first:.1f} s)" if first else "")
    train, predict = summary(result["train_s"]), summary(result["predict_s"])
    text = (
        f"{head} first {result['compile_train_s']:6.2f} s  train {1000 * train['median_s']:8.1f} "
        f"ms [{1000 * train['min_s']:.1f}-{1000 * train['max_s']:.1f}] n={train['n']}"
    )
    if predict:
        text += f"  predict {1000 * predict['median_s']:8.1f} ms"
    if "peak_rss_kib" in result:
        text += f"  peak RSS {result['peak_rss_kib'] / 1024:.0f} MiB"
        text += f" (+{(result['peak_rss_kib'] - result['rss_after_build_kib']) / 1024:.0f})"
    if result.get("error"):
        text += f"  ERROR {result['error']}"
    return text


# -- the parent process ---------------------------------------------------------------


def ensure_peer_venv() -> str:
    """``benchmarks/peer-venv`` with keras-lmu 0.9.0, created if missing; its version."""
    check = [
        PEER_PYTHON,
        "-c",
        "from importlib.metadata import version; print(version('keras-lmu'))",
    ]
    if os.path.exists(PEER_PYTHON):
        done = subprocess.run(check, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == PEER_VERSION:
            return PEER_VERSION
    python = os.environ.get("PYTHON", "python3.11")
    print(f"creating {PEER_VENV} with keras-lmu=={PEER_VERSION}", flush=True)
    subprocess.run([python, "-m", "venv", PEER_VENV], check=True)
    pip = [os.path.join(PEER_VENV, "bin", "pip"), "install", "--quiet"]
    subprocess.run(pip + [f"keras-lmu=={PEER_VERSION}"], check=True)
    return subprocess.run(check, capture_output=True, text=True, check=True).stdout.strip()


def make_runners(args) -> list[dict]:
    runners = []
    if not args.no_own:
        for backend in args.backends:
            runners.append(
                {
                    "name": f"{OWN} {backend}",
                    "library": OWN,
                    "backend": backend,
                    "python": sys.executable,
                }
            )
    if not args.no_peer:
        runners.append(
            {
                "name": f"{PEER} {PEER_VERSION} tensorflow",
                "library": PEER,
                "backend": "tensorflow",
                "python": PEER_PYTHON,
            }
        )
    return runners


def measure_matmul_peak() -> dict:
    done = subprocess.run(
        [sys.executable, HERE, "--matmul-peak"], capture_output=True, text=True, cwd=BENCH_DIR
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        return {"error": done.stderr.strip()[-500:]}
    return json.loads(lines[-1][len("BENCH ") :])


def host_versions() -> dict:
    from importlib import metadata as package_metadata

    versions = {}
    for name in ("keras-lmu3", "keras", "jax", "jaxlib", "tensorflow-cpu", "tensorflow", "torch"):
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            pass
    try:
        versions["numpy"] = package_metadata.version("numpy")
    except package_metadata.PackageNotFoundError:
        pass
    return versions


def metadata(args, runners) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "load_average_at_start": list(os.getloadavg()),
        "nice": os.nice(0),
        "command": shlex.join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
        "argv": sys.argv[1:],
        "args": {k: v for k, v in vars(args).items() if k not in ("child", "matmul_peak")},
        "versions": host_versions(),
        "runners": [{k: v for k, v in r.items() if k != "python"} for r in runners],
        "environment": {
            key: os.environ[key]
            for key in ("TF_ENABLE_ONEDNN_OPTS", "OMP_NUM_THREADS", "XLA_FLAGS")
            if key in os.environ
        },
    }


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            return round(int(meminfo.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def default_paths(args):
    """``(json, report, plot)``: the options' paths, else the defaults. A full run
    writes the report and plot of the documentation; a ``--quick`` or ``--tiny`` one,
    whose timings are not the documented ones, writes them next to its JSON."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%MZ")
    suffix = "-tiny" if args.tiny else "-quick" if args.quick else ""
    out = args.out or os.path.join(BENCH_DIR, "results", f"bench-{stamp}{suffix}.json")
    if args.tiny or args.quick:
        report = args.report or os.path.splitext(out)[0] + ".md"
        plot = args.plot or os.path.splitext(out)[0] + "-long.png"
        return out, report, plot
    report = args.report or os.path.join(ROOT, "docs", "benchmarks.md")
    plot = args.plot or os.path.join(os.path.dirname(os.path.abspath(report)), "bench_long.png")
    return out, report, plot


def save(data: dict, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        json.dump(data, file, indent=1)


def merge(paths: list[str]) -> dict:
    """The results of several runs as one: a later run's (case, size, runner) replaces
    an earlier one's; the metadata are the first run's, with the others' commands."""
    merged = None
    for path in paths:
        with open(path) as file:
            data = json.load(file)
        meta = data["meta"]
        run = {key: meta.get(key) for key in ("date", "git_commit", "processor")}
        run["path"] = path
        if merged is None:
            merged = data
            merged["meta"]["commands"] = [meta["command"]]
            merged["meta"]["runs"] = [run]
            continue
        merged["meta"]["commands"].append(meta["command"])
        merged["meta"]["runs"].append(run)
        for key in ("total_seconds", "children_cpu_seconds"):
            # a run stopped before its end has neither: then the merged run has none
            if merged["meta"].get(key) is not None and meta.get(key) is not None:
                merged["meta"][key] += meta[key]
            else:
                merged["meta"][key] = None
        if data["meta"].get("load_average_at_end"):
            merged["meta"]["load_average_at_end"] = data["meta"]["load_average_at_end"]
        known = {r["name"] for r in merged["meta"]["runners"]}
        merged["meta"]["runners"] += [r for r in data["meta"]["runners"] if r["name"] not in known]
        merged["matmul_peaks"] += data.get("matmul_peaks", [])
        for result in data["results"]:
            key = (result["case"], describe(result["spec"]), result["runner"])
            merged["results"] = [
                r for r in merged["results"] if (r["case"], describe(r["spec"]), r["runner"]) != key
            ]
            merged["results"].append(result)
    order = {case: index for index, case in enumerate(CASES)}
    merged["results"].sort(key=lambda r: order.get(r["case"], len(order)))  # stable
    return merged


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return
    if args.matmul_peak:
        send(matmul_peak())
        return
    out, report_path, plot_path = default_paths(args)
    if args.report_from:
        write_report(merge(args.report_from), report_path, plot_path, args.report_from, args.notes)
        return
    if not args.no_peer:
        ensure_peer_venv()
    runners = make_runners(args)
    data = {"meta": metadata(args, runners), "matmul_peaks": [], "results": []}
    print(
        f"{data['meta']['processor']}, {data['meta']['cpu_count']} CPUs, load "
        f"{data['meta']['load_average_at_start'][0]:.1f}; runners: "
        + ", ".join(r["name"] for r in runners),
        flush=True,
    )
    start = time.perf_counter()
    rotation = 0
    for case in args.cases:
        case_start = time.perf_counter()
        peak = measure_matmul_peak()
        peak["before_case"] = case
        data["matmul_peaks"].append(peak)
        print(f"-- {case}: NumPy float32 matmul {peak.get('gflops', 0):.0f} GFLOP/s", flush=True)
        for spec in case_specs(case, args):
            results = run_spec(spec, runners, args, rotation)
            rotation += 1
            flops = recurrence_flops(spec)
            for result in results:
                result.update(case=case, spec=spec, forward_flops=flops)
                data["results"].append(result)
            save(data, out)
        seconds = time.perf_counter() - case_start
        data["meta"].setdefault("case_seconds", {})[case] = seconds
        print(f"-- {case}: {seconds:.0f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    data["meta"]["total_seconds"] = time.perf_counter() - start
    # CPU time of all the child processes: over the wall time, how much of the
    # machine the benchmark had (2.0 = both cores of a 2-core machine)
    data["meta"]["children_cpu_seconds"] = cpu_seconds(resource.RUSAGE_CHILDREN)
    data["meta"]["load_average_at_end"] = list(os.getloadavg())
    save(data, out)
    print(f"wrote {out}", flush=True)
    write_report(data, report_path, plot_path, [out], args.notes)


# -- the report -----------------------------------------------------------------------


def rel(path: str) -> str:
    return os.path.relpath(os.path.abspath(path), ROOT)


def short_ms(seconds: float) -> str:
    milliseconds = 1000 * seconds
    return f"{milliseconds:.0f}" if milliseconds >= 100 else f"{milliseconds:.3g}"


def ms(stats: dict) -> str:
    if not stats:
        return "-"
    return (
        f"{short_ms(stats['median_s'])} [{short_ms(stats['min_s'])}-"
        f"{short_ms(stats['max_s'])}] n={stats['n']}"
    )


def speedup(peer: dict | None, result: dict, kind: str) -> str:
    """keras-lmu's median over this one's: above 1, this one is faster."""
    if not peer or result["library"] == PEER:
        return ""
    mine, theirs = result.get(kind) or {}, peer.get(kind) or {}
    if not mine:
        return "-"
    if not theirs:
        return "keras-lmu failed" if peer.get("error") else "-"
    return f"{theirs['median_s'] / mine['median_s']:.3g}"


def ratio_text(ratio: float, target: float) -> str:
    """``ratio`` to 3 significant digits, or more where 3 would round it to the other
    side of ``target`` (0.9996 against 1 is "0.9996", not "1")."""
    for digits in range(3, 17):
        text = f"{ratio:.{digits}g}"
        if (float(text) >= target) == (ratio >= target):
            return text
    return repr(ratio)


def reads_last_step_only(spec: dict) -> bool:
    """Whether this library computes only the last memory for ``spec``, one
    contraction over time, whatever its ``conv_mode``: a parallel layer that returns
    the last step only, with no hidden cell with state (``keras_lmu.ops.last_step_memory``)."""
    return (
        spec.get("layer") in ("LMU", "LMUFeedforward")
        and not spec.get("return_sequences")
        and spec.get("hidden") in (None, "Dense")
        and not spec.get("hidden_to_memory")
        and not spec.get("memory_to_memory")
    )


#: The speed targets: (case, least training-step speed-up over keras-lmu on the best
#: backend). The recurrent cases aim for 1.5.
SPEED_TARGETS = (
    ("psmnist-ff", 20.0),
    ("seq-ff-fft", 5.0),
    ("seq-ff-raw", 5.0),
    ("seq-ff-full", 1.5),
    ("seq-ff-scan-full", 1.5),
    ("psmnist-rnn", 1.0),
    ("seq-rnn", 1.0),
    ("trainable-theta", 100.0),
)
#: Feedforward cases whose memory use should be at most half of keras-lmu's.
MEMORY_TARGET_CASES = (
    "psmnist-ff",
    "seq-ff-fft",
    "seq-ff-raw",
    "seq-ff-full",
    "seq-ff-scan-full",
)
#: How much faster per training step the parallel psMNIST model should be than an LSTM.
LSTM_TARGET = 50.0


#: What holds on any CPU of why a backend is slow; what was found on one machine goes
#: in a ``--notes`` file instead.
CPU_NOTES = [
    "- Step by step on PyTorch (`psmnist-rnn`, `seq-rnn`, and Keras's own `lstm`): "
    "PyTorch runs the loop over the steps in Python, eagerly, so every step's "
    "operations (and their gradients) are dispatched one by one. `LMU` loops over the "
    "steps itself and calls its cell's `call` directly (`keras_lmu.layer._LMURNN`), "
    "without the per-step work of Keras's generic loop and of `Layer.__call__`, and "
    "the cell calls its hidden cell's `call` the same way "
    "(`keras_lmu.hidden_cells.calls_directly`); `seq-rnn` is Keras's own "
    "`RNN(LMUCell)` loop.",
    "- `seq-rnn` on JAX: Keras's JAX backend runs `keras.layers.RNN` as a `lax.scan` "
    "that stacks every step's output whether or not the layer returns the sequence, "
    "here the memory (16 x 8,192 values a step); `benchmarks/scan_outputs.py` times "
    "the layer against scans of its cell with and without those outputs.",
    '- `seq-ff-full` is `LMUFeedforward`\'s default `conv_mode="fft"` (the default '
    "of keras-lmu's API): it takes an inverse FFT per channel and order over the "
    "whole sequence (131,072 of 1,024 points here), forward and backward, and "
    "keras-lmu's FFT form has the same cost. The same layer with "
    '`conv_mode="scan"` (`seq-ff-scan-full`) computes the same outputs with the '
    'chunked scan; `LMU` (`seq-lmu-full`) with the form its `conv_mode="auto"` picks '
    "for the backend (`keras_lmu.layer.scan_min_steps`).",
]
#: ... and on a GPU.
ACCELERATOR_NOTES = [
    "- Step by step on PyTorch (`psmnist-rnn`, `seq-rnn`): Keras's PyTorch backend "
    "runs the loop over the steps in Python, eagerly: every step's operations (and "
    "their gradients) are separate kernel launches, and the GPU waits on Python. JAX "
    "compiles the loop (`lax.scan`). Keras's own `LSTM` on PyTorch can call cuDNN's "
    "fused LSTM (its default arguments qualify) instead of such a loop.",
    "- The parallel forms are bound by launching kernels, not by arithmetic, at these "
    "sizes: `long` takes about the same time from T = 1,024 to 65,536.",
    "- The targets against keras-lmu and the LSTM are set for the CPU; keras-lmu 0.9.0 "
    "needs TensorFlow's GPU build, which this run did not have.",
]


def target_lines(results: list[dict], notes: list[str] | None = None) -> list[str]:
    """The report's table of targets: each case's ratio per backend, the best, met or not."""
    by_case: dict[str, list[dict]] = {}
    for result in results:
        by_case.setdefault(result["case"], []).append(result)
    own_backends = sorted(
        {r["backend"] for r in results if r["library"] == OWN},
        key=["jax", "tensorflow", "torch"].index,
    )

    def median(result, kind="train"):
        return (result.get(kind) or {}).get("median_s")

    def own(case):
        return {r["backend"]: r for r in by_case.get(case, []) if r["library"] == OWN}

    def peer(case):
        return next((r for r in by_case.get(case, []) if r["library"] == PEER), None)

    def verdict(best, target):
        return "-" if best is None else ("met" if best >= target else "**not met**")

    has_peer = any(r["library"] == PEER for r in results)
    lines = [
        "## Targets (training step unless said; ratios from this run)",
        "",
        "| target | " + " | ".join(own_backends) + " | best | result |",
        "|" + "---|" * (len(own_backends) + 3),
    ]
    for case, target in SPEED_TARGETS:
        if case not in by_case or not has_peer:
            continue
        theirs = median(peer(case)) if peer(case) else None
        ratios = {
            backend: theirs / median(result) if theirs and median(result) else None
            for backend, result in own(case).items()
        }
        known = [r for r in ratios.values() if r is not None]
        best = max(known) if known else None
        cells = [
            f"{ratio_text(ratios[b], target)}x" if ratios.get(b) else "-" for b in own_backends
        ]
        their_result = peer(case)
        if theirs is None and their_result is not None:
            result = (
                f"keras-lmu not timed (first step {their_result['compile_train_s']:.0f} s)"
                if their_result.get("skipped")
                else "keras-lmu failed"
            )
        elif theirs is not None and best is None and own(case):
            result = "**not met** (no timed step here)"
        else:
            result = verdict(best, target)
        best_text = f"{ratio_text(best, target)}x" if best else "-"
        lines.append(
            f"| `{case}` >= {target:g}x keras-lmu | "
            + " | ".join(cells)
            + f" | {best_text} | {result} |"
        )

    def memory_fractions(case, their_case):
        """Each backend's peak RSS increase in ``case`` over keras-lmu's in ``their_case``."""
        their_result = peer(their_case)
        if case not in by_case or not their_result or "peak_rss_kib" not in their_result:
            return None
        their_increase = their_result["peak_rss_kib"] - their_result["rss_after_build_kib"]
        return {
            backend: (r["peak_rss_kib"] - r["rss_after_build_kib"]) / their_increase
            for backend, r in own(case).items()
            if "peak_rss_kib" in r and their_increase > 0
        }

    def memory_row(label, fractions, result):
        best = min(fractions.values()) if fractions else None
        cells = [f"{fractions[b]:.2f}" if b in fractions else "-" for b in own_backends]
        best_text = "-" if best is None else f"{best:.2f}"
        return f"| {label} | " + " | ".join(cells) + f" | {best_text} | {result(best)} |"

    for case in MEMORY_TARGET_CASES:
        label = f"`{case}` peak RSS increase <= 0.5 of keras-lmu's"
        their_result = peer(case)
        if case in by_case and their_result is not None and "peak_rss_kib" not in their_result:
            lines.append(memory_row(label, {}, lambda best: "keras-lmu failed"))
            continue
        fractions = memory_fractions(case, case)
        if fractions is None:
            continue
        lines.append(
            memory_row(
                label,
                fractions,
                lambda best: "-" if best is None else ("met" if best <= 0.5 else "**not met**"),
            )
        )
    fractions = memory_fractions("seq-dense-full", "seq-ff-full")
    if fractions is not None:
        lines.append(
            memory_row(
                "no LMU: `seq-dense-full`'s peak RSS increase over keras-lmu's `seq-ff-full`",
                fractions,
                lambda best: "the floor of `seq-*-full`",
            )
        )
    lstm_medians = [median(r) for r in by_case.get("lstm", []) if median(r)]
    if lstm_medians and "psmnist-ff" in by_case:
        fastest_lstm = min(lstm_medians)
        ratios = {b: fastest_lstm / median(r) for b, r in own("psmnist-ff").items() if median(r)}
        best = max(ratios.values()) if ratios else None
        cells = [
            f"{ratio_text(ratios[b], LSTM_TARGET)}x" if b in ratios else "-" for b in own_backends
        ]
        best_text = "-" if best is None else f"{ratio_text(best, LSTM_TARGET)}x"
        lines.append(
            f"| `psmnist-ff` >= {LSTM_TARGET:g}x the fastest `lstm` | "
            + " | ".join(cells)
            + f" | {best_text} | {verdict(best, LSTM_TARGET)} |"
        )
    if len(lines) == 4:  # no target could be judged (no keras-lmu, no LSTM)
        lines = []
    lines.append("")
    if has_peer:
        lines += [
            "Memory: the increase of the peak RSS over the RSS after imports and model "
            "build (the imports alone differ by framework), as a fraction of keras-lmu's.",
            "",
        ]
    if notes is None:
        on_accelerator = any(r.get("accelerator") for r in results)
        notes = ACCELERATOR_NOTES if on_accelerator else CPU_NOTES
    return lines + ["Where a backend is slow, what is known of why:", ""] + notes + [""]


def write_report(
    data: dict, path: str, plot_path: str, json_paths: list[str], notes_path: str | None = None
):
    meta = data["meta"]
    commands = meta.get("commands") or [meta["command"]]
    results = data["results"]
    peaks = [p["gflops"] for p in data.get("matmul_peaks", []) if "gflops" in p]
    peak = max(peaks) if peaks else None
    plot_written = write_long_plot(results, plot_path)
    peer_versions = next(
        (r.get("versions", {}) for r in results if r["library"] == PEER and r.get("versions")),
        {},
    )
    args = meta.get("args", {})
    has_peer = any(r["library"] == PEER for r in results)
    title = "# Benchmarks: keras-lmu3 side by side with keras-lmu 0.9 and LSTM"
    if not has_peer:
        title = "# Benchmarks: keras-lmu3 on each backend, and LSTM"
    lines = [title, ""]
    if args.get("quick") or args.get("tiny"):
        what = []
        if args.get("tiny"):
            what.append("`--tiny`: small models, not the cases' sizes")
        if args.get("quick"):
            what.append("`--quick`: one timed step per process")
        lines += [
            f"> **Quick run** ({'; '.join(what)}): the numbers are noisy and only show "
            "that every case runs. Run the full benchmark (below) for numbers to cite.",
            "",
        ]
    lines += [
        "Written by [`benchmarks/bench.py`](../benchmarks/bench.py) (its docstring "
        "describes the cases and the method) from "
        + ", ".join(f"`{rel(p)}`" for p in json_paths)
        + ".",
        "",
        f"- Date: {meta['date']} (UTC); "
        + (
            f"total {meta['total_seconds'] / 60:.1f} min"
            if meta.get("total_seconds")
            else "stopped before the end: partial results"
        )
        + (
            f", {meta['children_cpu_seconds'] / 60:.1f} min of CPU time in the benchmark's "
            "processes."
            if meta.get("children_cpu_seconds")
            else "."
        ),
        *merged_run_lines(meta),
        f"- Machine: {meta['processor']}, {meta['cpu_count']} logical CPUs, "
        f"{meta.get('memory_gib')} GiB memory, {meta['machine']}; load average "
        f"{meta['load_average_at_start'][0]:.2f} at the start, "
        f"{(meta.get('load_average_at_end') or [math.nan])[0]:.2f} at the end "
        f"(nice {meta.get('nice')}).",
        *accelerator_lines(results),
        f"- Float32 matmul peak of the CPU (NumPy, 2048 x 2048, best of 5, measured before each "
        f"case): {peak:.0f} GFLOP/s (range "
        f"{min(peaks):.0f}-{max(peaks):.0f})."
        if peak
        else "- Float32 matmul peak: not measured.",
        "- This library: keras-lmu3 "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "keras-lmu3")
        + f"; Python {meta['python']}; commit {meta.get('git_commit')}.",
        "- keras-lmu (its own virtual environment `benchmarks/peer-venv`): "
        + (", ".join(f"{k} {v}" for k, v in peer_versions.items()) or "not run")
        + ".",
        "- Command"
        + ("s (results merged by `--report-from`)" if len(commands) > 1 else "")
        + ": "
        + ", then ".join(f"`{command}`" for command in commands)
        + " (`make bench` runs `benchmarks/bench.py`).",
        "",
        "Times are medians of the timed steps (ms) with [min-max] and their count n; "
        "`first` is the first `train_on_batch` (tracing/compiling included) and the "
        "first `predict_on_batch` (s). *x vs keras-lmu* is keras-lmu's median over this "
        "library's: above 1, this library is faster. Peak RSS is the process's peak "
        "(`ru_maxrss`); `+` is its increase over the RSS after imports and model build. "
        "GFLOP/s is recurrence-equivalent (see the docstring: the step-by-step "
        "recurrence's FLOPs over the time taken, whatever form computed the case, "
        "training counted as 3x forward), so parallel forms can exceed the matmul peak.",
        "",
    ]
    notes = None
    if notes_path:
        with open(notes_path) as file:
            notes = file.read().strip().splitlines()
    lines += target_lines(results, notes)
    groups = group_results(results)
    runners = [r["name"] for r in meta["runners"]]
    if has_peer:
        lines += ratio_table(groups, meta["runners"])
    lines += [
        "## Summary: training-step medians (ms), every library and backend",
        "",
        "The `lstm` rows give a Keras LSTM's step on the same psMNIST input for scale.",
        "",
    ]
    header = ["case", "size"] + [name.replace(f"{OWN} ", "") for name in runners]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (case, size), group in groups.items():
        by_runner = {r["runner"]: r for r in group}
        row = [f"`{case}`", size]
        for name in runners:
            result = by_runner.get(name)
            if result is None:
                row.append("-")
            elif result.get("train"):
                row.append(short_ms(result["train"]["median_s"]))
            elif result.get("skipped"):
                row.append(f"first step {result['compile_train_s']:.0f} s, not timed")
            else:
                row.append("failed")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Every case", ""]
    for (case, size), group in groups.items():
        spec = group[0]["spec"]
        flops = group[0]["forward_flops"]
        last_step = (
            " Only the last step is read: this library computes the last memory alone, "
            "one contraction over time, whatever `conv_mode`."
            if reads_last_step_only(spec)
            else ""
        )
        lines += [
            f"### `{case}`: {size}",
            "",
            f"`{layer_description(spec)}`; recurrence FLOPs per forward pass "
            f"{flops / 1e9:.2f} G.{last_step}",
            "",
            "| library / backend | train (ms) | x vs keras-lmu | predict (ms) | x vs keras-lmu "
            "| first train / predict (s) | peak RSS (MiB) "
            "| recurrence-equivalent GFLOP/s train / predict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        peer = next((r for r in group if r["library"] == PEER), None)
        notes = []
        for result in group:
            name = result["runner"]
            if result.get("parallel_form") is not None:
                name += " (parallel)" if result["parallel_form"] else " (step by step)"
            their_mode = spec_for(result, spec).get("conv_mode")
            if their_mode != spec.get("conv_mode"):
                name += f' (conv_mode="{their_mode}")'
            if result.get("error") and not result.get("train"):
                message = result.get("error_message") or ""
                lines.append(
                    f"| {name} | failed: {result['error']} | | | | | | |"
                    if not message
                    else f"| {name} | failed: {result['error']}: `{message}` | | | | | | |"
                )
                continue
            train, predict = result.get("train") or {}, result.get("predict") or {}
            rates = []
            for stats, factor in ((train, 3), (predict, 1)):
                rates.append(f"{factor * flops / stats['median_s'] / 1e9:.3g}" if stats else "-")
            peak_text = "-"
            if "peak_rss_kib" in result:
                increase = result["peak_rss_kib"] - result["rss_after_build_kib"]
                peak_text = f"{result['peak_rss_kib'] / 1024:.0f} (+{increase / 1024:.0f})"
            if result.get("accelerator_peak_bytes") is not None:
                increase = result["accelerator_peak_bytes"] - (
                    result.get("accelerator_bytes_after_build") or 0
                )
                peak_text += (
                    f"; GPU {result['accelerator_peak_bytes'] / 2**20:.0f} "
                    f"(+{increase / 2**20:.0f})"
                )
            first = " / ".join(
                f"{result[key]:.2f}" if key in result else "-"
                for key in ("compile_train_s", "compile_predict_s")
            )
            lines.append(
                f"| {name} | {ms(train)} | {speedup(peer, result, 'train')} | {ms(predict)} "
                f"| {speedup(peer, result, 'predict')} | {first} | {peak_text} "
                f"| {' / '.join(rates)} |"
            )
            if result.get("note"):
                notes.append(f"{result['runner']}: {result['note']}.")
            if result.get("error"):
                notes.append(f"{result['runner']}: {result['error']} after the timed steps.")
            for warning in result.get("warnings", []):
                notes.append(f"{result['runner']}: {warning}.")
        lines.append("")
        if notes:
            lines += [f"- {note}" for note in notes] + [""]
    if plot_written:
        lines += [
            "## `long`: time and memory against sequence length",
            "",
            f"![Training-step time and peak RSS against T, log-log]({rel(plot_path)[5:]})"
            if rel(plot_path).startswith("docs/")
            else f"![Training-step time and peak RSS against T]({os.path.abspath(plot_path)})",
            "",
        ]
    failures = [r for r in results if r.get("error")]
    lines += ["## Failures", ""]
    if not failures:
        lines += ["None.", ""]
    for result in failures:
        lines += [
            f"- `{result['case']}` ({describe(result['spec'])}), {result['runner']}: "
            f"{result['error']}; `{result.get('error_message', '')}`",
        ]
    lines.append("")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        file.write("\n".join(lines))
    print(f"wrote {path}" + (f" and {plot_path}" if plot_written else ""), flush=True)


def merged_run_lines(meta: dict) -> list[str]:
    """The report's line naming each run of a merged report: its file, date, commit and
    processor (the machine, versions and date above are the first run's)."""
    runs = meta.get("runs") or []
    if len(runs) < 2:
        return []
    return [
        "- Runs merged (the date, machine and versions here are the first's): "
        + "; ".join(
            f"`{rel(run['path'])}` ({run['date']}, commit {run['git_commit']}, {run['processor']})"
            for run in runs
        )
        + "."
    ]


def accelerator_lines(results: list[dict]) -> list[str]:
    """The report's line naming the accelerators the runners computed on, if any."""
    devices = {}
    for result in results:
        if result.get("accelerator"):
            devices.setdefault(result["accelerator"], set()).add(result["runner"])
    if not devices:
        return []
    return [
        "- Accelerator: "
        + "; ".join(
            f"{device} ({', '.join(sorted(runners))})" for device, runners in devices.items()
        )
        + ". The peak-memory columns add the accelerator's peak bytes in use as its "
        "backend counts them (`GPU`, MiB, + over the bytes in use after the model build)."
    ]


def ratio_table(groups: dict, runners: list[dict]) -> list[str]:
    """The report's table of ratios to keras-lmu, training step / inference, per case."""
    own_runners = [r["name"] for r in runners if r["library"] == OWN]
    peer_runner = next((r["name"] for r in runners if r["library"] == PEER), None)
    lines = [
        "## Summary: x vs keras-lmu, training step / inference (above 1: keras-lmu3 faster)",
        "",
    ]
    header = ["case", "size"] + [name.replace(f"{OWN} ", "") for name in own_runners]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (case, size), group in groups.items():
        by_runner = {r["runner"]: r for r in group}
        peer = by_runner.get(peer_runner)
        row = [f"`{case}`", size]
        for name in own_runners:
            result = by_runner.get(name)
            if result is None:
                row.append("-")
            elif result.get("error") and not result.get("train"):
                row.append("failed")
            elif peer is not None and peer.get("error") and not peer.get("train"):
                row.append("keras-lmu failed")
            else:
                ratios = [speedup(peer, result, kind) or "-" for kind in ("train", "predict")]
                row.append(" / ".join(ratios))
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def group_results(results: list[dict]) -> dict:
    groups = {}
    for result in results:
        groups.setdefault((result["case"], describe(result["spec"])), []).append(result)
    return groups


def peak_memory_kib(result: dict, on_accelerator: bool) -> float | None:
    """A result's peak memory: the accelerator's bytes in use, else the peak RSS."""
    if on_accelerator:
        peak = result.get("accelerator_peak_bytes")
        return None if peak is None else peak / 1024
    return result.get("peak_rss_kib")


def write_long_plot(results: list[dict], path: str) -> bool:
    """Log-log plot of training-step time and peak RSS against T for ``long``."""
    long = [r for r in results if r["case"] == "long"]
    if not long:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    on_accelerator = any(r.get("accelerator_peak_bytes") is not None for r in long)
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for runner in dict.fromkeys(r["runner"] for r in long):
        points = sorted(
            (r["spec"]["steps"], r["train"]["median_s"], peak_memory_kib(r, on_accelerator))
            for r in long
            if r["runner"] == runner and r.get("train")
        )
        if not points:
            continue
        steps = [p[0] for p in points]
        time_axis.plot(steps, [p[1] for p in points], "o-", label=runner)
        memory_axis.plot(steps, [(p[2] or math.nan) / 1024 for p in points], "o-", label=runner)
    memory_label = "peak GPU memory (MiB)" if on_accelerator else "peak RSS (MiB)"
    for axis, label in ((time_axis, "training step (s)"), (memory_axis, memory_label)):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("sequence length T")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=8)
    figure.suptitle("long: LMU(1, 256, theta=4096, None, return_sequences=True), batch 1")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


if __name__ == "__main__":
    main()
