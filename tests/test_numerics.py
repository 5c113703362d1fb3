"""float32 accuracy of every parallel path on a long sequence, against float64 NumPy."""

import keras
import numpy as np
import pytest

import keras_lmu
from keras_lmu import legendre

STEPS, ORDER, THETA = 8192, 256, 5000.0


@pytest.fixture(scope="module")
def long_reference():
    u = np.random.default_rng(0).uniform(-1, 1, (1, STEPS, 1))
    A_bar, B_bar = legendre.discrete_system(ORDER, THETA, "zoh")
    memory = np.zeros((STEPS, ORDER))
    state = np.zeros(ORDER)
    for t in range(STEPS):
        state = A_bar @ state + B_bar * u[0, t, 0]
        memory[t] = state
    return u.astype("float32"), memory


@pytest.mark.parametrize("conv_mode", ["scan", "fft", "raw", "last"])
def test_float32_memory_of_8192_steps_stays_within_1e_3(long_reference, conv_mode, monkeypatch):
    """Order 256, theta 5000: within 1e-3 of the largest value (measured 2e-7 to 3e-6
    on every backend for every path; the scan was at 4.4e-5 before it took a fixed
    memory's powers of A_bar in float64)."""
    monkeypatch.setattr(keras_lmu.feedforward, "SCAN_CHUNK", 32)  # the default
    u, reference = long_reference
    layer = keras_lmu.LMUFeedforward(
        1,
        ORDER,
        THETA,
        None,
        conv_mode="fft" if conv_mode == "last" else conv_mode,
        truncate_ir=None,
        return_sequences=conv_mode != "last",
        kernel_initializer=None,
    )
    memory = keras.ops.convert_to_numpy(layer(u))[0]
    assert memory.dtype == np.float32 and np.isfinite(memory).all()
    expected = reference[-1] if conv_mode == "last" else reference
    assert np.abs(memory - expected).max() <= 1e-3 * np.abs(reference).max()


def test_step_by_step_float32_memory_keeps_the_small_part_of_A_bar():
    """Order 64, theta 1000, euler, 4096 steps: ``A_bar`` is I + A / 1000, so rounding
    it to float32 loses digits of A / 1000 at every step. The cell steps with
    ``A_bar - I`` computed in float64 instead: its error stays well below that of a
    float32 recurrence with a float32 ``A_bar``."""
    order, theta, steps = 64, 1000.0, 4096
    u = np.random.default_rng(1).uniform(-1, 1, (1, steps, 1))
    A_bar, B_bar = legendre.discrete_system(order, theta, "euler")
    reference = np.zeros((steps, order))
    rounded = np.zeros((steps, order), np.float32)
    state, state32 = np.zeros(order), np.zeros(order, np.float32)
    A32, B32 = A_bar.astype(np.float32), B_bar.astype(np.float32)
    for t in range(steps):
        state = A_bar @ state + B_bar * u[0, t, 0]
        state32 = A32 @ state32 + B32 * np.float32(u[0, t, 0])
        reference[t], rounded[t] = state, state32
    scale = np.abs(reference).max()
    naive_error = np.abs(rounded - reference).max() / scale
    cell = keras_lmu.LMUCell(1, order, theta, None, kernel_initializer=None, discretizer="euler")
    model = keras.Sequential(
        [keras.Input((steps, 1)), keras.layers.RNN(cell, return_sequences=True)]
    )
    memory = model.predict(u.astype("float32"), verbose=0)[0]
    error = np.abs(memory - reference).max() / scale
    # measured: 2.3e-4 for the float32 A_bar recurrence, 2.7e-5 to 3.3e-5 for the cell
    assert error < naive_error / 3 and error < 1e-4, (error, naive_error)


LONG_WINDOW_ORDER, LONG_WINDOW_THETA, LONG_WINDOW_STEPS = 64, 1e4, 4096


@pytest.fixture(scope="module", params=[False, True], ids=["own", "memory_to_memory"])
def long_window_reference(request):
    """Input, memory_to_memory kernel (or None) and float64 memory, step by step."""
    memory_to_memory = request.param
    order, steps = LONG_WINDOW_ORDER, LONG_WINDOW_STEPS
    u = np.random.default_rng(2).uniform(-1, 1, (1, steps, 1))
    kernel = np.random.default_rng(3).uniform(-1e-3, 1e-3, (order, 1)).astype(np.float32)
    A_bar, B_bar = legendre.discrete_system(order, LONG_WINDOW_THETA)
    memory = np.zeros((steps, order))
    state = np.zeros(order)
    for t in range(steps):
        encoded = u[0, t, 0] + (kernel[:, 0].astype(np.float64) @ state if memory_to_memory else 0)
        state = A_bar @ state + B_bar * encoded
        memory[t] = state
    return u.astype("float32"), kernel if memory_to_memory else None, memory


