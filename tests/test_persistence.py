"""Files saved on every backend load on this one; bad files give clear errors.

The files under ``tests/data/persistence/<backend>/`` were written by
``tests/data/make_persistence_files.py`` on JAX, TensorFlow and PyTorch: a ``.keras``
file, a ``.weights.h5`` file and the expected outputs and weights (``.npz``) for each
case. Whichever backend runs the suite, every file of every backend must load, with
bitwise-equal weights and the stored outputs to float32 accuracy (backends round
float32 arithmetic differently, and pick their own parallel form).
"""

import importlib.util
import os
import zipfile

import keras
import numpy as np
import pytest
from conftest import assert_close

import keras_lmu

DATA = os.path.join(os.path.dirname(__file__), "data")
PERSISTENCE = os.path.join(DATA, "persistence")
BACKENDS = ("jax", "tensorflow", "torch")
#: max|diff| / max|stored| between backends (measured: at most 2e-7)
CROSS_BACKEND_TOLERANCE = 1e-6


def _generator():
    """``tests/data/make_persistence_files.py``, for its cases and model builder."""
    path = os.path.join(DATA, "make_persistence_files.py")
    spec = importlib.util.spec_from_file_location("make_persistence_files", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
CASES = [name for name, _ in GENERATOR.cases()]
FACTORIES = dict(GENERATOR.cases())


def stored(backend: str, case: str) -> tuple[str, dict]:
    """The path of a case's files without extension, and its ``.npz`` contents."""
    base = os.path.join(PERSISTENCE, backend, case)
    with np.load(base + ".npz") as data:
        return base, {key: data[key] for key in data.files}


def stored_weights(data: dict) -> list[np.ndarray]:
    count = sum(key.startswith("weight_") for key in data)
    return [data[f"weight_{i}"] for i in range(count)]


def assert_same_weights(model: keras.Model, data: dict) -> None:
    expected = stored_weights(data)
    actual = model.get_weights()
    assert len(actual) == len(expected)
    for value, saved in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(value, saved)


def test_files_of_every_backend_are_present():
    for backend in BACKENDS:
        for case in CASES:
            for extension in (".keras", ".weights.h5", ".npz"):
                assert os.path.exists(os.path.join(PERSISTENCE, backend, case + extension))
    size = sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(PERSISTENCE)
        for name in names
    )
    assert size < 1_000_000


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("saved_on", BACKENDS)
def test_keras_file_saved_on_any_backend_loads(saved_on, case):
    base, data = stored(saved_on, case)
    model = keras.saving.load_model(base + ".keras")
    assert_same_weights(model, data)
    assert_close(model(data["x"]), data["y"], tolerance=CROSS_BACKEND_TOLERANCE)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("saved_on", BACKENDS)
def test_weights_file_saved_on_any_backend_loads_into_a_new_model(saved_on, case):
    base, data = stored(saved_on, case)
    model = GENERATOR.build_model(FACTORIES[case])
    model.load_weights(base + ".weights.h5")
    assert_same_weights(model, data)
    assert_close(model(data["x"]), data["y"], tolerance=CROSS_BACKEND_TOLERANCE)


@pytest.mark.parametrize("saved_on", BACKENDS)
def test_trained_theta_survives(saved_on):
    base, data = stored(saved_on, "lmu_trained_theta")
    loaded = keras.saving.load_model(base + ".keras").layers[-1]
    fresh = GENERATOR.build_model(FACTORIES["lmu_trained_theta"])
    fresh.load_weights(base + ".weights.h5")
    theta_inv = [w for w in fresh.weights if w.name == "theta_inv"]
    assert len(theta_inv) == 1
    trained = 1.0 / float(keras.ops.convert_to_numpy(theta_inv[0]))
    assert abs(trained - GENERATOR.TRAINED_THETA_START) > 1e-3
    # float32 theta_inv, bitwise equal in both; ``theta`` is 1 / theta_inv in float32
    assert loaded.theta == fresh.layers[-1].theta == pytest.approx(trained, rel=1e-6)


# -- bad files ------------------------------------------------------------------------


@pytest.fixture
def saved_model(tmp_path):
    """A model of order 8 saved as ``.keras`` and ``.weights.h5``, and its folder."""
    model = small_model(order=8)
    model.save(tmp_path / "model.keras")
    model.save_weights(tmp_path / "model.weights.h5")
    return tmp_path


