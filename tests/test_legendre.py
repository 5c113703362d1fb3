"""The pure NumPy mathematics in keras_lmu.legendre, against SciPy and first principles."""

import keras
import numpy as np
import pytest
from reference import discretized, legendre_ab
from scipy.signal import cont2discrete

from keras_lmu import legendre
from keras_lmu import ops as lmu_ops


def test_continuous_system_small_case_written_out():
    A, B = legendre.continuous_system(3)
    np.testing.assert_array_equal(A, [[-1, -1, -1], [3, -3, -3], [-5, 5, -5]])
    np.testing.assert_array_equal(B, [1, -3, 5])


@pytest.mark.parametrize("order", [1, 6, 64])
def test_continuous_system_matches_definition(order):
    A, B = legendre.continuous_system(order)
    A_ref, B_ref = legendre_ab(order)
    np.testing.assert_array_equal(A, A_ref)
    np.testing.assert_array_equal(B, B_ref)


@pytest.mark.parametrize("order, theta", [(1, 1.0), (6, 10.0), (64, 784.0), (256, 784.0)])
def test_zoh_equals_scipy_cont2discrete(order, theta):
    A, B = legendre.continuous_system(order)
    A_bar, B_bar = legendre.discretize_zoh(A, B, theta)
    A_ref, B_ref, *_ = cont2discrete(
        (A / theta, B[:, None] / theta, np.eye(order), np.zeros((order, 1))), 1, method="zoh"
    )
    scale = np.max(np.abs(A_ref))
    assert np.max(np.abs(A_bar - A_ref)) <= 1e-12 * scale
    assert np.max(np.abs(B_bar - B_ref[:, 0])) <= 1e-12 * np.max(np.abs(B_ref))


def test_euler_definition():
    A, B = legendre.continuous_system(5)
    A_bar, B_bar = legendre.discretize(A, B, 20.0, "euler")
    np.testing.assert_allclose(A_bar, np.eye(5) + A / 20.0, rtol=0, atol=0)
    np.testing.assert_allclose(B_bar, B / 20.0, rtol=0, atol=0)
    with pytest.raises(ValueError, match="discretizer"):
        legendre.discretize(A, B, 20.0, "tustin")


def test_impulse_response_is_powers_of_A_bar_times_B_bar():
    A_bar, B_bar = legendre.discrete_system(6, 12.0)
    response = legendre.impulse_response(A_bar, B_bar, 40)
    assert response.shape == (40, 6)
    np.testing.assert_allclose(response[17], np.linalg.matrix_power(A_bar, 17) @ B_bar, rtol=1e-12)


@pytest.mark.parametrize("steps", [1, 2, 7, 64, 100])
def test_graph_impulse_response_by_doubling_matches_numpy(steps):
    A_bar, B_bar = discretized(8, 30.0, "zoh")
    expected = legendre.impulse_response(A_bar, B_bar, steps)
    dtype = "float64" if _float64() else "float32"
    response = lmu_ops.impulse_response(
        keras.ops.convert_to_tensor(A_bar - np.eye(8), dtype),
        keras.ops.convert_to_tensor(B_bar, dtype),
        steps,
    )
    tolerance = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(keras.ops.convert_to_numpy(response), expected, atol=tolerance)


@pytest.mark.parametrize("exponent", [0, 1, 2, 5, 64, 100])
def test_graph_powers_from_the_difference_match_numpy(exponent):
    A_bar, _ = discretized(8, 30.0, "zoh")
    dtype = "float64" if _float64() else "float32"
    difference = keras.ops.convert_to_tensor(A_bar - np.eye(8), dtype)
    tolerance = 1e-12 if dtype == "float64" else 1e-5
    power = lmu_ops.power_difference(difference, exponent)
    expected = np.linalg.matrix_power(A_bar, exponent) - np.eye(8)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(power), expected, atol=tolerance)
    for near_identity in (True, False):
        matrix = lmu_ops.matrix_power(difference, exponent, near_identity)
        expected_matrix = np.linalg.matrix_power(A_bar, exponent)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(matrix), expected_matrix, atol=tolerance
        )
    doubled = lmu_ops.doubled_powers(difference, 4)
    for k, matrix in enumerate(doubled):
        expected = np.linalg.matrix_power(A_bar, 2**k)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(matrix), expected, atol=tolerance)


