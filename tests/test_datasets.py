"""Tests of keras_lmu.datasets: psMNIST loading and the Mackey-Glass series."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_lmu import datasets
from keras_lmu.datasets import load_psmnist, mackey_glass, psmnist_permutation

SHAPES = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides the per-test ``keras.utils.clear_session()`` of conftest.py.

    These tests need no fresh Keras state (they build no models), and
    clearing it costs a garbage collection per test (about 0.2 s on TensorFlow
    and PyTorch).
    """
    yield


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def fake_mnist():
    """Random uint8 arrays with MNIST's shapes, so loading is tested without real data."""
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, SHAPES["x_train"], dtype=np.uint8),
        "y_train": rng.integers(0, 10, SHAPES["y_train"], dtype=np.uint8),
        "x_test": rng.integers(0, 256, SHAPES["x_test"], dtype=np.uint8),
        "y_test": rng.integers(0, 10, SHAPES["y_test"], dtype=np.uint8),
    }


@pytest.fixture(scope="module")
def fake_mnist_dir(tmp_path_factory, fake_mnist):
    """A folder holding the fake data as ``mnist.npz``."""
    folder = tmp_path_factory.mktemp("fake_mnist")
    _write_npz(folder / "mnist.npz", **fake_mnist)
    return folder


@pytest.fixture(scope="module")
def real_mnist_file():
    """The real ``mnist.npz`` from $KERAS_LMU_DATA (skips the test when unset)."""
    data_dir = os.environ.get("KERAS_LMU_DATA")
    if not data_dir:
        pytest.skip("KERAS_LMU_DATA is not set: no real MNIST to test with")
    path = Path(data_dir) / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"KERAS_LMU_DATA is set but {path} does not exist")
    return path


@pytest.fixture(scope="module")
def real_psmnist(real_mnist_file):
    return load_psmnist(validation=10000)


def _permuted(images):
    """Reference: flatten row by row, then reorder by the fixed permutation."""
    return images.reshape(len(images), 784)[:, psmnist_permutation()]


def _assert_pixels(sequences, expected_uint8):
    """``sequences`` (n, 784, 1) float32 are ``expected_uint8 / 255``."""
    assert sequences.shape == (*expected_uint8.shape, 1)
    assert sequences.dtype == np.float32
    as_uint8 = np.rint(sequences[..., 0] * 255).astype(np.uint8)
    mismatches = np.count_nonzero(as_uint8 != expected_uint8)
    assert mismatches == 0, f"{mismatches} pixels differ from the permuted originals"
    np.testing.assert_allclose(sequences[:50, :, 0], expected_uint8[:50] / 255.0, rtol=1e-6)


# psmnist_permutation ---------------------------------------------------------------


def test_permutation_is_fixed_permutation_of_784_pixels():
    permutation = psmnist_permutation()
    assert datasets.PSMNIST_SEED == 1
    np.testing.assert_array_equal(permutation, np.random.default_rng(1).permutation(784))
    np.testing.assert_array_equal(np.sort(permutation), np.arange(784))
    assert not np.array_equal(permutation, np.arange(784))
    np.testing.assert_array_equal(permutation, psmnist_permutation())


def test_permutation_depends_on_seed():
    assert not np.array_equal(psmnist_permutation(1), psmnist_permutation(2))
    np.testing.assert_array_equal(psmnist_permutation(2), np.random.default_rng(2).permutation(784))


@pytest.mark.parametrize(
    "seed, error", [(None, TypeError), (True, TypeError), (1.5, TypeError), (-1, ValueError)]
)
def test_permutation_seed_is_checked(seed, error):
    """None would give a new random task at every call (NumPy's fresh seed)."""
    with pytest.raises(error, match="seed must be"):
        psmnist_permutation(seed)


# load_psmnist on fake data -----------------------------------------------------------


def test_load_from_path_permutes_scales_and_splits(tmp_path, fake_mnist, monkeypatch):
    monkeypatch.delenv("KERAS_LMU_DATA", raising=False)
    path = _write_npz(tmp_path / "anything.npz", **fake_mnist)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_psmnist(path, validation=7000)

    assert x_train.shape == (53000, 784, 1) and x_val.shape == (7000, 784, 1)
    assert x_test.shape == (10000, 784, 1)
    for x in (x_train, x_val, x_test):
        assert x.dtype == np.float32
    for y in (y_train, y_val, y_test):
        assert y.dtype in (np.int32, np.int64)

    expected_train = _permuted(fake_mnist["x_train"])
    _assert_pixels(x_train, expected_train[:53000])
    # The validation split is the last images of the training set.
    _assert_pixels(x_val, expected_train[53000:])
    _assert_pixels(x_test, _permuted(fake_mnist["x_test"]))
    np.testing.assert_array_equal(y_train, fake_mnist["y_train"][:53000])
    np.testing.assert_array_equal(y_val, fake_mnist["y_train"][53000:])
    np.testing.assert_array_equal(y_test, fake_mnist["y_test"])


