#!/usr/bin/env python
"""float32 accuracy of a trainable theta's memory, at, above and below its start.

For each order and initial ``theta``, an ``LMUFeedforward(1, order, theta, None,
conv_mode="fft", trainable_theta=True, kernel_initializer=None)`` has its ``theta``
set to ``scale * theta`` for each scale (1: the start; 0.9: theta shrunk by training, its
discretization then starts from the exact one at the start; 1.1: theta grown, discretized
directly) and is fed ``benchmarks/numerics.py``'s noise input (batch 1). Its
every-step memory is compared with the float64 reference of ``numerics.py`` (``A_bar,
B_bar`` at the trained theta from ``keras_lmu.legendre``, the response by doubling, an
FFT convolution)::

    max |memory - reference| / max |reference|

Usage::

    python benchmarks/trainable_theta_numerics.py --backend jax --out FILE.json

prints one line per memory and writes the rows as JSON. Discussed in docs/numerics.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
from parallel import BACKENDS, positive_float, positive_int

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def memory_error(order: int, theta: float, scale: float, steps: int) -> float:
    """Relative error of the trainable-theta memory at ``scale * theta``."""
    import keras
    from numerics import doubling_response, fft_convolution, input_signal, relative_error

    import keras_lmu

    signal = input_signal("noise", steps)
    A_bar, B_bar = keras_lmu.legendre.discrete_system(order, scale * theta)
    reference = fft_convolution(signal, doubling_response(A_bar, B_bar, steps))
    layer = keras_lmu.LMUFeedforward(
        1,
        order,
        theta,
        None,
        conv_mode="fft",
        truncate_ir=None,
        return_sequences=True,
        trainable_theta=True,
        kernel_initializer=None,
    )
    inputs = signal.astype("float32").reshape(1, -1, 1)
    layer(inputs[:, :2])
    layer.theta_inv.assign(np.float32(1.0 / (scale * theta)))
    memory = keras.ops.convert_to_numpy(layer(inputs))[0]
    return relative_error(memory, reference)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, help="re-run with KERAS_BACKEND set")
    parser.add_argument("--orders", type=positive_int, nargs="+", default=[64, 256, 1024])
    parser.add_argument(
        "--thetas", type=positive_float, nargs="+", default=[100, 1000, 10000, 100000]
    )
    parser.add_argument("--scales", type=positive_float, nargs="+", default=[1.0, 0.9, 1.1])
    parser.add_argument("--steps", type=positive_int, default=10_000)
    parser.add_argument("--out", help="JSON file for the rows")
    args = parser.parse_args(argv)
    if args.backend and os.environ.get("KERAS_BACKEND") != args.backend:
        environment = dict(os.environ, KERAS_BACKEND=args.backend)
        command = [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:])]
        sys.exit(subprocess.call(command, env=environment))
    import keras

    rows = []
    for order in args.orders:
        for theta in args.thetas:
            for scale in args.scales:
                error = memory_error(order, theta, scale, args.steps)
                rows.append({"order": order, "theta": theta, "scale": scale, "error": error})
                print(f"{order:5d} {theta:9g} x{scale:<4g} {error:.2e}", flush=True)
    if args.out:
        with open(args.out, "w") as file:
            json.dump(
                {"backend": keras.config.backend(), "steps": args.steps, "rows": rows},
                file,
                indent=1,
            )


if __name__ == "__main__":
    main()
