"""What Keras's JAX loop costs ``keras.layers.RNN(LMUCell)`` by keeping every step's output.

On JAX, ``keras.layers.RNN`` runs its steps as one ``jax.lax.scan`` that stacks every
step's output, whether or not the layer returns the sequence (Keras 3.15's
``keras.src.backend.jax.rnn``; its TensorFlow loop writes only the last output when
``return_sequences=False``). An ``LMUCell`` without a hidden layer outputs its memory:
for ``seq-rnn`` (``bench.py``: 32 memories of order 256, batch 16, 512 steps) that is 512
KiB a step, 256 MiB a sequence. This script times, on JAX, forward only and forward
with gradient:

- ``keras-rnn``: the ``seq-rnn`` layer, ``keras.layers.RNN(LMUCell(32, 256, 784,
  None))``, called in a compiled function;
- ``scan-outputs``: a ``lax.scan`` of the same cell's ``call`` that returns every
  step's output, as Keras's loop does;
- ``scan-last``: the same scan returning only the last state.

The gradient is that of the sum of squares of the last output with respect to the
input sequence. Usage: ``python benchmarks/scan_outputs.py [--repeats 7] [--steps
512]``; prints the median and range of each (ms), the three alternating, and the
largest difference of their last outputs. Not a test: timings only.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from parallel import positive_int  # noqa: E402

import keras_lmu  # noqa: E402

BATCH, MEMORY_D, ORDER, THETA = 16, 32, 256, 784


def make_forms(steps: int) -> dict:
    """Each form as ``(forward, gradient)`` of an input sequence (batch, steps, memory_d)."""
    layer = keras.layers.RNN(keras_lmu.LMUCell(MEMORY_D, ORDER, THETA, None))
    layer.build((BATCH, steps, MEMORY_D))
    cell = layer.cell

    def keras_rnn(sequence):
        return layer(sequence)

    def scan(keep_outputs: bool):
        def run(sequence):
            def step(memory, inputs):
                output, (memory,) = cell.call(inputs, [memory])
                return memory, (output if keep_outputs else None)

            initial = jnp.zeros((BATCH, MEMORY_D * ORDER), sequence.dtype)
            last, outputs = jax.lax.scan(step, initial, jnp.swapaxes(sequence, 0, 1))
            return outputs[-1] if keep_outputs else last

        return run

    forms = {"keras-rnn": keras_rnn, "scan-outputs": scan(True), "scan-last": scan(False)}
    return {
        name: (
            jax.jit(run),
            jax.jit(jax.grad(lambda sequence, run=run: jnp.sum(run(sequence) ** 2))),
        )
        for name, run in forms.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=7)
    parser.add_argument("--steps", type=positive_int, default=512)
    args = parser.parse_args()
    sequence = jnp.asarray(
        np.random.default_rng(0).standard_normal((BATCH, args.steps, MEMORY_D)), jnp.float32
    )
    forms = make_forms(args.steps)
    lasts = {name: np.asarray(forward(sequence)) for name, (forward, _) in forms.items()}
    for _, gradient in forms.values():
        gradient(sequence).block_until_ready()  # compiled before timing
    times = {(name, kind): [] for name in forms for kind in ("forward", "gradient")}
    for _ in range(args.repeats):
        for name, functions in forms.items():
            for kind, function in zip(("forward", "gradient"), functions, strict=True):
                start = time.perf_counter()
                function(sequence).block_until_ready()
                times[name, kind].append(1e3 * (time.perf_counter() - start))
    print(f"JAX {jax.__version__}, keras {keras.__version__}, {args.steps} steps, batch {BATCH}")
    for (name, kind), values in times.items():
        difference = np.max(np.abs(lasts[name] - lasts["keras-rnn"]))
        print(
            f"{name} {kind} {np.median(values):.1f} ms "
            f"[{min(values):.1f}-{max(values):.1f}] n={len(values)}; "
            f"last output vs keras-rnn: {difference:.2e}"
        )


if __name__ == "__main__":
    main()
