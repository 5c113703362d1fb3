"""Build the keras-lmu 0.9 reference files used by ``tests/test_legacy_files.py``.

Run with keras-lmu 0.9.0 (TensorFlow backend) in its *own* virtual environment,
because it is imported as ``keras_lmu`` too::

    python -m venv /tmp/peer && /tmp/peer/bin/pip install keras-lmu==0.9.0
    KERAS_BACKEND=tensorflow /tmp/peer/bin/python tests/data/make_legacy_files.py

For every case it writes ``<case>.keras`` (``model.save``) and ``<case>.npz``
(the input it was fed and the output keras-lmu computed), with every weight
set to a random value first so that a wrong weight mapping cannot go unseen.
"""

import json
import os
import zipfile

import h5py
import keras
import numpy as np

import keras_lmu

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "legacy")
STEPS = 12


def cases():
    """(name, input features, layer factory) for every reference file."""
    rnn = keras.layers.SimpleRNNCell
    return [
        ("lmu_rnn_hidden", 2, lambda: keras_lmu.LMU(1, 4, 5.0, rnn(3), return_sequences=True)),
        (
            "lmu_dense_hidden",
            3,
            lambda: keras_lmu.LMU(2, 5, 7.0, keras.layers.Dense(4), use_bias=True),
        ),
        (
            "lmu_all_connections",
            2,
            lambda: keras_lmu.LMU(
                2,
                4,
                6.0,
                rnn(3),
                hidden_to_memory=True,
                memory_to_memory=True,
                input_to_hidden=True,
                use_bias=True,
                return_sequences=True,
            ),
        ),
        (
            "lmu_memory_to_memory",
            2,
            lambda: keras_lmu.LMU(
                1, 6, 9.0, keras.layers.Dense(3), memory_to_memory=True, return_sequences=True
            ),
        ),
        (
            "lmu_trainable_theta",
            2,
            lambda: keras_lmu.LMU(
                1, 4, 5.0, keras.layers.Dense(3), trainable_theta=True, return_sequences=True
            ),
        ),
        (
            "lmu_trainable_theta_euler",
            2,
            lambda: keras_lmu.LMU(
                2, 3, 8.0, rnn(3), trainable_theta=True, discretizer="euler", hidden_to_memory=True
            ),
        ),
        (
            "lmu_no_hidden",
            3,
            lambda: keras_lmu.LMU(
                3,
                4,
                6.0,
                None,
                input_to_hidden=True,
                kernel_initializer=None,
                return_sequences=True,
            ),
        ),
        (
            "rnn_lmucell_no_hidden",
            2,
            lambda: keras.layers.RNN(
                keras_lmu.LMUCell(1, 4, 6.0, None, input_to_hidden=True, input_d=2, use_bias=True),
                return_sequences=True,
            ),
        ),
        (
            "lmu_lstm_hidden",
            2,
            lambda: keras_lmu.LMU(1, 5, 10.0, keras.layers.LSTMCell(3), return_sequences=True),
        ),
        (
            "lmu_euler",
            2,
            lambda: keras_lmu.LMU(
                1, 4, 20.0, keras.layers.Dense(3), discretizer="euler", return_sequences=True
            ),
        ),
        (
            "rnn_lmucell",
            2,
            lambda: keras.layers.RNN(
                keras_lmu.LMUCell(2, 4, 6.0, rnn(3), memory_to_memory=True, use_bias=True),
                return_sequences=True,
            ),
        ),
        (
            "rnn_lmucell_trainable_theta",
            2,
            lambda: keras.layers.RNN(
                keras_lmu.LMUCell(1, 4, 5.0, rnn(3), trainable_theta=True, hidden_to_memory=True),
                return_sequences=True,
            ),
        ),
        (
            "feedforward_fft",
            3,
            lambda: keras_lmu.LMUFeedforward(
                2,
                4,
                6.0,
                keras.layers.Dense(3),
                use_bias=True,
                input_to_hidden=True,
                return_sequences=True,
            ),
        ),
        (
            "feedforward_raw",
            2,
            lambda: keras_lmu.LMUFeedforward(1, 5, 8.0, keras.layers.Dense(3), conv_mode="raw"),
        ),
        (
            "feedforward_rnn_hidden",
            2,
            lambda: keras_lmu.LMUFeedforward(1, 4, 6.0, rnn(3), return_sequences=True),
        ),
    ]


def randomize(model, rng):
    """Give every weight a distinct random value (positive for theta_inv)."""
    for w in model.weights:
        value = rng.uniform(-0.5, 0.5, size=w.shape)
        if "theta_inv" in w.path:
            value = np.abs(value) + 0.1
        w.assign(value.astype(w.dtype))


def h5_layout(path):
    """Paths and shapes of all variables in a saved ``.keras`` file."""
    layout = {}
    with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as f:
        with h5py.File(f, "r") as h5:
            h5.visititems(
                lambda name, obj: (
                    layout.__setitem__(name, list(obj.shape))
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            )
    return layout


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    summary = {}
    for name, features, factory in cases():
        inp = keras.Input((STEPS, features))
        model = keras.Model(inp, factory()(inp))
        randomize(model, rng)
        x = rng.uniform(-1, 1, size=(3, STEPS, features)).astype("float32")
        y = keras.ops.convert_to_numpy(model(x))
        path = os.path.join(OUT, f"{name}.keras")
        model.save(path)
        np.savez(os.path.join(OUT, f"{name}.npz"), x=x, y=y)
        summary[name] = {
            "weights": [(w.path, list(w.shape)) for w in model.weights],
            "h5": h5_layout(path),
        }
        print(name, "ok", y.shape)
    with open(os.path.join(OUT, "layouts.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
