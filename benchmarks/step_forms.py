"""Forms of the recurrent memory step, timed in a bare TensorFlow loop (``seq-rnn``'s sizes).

``keras.layers.RNN(LMUCell)`` (the ``seq-rnn`` case of ``bench.py``) is at parity with
keras-lmu 0.9 on TensorFlow. This script times a training step (forward and gradient)
of a plain ``tf.while_loop`` over 512 steps of 32 memories of order 256 in batches of
16, with the step written in these forms:

- ``separate``: this library's step, ``m + (m (A_bar - I)^T + B_bar u)`` with
  ``A_bar - I`` rounded from float64 on its own (``keras_lmu.ops.memory_step``; see
  ``LegendreMemory.step_weights`` for the accuracy it keeps), differentiated by
  TensorFlow;
- ``rounded``: ``m A_bar^T + B_bar u``, one addition fewer, with ``A_bar`` rounded to
  float32 (its small difference from ``I`` loses digits that compound over the steps);
- ``written-gradient``: this library's step with its gradient written out
  (``memory_step(..., fixed_system=True)``, ``keras_lmu.ops.memory_step_gradient``),
  which keeps no step's memory for the backward pass: what ``LMUCell`` runs on
  TensorFlow for a fixed memory;
- ``block-low-rank``: ``A_bar - I`` as ``BLOCKS`` diagonal blocks plus the rest of the
  matrix truncated to its singular values above ``1e-8`` of its norm (rank 38 of 256
  for four blocks at ``theta = 784``), about half the multiplications of the dense
  product. The off-diagonal blocks of ``A_bar`` have low numerical rank (an
  exponential of a matrix whose off-diagonal blocks have rank 1), but more, smaller
  products per step cost TensorFlow more time than they save: not used (and not
  exact, though its truncation is below float32 rounding).

Usage: ``python benchmarks/step_forms.py [--repeats 9]``. Prints the median and range
of each form's step (ms), the forms alternating. Not a test: timings only.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from parallel import positive_int  # noqa: E402

from keras_lmu import legendre  # noqa: E402
from keras_lmu import ops as lmu_ops  # noqa: E402

BATCH, MEMORY_D, ORDER, STEPS, THETA = 16, 32, 256, 512, 784
BLOCKS = 4


def make_forms():
    """The step ``(m, u) -> m'`` in each form, for m (batch, memory_d * order)."""
    A_bar, B_bar = legendre.discrete_system(ORDER, THETA, "zoh")
    transition = tf.constant((A_bar - np.eye(ORDER)).T, tf.float32)
    A_bar_T = tf.constant(A_bar.T, tf.float32)
    B_bar = tf.constant(B_bar, tf.float32)
    B_row = tf.reshape(B_bar, (1, ORDER))  # B_bar u as a matrix product, as in memory_step

    def separate(m, u):
        return lmu_ops.memory_step(m, u, transition, B_bar)

    def rounded(m, u):
        per_memory = tf.reshape(m, (BATCH, MEMORY_D, ORDER))
        drive = tf.reshape(tf.matmul(tf.reshape(u, (-1, 1)), B_row), per_memory.shape)
        return tf.reshape(tf.einsum("bdj,ji->bdi", per_memory, A_bar_T) + drive, m.shape)

    def written_gradient(m, u):
        return lmu_ops.memory_step(m, u, transition, B_bar, fixed_system=True)

    diagonal_blocks, left, right = block_low_rank((A_bar - np.eye(ORDER)).T, BLOCKS)
    size = ORDER // BLOCKS

    def block_low_rank_step(m, u):
        rows = tf.reshape(m, (-1, ORDER))
        blocks = [
            tf.matmul(rows[:, k * size : (k + 1) * size], diagonal_blocks[k]) for k in range(BLOCKS)
        ]
        product = tf.concat(blocks, axis=1) + tf.matmul(tf.matmul(rows, left), right)
        drive = tf.matmul(tf.reshape(u, (-1, 1)), B_row)
        return tf.reshape(rows + (product + drive), m.shape)

    return {
        "separate": separate,
        "rounded": rounded,
        "written-gradient": written_gradient,
        "block-low-rank": block_low_rank_step,
    }


def block_low_rank(matrix, blocks: int, tolerance: float = 1e-8):
    """``matrix`` (float64, square) as its ``blocks`` diagonal blocks and a product
    ``left @ right`` of the rest, truncated to the singular values above ``tolerance``
    times the matrix's norm; float32 tensors (blocks, size, size), (n, rank), (rank, n).
    """
    size = matrix.shape[0] // blocks
    rest = matrix.copy()
    diagonal = []
    for k in range(blocks):
        part = slice(k * size, (k + 1) * size)
        diagonal.append(matrix[part, part])
        rest[part, part] = 0
    u, s, vt = np.linalg.svd(rest)
    rank = int(np.sum(s > tolerance * np.linalg.norm(matrix, 2)))
    return (
        tf.constant(np.stack(diagonal), tf.float32),
        tf.constant(u[:, :rank] * s[:rank], tf.float32),
        tf.constant(vt[:rank], tf.float32),
    )


def training_step(step, x, kernel, weights):
    """A ``tf.function``: the loop over the steps, a loss, its gradient for ``kernel``."""

    @tf.function
    def run():
        with tf.GradientTape() as tape:

            def body(t, m):
                return t + 1, step(m, tf.matmul(x[t], kernel))

            initial = tf.zeros((BATCH, MEMORY_D * ORDER))
            _, m = tf.while_loop(lambda t, m: t < STEPS, body, (0, initial))
            loss = tf.reduce_sum(m * weights)
        return tape.gradient(loss, kernel)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((STEPS, BATCH, MEMORY_D)), tf.float32)
    kernel = tf.Variable(rng.standard_normal((MEMORY_D, MEMORY_D)).astype(np.float32) * 0.1)
    weights = tf.constant(rng.standard_normal((BATCH, MEMORY_D * ORDER)), tf.float32)
    steps = {name: training_step(f, x, kernel, weights) for name, f in make_forms().items()}
    gradients = {name: run().numpy() for name, run in steps.items()}  # traced, warmed up
    reference = gradients["separate"]
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, run in steps.items():
            start = time.perf_counter()
            run().numpy()
            times[name].append(1000 * (time.perf_counter() - start))
    for name, values in times.items():
        difference = np.max(np.abs(gradients[name] - reference)) / np.max(np.abs(reference))
        print(
            f"{name:17s} {np.median(values):7.1f} ms [{min(values):.0f}-{max(values):.0f}]"
            f"  gradient vs separate: {difference:.1e} (relative)"
        )


if __name__ == "__main__":
    main()
