#!/usr/bin/env python
"""Peak memory of a few training steps of one ``bench.py`` case, in a process of its own.

Builds the case's model (this library, the first size), trains it ``--steps`` times
on one batch (``train_on_batch``) and prints the increase of the process's peak
resident set size (``ru_maxrss``) over its RSS after the imports and the build, as
``bench.py`` reports it, but without timing anything. ``--joined`` (PyTorch,
TensorFlow) runs the FFT convolution's pieces joined by ``keras.ops.map`` and
differentiated by the backend, as ``fft_pieces.py --joined`` does. Set
``MALLOC_TRIM_THRESHOLD_`` (glibc) to see how much of the peak is freed memory that
the C allocator keeps. ``--tensors`` (PyTorch) profiles one more step and prints the
peak of the memory held by tensors, by what they are (PyTorch's memory profile):
what the model needs, without the allocator, libraries and caches around it.

Usage::

    python benchmarks/peak_memory.py --backend torch --case seq-ff-full
    python benchmarks/peak_memory.py --backend tensorflow --case seq-ff-full --joined
    python benchmarks/peak_memory.py --backend torch --case seq-dense-full --tensors
    MALLOC_TRIM_THRESHOLD_=1048576 python benchmarks/peak_memory.py --backend torch \
        --case seq-ff-scan-full
"""

from __future__ import annotations

import argparse
import os
import resource
import sys

from bench import CASES
from parallel import positive_int

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--case", choices=CASES, default="seq-ff-full", help="a bench.py case")
    parser.add_argument("--steps", type=positive_int, default=3, help="training steps")
    parser.add_argument(
        "--joined",
        action="store_true",
        help="PyTorch, TensorFlow: the FFT's pieces joined by keras.ops.map",
    )
    parser.add_argument(
        "--tensors",
        action="store_true",
        help="PyTorch: also the peak of the memory held by tensors in one more step",
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
    if args.tensors and keras.backend.backend() != "torch":
        raise SystemExit("--tensors: PyTorch's memory profile only; use --backend torch")
    options = argparse.Namespace(quick=False, tiny=False, long_steps=None)
    spec = bench.case_specs(args.case, options)[0]
    with fft_pieces.joined_pieces(args.joined):
        model, x, y = bench.build_model(spec)
        after_build = current_rss_kib()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        increase = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - after_build
        if args.tensors:  # one more step, profiled (the profiler's own memory not counted)
            tensors = peak_tensor_memory(lambda: model.train_on_batch(x, y))
    form = ", pieces joined" if args.joined else ""
    print(
        f"{args.case} on {keras.backend.backend()}{form}: {args.steps} training steps, "
        f"peak RSS {increase / 1024:.0f} MiB over the RSS after build"
    )
    if args.tensors:
        total = sum(tensors.values())
        parts = ", ".join(f"{name} {size / 2**20:.1f}" for name, size in tensors.items() if size)
        print(f"tensors at their peak in one more step: {total / 2**20:.1f} MiB ({parts})")


def peak_tensor_memory(step) -> dict:
    """Bytes held by PyTorch tensors at their peak during ``step()``, by category.

    From PyTorch's memory profile (``torch.profiler`` with ``profile_memory``), read by
    its memory timeline, a private module (``torch.profiler._memory_profiler``, as
    ``export_memory_timeline`` uses it): categories as PyTorch assigns them
    (parameter, optimizer state, input, temporary, activation, gradient, autograd
    detail, and unknown).
    """
    import numpy as np
    import torch
    from torch.profiler import _memory_profiler

    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(
        activities=activities, profile_memory=True, record_shapes=True, with_stack=True
    ) as profile:
        step()
    timeline = _memory_profiler.MemoryProfileTimeline(profile._memory_profile())
    _, sizes = timeline._coalesce_timeline("cpu")
    sizes = np.asarray(sizes)[:, 1:]  # by time; columns as _CATEGORY_TO_INDEX
    peak = sizes[sizes.sum(axis=1).argmax()]
    names = [
        "unknown" if category is None else category.name.lower().replace("_", " ")
        for category in _memory_profiler._CATEGORY_TO_INDEX
    ]
    return dict(zip(names, peak.tolist(), strict=True))


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, BENCH_DIR)
    import fft_pieces

    fft_pieces.rerun_on_backend(__file__, args.backend, argv)
    measure(args)


if __name__ == "__main__":
    main()
