"""Build the files that ``tests/test_persistence.py`` loads on every backend.

Run once per backend, from the repository root::

    for backend in jax tensorflow torch; do
        KERAS_BACKEND=$backend .venv/bin/python tests/data/make_persistence_files.py
    done

For every case it writes, into ``persistence/<backend>/``, ``<case>.keras``
(``model.save``), ``<case>.weights.h5`` (``model.save_weights``) and ``<case>.npz``
(the input, the output the model computed on this backend, and every weight in the
order of ``model.get_weights()``), with every weight set to a random value first so
that a wrong weight mapping cannot go unseen. One case trains its theta first, so
that the file holds a theta other than the initial one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import keras
import numpy as np

import keras_lmu

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "persistence")
STEPS = 6
FEATURES = 2
#: the initial theta of the case that trains it
TRAINED_THETA_START = 5.0


def cases() -> list[tuple[str, Callable[[], keras.layers.Layer]]]:
    """(name, layer factory) for every file; each layer takes (batch, STEPS, FEATURES)."""
    rnn = keras.layers.SimpleRNNCell
    return [
        (
            "lmu_parallel",
            lambda: keras_lmu.LMU(
                2, 4, 6.0, keras.layers.Dense(3), use_bias=True, return_sequences=True
            ),
        ),
        (
            "lmu_recurrent",
            lambda: keras_lmu.LMU(
                1,
                4,
                5.0,
                rnn(3),
                hidden_to_memory=True,
                memory_to_memory=True,
                return_sequences=True,
            ),
        ),
        (
            "lmu_trained_theta",
            lambda: keras_lmu.LMU(
                1,
                4,
                TRAINED_THETA_START,
                keras.layers.Dense(3),
                trainable_theta=True,
                return_sequences=True,
            ),
        ),
        (
            "feedforward_fft",
            lambda: keras_lmu.LMUFeedforward(
                1, 4, 6.0, rnn(3), conv_mode="fft", return_sequences=True
            ),
        ),
        (
            "feedforward_raw",
            lambda: keras_lmu.LMUFeedforward(
                2, 3, 5.0, keras.layers.Dense(3), conv_mode="raw", input_to_hidden=True
            ),
        ),
        (
            "rnn_lmucell",
            lambda: keras.layers.RNN(
                keras_lmu.LMUCell(1, 4, 6.0, rnn(3), memory_to_memory=True, use_bias=True),
                return_sequences=True,
            ),
        ),
        (
            "lmu_euler",
            lambda: keras_lmu.LMU(
                1, 4, 8.0, None, discretizer="euler", trainable_theta=True, return_sequences=True
            ),
        ),
    ]


def build_model(factory: Callable[[], keras.layers.Layer]) -> keras.Model:
    """A model of one layer from ``factory``, on inputs of shape (STEPS, FEATURES)."""
    inputs = keras.Input((STEPS, FEATURES))
    return keras.Model(inputs, factory()(inputs))


def randomize(model: keras.Model, rng: np.random.Generator) -> None:
    """Give every weight a distinct random value (theta_inv near its start)."""
    for weight in model.weights:
        if weight.name == "theta_inv":
            value = keras.ops.convert_to_numpy(weight) * rng.uniform(0.8, 0.95)
        else:
            value = rng.uniform(-0.5, 0.5, size=weight.shape)
        weight.assign(np.asarray(value, dtype=weight.dtype))


def train_theta(model: keras.Model, rng: np.random.Generator) -> None:
    """A few steps of gradient descent, which move theta off its initial value."""
    x = rng.uniform(-1, 1, (8, STEPS, FEATURES)).astype("float32")
    y = rng.uniform(-1, 1, (8,) + tuple(model.output.shape[1:])).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(x, y, batch_size=8, epochs=5, verbose=0)


def main() -> None:
    """Write the files of every case for the backend in ``KERAS_BACKEND``."""
    folder = os.path.join(OUT, keras.backend.backend())
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, factory in cases():
        model = build_model(factory)
        randomize(model, rng)
        if name == "lmu_trained_theta":
            train_theta(model, rng)
            assert abs(model.layers[-1].theta - TRAINED_THETA_START) > 1e-3
            model = keras.Model(model.inputs[0], model.outputs[0])  # saved without optimizer
        x = rng.uniform(-1, 1, (2, STEPS, FEATURES)).astype("float32")
        y = keras.ops.convert_to_numpy(model(x))
        model.save(os.path.join(folder, f"{name}.keras"))
        model.save_weights(os.path.join(folder, f"{name}.weights.h5"))
        weights = {f"weight_{i}": w for i, w in enumerate(model.get_weights())}
        np.savez(os.path.join(folder, f"{name}.npz"), x=x, y=y, **weights)
        print(name, "ok", y.shape)


if __name__ == "__main__":
    main()
