"""An independent float64 NumPy/SciPy reference of the LMU equations.

Written from the equations alone (not from ``keras_lmu``), so that the layers
can be checked against it.
"""

import numpy as np
from scipy.signal import cont2discrete


def legendre_ab(order):
    """Continuous A, B written out element by element."""
    A = np.zeros((order, order))
    B = np.zeros(order)
    for i in range(order):
        B[i] = (2 * i + 1) * (-1) ** i
        for j in range(order):
            A[i, j] = (2 * i + 1) * (-1 if i < j else (-1) ** (i - j + 1))
    return A, B


def discretized(order, theta, discretizer, A=None, B=None):
    """(A_bar, B_bar) by SciPy's zero-order hold, or by forward Euler.

    ``A`` and ``B`` are Legendre's unless given."""
    A_legendre, B_legendre = legendre_ab(order)
    A = A_legendre if A is None else A
    B = B_legendre if B is None else B
    if discretizer == "zoh":
        A_bar, B_bar, *_ = cont2discrete(
            (A / theta, B[:, None] / theta, np.eye(order), np.zeros((order, 1))), 1, method="zoh"
        )
        return A_bar, B_bar[:, 0]
    return np.eye(order) + A / theta, B / theta


def simple_rnn_step(x, h, kernel, recurrent_kernel, bias):
    """``keras.layers.SimpleRNNCell(activation="relu")``."""
    return np.maximum(x @ kernel + h @ recurrent_kernel + bias, 0.0)


def lmu_reference(
    x,
    *,
    memory_d,
    order,
    theta,
    discretizer="zoh",
    kernel=None,
    bias=None,
    recurrent_kernel=None,
    hidden=None,
    hidden_size=0,
    hidden_to_memory=False,
    input_to_hidden=False,
    A=None,
    B=None,
    mask=None,
):
    """Outputs (batch, steps, features) and final memories of an LMU, step by step.

    Under a boolean ``mask`` (batch, steps), a masked step keeps the memory and the
    hidden states and repeats the previous output (zeros before the first unmasked
    step); its input is never used.

    ``hidden`` is None (output = memory [+ input]), ("dense", W, b),
    ("simple_rnn", W, U, b) or ("stacked_rnn", [(W, U, b), ...]): simple RNNs, each
    one's output the next one's input; the last one's output is the LMU's and, with
    ``hidden_to_memory``, is fed back (``hidden_size`` is its size).
    """
    A_bar, B_bar = discretized(order, theta, discretizer, A, B)
    batch, steps, _ = x.shape
    memory = np.zeros((batch, memory_d, order))
    h = np.zeros((batch, hidden_size))
    if hidden is not None and hidden[0] == "stacked_rnn":
        stacked_h = [np.zeros((batch, W.shape[1])) for W, _, _ in hidden[1]]
    outputs = []
    previous_output = None
    for t in range(steps):
        keep = np.ones((batch, 1), bool) if mask is None else mask[:, t, None]
        previous_memory = memory.copy()
        if hidden is not None and hidden[0] == "stacked_rnn":
            previous_stacked_h = list(stacked_h)
        encoder_input = np.concatenate([x[:, t], h], axis=-1) if hidden_to_memory else x[:, t]
        u = encoder_input @ kernel if kernel is not None else encoder_input.copy()
        if recurrent_kernel is not None:
            u = u + memory.reshape(batch, -1) @ recurrent_kernel
        if bias is not None:
            u = u + bias
        for d in range(memory_d):
            memory[:, d] = memory[:, d] @ A_bar.T + u[:, d : d + 1] * B_bar
        hidden_input = memory.reshape(batch, -1)
        if input_to_hidden:
            hidden_input = np.concatenate([hidden_input, x[:, t]], axis=-1)
        if hidden is None:
            out = hidden_input.copy()
        elif hidden[0] == "dense":
            out = hidden_input @ hidden[1] + hidden[2]
        elif hidden[0] == "simple_rnn":
            out = simple_rnn_step(hidden_input, h, *hidden[1:])
        else:
            out = hidden_input
            for i, weights in enumerate(hidden[1]):
                out = stacked_h[i] = simple_rnn_step(out, stacked_h[i], *weights)
        if previous_output is None:
            previous_output = np.zeros_like(out)
        memory = np.where(keep[:, :, None], memory, previous_memory)
        if hidden is not None and hidden[0] == "stacked_rnn":
            held = zip(stacked_h, previous_stacked_h, strict=True)
            stacked_h = [np.where(keep, new, old) for new, old in held]
        out = np.where(keep, out, previous_output)
        h = previous_output = out
        outputs.append(out)
    return np.stack(outputs, axis=1), memory.reshape(batch, -1)


# Hidden components whose float64 arithmetic Keras keeps in float64 on every
# backend (Keras 3.15's ``ops.matmul`` returns float32 for float64 inputs on
# PyTorch, and its ``tanh`` on JAX), for the exactness tests.
import keras  # noqa: E402


@keras.saving.register_keras_serializable(package="keras-lmu-tests")
class ReluRNNCell(keras.layers.Layer):
    """``h_t = relu(x_t W + h_{t-1} U + b)``, like ``SimpleRNNCell(activation="relu")``."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units
        self.output_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units))
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel", shape=(self.units, self.units)
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs, states):
        h = keras.ops.einsum("bi,ij->bj", inputs, self.kernel)
        h = h + keras.ops.einsum("bi,ij->bj", states[0], self.recurrent_kernel) + self.bias
        h = keras.ops.relu(h)
        return h, [h]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def linear_layer(units, dtype):
    """A stateless hidden layer: ``x W + b`` (weights ``kernel``, ``bias``)."""
    return keras.layers.EinsumDense("bi,ij->bj", output_shape=units, bias_axes="j", dtype=dtype)