def test_one_pixel_lands_where_the_permutation_says(tmp_path, fake_mnist):
    x_train = np.zeros_like(fake_mnist["x_train"])
    x_train[0, 3, 5] = 255  # pixel 3 * 28 + 5 of image 0
    path = _write_npz(tmp_path / "one_pixel.npz", **{**fake_mnist, "x_train": x_train})
    (x, _), _, _ = load_psmnist(path, validation=0)
    step = int(np.flatnonzero(psmnist_permutation() == 3 * 28 + 5)[0])
    assert x[0, step, 0] == 1.0
    assert np.count_nonzero(x) == 1


@pytest.mark.parametrize("validation", [0, 1, 60000])
def test_validation_split_sizes(fake_mnist_dir, monkeypatch, validation):
    monkeypatch.setenv("KERAS_LMU_DATA", str(fake_mnist_dir))
    (x_train, y_train), (x_val, y_val), _ = load_psmnist(validation=validation)
    assert len(x_train) == len(y_train) == 60000 - validation
    assert len(x_val) == len(y_val) == validation
    assert x_val.shape[1:] == (784, 1)


@pytest.mark.parametrize("validation", [-1, 60001, 1.5, "100", True, None])
def test_bad_validation_is_rejected(fake_mnist_dir, monkeypatch, validation):
    monkeypatch.setenv("KERAS_LMU_DATA", str(fake_mnist_dir))
    with pytest.raises(ValueError, match="validation"):
        load_psmnist(validation=validation)


def test_path_comes_before_environment(tmp_path, fake_mnist, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("KERAS_LMU_DATA", str(empty))
    path = _write_npz(tmp_path / "given.npz", **fake_mnist)
    _, _, (_, y_test) = load_psmnist(path)
    np.testing.assert_array_equal(y_test, fake_mnist["y_test"])


def test_environment_comes_before_keras(fake_mnist_dir, fake_mnist, monkeypatch):
    monkeypatch.setenv("KERAS_LMU_DATA", str(fake_mnist_dir))

    def must_not_download():
        raise AssertionError("keras.datasets.mnist.load_data should not be called")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", must_not_download)
    _, _, (_, y_test) = load_psmnist()
    np.testing.assert_array_equal(y_test, fake_mnist["y_test"])


def test_keras_is_the_last_source(fake_mnist, monkeypatch):
    monkeypatch.delenv("KERAS_LMU_DATA", raising=False)
    arrays = fake_mnist
    monkeypatch.setattr(
        keras.datasets.mnist,
        "load_data",
        lambda: ((arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])),
    )
    _, (x_val, y_val), _ = load_psmnist(validation=10)
    np.testing.assert_array_equal(y_val, arrays["y_train"][-10:])
    _assert_pixels(x_val, _permuted(arrays["x_train"][-10:]))


def test_no_data_anywhere_says_how_to_provide_it(monkeypatch):
    monkeypatch.delenv("KERAS_LMU_DATA", raising=False)

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(FileNotFoundError, match="KERAS_LMU_DATA") as info:
        load_psmnist()
    assert "mnist.npz" in str(info.value) and "path=" in str(info.value)


def test_environment_folder_without_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_LMU_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="KERAS_LMU_DATA") as info:
        load_psmnist()
    assert str(tmp_path / "mnist.npz") in str(info.value)


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_psmnist(path)


def test_folder_given_as_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a folder: give the .npz file itself"):
        datasets.load_psmnist(path=tmp_path)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not an npz archive\n" * 100)
    with pytest.raises(ValueError, match="garbage.npz.*not a readable .npz"):
        load_psmnist(path)


def test_truncated_file(tmp_path, fake_mnist):
    whole = _write_npz(tmp_path / "whole.npz", **fake_mnist).read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_psmnist(path)


def test_single_array_file(tmp_path):
    path = tmp_path / "single.npy"
    np.save(path, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="single.npy"):
        load_psmnist(path)


def test_missing_keys(tmp_path, fake_mnist):
    path = _write_npz(tmp_path / "partial.npz", x_train=fake_mnist["x_train"])
    with pytest.raises(ValueError, match="partial.npz.*y_train"):
        load_psmnist(path)


@pytest.mark.parametrize(
    "key, array",
    [
        ("x_train", np.zeros((100, 28, 28), np.uint8)),
        ("x_test", np.zeros((10000, 784), np.uint8)),
        ("y_train", np.zeros((60000, 1), np.uint8)),
        ("y_test", np.zeros((9999,), np.uint8)),
    ],
)
def test_wrong_shapes(tmp_path, fake_mnist, key, array):
    path = _write_npz(tmp_path / "bad_shape.npz", **{**fake_mnist, key: array})
    with pytest.raises(ValueError, match=f"bad_shape.npz.*{key} has shape"):
        load_psmnist(path)