def small_model(order: int, **options) -> keras.Model:
    inputs = keras.Input((6, 2))
    layer = keras_lmu.LMU(1, order, 5.0, keras.layers.SimpleRNNCell(3), **options)
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "text"])
def test_a_keras_file_that_is_not_a_whole_keras_file_is_refused(saved_model, kind):
    """Keras's own error: the message names the file and asks for a `.keras` zip file
    (it says "File not found" although the file exists)."""
    content = (saved_model / "model.keras").read_bytes()
    bad = {
        "truncated": content[: len(content) // 2],
        "random bytes": np.random.default_rng(0).bytes(2000),
        "text": b"memory_d=1, order=8\n",
    }[kind]
    path = saved_model / "bad.keras"
    path.write_bytes(bad)
    assert not zipfile.is_zipfile(path)
    with pytest.raises(ValueError, match=r"bad\.keras.*`\.keras` zip file"):
        keras.saving.load_model(path)


@pytest.mark.parametrize("kind", ["truncated", "random bytes"])
def test_a_weights_file_that_is_not_a_whole_h5_file_is_refused(saved_model, kind):
    """h5py's error: "truncated file" or "file signature not found"."""
    content = (saved_model / "model.weights.h5").read_bytes()
    bad = content[: len(content) // 2] if kind == "truncated" else os.urandom(2000)
    path = saved_model / "bad.weights.h5"
    path.write_bytes(bad)
    with pytest.raises(OSError, match="truncated file|file signature not found"):
        small_model(order=8).load_weights(path)


def test_weights_of_another_order_name_the_variable_and_both_shapes(saved_model):
    """Order-8 weights into an order-16 LMU: Keras's error for the hidden cell's kernel,
    (16, 3) against (8, 3), with the variable's path."""
    model = small_model(order=16)
    with pytest.raises(ValueError, match=r"variable.shape=\(16, 3\).*value.shape=.*8, 3"):
        model.load_weights(saved_model / "model.weights.h5")


def memory_only_model(order: int, parallel: bool, monkeypatch, **options) -> keras.Model:
    """An LMU whose only weights are the memory's (no hidden cell), in either form."""
    from keras_lmu import layer as layer_module

    backend = keras.backend.backend()
    monkeypatch.setitem(layer_module.PARALLEL_MEMORY_TO_MEMORY_MAX_SIZE, backend, 1024 * parallel)
    inputs = keras.Input((6, 2))
    layer = keras_lmu.LMU(1, order, 5.0, None, memory_to_memory=True, **options)
    model = keras.Model(inputs, layer(inputs))
    assert layer.uses_parallel_form() == parallel
    return model


@pytest.mark.parametrize("loaded_parallel", [True, False])
@pytest.mark.parametrize("saved_parallel", [True, False])
def test_memory_weights_of_another_shape_or_count_are_refused_clearly(
    tmp_path, monkeypatch, saved_parallel, loaded_parallel
):
    """The LMU's own loading names the variable, its shape and the shape in the file,
    or the numbers of variables. Regression: an LMU computed in parallel loaded such
    files without any error (Keras visits its inner layer a second time, through
    ``LMU._memory_layer``, and took the second visit's success for the first's)."""
    path = tmp_path / "order8.weights.h5"
    memory_only_model(8, saved_parallel, monkeypatch).save_weights(path)
    order16 = memory_only_model(16, loaded_parallel, monkeypatch)
    before = order16.get_weights()
    with pytest.raises(
        ValueError,
        match=r"variable 'recurrent_kernel' of '\w+': it has shape \(16, 1\), but the file "
        r"holds shape \(8, 1\)",
    ):
        order16.load_weights(path)
    for value, unchanged in zip(order16.get_weights(), before, strict=True):
        np.testing.assert_array_equal(value, unchanged)

    memory_only_model(8, saved_parallel, monkeypatch, use_bias=True).save_weights(path)
    with pytest.raises(
        ValueError, match=r"holds 3 variables for the memory of '\w+', which has 2 \(kernel, "
    ):
        memory_only_model(8, loaded_parallel, monkeypatch).load_weights(path)


def test_a_failed_load_does_not_spoil_the_next_one(tmp_path, monkeypatch):
    """After refusing a file, the same model loads a right one, saved in either form."""
    wrong, right = tmp_path / "wrong.weights.h5", tmp_path / "right.weights.h5"
    memory_only_model(8, True, monkeypatch).save_weights(wrong)
    model = memory_only_model(16, True, monkeypatch)
    for saved_parallel in (True, False):
        source = memory_only_model(16, saved_parallel, monkeypatch)
        source.save_weights(right)
        with pytest.raises(ValueError, match="recurrent_kernel"):
            model.load_weights(wrong)
        model.load_weights(right)
        for value, saved in zip(model.get_weights(), source.get_weights(), strict=True):
            np.testing.assert_array_equal(value, saved)
