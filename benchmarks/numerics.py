#!/usr/bin/env python
"""float32 accuracy of every way the LMU memory is computed, against float64 NumPy.

For each memory (order, theta, discretizer ``zoh``/``euler``; euler only where it is
stable, ``theta >= keras_lmu.legendre.euler_stability_bound(order)``) and each
sequence length, the script feeds one fixed input (memory_d 1, batch 1, no encoder:
``kernel_initializer=None``) to each path and reports the largest error of its
memory, relative to the largest absolute value of the float64 reference memory over
the same steps::

    max |memory - reference| / max |reference|

Paths (all float32; the parallel layers are called eagerly, as ``layer(inputs)``, the
step-by-step ones in a compiled ``keras.Model.predict``):

``fft``, ``raw``, ``scan``
    ``LMUFeedforward(conv_mode=...)`` with every step returned (``raw`` with the full
    impulse response, ``truncate_ir=None``).
``last``
    ``LMUFeedforward(return_sequences=False)``: one contraction over time; only the
    final memory is compared.
``recurrent``
    ``keras.layers.RNN(LMUCell(...), return_sequences=True)``: one step at a time.
``masked``
    ``LMU(return_sequences=True)`` called with a mask that keeps every step: the
    parallel form under a mask, which gathers the unmasked steps (here all of them)
    and computes their memory with the ``conv_mode`` that ``LMU`` picks (until
    2026-11-28 it computed the memory step by step, with ``ops.scan``).
``fft-theta``, ``scan-theta``, ``last-theta``
    As ``fft``, ``scan`` and ``last`` with ``trainable_theta=True``: the memory is
    discretized and its impulse response (or the scan's powers of ``A_bar``) built in
    the graph, in float32, by repeated squaring.

The reference is float64: ``A_bar, B_bar`` from ``keras_lmu.legendre`` (zoh by
``scipy.linalg.expm``), the impulse response ``H[k] = A_bar^k B_bar`` by doubling
(``H[n:2n] = A_bar^n H[:n]``) and the memory by a float64 FFT convolution of the input
with ``H``. It is checked against two other float64 computations, and the largest
relative differences are reported with the results: the step loop
``keras_lmu.legendre.impulse_response`` (first steps of ``H``) and the plain
recurrence ``m_t = A_bar m_{t-1} + B_bar u_t`` (every step for order <= 256, the first
``--check-steps`` steps for larger orders, whose loop takes ~1.6 ms a step).
References are cached in ``--cache`` (float64 .npy files) and reused by the runs on
the other backends.

To keep each backend's run within minutes on a 2-core machine the layers are given
the float64 response computed by doubling instead of computing it with
``legendre.impulse_response``'s step loop (which takes ~160 s for order 1024 and
100,000 steps): the two agree to ~1e-13 (reported), far below float32 rounding.
Skipped, with the reason in the output: ``raw`` when ``steps^2 * order`` exceeds
``RAW_MAX_WORK`` (a direct convolution of O(steps^2 * order)), ``recurrent`` when
``steps * order`` exceeds ``STEP_BY_STEP_MAX_WORK``, and euler below
its stability bound.

Usage::

    nice -n 10 python benchmarks/numerics.py --backend jax
    nice -n 10 python benchmarks/numerics.py --backend torch --orders 64 256 --steps 1000

prints a table and writes ``benchmarks/results/numerics-<backend>.json``. The results
are discussed in ``docs/numerics.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
from parallel import accelerator, positive_float, positive_int

BACKENDS = ("jax", "tensorflow", "torch")
PATHS = (
    "fft",
    "raw",
    "scan",
    "last",
    "recurrent",
    "masked",
    "fft-theta",
    "scan-theta",
    "last-theta",
)
HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
#: Largest ``steps^2 * order`` run with ``conv_mode="raw"`` (10,000 steps at order 256).
RAW_MAX_WORK = 10_000**2 * 256
#: Largest ``steps * order`` run one step at a time (10,000 steps at order 1024,
#: 100,000 at order 64).
STEP_BY_STEP_MAX_WORK = 10_000 * 1024
#: Rows of a (steps, order) array handled at once when comparing or convolving.
BLOCK = 8192


# -- the float64 reference ---------------------------------------------------------------


def input_signal(kind: str, steps: int) -> np.ndarray:
    """The input ``u`` (steps,): uniform noise in [-1, 1] (seed 0), or a unit step."""
    if kind == "noise":
        return np.random.default_rng(0).uniform(-1.0, 1.0, steps)
    if kind == "step":
        return np.ones(steps)
    raise ValueError(f"unknown input {kind!r}")


def doubling_response(A_bar: np.ndarray, B_bar: np.ndarray, steps: int) -> np.ndarray:
    """float64 ``H[k] = A_bar^k B_bar`` for ``k < steps``: ``H[n:2n] = A_bar^n H[:n]``."""
    response = np.empty((steps, A_bar.shape[0]))
    response[0] = B_bar
    filled, power = 1, A_bar.copy()
    while filled < steps:
        count = min(filled, steps - filled)
        response[filled : filled + count] = response[:count] @ power.T
        filled += count
        if filled < steps:
            power = power @ power
    return response


def fft_convolution(signal: np.ndarray, response: np.ndarray) -> np.ndarray:
    """float64 ``m_t = sum_k H[k] u_{t-k}`` for every step, by FFT, a block of columns
    at a time."""
    steps, order = response.shape
    length = 1 << (2 * steps - 1).bit_length()
    signal_spectrum = np.fft.rfft(signal, length)
    memory = np.empty((steps, order))
    columns = 64
    for start in range(0, order, columns):
        block = np.fft.rfft(response[:, start : start + columns].T, length, axis=1)
        memory[:, start : start + columns] = np.fft.irfft(block * signal_spectrum, length)[
            :, :steps
        ].T
    return memory


def sequential_memory(A_bar: np.ndarray, B_bar: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """float64 ``m_t = A_bar m_{t-1} + B_bar u_t`` (``m_{-1} = 0``), one step at a time."""
    memory = np.empty((len(signal), A_bar.shape[0]))
    state = np.zeros(A_bar.shape[0])
    for t, value in enumerate(signal):
        state = A_bar @ state + B_bar * value
        memory[t] = state
    return memory


def relative_error(result: np.ndarray, reference: np.ndarray) -> float:
    """``max |result - reference| / max |reference|``, a block of rows at a time."""
    worst_error = worst_value = 0.0
    for start in range(0, len(reference), BLOCK):
        expected = np.asarray(reference[start : start + BLOCK], dtype=np.float64)
        got = np.asarray(result[start : start + BLOCK], dtype=np.float64)
        worst_error = max(worst_error, float(np.abs(got - expected).max()))
        worst_value = max(worst_value, float(np.abs(expected).max()))
    return worst_error / worst_value


class Reference:
    """The float64 system, response and memory of one (order, theta, discretizer, input),
    cached on disk."""

    def __init__(
        self,
        order: int,
        theta: float,
        discretizer: str,
        input_kind: str,
        steps: int,
        cache: str,
        check_steps: int,
    ):
        from keras_lmu import legendre

        self.order, self.theta, self.discretizer, self.steps = order, theta, discretizer, steps
        self.signal = input_signal(input_kind, steps)
        self.A_bar, self.B_bar = legendre.discrete_system(order, theta, discretizer)
        stem = os.path.join(cache, f"{input_kind}-{discretizer}-o{order}-t{theta:g}-s{steps}")
        metadata_file = stem + ".json"
        if os.path.exists(metadata_file):
            with open(metadata_file) as file:
                self.checks = json.load(file)
            self.response = np.load(stem + "-response.npy", mmap_mode="r")
            self.memory = np.load(stem + "-memory.npy", mmap_mode="r")
            return
        os.makedirs(cache, exist_ok=True)
        started = time.perf_counter()
        response = doubling_response(self.A_bar, self.B_bar, steps)
        memory = fft_convolution(self.signal, response)
        loop_steps = min(steps, 2048)
        looped = legendre.impulse_response(self.A_bar, self.B_bar, loop_steps)
        sequential_steps = steps if order <= 256 else min(steps, check_steps)
        sequential = sequential_memory(self.A_bar, self.B_bar, self.signal[:sequential_steps])
        last_by_sum = response[::-1].T @ self.signal  # m_{T-1} = sum_t H[T-1-t] u_t
        self.checks = {
            "response_doubling_vs_loop": relative_error(response[:loop_steps], looped),
            "response_loop_steps": loop_steps,
            "memory_fft_vs_recurrence": relative_error(memory[:sequential_steps], sequential),
            "recurrence_steps": sequential_steps,
            "last_fft_vs_sum": relative_error(memory[-1], last_by_sum),
            "reference_max": float(np.abs(memory).max()),
            "finite": bool(np.isfinite(memory).all()),
            "seconds": time.perf_counter() - started,
        }
        np.save(stem + "-response.npy", response)
        np.save(stem + "-memory.npy", memory)
        with open(metadata_file, "w") as file:
            json.dump(self.checks, file)
        self.response = np.load(stem + "-response.npy", mmap_mode="r")
        self.memory = np.load(stem + "-memory.npy", mmap_mode="r")


# -- the float32 paths ---------------------------------------------------------------------


class SharedFloat64Constants:
    """Hands the layers the reference's float64 ``A_bar, B_bar`` and response instead of
    recomputing them (an expm, and a step loop of ~1.6 ms a step at order 1024)."""

    def __init__(self):
        from keras_lmu import legendre

        self.legendre = legendre
        self.original_discrete_system = legendre.discrete_system
        self.original_impulse_response = legendre.impulse_response
        self.reference: Reference | None = None
        legendre.discrete_system = self.discrete_system
        legendre.impulse_response = self.impulse_response

    def discrete_system(self, order: int, theta: float, discretizer: str = "zoh"):
        reference = self.reference
        if reference is not None and (order, theta, discretizer) == (
            reference.order,
            reference.theta,
            reference.discretizer,
        ):
            return reference.A_bar, reference.B_bar
        return self.original_discrete_system(order, theta, discretizer)

    def impulse_response(self, A_bar: np.ndarray, B_bar: np.ndarray, steps: int) -> np.ndarray:
        reference = self.reference
        if reference is not None and A_bar is reference.A_bar and steps <= reference.steps:
            return np.asarray(reference.response[:steps])
        return self.original_impulse_response(A_bar, B_bar, steps)


def path_memory(path: str, order: int, theta: float, discretizer: str, signal: np.ndarray):
    """The float32 memory that ``path`` computes for ``signal``: (steps, order), or
    (order,) for the last-step paths."""
    import keras

    import keras_lmu

    inputs = signal.astype("float32").reshape(1, -1, 1)
    common = {"kernel_initializer": None, "discretizer": discretizer}
    if path in ("recurrent", "masked"):
        # In a compiled model (model.predict): TensorFlow's eager loop takes ~5 ms a step.
        sequence = keras.Input(batch_shape=inputs.shape)
        if path == "recurrent":
            cell = keras_lmu.LMUCell(1, order, theta, None, **common)
            layer = keras.layers.RNN(cell, return_sequences=True)
            model = keras.Model(sequence, layer(sequence))
            return model.predict(inputs, batch_size=1, verbose=0)[0]
        layer = keras_lmu.LMU(1, order, theta, None, return_sequences=True, **common)
        mask = keras.Input(batch_shape=inputs.shape[:2], dtype="bool")
        model = keras.Model([sequence, mask], layer(sequence, mask=mask))
        keep = np.ones(inputs.shape[:2], dtype=bool)
        return model.predict([inputs, keep], batch_size=1, verbose=0)[0]
    mode, _, variant = path.partition("-")
    last = mode == "last"
    layer = keras_lmu.LMUFeedforward(
        1,
        order,
        theta,
        None,
        conv_mode="fft" if last else mode,
        truncate_ir=None,
        return_sequences=not last,
        trainable_theta=variant == "theta",
        **common,
    )
    memory = keras.ops.convert_to_numpy(layer(inputs))[0]
    return memory


def skip_reason(
    path: str, order: int, steps: int, step_by_step_max_work: int = STEP_BY_STEP_MAX_WORK
) -> str | None:
    """Why ``path`` is not run at this size, or None."""
    if path == "raw" and steps**2 * order > RAW_MAX_WORK:
        return f"raw: steps^2 * order > {RAW_MAX_WORK:.3g} (O(steps^2) direct convolution)"
    if path == "recurrent" and steps * order > step_by_step_max_work:
        return f"step by step: steps * order > {step_by_step_max_work:.3g}"
    return None


def auto_path(order: int, steps: int) -> str:
    """The ``conv_mode`` that ``LMU(conv_mode="auto", return_sequences=True)`` takes for a
    plain memory (memory_d 1) on this backend; with ``return_sequences=False`` and no
    hidden cell with state it reads only the last step (the ``last`` path)."""
    import keras_lmu

    layer = keras_lmu.LMU(1, order, 1000.0, None, return_sequences=True)
    return layer._resolved_conv_mode(steps)


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace, partial_file: str | None = None) -> dict:
    import keras

    from keras_lmu import legendre

    backend = keras.backend.backend()
    warnings.simplefilter("ignore")
    shared = SharedFloat64Constants()
    max_steps = max(args.steps)
    rows, references = [], []
    started = time.perf_counter()
    for order in args.orders:
        bound = legendre.euler_stability_bound(order)
        for discretizer in args.discretizers:
            for theta in args.thetas:
                if discretizer == "euler" and theta < bound:
                    print(f"skip euler order {order} theta {theta:g}: unstable below {bound:.1f}")
                    continue
                reference = Reference(
                    order, theta, discretizer, args.input, max_steps, args.cache, args.check_steps
                )
                shared.reference = reference
                references.append(
                    {"order": order, "theta": theta, "discretizer": discretizer, **reference.checks}
                )
                for steps in sorted(args.steps):
                    for path in args.paths:
                        row = {
                            "backend": backend,
                            "path": path,
                            "order": order,
                            "theta": theta,
                            "discretizer": discretizer,
                            "steps": steps,
                            "input": args.input,
                        }
                        reason = skip_reason(path, order, steps, args.step_by_step_max_work)
                        if reason is not None:
                            rows.append({**row, "skipped": reason})
                            continue
                        tic = time.perf_counter()
                        try:
                            memory = path_memory(
                                path, order, theta, discretizer, reference.signal[:steps]
                            )
                        except Exception as error:  # reported, and the grid goes on
                            rows.append({**row, "failed": f"{type(error).__name__}: {error}"})
                            print(f"FAILED {row}: {error}", flush=True)
                            continue
                        seconds = time.perf_counter() - tic
                        expected = reference.memory[:steps]
                        if path.startswith("last"):
                            expected = expected[-1]
                        row.update(
                            error=relative_error(memory, expected),
                            finite=bool(np.isfinite(memory).all()),
                            seconds=round(seconds, 3),
                            peak_mb=round(peak_memory_mb()),
                        )
                        rows.append(row)
                        print(format_row(row), flush=True)
                        del memory
                        if partial_file:  # so that an interrupted run keeps its rows
                            with open(partial_file, "w") as file:
                                json.dump({"backend": backend, "rows": rows}, file)
    shared.reference = None
    return {
        "backend": backend,
        "input": args.input,
        "arguments": {key: value for key, value in vars(args).items() if key != "backend"},
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "load_average": os.getloadavg(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "accelerator": accelerator(),
        },
        "versions": versions(),
        "auto_conv_mode": {
            f"order {order}, steps {steps}": auto_path(order, steps)
            for order in args.orders
            for steps in args.steps
        },
        "references": references,
        "rows": rows,
    }


def versions() -> dict:
    import keras
    import scipy

    found = {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__}
    found["keras"] = keras.__version__
    backend = keras.backend.backend()
    module = __import__(backend)
    found[backend] = module.__version__
    return found


def format_row(row: dict) -> str:
    head = (
        f"{row['backend']:<10} {row['path']:<10} order {row['order']:>4} "
        f"theta {row['theta']:>8g} {row['discretizer']:<5} steps {row['steps']:>6}"
    )
    if "skipped" in row:
        return f"{head}  skipped ({row['skipped']})"
    if "failed" in row:
        return f"{head}  FAILED ({row['failed']})"
    flag = "" if row["finite"] else "  NON-FINITE"
    return f"{head}  error {row['error']:.2e}  {row['seconds']:7.2f} s{flag}"


def print_summary(result: dict) -> None:
    """Worst error per path, and the references' self-checks."""
    print(f"\n{result['backend']}: worst relative error per path ({result['input']} input)")
    for path in PATHS:
        measured = [row for row in result["rows"] if row["path"] == path and "error" in row]
        if not measured:
            continue
        worst = max(measured, key=lambda row: row["error"])
        print(
            f"  {path:<10} {worst['error']:.2e} at order {worst['order']}, theta "
            f"{worst['theta']:g}, {worst['discretizer']}, {worst['steps']} steps "
            f"({len(measured)} runs)"
        )
    checks = result["references"]
    if not checks:
        print("  nothing measured: every memory asked for was skipped (see above)")
        return
    for key in ("response_doubling_vs_loop", "memory_fft_vs_recurrence", "last_fft_vs_sum"):
        print(f"  reference check {key}: worst {max(check[key] for check in checks):.1e}")