def test_wrong_dtype_and_values(tmp_path, fake_mnist):
    floats = _write_npz(
        tmp_path / "floats.npz", **{**fake_mnist, "x_test": fake_mnist["x_test"] / 255.0}
    )
    with pytest.raises(ValueError, match="floats.npz.*x_test has dtype"):
        load_psmnist(floats)
    labels = fake_mnist["y_train"].copy()
    labels[5] = 10
    bad_labels = _write_npz(tmp_path / "labels.npz", **{**fake_mnist, "y_train": labels})
    with pytest.raises(ValueError, match="labels.npz.*y_train has labels outside"):
        load_psmnist(bad_labels)


# load_psmnist on the real data ----------------------------------------------------


def test_real_psmnist_matches_raw_file(real_mnist_file, real_psmnist):
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = real_psmnist
    with np.load(real_mnist_file) as raw:
        raw_x_train, raw_y_train = raw["x_train"], raw["y_train"]
        raw_x_test, raw_y_test = raw["x_test"], raw["y_test"]

    assert x_train.shape == (50000, 784, 1)
    assert x_val.shape == (10000, 784, 1)
    assert x_test.shape == (10000, 784, 1)
    assert x_train.dtype == x_val.dtype == x_test.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() == 1.0

    sample = np.arange(0, 50000, 997)
    _assert_pixels(x_train[sample], _permuted(raw_x_train[sample]))
    _assert_pixels(x_val, _permuted(raw_x_train[50000:]))
    _assert_pixels(x_test[::97], _permuted(raw_x_test[::97]))
    np.testing.assert_array_equal(y_train, raw_y_train[:50000])
    np.testing.assert_array_equal(y_val, raw_y_train[50000:])
    np.testing.assert_array_equal(y_test, raw_y_test)
    assert set(np.unique(y_test)) == set(range(10))


def test_real_psmnist_is_not_in_image_order(real_psmnist):
    """Permuted: the first steps are spread over the image, not its blank top rows."""
    (x_train, _), _, _ = real_psmnist
    # The first 28 pixels of an unpermuted image (the top row) are always blank.
    assert x_train[:1000, :28, 0].max() > 0


# mackey_glass ------------------------------------------------------------------------


def test_mackey_glass_length_dtype_and_range():
    series = mackey_glass(3000)
    assert series.shape == (3000,)
    assert series.dtype == np.float64
    assert np.all(np.isfinite(series))
    assert 0.2 < series.min() < 0.6 and 1.1 < series.max() < 1.4
    assert series.std() > 0.1  # chaotic, not settled on the fixed point x = 1


def test_mackey_glass_is_deterministic_and_depends_on_seed():
    np.testing.assert_array_equal(mackey_glass(500, seed=3), mackey_glass(500, seed=3))
    assert np.max(np.abs(mackey_glass(500, seed=3) - mackey_glass(500, seed=4))) > 0.1


def test_mackey_glass_washout_discards_leading_samples():
    longer = mackey_glass(300, washout=100)
    np.testing.assert_allclose(mackey_glass(200, washout=200), longer[100:], rtol=1e-12)


def test_mackey_glass_samples_every_dt():
    # Same integration step (0.05) and history: the dt=0.25 series sampled twice as often.
    coarse = mackey_glass(100, dt=0.5, substeps=10, washout=20)
    fine = mackey_glass(200, dt=0.25, substeps=5, washout=40)
    np.testing.assert_allclose(coarse, fine[::2], rtol=1e-10)


def test_mackey_glass_solves_the_delay_equation():
    """Central differences of a finely sampled series match the right-hand side."""
    dt, tau, beta, gamma, n = 0.1, 17.0, 0.2, 0.1, 10
    x = mackey_glass(2000, tau=tau, beta=beta, gamma=gamma, n=n, dt=dt, substeps=2)
    lag = int(round(tau / dt))
    t = np.arange(lag + 1, len(x) - 1)
    derivative = (x[t + 1] - x[t - 1]) / (2 * dt)
    delayed = x[t - lag]
    right_hand_side = beta * delayed / (1 + delayed**n) - gamma * x[t]
    assert np.max(np.abs(derivative - right_hand_side)) < 1e-4
    assert np.max(np.abs(derivative)) > 0.02  # the check is not trivially satisfied


def test_mackey_glass_converges_with_finer_integration():
    reference = mackey_glass(60, washout=0, substeps=80)
    coarse_error = np.max(np.abs(mackey_glass(60, washout=0, substeps=5) - reference))
    fine_error = np.max(np.abs(mackey_glass(60, washout=0, substeps=20) - reference))
    assert fine_error < 1e-4
    assert fine_error < coarse_error / 4


