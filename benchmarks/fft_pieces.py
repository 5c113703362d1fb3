#!/usr/bin/env python
"""The FFT convolution in pieces against all at once (``keras_lmu.ops.FFT_PIECE_VALUES``).

The model is the ``seq-ff-full`` case of ``bench.py``: ``LMUFeedforward(32, 256, 784,
None, return_sequences=True)`` (``conv_mode="fft"``) on input (512, 32), then
``Dense(2)`` at every step and sparse cross-entropy, Adam, batch 16. Two copies are
built in one process, one traced with the default pieces and one with a single
piece; their training steps (``train_on_batch``) and forward passes
(``predict_on_batch``) are timed in alternation, and the script prints the median
of each, the median of the paired ratios, and each copy's first training step.

Usage::

    python benchmarks/fft_pieces.py --backend jax --repeats 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of each kind")
    parser.add_argument("--batch", type=int, default=16)
    return parser.parse_args(argv)


def build(pieces: bool, batch: int):
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
    with piece_values(lmu_ops, pieces):
        start = time.perf_counter()
        model.train_on_batch(x, y)  # traced (JAX, TensorFlow) with this setting
        first = time.perf_counter() - start
        model.predict_on_batch(x)
    return model, x, y, first


class piece_values:
    """``FFT_PIECE_VALUES`` as the default (``pieces``) or as one piece for any size."""

    def __init__(self, module, pieces: bool):
        self.module, self.pieces = module, pieces

    def __enter__(self):
        self.saved = self.module.FFT_PIECE_VALUES
        if not self.pieces:
            self.module.FFT_PIECE_VALUES = 1 << 62

    def __exit__(self, *exc):
        self.module.FFT_PIECE_VALUES = self.saved


def measure(args):
    import keras

    from keras_lmu import ops as lmu_ops

    models = {"pieces": build(True, args.batch), "one piece": build(False, args.batch)}
    times = {(name, kind): [] for name in models for kind in ("train", "predict")}
    for _ in range(args.repeats):
        for kind in ("train", "predict"):
            for name, (model, x, y, _) in models.items():
                # PyTorch runs eagerly, so the setting is applied at every call.
                with piece_values(lmu_ops, name == "pieces"):
                    start = time.perf_counter()
                    if kind == "train":
                        model.train_on_batch(x, y)
                    else:
                        model.predict_on_batch(x)
                    times[name, kind].append(time.perf_counter() - start)
    print(f"backend {keras.backend.backend()}, batch {args.batch}, {args.repeats} repeats")
    print(
        f"first training step (tracing and compiling included): pieces "
        f"{models['pieces'][3]:.1f} s, one piece {models['one piece'][3]:.1f} s"
    )
    for kind in ("train", "predict"):
        ours, whole = times["pieces", kind], times["one piece", kind]
        ratio = statistics.median(w / p for w, p in zip(whole, ours, strict=True))
        print(
            f"{kind:8s} pieces {statistics.median(ours) * 1e3:7.0f} ms   "
            f"one piece {statistics.median(whole) * 1e3:7.0f} ms   "
            f"one piece / pieces (median of pairs) {ratio:.2f}x"
        )


def main(argv=None):
    args = parse_args(argv)
    if args.backend and os.environ.get("KERAS_BACKEND") != args.backend:
        env = dict(os.environ, KERAS_BACKEND=args.backend)
        rest = list(argv if argv is not None else sys.argv[1:])
        sys.exit(subprocess.call([sys.executable, __file__, *rest], env=env))
    measure(args)


if __name__ == "__main__":
    main()