@pytest.mark.parametrize("form", ["fft", "raw", "scan", "last", "step-by-step"])
def test_float32_memory_of_a_long_window_computed_in_the_graph(long_window_reference, form):
    """Order 64, theta 10,000, 4,096 steps, in float32: a trainable theta (discretized in
    the graph) and a memory_to_memory system (``A_bar`` and the recurrent kernel in one
    matrix) take every power of ``A_bar`` from ``A_bar - I``, not from a float32
    ``A_bar`` that has lost most of its difference from the identity. Measured on JAX:
    1.0e-5 to 2.2e-5 of the largest value before, 8.6e-7 to 1.9e-6 after, in parallel;
    step by step, the trainable theta 3.6e-6 before and 7.7e-7 after (memory_to_memory
    stepped with a float64 ``A_bar - I`` already: 8.1e-7)."""
    u, kernel, reference = long_window_reference
    options = dict(
        kernel_initializer=None,
        memory_to_memory=kernel is not None,
        trainable_theta=kernel is None,
    )
    args = (1, LONG_WINDOW_ORDER, LONG_WINDOW_THETA, None)
    if form == "step-by-step":
        layer = keras.layers.RNN(keras_lmu.LMUCell(*args, **options), return_sequences=True)
    else:
        layer = keras_lmu.LMUFeedforward(
            *args,
            conv_mode="fft" if form == "last" else form,
            truncate_ir=None,
            return_sequences=form != "last",
            **options,
        )
    layer(u[:, :2])
    if kernel is not None:
        next(w for w in layer.weights if w.name == "recurrent_kernel").assign(kernel)
    memory = keras.ops.convert_to_numpy(layer(u))[0]
    expected = reference[-1] if form == "last" else reference
    error = np.abs(memory - expected).max() / np.abs(reference).max()
    assert error < (2e-6 if form == "step-by-step" else 5e-6), error


def _matrix_product_precisions(jaxpr) -> list:
    """The ``precision`` of every matrix product and convolution in a jaxpr and the
    jaxprs inside it (scan, cond and while bodies)."""
    found = []
    for equation in jaxpr.eqns:
        if equation.primitive.name in ("dot_general", "conv_general_dilated"):
            found.append(equation.params.get("precision"))
        for value in equation.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(item, "jaxpr", item)
                if hasattr(inner, "eqns"):
                    found += _matrix_product_precisions(inner)
    return found


MEMORY_LAYERS = {
    "fft": lambda: keras_lmu.LMUFeedforward(2, 8, 10.0, None, conv_mode="fft"),
    "raw": lambda: keras_lmu.LMUFeedforward(2, 8, 10.0, None, conv_mode="raw"),
    "scan": lambda: keras_lmu.LMUFeedforward(2, 8, 10.0, None, conv_mode="scan"),
    "last": lambda: keras_lmu.LMUFeedforward(2, 8, 10.0, None, return_sequences=False),
    "trainable-theta": lambda: keras_lmu.LMUFeedforward(
        2, 8, 10.0, None, conv_mode="scan", trainable_theta=True
    ),
    "step-by-step": lambda: keras.layers.RNN(
        keras_lmu.LMUCell(2, 8, 10.0, None, memory_to_memory=True, trainable_theta=True)
    ),
}


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="only JAX picks a float32 matmul precision"
)
@pytest.mark.parametrize("path", sorted(MEMORY_LAYERS))
def test_memory_asks_jax_for_full_float32_matrix_products(path):
    """JAX on NVIDIA GPUs computes float32 products in TensorFloat-32 unless told
    otherwise (relative memory errors of ~1e-3 measured on an H200): every product and
    convolution of the memory is traced with precision HIGHEST, which the CPU cannot
    show by its results. A Keras Dense layer, traced the same way, asks for none."""
    import jax

    x = np.random.default_rng(0).uniform(-1, 1, (2, 12, 3)).astype("float32")
    layer = MEMORY_LAYERS[path]()
    layer(x)
    precisions = _matrix_product_precisions(jax.make_jaxpr(lambda x: layer(x))(x).jaxpr)
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert precisions and all(p == highest for p in precisions), precisions
    dense = keras.layers.Dense(3)
    dense(x)
    assert _matrix_product_precisions(jax.make_jaxpr(lambda x: dense(x))(x).jaxpr) == [None]