@pytest.mark.parametrize("theta", [1e4, 1e5])
def test_float32_impulse_response_keeps_the_digits_of_a_long_window(theta):
    """Squared as differences from the identity, a float32 response over many steps
    stays close to the float64 one; squaring the float32 ``A_bar`` loses most of
    ``A_bar - I``'s digits for a long window and doubles the error with each squaring
    (in NumPy: 1.1e-5 and 1.4e-5 of the response's largest value that way, 9.8e-7 and
    5.1e-7 from the difference)."""
    order, steps = 64, 4096
    A_bar, B_bar = legendre.discrete_system(order, theta)
    expected = legendre.impulse_response(A_bar, B_bar, steps)
    response = lmu_ops.impulse_response(
        keras.ops.convert_to_tensor(A_bar - np.eye(order), "float32"),
        keras.ops.convert_to_tensor(B_bar, "float32"),
        steps,
    )
    error = np.abs(keras.ops.convert_to_numpy(response) - expected).max() / np.abs(expected).max()
    assert error < 3e-6


def _float64():
    from conftest import FLOAT64

    return FLOAT64


@pytest.mark.parametrize("discretizer", ["zoh", "euler"])
def test_graph_discretization_matches_numpy(discretizer):
    A, B = legendre.continuous_system(7)
    expected_A_bar, expected_B_bar = legendre.discretize(A, B, 25.0, discretizer)
    dtype = "float64" if _float64() else "float32"
    difference, B_bar = lmu_ops.discretize_difference(
        keras.ops.convert_to_tensor(A, dtype),
        keras.ops.convert_to_tensor(B, dtype),
        keras.ops.convert_to_tensor(1 / 25.0, dtype),
        discretizer,
    )
    tolerance = 1e-12 if dtype == "float64" else 1e-5
    expected_difference = expected_A_bar - np.eye(7)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(difference), expected_difference, atol=tolerance
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(B_bar), expected_B_bar, atol=tolerance)


def test_legendre_basis_values():
    basis = legendre.legendre_basis(3, 10.0, [0.0, 5.0, 10.0])
    # P0 = 1, P1(x) = x, P2(x) = (3x^2 - 1)/2 at x = -1, 0, 1
    np.testing.assert_allclose(basis, [[1, -1, 1], [1, 0, -0.5], [1, 1, 1]], atol=1e-15)


def test_decode_window_reads_delayed_input_back():
    """The memory holds the last theta steps: u(t - tau) ~ P(2 tau / theta - 1) . m(t)."""
    order, theta, steps = 16, 60.0, 300
    A_bar, B_bar = legendre.discrete_system(order, theta)
    t = np.arange(steps)
    u = np.sin(2 * np.pi * t / 70.0) + 0.5 * np.cos(2 * np.pi * t / 45.0)
    memory = np.zeros(order)
    for value in u:
        memory = A_bar @ memory + B_bar * value
    delays = np.arange(0, 61, 5)
    decoded = legendre.decode_window(memory, theta, delays)
    # zero-order hold: delay tau reads the input held over step t - tau + 1/2
    true = np.interp(steps - 1 - delays + 0.5, t, u)
    assert np.max(np.abs(decoded - true)) < 0.02
    assert legendre.decode_window(np.stack([memory, 2 * memory]), theta, delays).shape == (2, 13)


def test_truncation_length_drops_only_a_negligible_tail():
    A_bar, B_bar = legendre.discrete_system(8, 20.0)
    response = legendre.impulse_response(A_bar, B_bar, 2000)
    keep = legendre.truncation_length(response, 1e-4)
    assert 20 <= keep < 2000
    magnitude = np.abs(response).sum(axis=1)
    assert magnitude[keep:].sum() < 1e-4 * magnitude.sum() <= magnitude[keep - 1 :].sum()
    assert legendre.truncation_length(response, 0.0) == 2000


def test_euler_stability():
    assert legendre.euler_is_stable(8, 200.0)
    assert not legendre.euler_is_stable(256, 784.0)


