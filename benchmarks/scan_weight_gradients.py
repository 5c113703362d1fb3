#!/usr/bin/env python
"""Where a recurrent training step's time goes: the ``psmnist-rnn`` model written in
plain JAX (``jax.lax.scan``), its gradient four ways.

The model is the paper's: order 256, theta 784, memory_d 1, hidden_to_memory and
memory_to_memory on, a ``SimpleRNNCell(212)``-like hidden layer, a linear readout of
the last hidden state; batch 100, 784 steps, float32::

    u_t = x_t e_x + h_{t-1} . e_h + m_{t-1} . e_m
    m_t = m_{t-1} + (A_bar - I) m_{t-1} + B_bar u_t
    h_t = tanh(W m_t + U h_{t-1} + b)

Timed, alternating, in one process (medians of ``--repeats``):

- ``default``: ``jax.grad`` of a scan of one step per iteration;
- ``grouped``: the same with ``--group`` steps per iteration (as ``keras_lmu.LMU``
  does on JAX, ``keras_lmu.layer.LOOP_STEPS_PER_ITERATION``);
- ``weights-after-loop``: a custom gradient whose backward scan carries only the
  states' gradients and keeps every step's pre-activation gradient; the weights'
  gradients are then one matrix product each over all steps, instead of a small
  product per step inside the loop;
- ``forward``: the scan alone, no gradient.

It also prints the largest relative difference between the custom and the default
gradients. Usage::

    python benchmarks/scan_weight_gradients.py [--repeats 5] [--group 8] [--steps 784]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from parallel import positive_int  # noqa: E402

from keras_lmu import legendre  # noqa: E402

ORDER, UNITS, CLASSES, THETA = 256, 212, 10, 784.0


def parameters(rng: np.random.Generator) -> dict:
    """Encoders, hidden weights and readout, small random float32 values."""

    def normal(shape, scale):
        return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)

    return {
        "e_x": normal((1,), 1.0),
        "e_h": normal((UNITS,), 0.05),
        "e_m": normal((ORDER,), 0.05),
        "W": normal((ORDER, UNITS), 0.05),
        "U": normal((UNITS, UNITS), 0.05),
        "b": jnp.zeros((UNITS,), jnp.float32),
        "readout": normal((UNITS, CLASSES), 0.05),
    }


def build(group: int, steps: int, batch: int):
    """The timed functions, and a check of the custom gradient."""
    A_bar, B_bar = legendre.discrete_system(ORDER, THETA)
    transition = jnp.asarray((A_bar - np.eye(ORDER)).T, jnp.float32)  # (A_bar - I)^T
    B_row = jnp.asarray(B_bar, jnp.float32)

    def step(p, carry, x_t):
        m, h = carry
        u = x_t[:, 0] * p["e_x"][0] + h @ p["e_h"] + m @ p["e_m"]
        m = m + m @ transition + u[:, None] * B_row
        h = jnp.tanh(m @ p["W"] + h @ p["U"] + p["b"])
        return m, h

    def start():
        return jnp.zeros((batch, ORDER), jnp.float32), jnp.zeros((batch, UNITS), jnp.float32)

    def last_hidden(p, x, per_iteration=1):
        def body(carry, block):
            for index in range(per_iteration):
                carry = step(p, carry, block[index])
            return carry, None

        blocks = x.reshape(steps // per_iteration, per_iteration, batch, 1)
        (_, h), _ = lax.scan(body, start(), blocks)
        return h

    @jax.custom_vjp
    def last_hidden_custom(p, x):
        return last_hidden(p, x)

    def forward(p, x):
        def body(carry, x_t):
            new = step(p, carry, x_t)
            return new, carry  # the states before the step

        (m, h), (ms, hs) = lax.scan(body, start(), x)
        return h, (p, x, ms, hs, m, h)

    def backward(saved, h_gradient):
        p, x, ms, hs, m_last, h_last = saved
        ms_after = jnp.concatenate([ms[1:], m_last[None]], 0)
        hs_after = jnp.concatenate([hs[1:], h_last[None]], 0)
        step_matrix = jnp.eye(ORDER, dtype=jnp.float32) + transition  # A_bar^T

        def body(carry, h_after):
            m_grad, h_grad = carry
            z_grad = h_grad * (1 - h_after * h_after)
            m_total = m_grad + z_grad @ p["W"].T
            u_grad = m_total @ B_row
            m_before = m_total @ step_matrix.T + u_grad[:, None] * p["e_m"]
            h_before = z_grad @ p["U"].T + u_grad[:, None] * p["e_h"]
            return (m_before, h_before), (z_grad, u_grad)

        zero_memory = jnp.zeros((batch, ORDER), jnp.float32)
        _, (z_grads, u_grads) = lax.scan(body, (zero_memory, h_gradient), hs_after, reverse=True)
        rows = steps * batch
        z_rows = z_grads.reshape(rows, UNITS)
        u_rows = u_grads.reshape(rows)
        h_rows = hs.reshape(rows, UNITS)
        gradients = {
            "W": ms_after.reshape(rows, ORDER).T @ z_rows,
            "U": h_rows.T @ z_rows,
            "b": z_rows.sum(0),
            "e_x": (x.reshape(rows) @ u_rows)[None],
            "e_h": h_rows.T @ u_rows,
            "e_m": ms.reshape(rows, ORDER).T @ u_rows,
            "readout": jnp.zeros_like(p["readout"]),
        }
        return gradients, jnp.zeros_like(x)

    last_hidden_custom.defvjp(forward, backward)
    labels = jnp.arange(batch) % CLASSES

    def gradient_of(sequence):
        def loss(p, x):
            logits = sequence(p, x) @ p["readout"]
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(batch), labels])

        return jax.jit(jax.grad(loss))

    return {
        "default": gradient_of(last_hidden),
        f"grouped ({group} per iteration)": gradient_of(lambda p, x: last_hidden(p, x, group)),
        "weights-after-loop": gradient_of(last_hidden_custom),
        "forward": jax.jit(last_hidden),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--group", type=positive_int, default=8)
    parser.add_argument("--steps", type=positive_int, default=784, help="sequence length (784)")
    parser.add_argument("--batch", type=positive_int, default=100, help="batch size (100)")
    args = parser.parse_args(argv)
    if args.steps % args.group:
        parser.error(f"--group must divide --steps={args.steps}")
    rng = np.random.default_rng(0)
    p = parameters(rng)
    x = jnp.asarray(rng.uniform(-1, 1, (args.steps, args.batch, 1)), jnp.float32)
    functions = build(args.group, args.steps, args.batch)
    for function in functions.values():  # compiled before any timing
        jax.block_until_ready(function(p, x))
    default, custom = functions["default"](p, x), functions["weights-after-loop"](p, x)
    for name in ("W", "U", "b", "e_x", "e_h", "e_m"):
        largest = float(jnp.max(jnp.abs(default[name])))
        difference = float(jnp.max(jnp.abs(default[name] - custom[name])))
        print(f"custom gradient of {name}: {difference / largest:.1e} (relative)")
    times = {name: [] for name in functions}
    for _ in range(args.repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            jax.block_until_ready(function(p, x))
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        milliseconds = ", ".join(f"{1000 * value:.0f}" for value in values)
        print(f"{name}: median {1000 * np.median(values):.0f} ms ({milliseconds})")


if __name__ == "__main__":
    main()