def markdown_report(files: list[str]) -> str:
    """Markdown tables from result files: the worst error per backend and path, then per
    memory (the worst over the sequence lengths run) for each backend."""
    results = []
    for name in files:
        with open(name) as file:
            results.append(json.load(file))
    rows = [row for result in results for row in result["rows"] if "error" in row]
    backends = [backend for backend in BACKENDS if any(row["backend"] == backend for row in rows)]
    paths = [path for path in PATHS if any(row["path"] == path for row in rows)]
    lines = ["| path | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
    for path in paths:
        cells = []
        for backend in backends:
            measured = [row for row in rows if row["path"] == path and row["backend"] == backend]
            if not measured:
                cells.append("-")
                continue
            worst = max(measured, key=lambda row: row["error"])
            cells.append(
                f"{worst['error']:.1e} ({worst['order']}, {worst['theta']:g}, "
                f"{worst['discretizer']}, {worst['steps']})"
            )
        lines.append(f"| {path} | " + " | ".join(cells) + " |")
    for backend in backends:
        title = f"{backend}: worst error over the sequence lengths run (steps of the worst)"
        lines += ["", title, ""]
        lines.append("| order | theta | disc. | " + " | ".join(paths) + " |")
        lines.append("|---" * (len(paths) + 3) + "|")
        memories = sorted(
            {
                (row["order"], row["discretizer"] != "zoh", row["theta"])
                for row in rows
                if row["backend"] == backend
            }
        )
        for order, euler, theta in memories:
            cells = []
            for path in paths:
                measured = [
                    row
                    for row in rows
                    if (row["backend"], row["path"], row["order"], row["theta"])
                    == (backend, path, order, theta)
                    and (row["discretizer"] != "zoh") == euler
                ]
                if not measured:
                    cells.append("-")
                    continue
                worst = max(measured, key=lambda row: row["error"])
                flag = "" if all(row["finite"] for row in measured) else " NaN/inf"
                cells.append(f"{worst['error']:.0e}{flag} ({worst['steps']})")
            name = "euler" if euler else "zoh"
            lines.append(f"| {order} | {theta:g} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, help="re-run with KERAS_BACKEND set")
    parser.add_argument("--orders", type=positive_int, nargs="+", default=[64, 256, 1024])
    parser.add_argument(
        "--thetas", type=positive_float, nargs="+", default=[100, 1000, 10000, 100000]
    )
    parser.add_argument("--steps", type=positive_int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument(
        "--discretizers", nargs="+", choices=("zoh", "euler"), default=["zoh", "euler"]
    )
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--input", choices=("noise", "step"), default="noise")
    parser.add_argument(
        "--check-steps",
        type=positive_int,
        default=10_000,
        help="steps of the float64 recurrence that checks the reference for order > 256",
    )
    parser.add_argument(
        "--step-by-step-max-work",
        type=positive_int,
        default=STEP_BY_STEP_MAX_WORK,
        help="largest steps * order run by the recurrent path",
    )
    parser.add_argument(
        "--cache",
        default=os.path.join("/tmp", "keras-lmu-numerics-cache"),
        help="folder for the float64 references (reused across backends)",
    )
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="JSON",
        help="print markdown tables from these result files instead of measuring",
    )
    parser.add_argument(
        "--out", help="JSON file (default benchmarks/results/numerics-<backend>.json)"
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        print(markdown_report(args.report))
        return
    if args.backend and os.environ.get("KERAS_BACKEND") != args.backend:
        environment = {**os.environ, "KERAS_BACKEND": args.backend}
        command = [sys.executable, HERE] + (sys.argv[1:] if argv is None else list(argv))
        raise SystemExit(subprocess.call(command, env=environment))
    sys.path.insert(0, ROOT)
    import keras

    backend = keras.backend.backend()
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"numerics-{backend}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    result = run(args, partial_file=out + ".partial")
    if os.path.exists(out + ".partial"):
        os.remove(out + ".partial")
    print_summary(result)
    with open(out, "w") as file:
        json.dump(result, file, indent=1)
    print(f"wrote {out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
