#!/usr/bin/env python
"""The FFT convolution in pieces against all at once (``keras_lmu.ops.FFT_PIECE_VALUES``).

The model is the ``seq-ff-full`` case of ``bench.py``: ``LMUFeedforward(32, 256, 784,
None, return_sequences=True)`` (``conv_mode="fft"``) on input (512, 32), then
``Dense(2)`` at every step and sparse cross-entropy, Adam, batch 16. Copies are
built in one process, one traced with the default pieces and one for each other
piece size asked for (by default a single piece); their training steps
(``train_on_batch``) and forward passes (``predict_on_batch``) are timed in
alternation, and the script prints the median of each, the median of the paired
ratios to the default, and each copy's first training step.

Usage::

    python benchmarks/fft_pieces.py --backend jax --repeats 9
    python benchmarks/fft_pieces.py --backend torch --piece-values 4194304 16777216 \
        4611686018427387904
    python benchmarks/fft_pieces.py --backend torch --joined --piece-values

``--joined`` (PyTorch, TensorFlow) adds a copy that runs the loop over the default
pieces as JAX does, a ``keras.ops.map`` that joins them, differentiated by the
backend itself: on PyTorch instead of pieces written in place
(``keras_lmu.torch_fft``; PyTorch's exporters trace this form), on TensorFlow instead
of the gradient computed piece by piece (``keras_lmu.tf_fft``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time

from parallel import positive_int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--repeats", type=positive_int, default=9, help="timed calls of each kind")
    parser.add_argument("--batch", type=positive_int, default=16)
    parser.add_argument(
        "--piece-values",
        type=positive_int,
        nargs="*",
        default=[ONE_PIECE],
        help="complex values in one piece, for each copy compared with the default "
        "(default: one piece, 2**62)",
    )
    parser.add_argument(
        "--joined",
        action="store_true",
        help="PyTorch, TensorFlow: also a copy whose pieces are joined by keras.ops.map "
        "and differentiated by the backend",
    )
    return parser.parse_args(argv)


#: ``FFT_PIECE_VALUES`` that makes any spectrum one piece.
ONE_PIECE = 1 << 62
#: The setting of ``--joined``.
JOINED = "joined"


def build(piece_values: int, batch: int):
    import keras
    import numpy as np

    import keras_lmu
    from keras_lmu import ops as lmu_ops

    keras.utils.set_random_seed(0)
    inputs = keras.Input((512, 32))
    memory = keras_lmu.LMUFeedforward(32, 256, 784, None, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(memory))
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 512, 32)).astype("float32")
    y = rng.integers(0, 2, size=(batch, 512)).astype("int32")
    with set_piece_values(lmu_ops, piece_values):
        start = time.perf_counter()
        model.train_on_batch(x, y)  # traced (JAX, TensorFlow) with this setting
        first = time.perf_counter() - start
        model.predict_on_batch(x)
    return model, x, y, first


@contextlib.contextmanager
def set_piece_values(module, piece_values: int):
    """Every piece size (the CPU's, PyTorch's CPU's, accelerators') ``piece_values``
    inside the block."""
    names = ("FFT_PIECE_VALUES", "FFT_TORCH_CPU_PIECE_VALUES", "FFT_ACCELERATOR_PIECE_VALUES")
    saved = [getattr(module, name) for name in names]
    for name in names:
        setattr(module, name, piece_values)
    try:
        yield
    finally:
        for name, value in zip(names, saved, strict=True):
            setattr(module, name, value)


@contextlib.contextmanager
def joined_pieces(joined: bool):
    """The pieces joined by ``keras.ops.map`` and differentiated by the backend inside
    the block, where ``joined``."""
    if not joined:
        yield
        return
    import keras

    if keras.backend.backend() == "torch":
        from keras_lmu import torch_fft as module

        name, replacement = "traced", lambda: True
    else:
        from keras_lmu import tf_fft as module

        name = "with_gradient_in_pieces"

        def replacement(convolve, signal, response, *pieces):
            return convolve(signal, response)

    saved = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, saved)


def label(piece_values) -> str:
    """``piece_values`` as ``2**k`` where it is a power of two, or "one piece"."""
    if piece_values == JOINED:
        return "joined"
    if piece_values >= ONE_PIECE:
        return "one piece"
    if piece_values & (piece_values - 1) == 0:
        return f"2**{piece_values.bit_length() - 1}"
    return str(piece_values)


def measure(args):
    import keras

    from keras_lmu import ops as lmu_ops

    default = lmu_ops.fft_piece_values(keras.ops.zeros(1))
    settings = [default] + [v for v in args.piece_values if v != default]
    if args.joined:
        if keras.backend.backend() not in ("torch", "tensorflow"):
            raise SystemExit("--joined: JAX has one form; use --backend torch or tensorflow")
        settings.append(JOINED)
    # The piece size of each copy: the joined copy runs the default pieces.
    pieces = {v: default if v == JOINED else v for v in settings}
    models = {}
    for v in settings:
        with joined_pieces(v == JOINED):
            models[v] = build(pieces[v], args.batch)
    times = {(v, kind): [] for v in settings for kind in ("train", "predict")}
    for _ in range(args.repeats):
        for kind in ("train", "predict"):
            for v, (model, x, y, _) in models.items():
                # PyTorch runs eagerly, so the setting is applied at every call.
                with set_piece_values(lmu_ops, pieces[v]), joined_pieces(v == JOINED):
                    start = time.perf_counter()
                    if kind == "train":
                        model.train_on_batch(x, y)
                    else:
                        model.predict_on_batch(x)
                    times[v, kind].append(time.perf_counter() - start)
    print(f"backend {keras.backend.backend()}, batch {args.batch}, {args.repeats} repeats")
    print(f"default piece size {label(default)}; times are medians (ms), ratios the")
    print("median of paired ratios to the default (above 1: slower than the default)")
    for v in settings:
        first = models[v][3]
        cells = []
        for kind in ("train", "predict"):
            ours, base = times[v, kind], times[default, kind]
            ratio = statistics.median(t / b for t, b in zip(ours, base, strict=True))
            cells.append(f"{kind} {statistics.median(ours) * 1e3:8.2f} ms ({ratio:.2f}x)")
        print(f"{label(v):>10s}: {'   '.join(cells)}   first training step {first:.1f} s")


def rerun_on_backend(script: str, backend: str | None, argv=None):
    """Run ``script`` again with ``argv`` in a process whose ``KERAS_BACKEND`` is
    ``backend``, and exit with its status, unless this process has that backend."""
    if backend and os.environ.get("KERAS_BACKEND") != backend:
        env = dict(os.environ, KERAS_BACKEND=backend)
        rest = list(argv if argv is not None else sys.argv[1:])
        sys.exit(subprocess.call([sys.executable, script, *rest], env=env))


def main(argv=None):
    args = parse_args(argv)
    rerun_on_backend(__file__, args.backend, argv)
    measure(args)


if __name__ == "__main__":
    main()
