"""Argument checks shared by the layers: each error names the argument and what is allowed."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


def command_line_number(convert, accepts, expected: str):
    """An ``argparse`` type: ``convert(text)`` when ``accepts`` it, else an error that
    says it ``expected`` ... (e.g. "a positive integer") and repeats the text.

    Examples
    --------
    >>> parser.add_argument("--epochs", type=command_line_number(int, lambda n: n > 0,
    ...                     "a positive integer"))  # doctest: +SKIP
    """
    import argparse

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def flag(name: str, value) -> bool:
    """Return ``value`` as a bool, or raise if it is not True or False (or 1 or 0):
    ``bool("False")`` is True, so a string is refused rather than read."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def positive_int(name: str, value) -> int:
    """Return ``value`` as an int, or raise if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def integer_at_least(name: str, value, minimum: int) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def positive_finite(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def non_negative_finite(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def rate(name: str, value) -> float:
    """Return a dropout rate as a float, or raise if it is outside [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def choice(name: str, value, allowed: tuple) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def discretizer(value) -> str:
    """Check the ``discretizer`` argument."""
    from keras_lmu.legendre import DISCRETIZERS  # (legendre checks its arguments here)

    return choice("discretizer", value, DISCRETIZERS)


def truncation(value) -> float | None:
    """Check ``truncate_ir``: None or a share of the impulse response in [0, 1)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"truncate_ir must be None or a number in [0, 1), got {value!r}")
    if not 0 <= value < 1:
        raise ValueError(
            f"truncate_ir must be None or a number in [0, 1) (the share of the impulse "
            f"response's magnitude that may be dropped), got {value!r}"
        )
    return float(value)


def hidden_layer(value):
    """Check ``hidden_cell``: a Keras layer (an RNN cell or a stateless layer) or None."""
    import keras  # (here: this module is imported by ``legendre``, which needs no backend)

    if value is not None and not isinstance(value, keras.layers.Layer):
        raise TypeError(
            "hidden_cell must be a Keras layer (e.g. keras.layers.SimpleRNNCell or "
            f"keras.layers.Dense) or None, got {value!r}"
        )
    # LSTM, GRU, SimpleRNN, RNN(cell), and Bidirectional, which runs two of them.
    rnn = value.forward_layer if isinstance(value, keras.layers.Bidirectional) else value
    if isinstance(rnn, keras.layers.RNN):
        loops = "its own loop" if rnn is value else "two loops"
        raise TypeError(
            f"hidden_cell must be an RNN cell (e.g. keras.layers.{type(rnn.cell).__name__}(...)), "
            f"not the layer {type(value).__name__!r}, which runs {loops} over a sequence: "
            "the LMU gives its hidden cell one step at a time"
        )
    if value is not None and not hasattr(value, "state_size") and _call_takes_states(value):
        raise TypeError(
            f"hidden_cell {value.name!r} takes states in its call but has no state_size: "
            "an RNN cell needs a state_size attribute (and output_size where its output "
            "is not the size of its first state), as keras.layers.SimpleRNNCell has"
        )
    return value


def _call_takes_states(layer) -> bool:
    """Whether ``layer.call`` has a ``states`` parameter, as an RNN cell's does."""
    import inspect

    try:
        return "states" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def sequence_shape(layer_name: str, input_shape) -> tuple:
    """Check that inputs are (batch, steps, features) with known features."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(isinstance(s, (list, tuple)) for s in input_shape):
        raise ValueError(
            f"{layer_name} expects inputs of shape (batch, steps, features), got "
            f"shape {input_shape}"
        )
    if input_shape[-1] is None:
        raise ValueError(
            f"{layer_name} needs a known number of input features, got shape {input_shape}"
        )
    if input_shape[1] == 0:
        raise ValueError(
            f"{layer_name} needs sequences of at least one step, got shape {input_shape}"
        )
    return input_shape


def length_fixed_when_traced(layer_name: str, built_steps: int | None, inputs) -> None:
    """Refuse a trace by PyTorch's exporter (``model.export(format="onnx")``) of a layer
    built for sequences of any length at the length 1 that Keras traces such a length
    with: the exported graph would compute one step whatever the input's length."""
    import keras

    if keras.backend.backend() != "torch" or built_steps is not None:
        return
    import torch

    if torch.jit.is_tracing() and int(inputs.shape[1]) == 1:
        raise ValueError(
            f"{layer_name} was built for sequences of any length, which PyTorch's ONNX "
            "exporter records at the one step it traces: the exported model would compute "
            "one step for inputs of any length. Export a fixed length: "
            "model.export(path, format='onnx', input_signature=[keras.InputSpec("
            "shape=(None, steps, features))]) (or build the model for sequences of one "
            "step, if that is what it serves)"
        )


def sequence_and_mask(layer_name: str, inputs, mask) -> None:
    """Check, at call time, that ``inputs`` has steps and ``mask`` is (batch, steps)."""
    shape = tuple(inputs.shape)
    if len(shape) == 3 and shape[1] == 0:
        raise ValueError(f"{layer_name} needs sequences of at least one step, got shape {shape}")
    if mask is None:
        return
    mask_shape = tuple(mask.shape)
    if len(mask_shape) != 2 or any(
        m is not None and s is not None and m != s
        for m, s in zip(mask_shape, shape[:2], strict=False)
    ):
        raise ValueError(
            f"{layer_name} expects a mask of shape (batch, steps) = {shape[:2]}, got shape "
            f"{mask_shape}"
        )


def warn_if_float64_unavailable(layer: keras.layers.Layer) -> None:
    """Warn when a float64 layer is made on JAX without 64-bit mode (it would run float32)."""
    import keras

    if layer.compute_dtype != "float64" or keras.backend.backend() != "jax":
        return
    import jax

    if not jax.config.jax_enable_x64:
        warnings.warn(
            f"{layer.name} asks for float64, but JAX computes in float32 unless 64-bit "
            "mode is on: set the environment variable JAX_ENABLE_X64=1 before importing "
            "JAX (or call jax.config.update('jax_enable_x64', True) at start-up).",
            stacklevel=3,
        )


class UnstableDiscretizationWarning(UserWarning):
    """The chosen discretization of the memory is unstable for its ``theta``."""


def warn_if_euler_unstable(layer_name: str, order: int, theta: float) -> None:
    """Warn when ``discretizer="euler"`` is unstable for ``order`` at this ``theta``.

    A warning, not an error: such settings appear in existing code (the memory only
    blows up over sequences long enough), and a trainable theta may cross the bound
    during training (which is not checked).
    """
    from keras_lmu.legendre import euler_stability_bound

    bound = euler_stability_bound(order)
    if theta < bound:
        warnings.warn(
            f"{layer_name}: discretizer='euler' is unstable for an order-{order} memory "
            f"with theta < {bound:.6g} steps (got theta={theta:g}): the memory grows "
            "without bound over long sequences. Use discretizer='zoh' (stable for every "
            f"theta) or theta >= {bound:.6g}.",
            UnstableDiscretizationWarning,
            stacklevel=4,
        )
