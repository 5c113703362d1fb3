"""Data sets for LMU experiments: permuted sequential MNIST and the Mackey-Glass series.

The data are built with NumPy; Keras's downloader is called (inside
:func:`load_psmnist`) only when no local copy of MNIST is found. (Importing this module
imports the ``keras_lmu`` package, and with it Keras and its backend.)
"""

from __future__ import annotations

import math
import numbers
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from keras_lmu import validation

#: Seed of the fixed pixel permutation of psMNIST (see :func:`psmnist_permutation`).
PSMNIST_SEED = 1

#: Environment variable naming a folder that holds ``mnist.npz``.
DATA_DIR_ENV = "KERAS_LMU_DATA"

#: File name looked up in the folder named by :data:`DATA_DIR_ENV`.
MNIST_FILE_NAME = "mnist.npz"

MNIST_TRAIN_SIZE = 60000
MNIST_TEST_SIZE = 10000
MNIST_IMAGE_SHAPE = (28, 28)
MNIST_PIXELS = 28 * 28
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")

#: Images and labels of one split.
Split = tuple[np.ndarray, np.ndarray]
#: Raw MNIST: ``((x_train, y_train), (x_test, y_test))``.
RawMnist = tuple[Split, Split]

_HOW_TO_PROVIDE_MNIST = (
    f"set the environment variable {DATA_DIR_ENV} to a folder holding {MNIST_FILE_NAME} "
    "(arrays x_train, y_train, x_test, y_test as saved by keras.datasets.mnist), "
    "or, calling the loading functions from Python, pass path= the .npz file itself"
)


def psmnist_permutation(seed: int = PSMNIST_SEED) -> np.ndarray:
    """Return the fixed permutation of the 784 MNIST pixels used by psMNIST.

    The permutation is ``np.random.default_rng(seed).permutation(784)``; the
    default seed is :data:`PSMNIST_SEED` (1), so every run of the package sees the
    same task.

    Parameters
    ----------
    seed : int
        Seed of the random generator, an integer >= 0 (``None``, which NumPy takes
        for a fresh random seed, is refused: the task would change from run to run).

    Returns
    -------
    numpy.ndarray
        Integer array of shape (784,): pixel ``j`` of a permuted sequence is
        pixel ``permutation[j]`` of the row-major flattened image.
    """
    seed = validation.integer_at_least("seed", seed, minimum=0)
    return np.random.default_rng(seed).permutation(MNIST_PIXELS)


def load_psmnist(
    path: str | os.PathLike | None = None, validation: int = 10000
) -> tuple[Split, Split, Split]:
    """Load permuted sequential MNIST (psMNIST).

    Every image is scaled to [0, 1] (``uint8 / 255`` as float32), flattened row by
    row and permuted by :func:`psmnist_permutation`, giving a sequence of 784
    steps with one feature each.

    The data come from:

    1. ``path``, the ``.npz`` file itself, when given;
    2. else ``mnist.npz`` in the folder named by the environment variable
       ``KERAS_LMU_DATA``, when it is set (a folder without that file is an error,
       not a download: the variable says where the data are meant to be);
    3. else ``keras.datasets.mnist.load_data()`` (downloads on first use).

    Parameters
    ----------
    path : str or os.PathLike, optional
        An ``.npz`` file with the uint8 arrays ``x_train`` (60000, 28, 28),
        ``y_train`` (60000,), ``x_test`` (10000, 28, 28) and ``y_test`` (10000,).
    validation : int
        How many of the training images, taken from the end of the training set,
        form the validation split (0 gives an empty split).

    Returns
    -------
    ((x_train, y_train), (x_val, y_val), (x_test, y_test))
        Each ``x`` is float32 of shape (n, 784, 1); each ``y`` holds integer class
        labels 0-9 of shape (n,).

    Raises
    ------
    FileNotFoundError
        If no source of MNIST is available; the message says how to provide it.
    ValueError
        If ``validation`` is not an integer in [0, 60000], or the file is not a
        valid MNIST ``.npz``.
    """
    validation = _check_validation_size(validation)
    (x_train, y_train), (x_test, y_test) = _load_raw_mnist(path)
    permutation = psmnist_permutation()
    x_train = _to_permuted_sequences(x_train, permutation)
    x_test = _to_permuted_sequences(x_test, permutation)
    y_train = y_train.astype(np.int64)
    y_test = y_test.astype(np.int64)
    split = len(x_train) - validation
    return (
        (x_train[:split], y_train[:split]),
        (x_train[split:], y_train[split:]),
        (x_test, y_test),
    )


