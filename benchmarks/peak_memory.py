#!/usr/bin/env python
"""Peak memory of a few training steps of one ``bench.py`` case, in a process of its own.

Builds the case's model (this library, the first size), trains it ``--steps`` times
on one batch (``train_on_batch``) and prints the increase of the process's peak
resident set size (``ru_maxrss``) over its RSS after the imports and the build, as
``bench.py`` reports it, but without timing anything. ``--joined`` (PyTorch,
TensorFlow) runs the FFT convolution's pieces joined by ``keras.ops.map`` and
differentiated by the backend, as ``fft_pieces.py --joined`` does. Set
``MALLOC_TRIM_THRESHOLD_`` (glibc) to see how much of the peak is freed memory that
the C allocator keeps.

Usage::

    python benchmarks/peak_memory.py --backend torch --case seq-ff-full
    python benchmarks/peak_memory.py --backend tensorflow --case seq-ff-full --joined
    MALLOC_TRIM_THRESHOLD_=1048576 python benchmarks/peak_memory.py --backend torch \
        --case seq-ff-scan-full
"""

from __future__ import annotations

import argparse
import os
import resource
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--case", default="seq-ff-full", help="a bench.py case")
    parser.add_argument("--steps", type=int, default=3, help="training steps")
    parser.add_argument(
        "--joined",
        action="store_true",
        help="PyTorch, TensorFlow: the FFT's pieces joined by keras.ops.map",
    )
    return parser.parse_args(argv)


def current_rss_kib() -> int:
    """The process's resident set size now (KiB)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(args):
    import bench
    import fft_pieces
    import keras

    if args.joined and keras.backend.backend() == "jax":
        raise SystemExit("--joined: JAX has one form; use --backend torch or tensorflow")
    options = argparse.Namespace(quick=False, tiny=False, long_steps=None)
    spec = bench.case_specs(args.case, options)[0]
    with fft_pieces.joined_pieces(args.joined):
        model, x, y = bench.build_model(spec)
        after_build = current_rss_kib()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
    increase = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - after_build
    form = ", pieces joined" if args.joined else ""
    print(
        f"{args.case} on {keras.backend.backend()}{form}: {args.steps} training steps, "
        f"peak RSS {increase / 1024:.0f} MiB over the RSS after build"
    )


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, BENCH_DIR)
    import fft_pieces

    fft_pieces.rerun_on_backend(__file__, args.backend, argv)
    measure(args)


if __name__ == "__main__":
    main()
