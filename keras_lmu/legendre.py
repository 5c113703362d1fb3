"""The mathematics of the Legendre Memory Unit, as pure NumPy functions.

The LMU memory is the linear time-invariant system

.. math:: \\theta \\, \\dot m(t) = A m(t) + B u(t)

with ``A[i, j] = (2i + 1) * (-1 if i < j else (-1) ** (i - j + 1))`` and
``B[i] = (2i + 1) * (-1) ** i`` (Voelker, Kajić & Eliasmith, 2019). Its state
``m(t)`` holds the coefficients of the last ``theta`` time units of ``u`` in the
shifted Legendre basis, so that ``u(t - tau) ~ sum_i P_i(2 tau / theta - 1) m_i(t)``
for ``0 <= tau <= theta``.

Every function here takes and returns float64 NumPy arrays; the layers use them
to build exact constants, and the tests use them as a reference. Orders, windows,
step counts and tolerances are checked: a bad one raises an error that names it.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np
import scipy.linalg
from numpy.polynomial import legendre as numpy_legendre

from keras_lmu import validation

DISCRETIZERS = ("zoh", "euler")


def continuous_system(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the continuous-time matrices ``A`` (order, order) and ``B`` (order,).

    ``A[i, j] = (2i + 1) * (-1 if i < j else (-1) ** (i - j + 1))`` and
    ``B[i] = (2i + 1) * (-1) ** i``.

    Parameters
    ----------
    order : int
        Number of Legendre coefficients kept in the memory.

    Returns
    -------
    A, B : numpy.ndarray
        The state matrix and the input vector, float64.
    """
    order = validation.positive_int("order", order)
    i = np.arange(order)[:, None]
    j = np.arange(order)[None, :]
    scale = 2.0 * np.arange(order) + 1.0
    A = scale[:, None] * np.where(i < j, -1.0, (-1.0) ** (i - j + 1))
    B = scale * (-1.0) ** np.arange(order)
    return A, B


