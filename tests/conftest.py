"""Shared test set-up: which backend runs, and at which precision."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_lmu.feedforward

BACKEND = keras.backend.backend()
FLOAT64 = BACKEND != "jax" or os.environ.get("JAX_ENABLE_X64", "").lower() in ("1", "true")
#: dtype of the exactness tests, and their tolerance (max|diff| / max|reference|)
DTYPE = "float64" if FLOAT64 else "float32"
TOLERANCE = 1e-10 if FLOAT64 else 1e-5


def relative_error(actual, reference) -> float:
    actual = np.asarray(keras.ops.convert_to_numpy(actual), dtype=np.float64)
    reference = np.asarray(keras.ops.convert_to_numpy(reference), dtype=np.float64)
    assert actual.shape == reference.shape, (actual.shape, reference.shape)
    return float(np.max(np.abs(actual - reference)) / np.max(np.abs(reference)))


def assert_close(actual, reference, tolerance=None):
    error = relative_error(actual, reference)
    assert error <= (tolerance or TOLERANCE), f"relative error {error:.3g}"


@pytest.fixture
def unwritable_folder(tmp_path):
    """An existing folder in which no file can be created: a read-only one, or, where
    the tests run as root (who may write in it), ``/proc``."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    probe = folder / "probe"
    try:
        probe.touch()
    except OSError:
        yield folder
    else:
        probe.unlink()
        if not Path("/proc/self").is_dir():
            pytest.skip("no folder that this user cannot write in")
        yield Path("/proc")
    finally:
        folder.chmod(0o700)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    # Without Keras's full garbage collection (free_memory=True) before every test: in a
    # process that has run many tests it took up to ~1 s each, most of the time of
    # the suite's quick tests; Python's own collector still runs as objects pile up.
    keras.utils.clear_session(free_memory=False)
    yield


@pytest.fixture(autouse=True)
def _short_scan_chunks(monkeypatch):
    """Chunks of 4 steps, so that short test sequences span several chunks of
    ``conv_mode="scan"`` (and end inside one); a test may set its own."""
    monkeypatch.setattr(keras_lmu.feedforward, "SCAN_CHUNK", 4)


@pytest.fixture
def exact_floatx():
    """Run with ``floatx`` = DTYPE: Keras's own cells (e.g. tanh on JAX) follow floatx."""
    previous = keras.config.floatx()
    keras.config.set_floatx(DTYPE)
    yield
    keras.config.set_floatx(previous)