def test_mackey_glass_other_parameters():
    settled = mackey_glass(500, tau=2)  # short delay: the fixed point x = 1 is stable
    np.testing.assert_allclose(settled[-100:], 1.0, atol=1e-6)
    stronger = mackey_glass(500, tau=30)
    assert stronger.shape == (500,) and np.all(np.isfinite(stronger))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": 10, "tau": -1}, "tau"),
        ({"steps": 10, "tau": 0.01}, "tau"),
        ({"steps": 10, "beta": 0}, "beta"),
        ({"steps": 10, "gamma": float("nan")}, "gamma"),
        ({"steps": 10, "n": "10"}, "n"),
        ({"steps": 10, "dt": 0}, "dt"),
        ({"steps": 10, "seed": -1}, "seed"),
        ({"steps": 10, "seed": None}, "seed"),
        ({"steps": 10, "washout": -5}, "washout"),
        ({"steps": 10, "substeps": 0}, "substeps"),
        ({"steps": 10, "gamma": 50.0, "substeps": 1}, "too coarse for gamma=50: .* substeps >= 18"),
        ({"steps": 10, "gamma": 0.5, "dt": 6.0, "substeps": 1}, "dt / substeps = 6 is too coarse"),
        # More grid points than the integrator may keep (these ran out of memory, or ran
        # for days, before they were refused).
        ({"steps": 10, "tau": 1e9}, "10,000,000,001 for the initial history"),
        ({"steps": 10, "dt": 1e-9}, "MAX_INTEGRATION_POINTS = 100,000,000"),
        ({"steps": 10**12}, "10,000,000,010,000 for \\(washout \\+ steps\\) \\* substeps"),
        ({"steps": 10, "washout": 10**8}, "more than MAX_INTEGRATION_POINTS"),
        # Past float64: the series grows to about beta / gamma.
        ({"steps": 10, "beta": 1e308, "gamma": 1e-5}, "left the range of float64 numbers"),
    ],
)
def test_mackey_glass_rejects_bad_arguments(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        mackey_glass(**kwargs)


def test_mackey_glass_grid_limit_is_inclusive():
    """A series of exactly MAX_INTEGRATION_POINTS points is allowed, one more is not
    (checked through the count alone: the integrator is patched out)."""
    history_points = 17 * 10 + 1  # tau=17, dt=1, substeps=10
    steps = (datasets.MAX_INTEGRATION_POINTS - history_points) // 10
    with pytest.raises(ValueError, match="MAX_INTEGRATION_POINTS"):
        mackey_glass(steps + 1, washout=0)
    calls = []
    original = datasets._integrate_mackey_glass
    try:
        datasets._integrate_mackey_glass = lambda history, num_steps, *rest: (
            calls.append(len(history) + num_steps) or [1.0] * (len(history) + num_steps)
        )
        assert mackey_glass(steps, washout=0).shape == (steps,)
    finally:
        datasets._integrate_mackey_glass = original
    assert calls == [history_points + 10 * steps] and calls[0] <= datasets.MAX_INTEGRATION_POINTS


def test_mackey_glass_with_a_large_exponent():
    """x**n beyond float64 (x > 1, n = 1e6) used to raise OverflowError; the feedback
    beta * x / (1 + x**n) is then beta * x**(1 - n) / (x**-n + 1), which is 0 here, and
    the series matches n = 1000 (where x**n overflows too, only for x > 2.03)."""
    huge = mackey_glass(500, n=1e6)
    assert np.all(np.isfinite(huge)) and 0.1 < huge.min() and huge.max() < 2.0
    # Both exponents make the feedback 0 above x = 1 (to float64 precision where x**n is
    # finite) and beta * x below it, except within ~1e-3 of 1.
    np.testing.assert_allclose(huge, mackey_glass(500, n=1e5), atol=1e-3)


def test_mackey_glass_step_limit_separates_bounded_from_growing_integration():
    """Just inside the limit the series stays bounded; the integrator just outside it
    (called directly, past the check) grows without bound: the check refuses exactly
    the steps that would return garbage."""
    limit = datasets.RK4_DECAY_STABILITY_LIMIT
    inside = mackey_glass(400, gamma=0.99 * limit, substeps=1, washout=3)
    assert np.all(np.isfinite(inside)) and np.max(np.abs(inside)) < 2.0
    history = [1.0] * 20
    outside = datasets._integrate_mackey_glass(history, 400, 17.0, 1.0, 0.2, 1.01 * limit, 10.0)
    assert abs(outside[-1]) > 1e3
    with pytest.raises(ValueError, match="too coarse"):
        mackey_glass(10, gamma=1.01 * limit, substeps=1)