def _system_arrays(A, B, names: tuple[str, str] = ("A", "B")) -> tuple[np.ndarray, np.ndarray]:
    """``A`` and ``B`` as float64 arrays, or an error naming the one that is not a
    finite (order, order) matrix or (order,) vector."""
    A_name, B_name = names
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    order = A.shape[0] if A.ndim == 2 else None
    if A.shape != (order, order) or B.shape != (order,):
        raise ValueError(
            f"{A_name} must have shape (order, order) and {B_name} shape (order,), got "
            f"{A.shape} and {B.shape}"
        )
    for name, array in ((A_name, A), (B_name, B)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must hold finite numbers, got NaN or infinity")
    return A, B


def discretize_zoh(A: np.ndarray, B: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Discretize ``theta * dm/dt = A m + B u`` by zero-order hold with dt = 1.

    ``expm([[A / theta, B / theta], [0, 0]]) = [[A_bar, B_bar], [0, 1]]``, which
    equals ``scipy.signal.cont2discrete((A / theta, B / theta, C, D), 1, "zoh")``.

    Parameters
    ----------
    A : numpy.ndarray
        Continuous state matrix, shape (order, order).
    B : numpy.ndarray
        Continuous input vector, shape (order,).
    theta : float
        Length of the window, in steps.

    Returns
    -------
    A_bar, B_bar : numpy.ndarray
        Discrete state matrix (order, order) and input vector (order,).
    """
    theta = validation.positive_finite("theta", theta)
    A, B = _system_arrays(A, B)
    order = A.shape[0]
    augmented = np.zeros((order + 1, order + 1))
    augmented[:order, :order] = A / theta
    augmented[:order, order] = B / theta
    exponential = scipy.linalg.expm(augmented)
    if not np.all(np.isfinite(exponential)):  # (scipy returns NaN when it overflows)
        raise ValueError(
            f"theta={theta!r} is too small to discretize an order-{order} memory by "
            "zero-order hold: the matrix exponential of A / theta overflows float64"
        )
    return exponential[:order, :order], exponential[:order, order]


def discretize_euler(A: np.ndarray, B: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Discretize ``theta * dm/dt = A m + B u`` by forward Euler with dt = 1.

    ``A_bar = I + A / theta`` and ``B_bar = B / theta``.

    Parameters
    ----------
    A, B, theta
        As in :func:`discretize_zoh`.

    Returns
    -------
    A_bar, B_bar : numpy.ndarray
        Discrete state matrix (order, order) and input vector (order,).
    """
    theta = validation.positive_finite("theta", theta)
    A, B = _system_arrays(A, B)
    return np.eye(A.shape[0]) + A / theta, B / theta


def discretize(
    A: np.ndarray, B: np.ndarray, theta: float, discretizer: str = "zoh"
) -> tuple[np.ndarray, np.ndarray]:
    """Discretize with the method named by ``discretizer`` (``"zoh"`` or ``"euler"``)."""
    if discretizer == "zoh":
        return discretize_zoh(A, B, theta)
    if discretizer == "euler":
        return discretize_euler(A, B, theta)
    raise ValueError(f"discretizer must be one of {DISCRETIZERS}, got {discretizer!r}")


def discrete_system(
    order: int, theta: float, discretizer: str = "zoh"
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(A_bar, B_bar)`` of an LMU memory of ``order`` and window ``theta``."""
    A, B = continuous_system(order)
    return discretize(A, B, theta, discretizer)


def impulse_response(A_bar: np.ndarray, B_bar: np.ndarray, steps: int) -> np.ndarray:
    """Return the impulse response ``H[k] = A_bar^k B_bar`` for ``k < steps``.

    The memory after a sequence ``v_0 .. v_{T-1}`` that started from zero is
    ``m_{T-1} = sum_k H[k] v_{T-1-k}``.

    Parameters
    ----------
    A_bar : numpy.ndarray
        Discrete state matrix, shape (order, order).
    B_bar : numpy.ndarray
        Discrete input vector, shape (order,).
    steps : int
        Number of steps of the response.

    Returns
    -------
    numpy.ndarray
        Shape (steps, order).
    """
    steps = validation.integer_at_least("steps", steps, 0)
    A_bar, state = _system_arrays(A_bar, B_bar, names=("A_bar", "B_bar"))
    response = np.empty((steps, A_bar.shape[0]))
    for k in range(steps):
        response[k] = state
        state = A_bar @ state
    return response


def truncation_length(response: np.ndarray, tolerance: float) -> int:
    """Number of leading steps of ``response`` to keep when truncating its tail.

    The tail that is dropped holds less than ``tolerance`` of the response's total
    magnitude ``sum_k ||H[k]||_1``.

    Parameters
    ----------
    response : numpy.ndarray
        Impulse response, shape (steps, order).
    tolerance : float
        Largest share of the total magnitude that may be dropped (>= 0).

    Returns
    -------
    int
        Between 1 and ``len(response)``.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if not tolerance >= 0:  # also rejects NaN
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    response = np.asarray(response)
    if response.ndim != 2:
        raise ValueError(f"response must have shape (steps, order), got {response.shape}")
    if len(response) == 0:
        raise ValueError("response must have at least one step, got an empty one")
    magnitude = np.abs(response).sum(axis=1)
    tail = np.cumsum(magnitude[::-1])[::-1]  # tail[k] = sum of magnitude[k:]
    negligible = tail < tolerance * tail[0]
    if not negligible.any():
        return len(response)
    return max(1, int(np.argmax(negligible)))


def legendre_basis(order: int, theta: float, delays: np.ndarray) -> np.ndarray:
    """Shifted Legendre polynomials ``P_i(2 tau / theta - 1)`` at the given delays.

    Parameters
    ----------
    order : int
        Number of polynomials.
    theta : float
        Length of the window.
    delays : array_like
        Delays ``tau`` in ``[0, theta]``, in steps.

    Returns
    -------
    numpy.ndarray
        Shape (len(delays), order): row ``k`` reads ``u(t - delays[k])`` out of a
        memory as ``basis[k] @ m``.

    Raises
    ------
    ValueError
        For a delay outside ``[0, theta]`` (where the polynomials extrapolate, far
        from the input), or a bad ``order`` or ``theta``.
    """
    order = validation.positive_int("order", order)
    theta = validation.positive_finite("theta", theta)
    delays = np.asarray(delays, dtype=np.float64).reshape(-1)
    outside = delays[~((delays >= 0) & (delays <= theta))]
    if outside.size:
        raise ValueError(
            f"delays must lie in [0, theta] = [0, {theta:g}], got {float(outside[0]):g} "
            f"({outside.size} outside)"
        )
    return numpy_legendre.legvander(2.0 * delays / theta - 1.0, order - 1)


def decode_window(memory: np.ndarray, theta: float, delays: np.ndarray) -> np.ndarray:
    """Read the delayed input ``u(t - tau)`` back out of LMU memories.

    ``u(t - tau) ~ sum_i P_i(2 tau / theta - 1) m_i(t)``.

    Parameters
    ----------
    memory : array_like
        Memory states, shape (..., order).
    theta : float
        Window length the memory was built with.
    delays : array_like
        Delays ``tau`` in ``[0, theta]``.

    Returns
    -------
    numpy.ndarray
        Shape (..., len(delays)).

    Raises
    ------
    ValueError
        For a memory without an order axis (a scalar), or a bad delay or ``theta``.
    """
    memory = np.asarray(memory, dtype=np.float64)
    if memory.ndim == 0 or memory.shape[-1] == 0:
        raise ValueError(
            f"memory must have shape (..., order) with order >= 1, got shape {memory.shape}"
        )
    return memory @ legendre_basis(memory.shape[-1], theta, delays).T


def euler_is_stable(order: int, theta: float) -> bool:
    """Whether the euler discretization of an order-``order`` memory is stable.

    True when every eigenvalue of ``A_bar = I + A / theta`` has modulus <= 1, that is
    when ``theta >= euler_stability_bound(order)`` (the same criterion, from the same
    computed eigenvalues of ``A``).
    """
    order = validation.positive_int("order", order)
    theta = validation.positive_finite("theta", theta)
    return theta >= euler_stability_bound(order)


@functools.lru_cache(maxsize=64)
def euler_stability_bound(order: int) -> float:
    """Smallest ``theta`` for which the euler discretization of an order-``order``
    memory is stable.

    ``A_bar = I + A / theta`` has the eigenvalues ``1 + lambda / theta`` for the
    eigenvalues ``lambda`` of ``A`` (all with negative real part), and
    ``|1 + lambda / theta| <= 1`` exactly when
    ``theta >= |lambda|^2 / (-2 Re lambda)``; the bound is the largest of these
    (about 5.2 at order 4, 640 at order 64, 6,500 at order 256). zoh is stable for
    every ``theta``.

    ``A`` is far from normal, so its eigenvalues computed in float64 (LAPACK's
    ``geev``) lose accuracy as the order grows. Against the roots of its characteristic
    polynomial refined in 800-digit arithmetic, the bound is within 1e-7 (relative) up
    to order 256 and 2.7e-5 at order 512 (20,790.45 against 20,791.02: slightly low),
    but at order 1024 it is 66,306 here against 65,948.2 (0.5% high; 67,435 and 67,494
    from ``A``'s transpose and from ``diag(2i+1)^(-1/2) A diag(2i+1)^(1/2)``, which
    have the same eigenvalues), and it may differ with the LAPACK build. Near the bound
    at high orders, choose ``theta`` with a margin, or zoh.
    """
    A, _ = continuous_system(order)
    return euler_stability_bound_of(A)


def euler_stability_bound_of(A: np.ndarray) -> float:
    """Smallest ``theta`` for which ``A_bar = I + A / theta`` keeps the decaying modes
    of ``theta dm/dt = A m + B u`` from growing.

    ``max |lambda|^2 / (-2 Re lambda)`` over the eigenvalues ``lambda`` of ``A`` with
    negative real part (modes that do not decay in continuous time are left out: no
    discretization makes them decay); 0 when there are none.
    """
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}")
    eigenvalues = np.linalg.eigvals(A)
    decaying = eigenvalues[eigenvalues.real < 0]
    if not decaying.size:
        return 0.0
    return float(np.max(np.abs(decaying) ** 2 / (-2.0 * decaying.real)))
