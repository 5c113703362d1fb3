"""Configs, saving and loading: our own files, keras-lmu 0.9 files, across backends."""

import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND, assert_close

import keras_lmu

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy")
LEGACY_CASES = sorted(
    os.path.basename(path)[: -len(".keras")] for path in glob.glob(os.path.join(LEGACY, "*.keras"))
)


def test_legacy_files_present():
    assert len(LEGACY_CASES) >= 14


@pytest.mark.parametrize("case", LEGACY_CASES)
def test_keras_lmu_file_loads_with_same_outputs(case):
    """Files saved by keras-lmu 0.9 (TensorFlow) load on every backend and agree."""
    model = keras.saving.load_model(os.path.join(LEGACY, f"{case}.keras"))
    data = np.load(os.path.join(LEGACY, f"{case}.npz"))
    assert_close(model(data["x"]), data["y"], tolerance=1e-5)


def test_legacy_trained_theta_is_restored():
    model = keras.saving.load_model(os.path.join(LEGACY, "lmu_trainable_theta.keras"))
    layer = model.layers[-1]
    layouts = json.load(open(os.path.join(LEGACY, "layouts.json")))
    assert layouts["lmu_trainable_theta"]["h5"]["layers/lmu/layer/cell/vars/1"] == []
    # keras-lmu ran this one as RNN(LMUCell); here it runs in parallel.
    assert isinstance(layer.layer, keras_lmu.LMUFeedforward)
    assert layer.theta != pytest.approx(5.0)


def models_with_every_layer():
    """(name, model) pairs covering the three classes and their main options."""
    inp = keras.Input((9, 3))
    rnn = keras.layers.SimpleRNNCell
    layers = {
        "lmu_parallel": keras_lmu.LMU(
            2,
            4,
            6.0,
            keras.layers.Dense(5),
            use_bias=True,
            trainable_theta=True,
            return_sequences=True,
        ),
        "lmu_recurrent": keras_lmu.LMU(
            1, 5, 8.0, rnn(4), hidden_to_memory=True, memory_to_memory=True, discretizer="euler"
        ),
        "lmu_none": keras_lmu.LMU(2, 3, 4.0, None, input_to_hidden=True, return_sequences=True),
        "cell_lstm": keras.layers.RNN(
            keras_lmu.LMUCell(1, 4, 5.0, keras.layers.LSTMCell(3), memory_to_memory=True, seed=3)
        ),
        "feedforward_raw": keras_lmu.LMUFeedforward(
            2, 4, 5.0, rnn(3), conv_mode="raw", return_sequences=True
        ),
    }
    return [(name, keras.Model(inp, layer(inp))) for name, layer in layers.items()]


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.uniform(-0.5, 0.5, w.shape)
        if w.name == "theta_inv":
            value = np.abs(value) + 0.05
        w.assign(value)


@pytest.mark.parametrize("index", range(5))
def test_keras_file_round_trip(tmp_path, index):
    name, model = models_with_every_layer()[index]
    randomize(model)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 9, 3)).astype("float32")
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x))
    )

    def lmu_config(layer):
        return (layer.cell if isinstance(layer, keras.layers.RNN) else layer).get_config()

    config, loaded_config = lmu_config(model.layers[-1]), lmu_config(loaded.layers[-1])
    assert config.keys() == loaded_config.keys()
    for key in config:
        if key == "hidden_cell" and config[key] is not None:
            assert config[key]["class_name"] == loaded_config[key]["class_name"]
            assert config[key]["config"] == loaded_config[key]["config"]
        elif key != "name":
            assert config[key] == loaded_config[key], key


def test_weights_file_round_trip(tmp_path):
    _, model = models_with_every_layer()[0]
    randomize(model, 5)
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    _, other = models_with_every_layer()[0]
    other.load_weights(path)
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", ["LMU", "LMUCell", "LMUFeedforward"])
def test_get_config_lists_every_constructor_argument(cls):
    import inspect

    layer_cls = getattr(keras_lmu, cls)
    kwargs = {
        "memory_d": 2,
        "order": 3,
        "theta": 4.0,
        "hidden_cell": keras.layers.SimpleRNNCell(3, name="h"),
    }
    layer = layer_cls(**kwargs)
    config = layer.get_config()
    arguments = [
        p for p in inspect.signature(layer_cls.__init__).parameters if p not in ("self", "kwargs")
    ]
    assert set(arguments) <= set(config), set(arguments) - set(config)
    clone = layer_cls.from_config(config)
    assert isinstance(clone.hidden_cell, keras.layers.SimpleRNNCell)
    assert clone.hidden_cell.units == 3
    assert clone.get_config() == config