def _check_validation_size(validation) -> int:
    """Return ``validation`` as an int, or raise a ValueError naming the argument."""
    if isinstance(validation, bool) or not isinstance(validation, numbers.Integral):
        raise ValueError(f"validation must be an integer number of images, got {validation!r}")
    if not 0 <= validation <= MNIST_TRAIN_SIZE:
        raise ValueError(f"validation must be between 0 and {MNIST_TRAIN_SIZE}, got {validation}")
    return int(validation)


def _to_permuted_sequences(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Scale uint8 images to [0, 1] and make them permuted (n, 784, 1) sequences."""
    pixels = images.reshape(len(images), MNIST_PIXELS)[:, permutation]
    return (pixels.astype(np.float32) / np.float32(255))[:, :, None]


def _load_raw_mnist(path) -> RawMnist:
    """Return raw uint8 MNIST from ``path``, ``$KERAS_LMU_DATA`` or Keras, in that order."""
    if path is not None:
        return _read_mnist_npz(Path(path))
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        path = Path(data_dir) / MNIST_FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{DATA_DIR_ENV} is set to {data_dir}, but {path} does not exist; "
                f"{_HOW_TO_PROVIDE_MNIST}"
            )
        return _read_mnist_npz(path)
    return _download_mnist()


def _read_mnist_npz(path: Path) -> RawMnist:
    """Read and check an MNIST ``.npz`` file."""
    if path.is_dir():
        raise FileNotFoundError(
            f"MNIST file {path} is a folder: give the .npz file itself (or set "
            f"{DATA_DIR_ENV} to the folder, if it holds {MNIST_FILE_NAME})"
        )
    if not path.is_file():
        raise FileNotFoundError(f"MNIST file {path} does not exist; {_HOW_TO_PROVIDE_MNIST}")
    arrays = _read_npz_arrays(path)
    missing = [key for key in MNIST_KEYS if key not in arrays]
    if missing:
        raise ValueError(
            f"MNIST file {path} lacks the arrays {missing}; it must hold {list(MNIST_KEYS)}"
        )
    return _check_mnist_arrays(arrays, f"MNIST file {path}")


def _read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Return every array of an ``.npz`` file, or raise a ValueError naming the file."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"MNIST file {path} is not a readable .npz file: it is not a zip archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"MNIST file {path} is not a readable .npz file: {error}") from error


def _download_mnist() -> RawMnist:
    """Get MNIST through ``keras.datasets.mnist``; raise FileNotFoundError if that fails."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:
        raise FileNotFoundError(
            f"MNIST is not available: no path was given, {DATA_DIR_ENV} is not set (or empty), and "
            f"keras.datasets.mnist.load_data() failed ({type(error).__name__}: {error}). "
            f"To provide the data, {_HOW_TO_PROVIDE_MNIST}."
        ) from error
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return _check_mnist_arrays(arrays, "MNIST from keras.datasets.mnist")


def _check_mnist_arrays(arrays: dict[str, np.ndarray], source: str) -> RawMnist:
    """Check the shapes and values of raw MNIST arrays; errors start with ``source``."""
    expected_shapes = {
        "x_train": (MNIST_TRAIN_SIZE, *MNIST_IMAGE_SHAPE),
        "y_train": (MNIST_TRAIN_SIZE,),
        "x_test": (MNIST_TEST_SIZE, *MNIST_IMAGE_SHAPE),
        "y_test": (MNIST_TEST_SIZE,),
    }
    for key, shape in expected_shapes.items():
        array = arrays[key]
        if array.shape != shape:
            raise ValueError(f"{source}: {key} has shape {array.shape}, expected {shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{source}: {key} has dtype {array.dtype}, expected integers (uint8)")
    for key in ("x_train", "x_test"):
        if arrays[key].min() < 0 or arrays[key].max() > 255:
            raise ValueError(f"{source}: {key} has pixels outside 0..255")
    for key in ("y_train", "y_test"):
        if arrays[key].min() < 0 or arrays[key].max() > 9:
            raise ValueError(f"{source}: {key} has labels outside 0..9")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


RK4_DECAY_STABILITY_LIMIT = 2.785293563405282
"""Largest ``gamma * h`` for which fourth-order Runge-Kutta with step ``h`` keeps
``dx/dt = -gamma * x`` from growing: the positive root of ``z**3 - 4 z**2 + 12 z - 24``,
where the method's growth factor ``1 - z + z**2/2 - z**3/6 + z**4/24`` equals 1."""

MAX_INTEGRATION_POINTS = 100_000_000
"""Most grid points one Mackey-Glass series may integrate: the initial history, the
washout and the samples, ``ceil(tau * substeps / dt) + 1 + (washout + steps) * substeps``.
The integrator keeps every point in a Python list (about 32 bytes each) and takes a few
microseconds per point, so this many is minutes and gigabytes."""


def mackey_glass(
    steps: int,
    tau: float = 17,
    beta: float = 0.2,
    gamma: float = 0.1,
    n: float = 10,
    dt: float = 1.0,
    seed: int = 0,
    washout: int = 1000,
    substeps: int = 10,
) -> np.ndarray:
    """Return a Mackey-Glass time series.

    Integrates the delay differential equation::

        dx/dt = beta * x(t - tau) / (1 + x(t - tau)**n) - gamma * x(t)

    with the classic fourth-order Runge-Kutta method on a grid of step
    ``dt / substeps``; delayed values between grid points are linearly
    interpolated. The initial history on ``[-tau, 0]`` is random: values drawn
    uniformly from [0.5, 1.5) by ``np.random.default_rng(seed)``, about one per
    time unit, joined linearly. The first ``washout`` samples are discarded so
    the series starts on the attractor. With the defaults
    (``tau=17``) the series is chaotic and stays roughly within [0.2, 1.4].

    Parameters
    ----------
    steps : int
        Number of samples returned.
    tau : float
        Delay; must be at least the integration step ``dt / substeps``.
    beta, gamma, n : float
        Feedback gain, decay rate and exponent of the equation (all positive).
    dt : float
        Time between returned samples.
    seed : int
        Seed of the random initial history; the result is deterministic for a seed.
    washout : int
        Number of samples (spaced ``dt``) integrated and discarded before the
        returned ones.
    substeps : int
        Integration steps per sample; ``gamma * dt / substeps`` must be below
        ``RK4_DECAY_STABILITY_LIMIT`` (about 2.79), where the integration would grow
        without bound.

    The series' grid, ``ceil(tau * substeps / dt) + 1 + (washout + steps) *
    substeps`` points, may hold at most :data:`MAX_INTEGRATION_POINTS`.

    Returns
    -------
    numpy.ndarray
        float64 array of shape (steps,).

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type or value; the message names it.
    """
    steps = validation.integer_at_least("steps", steps, minimum=1)
    washout = validation.integer_at_least("washout", washout, minimum=0)
    substeps = validation.integer_at_least("substeps", substeps, minimum=1)
    seed = validation.integer_at_least("seed", seed, minimum=0)
    tau, beta, gamma, n, dt = (
        validation.positive_finite(name, value)
        for name, value in (("tau", tau), ("beta", beta), ("gamma", gamma), ("n", n), ("dt", dt))
    )
    step = dt / substeps
    delay = tau / step  # the delay in integration steps
    if delay < 1:
        raise ValueError(
            f"tau must be at least the integration step dt / substeps = {step}, got {tau}"
        )
    if gamma * step >= RK4_DECAY_STABILITY_LIMIT:
        raise ValueError(
            f"the integration step dt / substeps = {step:g} is too coarse for gamma={gamma:g}: "
            f"fourth-order Runge-Kutta of the decay -gamma * x grows without bound unless "
            f"gamma * dt / substeps < {RK4_DECAY_STABILITY_LIMIT:.4f}; use substeps >= "
            f"{math.floor(gamma * dt / RK4_DECAY_STABILITY_LIMIT) + 1} (a few times more for "
            "accuracy)"
        )
    history_points = math.ceil(delay) + 1
    integration_steps = (washout + steps) * substeps
    if history_points + integration_steps > MAX_INTEGRATION_POINTS:
        raise ValueError(
            f"this series needs {history_points + integration_steps:,} integration points "
            f"({history_points:,} for the initial history, tau * substeps / dt, and "
            f"{integration_steps:,} for (washout + steps) * substeps), more than "
            f"MAX_INTEGRATION_POINTS = {MAX_INTEGRATION_POINTS:,}; use fewer steps, a smaller "
            "washout, fewer substeps or a larger dt (or a smaller tau)"
        )
    history = _initial_history(tau, delay, seed)
    trajectory = _integrate_mackey_glass(history, integration_steps, delay, step, beta, gamma, n)
    start = len(history) - 1  # index of t = 0
    samples = np.asarray(trajectory[start + washout * substeps :: substeps][:steps], np.float64)
    if not np.all(np.isfinite(samples)):
        raise ValueError(
            f"the series left the range of float64 numbers (beta={beta:g}, gamma={gamma:g}, "
            f"n={n:g}, dt / substeps = {step:g}): it grows to about beta / gamma; use "
            "smaller beta or larger gamma"
        )
    return samples


def _initial_history(tau: float, delay: float, seed: int) -> list[float]:
    """Random history of the series on the integration grid over [-tau, 0].

    ``delay`` is tau in integration steps. Values drawn uniformly from [0.5, 1.5)
    at about one per time unit are joined linearly, so the history does not
    depend on the grid's step.
    """
    knots = np.linspace(-tau, 0.0, math.ceil(tau) + 1)
    values = np.random.default_rng(seed).uniform(0.5, 1.5, size=len(knots))
    grid_points = math.ceil(delay) + 1
    times = -(tau / delay) * np.arange(grid_points - 1, -1, -1)
    return np.interp(times, knots, values).tolist()


def _integrate_mackey_glass(
    history: list[float],
    num_steps: int,
    delay: float,
    step: float,
    beta: float,
    gamma: float,
    n: float,
) -> list[float]:
    """Run RK4 for ``num_steps`` steps after ``history``; return history and trajectory.

    ``delay`` is tau in integration steps (at least 1, so every delayed value an
    RK4 stage needs is already known).
    """
    x = list(history)
    whole, fraction = divmod(delay, 1.0)
    whole = int(whole)

    def delayed(position: float) -> float:
        """x at a fractional grid index, by linear interpolation."""
        index = math.floor(position)
        weight = position - index
        if weight == 0.0:
            return x[index]
        return (1.0 - weight) * x[index] + weight * x[index + 1]

    def rate(current: float, lagged: float) -> float:
        try:
            feedback = beta * lagged / (1.0 + lagged**n)
        except OverflowError:  # lagged**n is beyond float64 (lagged > 1, n > 1): divide it out
            feedback = beta * lagged ** (1.0 - n) / (lagged**-n + 1.0)
        return feedback - gamma * current

    for k in range(len(x) - 1, len(x) - 1 + num_steps):
        lag_start = delayed(k - whole - fraction)
        lag_middle = delayed(k + 0.5 - whole - fraction)
        lag_end = delayed(k + 1 - whole - fraction)
        current = x[k]
        k1 = rate(current, lag_start)
        k2 = rate(current + 0.5 * step * k1, lag_middle)
        k3 = rate(current + 0.5 * step * k2, lag_middle)
        k4 = rate(current + step * k3, lag_end)
        x.append(current + step / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4))
    return x