@pytest.mark.parametrize("order", [1, 4, 64, 256, 1024])
def test_euler_stability_bound_separates_stable_from_unstable(order):
    """``euler_is_stable`` says what ``euler_stability_bound`` says, and (up to order
    256, where the eigenvalues of ``A`` computed in float64 are accurate) what the
    spectral radius of ``I + A / theta`` says on either side of the bound."""
    bound = legendre.euler_stability_bound(order)
    A, _ = legendre.continuous_system(order)
    for factor, stable in ((0.99, False), (1.01, True)):
        theta = factor * bound
        assert legendre.euler_is_stable(order, theta) is stable
        if order <= 256:
            radius = np.max(np.abs(np.linalg.eigvals(np.eye(order) + A / theta)))
            assert bool(radius <= 1.0) == stable, (order, factor, radius)


def _nan_system(which: str):
    """The order-4 ``A`` and ``B`` with a NaN in ``which``."""
    A, B = legendre.continuous_system(4)
    (A if which == "A" else B)[0] = np.nan
    return A, B


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: legendre.continuous_system(2.5), "order must be a positive integer, got 2.5"),
        (lambda: legendre.continuous_system(0), "order must be a positive integer, got 0"),
        (lambda: legendre.discrete_system(4, 0), "theta must be a finite positive number"),
        (lambda: legendre.discrete_system(4, float("nan")), "theta must be a finite positive"),
        (lambda: legendre.discrete_system(4, -3.0, "euler"), "theta must be a finite positive"),
        (lambda: legendre.discrete_system(4, 5.0, "bilinear"), "discretizer must be one of"),
        (lambda: legendre.discrete_system(4, 1e-100), "theta=1e-100 is too small to discretize"),
        (lambda: legendre.euler_is_stable(4, 0.0), "theta must be a finite positive number"),
        (lambda: legendre.impulse_response(np.eye(2), np.ones(2), -1), "steps must be at least 0"),
        (lambda: legendre.truncation_length(np.ones((3, 2)), -1.0), "tolerance must be a number"),
        (lambda: legendre.truncation_length(np.ones((3, 2)), float("nan")), "tolerance must be"),
        (lambda: legendre.truncation_length(np.ones((0, 2)), 0.1), "at least one step"),
        (
            lambda: legendre.truncation_length(np.ones(5), 0.1),
            r"shape \(steps, order\), got \(5,\)",
        ),
        (
            lambda: legendre.impulse_response(np.eye(3), np.ones(4), 2),
            r"B_bar shape \(order,\), got \(3, 3\) and \(4,\)",
        ),
        (lambda: legendre.impulse_response(np.ones((2, 3)), np.ones(2), 2), "A_bar must have"),
        # A and B of the discretizations: named (Euler returned a B_bar of the wrong
        # shape; zero-order hold blamed theta for NaN, or raised NumPy's errors)
        (
            lambda: legendre.discretize_euler(*_nan_system("A"), 5.0),
            "A must hold finite numbers, got NaN or infinity",
        ),
        (lambda: legendre.discretize_zoh(*_nan_system("A"), 5.0), "A must hold finite numbers"),
        (lambda: legendre.discretize_zoh(*_nan_system("B"), 5.0), "B must hold finite numbers"),
        (
            lambda: legendre.discretize_euler(np.eye(4), np.ones(3), 5.0),
            r"A must have shape \(order, order\) and B shape \(order,\), got \(4, 4\) and \(3,\)",
        ),
        (
            lambda: legendre.discretize(np.eye(4), np.ones((4, 1)), 5.0, "euler"),
            r"got \(4, 4\) and \(4, 1\)",
        ),
        (lambda: legendre.discretize_zoh(np.eye(4), np.ones(3), 5.0), "A must have shape"),
        (lambda: legendre.truncation_length(np.ones((3, 2)), "0.1"), "tolerance must be a number"),
        (lambda: legendre.truncation_length(np.ones((3, 2)), None), "tolerance must be a number"),
        (lambda: legendre.legendre_basis(4, 10.0, [-1.0, 5.0]), r"delays must lie in \[0, theta\]"),
        (lambda: legendre.decode_window(np.ones(4), 10.0, [0.0, 12.5]), "got 12.5 \\(1 outside\\)"),
        (
            lambda: legendre.decode_window(1.0, 4.0, [0.0]),
            r"memory must have shape \(\.\.\., order\)",
        ),
        (lambda: legendre.decode_window(np.ones((2, 0)), 4.0, [0.0]), r"got shape \(2, 0\)"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_window_ends_are_valid_delays():
    basis = legendre.legendre_basis(3, 7.0, [0.0, 7.0])
    np.testing.assert_allclose(basis, [[1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