@pytest.mark.parametrize("cls", ["LMU", "LMUCell", "LMUFeedforward"])
def test_input_d_survives_the_config(cls):
    """A layer rebuilt from its config still checks its inputs' features (LMUFeedforward's
    config lacked input_d, so its clone took any)."""
    layer = getattr(keras_lmu, cls)(1, 4, 6.0, keras.layers.Dense(3), input_d=5)
    assert layer.get_config()["input_d"] == 5
    clone = layer.__class__.from_config(layer.get_config())
    x = np.zeros((2, 6, 3), "float32")
    if cls == "LMUCell":
        clone = keras.layers.RNN(clone)
    with pytest.raises(ValueError, match="was given input_d=5 but receives inputs with 3"):
        clone(x)


def test_registered_under_keras_lmu_package():
    for cls in (keras_lmu.LMU, keras_lmu.LMUCell, keras_lmu.LMUFeedforward):
        assert keras.saving.get_registered_name(cls) == f"keras-lmu>{cls.__name__}"
    from keras_lmu import layers

    assert layers.LMU is keras_lmu.LMU and layers.LMUCell is keras_lmu.LMUCell


LOAD_SCRIPT = """
import sys, keras, numpy as np, keras_lmu
for model_path, data_path in zip(sys.argv[1::2], sys.argv[2::2]):
    data = np.load(data_path)
    model = keras.saving.load_model(model_path)
    y = keras.ops.convert_to_numpy(model(data["x"]))
    print(float(np.max(np.abs(y - data["y"])) / np.max(np.abs(data["y"]))))
"""


def test_file_saved_here_loads_on_the_other_backends(tmp_path):
    x = np.random.default_rng(2).uniform(-1, 1, (2, 9, 3)).astype("float32")
    names, files = [], []
    for name, model in models_with_every_layer()[:3]:
        randomize(model, 7)
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        np.savez(tmp_path / f"{name}.npz", x=x, y=keras.ops.convert_to_numpy(model(x)))
        names.append(name)
        files += [path, str(tmp_path / f"{name}.npz")]
    for backend in [b for b in ("jax", "tensorflow", "torch") if b != BACKEND]:
        result = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, *files],
            env=dict(os.environ, KERAS_BACKEND=backend),
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        errors = [float(line) for line in result.stdout.strip().splitlines()[-len(names) :]]
        assert len(errors) == len(names), result.stdout
        for name, error in zip(names, errors, strict=True):
            assert error <= 1e-5, (name, backend, error)


@pytest.mark.parametrize("saved_parallel", [True, False])
def test_file_loads_whichever_form_the_loading_lmu_picks(tmp_path, monkeypatch, saved_parallel):
    """Memory weights saved under layer/ (parallel) load into layer/cell/ and back."""
    from keras_lmu import layer as layer_module

    backend = keras.backend.backend()

    def pick(parallel):
        monkeypatch.setitem(
            layer_module.PARALLEL_MEMORY_TO_MEMORY_MAX_SIZE, backend, 1024 if parallel else 0
        )

    pick(saved_parallel)
    inp = keras.Input((9, 3))
    lmu = keras_lmu.LMU(2, 4, 6.0, keras.layers.Dense(5), memory_to_memory=True, use_bias=True)
    model = keras.Model(inp, lmu(inp))
    assert isinstance(lmu.layer, keras_lmu.LMUFeedforward) == saved_parallel
    randomize(model, 3)
    path = str(tmp_path / "m.keras")
    model.save(path)
    pick(not saved_parallel)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[-1].layer, keras_lmu.LMUFeedforward) != saved_parallel
    x = np.random.default_rng(4).uniform(-1, 1, (2, 9, 3)).astype("float32")
    assert_close(loaded(x), model(x), tolerance=1e-5)
