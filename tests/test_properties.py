"""Property-based tests: random valid configurations of every layer, drawn by hypothesis.

For each configuration the parallel form (``LMU`` computing its memory with
``LMUFeedforward``) and the recurrent form (``keras.layers.RNN(LMUCell)``, or the
``LMU`` itself when it runs step by step) give the same outputs from the same
weights, both match the float64 NumPy reference of ``tests/reference.py``, the
outputs have the documented shapes and dtypes, and a ``.keras`` file saved from the
model loads with bitwise-equal weights and outputs.

The draws are derandomized (the same examples on every run) and few, so that this
file stays short on every backend.
"""

import os
import tempfile
from unittest import mock

import hypothesis
import keras
import numpy as np
from conftest import BACKEND, DTYPE, TOLERANCE, assert_close
from hypothesis import strategies as st
from reference import ReluRNNCell, linear_layer, lmu_reference

import keras_lmu
from keras_lmu import layer as layer_module
from keras_lmu.legendre import euler_stability_bound

hypothesis.settings.register_profile(
    "keras-lmu-properties",
    derandomize=True,
    deadline=None,
    max_examples=8,
    database=None,
    print_blob=True,
    # no shrinking: a failure prints its example and how to reproduce it at once
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.reuse, hypothesis.Phase.generate],
    # The suite's autouse fixtures (a fresh Keras session, short scan chunks) are
    # function-scoped; each example clears the session itself.
    suppress_health_check=[
        hypothesis.HealthCheck.function_scoped_fixture,
        hypothesis.HealthCheck.too_slow,
    ],
)
PROPERTY_SETTINGS = hypothesis.settings.get_profile("keras-lmu-properties")
HIDDEN_UNITS = 3
BATCH = 2
LONGEST_THETA = 50.0


@st.composite
def configurations(draw) -> dict:
    """A valid LMU configuration, its input size, sequence length and a weight seed.

    Combinations the layers refuse are drawn and then discarded with ``assume``, so
    that the rules that refuse them are exercised where they apply.
    """
    order = draw(st.integers(1, 12))
    discretizer = draw(st.sampled_from(["zoh", "euler"]))
    # euler only above its stability bound (36.2 at order 12), zoh over all of 1-50
    shortest = max(1.0, euler_stability_bound(order)) if discretizer == "euler" else 1.0
    theta = draw(st.floats(shortest, LONGEST_THETA, allow_nan=False, exclude_min=True))
    hidden = draw(st.sampled_from([None, "dense", "rnn"]))
    hidden_to_memory = draw(st.booleans())
    has_kernel = draw(st.booleans())
    memory_d = draw(st.integers(1, 3))
    features = draw(st.integers(1, 3)) if has_kernel else memory_d
    # the layers refuse these (tests/test_core_errors.py): no hidden state to feed back,
    # and without a kernel the encoder input must have exactly memory_d features
    hypothesis.assume(not (hidden_to_memory and hidden is None))
    hypothesis.assume(has_kernel or not hidden_to_memory)
    return dict(
        memory_d=memory_d,
        order=order,
        theta=theta,
        discretizer=discretizer,
        hidden=hidden,
        hidden_to_memory=hidden_to_memory,
        memory_to_memory=draw(st.booleans()),
        input_to_hidden=draw(st.booleans()),
        use_bias=draw(st.booleans()),
        trainable_theta=draw(st.booleans()),
        kernel_initializer="glorot_uniform" if has_kernel else None,
        return_sequences=draw(st.booleans()),
        features=features,
        steps=draw(st.integers(1, 12)),
        conv_mode=draw(st.sampled_from(["fft", "raw", "scan"])),
        seed=draw(st.integers(0, 2**16)),
    )


def layer_options(config: dict) -> dict:
    """Constructor arguments shared by ``LMU`` and ``LMUCell``."""
    keys = (
        "memory_d",
        "order",
        "theta",
        "discretizer",
        "hidden_to_memory",
        "memory_to_memory",
        "input_to_hidden",
        "use_bias",
        "trainable_theta",
        "kernel_initializer",
    )
    return {key: config[key] for key in keys}


def exact_hidden(kind: str | None, dtype: str):
    """Hidden components whose float64 arithmetic stays float64 on every backend.

    ``linear_layer`` computes what ``Dense`` does and ``ReluRNNCell`` what
    ``SimpleRNNCell(activation="relu")`` does; Keras's own ``SimpleRNNCell`` rounds
    float64 through float32 on JAX (tanh) and PyTorch (matmul).
    """
    if kind == "dense":
        return linear_layer(HIDDEN_UNITS, dtype)
    if kind == "rnn":
        return ReluRNNCell(HIDDEN_UNITS, dtype=dtype)
    return None


def keras_hidden(kind: str | None):
    """Keras's own hidden components."""
    if kind == "dense":
        return keras.layers.Dense(HIDDEN_UNITS)
    if kind == "rnn":
        return keras.layers.SimpleRNNCell(HIDDEN_UNITS)
    return None


def randomize(weights: list, rng: np.random.Generator, discretizer: str) -> None:
    """Random weights; theta_inv moved away from its start (never below euler's bound)."""
    for weight in weights:
        value = keras.ops.convert_to_numpy(weight)
        if weight.name == "theta_inv":
            # a longer window keeps euler stable
            low, high = (0.7, 1.0) if discretizer == "euler" else (0.7, 1.3)
            weight.assign(value * rng.uniform(low, high))
        else:
            weight.assign(rng.uniform(-0.5, 0.5, weight.shape))


def parallel_limit(size: int):
    """Within this context ``LMU`` runs memory_to_memory in parallel up to ``size``."""
    return mock.patch.dict(layer_module.PARALLEL_MEMORY_TO_MEMORY_MAX_SIZE, {BACKEND: size})


def expected_output_shape(config: dict) -> tuple:
    """(batch, steps, size) or (batch, size) from the configuration alone."""
    if config["hidden"] is not None:
        size = HIDDEN_UNITS
    else:
        size = config["memory_d"] * config["order"]
        size += config["features"] if config["input_to_hidden"] else 0
    if config["return_sequences"]:
        return (BATCH, config["steps"], size)
    return (BATCH, size)


def reference_output(layer, config: dict, x: np.ndarray) -> np.ndarray:
    """The float64 NumPy reference for the weights of ``layer`` (an LMU or RNN(LMUCell))."""
    memory = layer._memory_layer if isinstance(layer, keras_lmu.LMU) else layer.cell
    hidden_cell = memory.hidden_cell

    def value(weight):
        return None if weight is None else keras.ops.convert_to_numpy(weight).astype(np.float64)

    hidden = None
    if config["hidden"] == "dense":
        hidden = ("dense", value(hidden_cell.kernel), value(hidden_cell.bias))
    elif config["hidden"] == "rnn":
        hidden = (
            "simple_rnn",
            value(hidden_cell.kernel),
            value(hidden_cell.recurrent_kernel),
            value(hidden_cell.bias),
        )
    outputs, _ = lmu_reference(
        x,
        memory_d=config["memory_d"],
        order=config["order"],
        theta=memory.theta,
        discretizer=config["discretizer"],
        kernel=value(memory.kernel),
        bias=value(memory.bias),
        recurrent_kernel=value(memory.recurrent_kernel),
        hidden=hidden,
        hidden_size=HIDDEN_UNITS if config["hidden"] else 0,
        hidden_to_memory=config["hidden_to_memory"],
        input_to_hidden=config["input_to_hidden"],
    )
    return outputs if config["return_sequences"] else outputs[:, -1]


def assert_matches(actual, reference: np.ndarray) -> None:
    """``assert_close``, or all (nearly) zero where the reference is all zero (a ReLU
    cell can output only zeros)."""
    if np.max(np.abs(reference)) == 0:
        assert np.max(np.abs(keras.ops.convert_to_numpy(actual))) <= TOLERANCE
    else:
        assert_close(actual, reference)


def check_output(output, config: dict, dtype: str) -> np.ndarray:
    """Assert the shape and dtype of an output, and return it as NumPy."""
    assert tuple(output.shape) == expected_output_shape(config)
    assert keras.backend.standardize_dtype(output.dtype) == dtype
    return keras.ops.convert_to_numpy(output)


@PROPERTY_SETTINGS
@hypothesis.given(config=configurations())
def test_parallel_and_recurrent_forms_agree_with_the_reference(config):
    """(a) and (b): every form gives the reference's outputs, of the right shape and dtype.

    Without hidden_to_memory the ``LMU`` runs in parallel (memory_to_memory too, its
    limit lifted) and ``RNN(LMUCell)`` with the same weights gives the same outputs;
    memory_to_memory also runs through the ``LMU``'s own step-by-step form (its
    limit set to 0), and hidden_to_memory, which only runs step by step, through both.
    """
    keras.utils.clear_session()
    rng = np.random.default_rng(config["seed"])
    x = rng.uniform(-1, 1, (BATCH, config["steps"], config["features"]))
    options = layer_options(config)
    cell_input_d = config["features"] if config["hidden"] is None else None
    recurrent = keras.layers.RNN(
        keras_lmu.LMUCell(
            hidden_cell=exact_hidden(config["hidden"], DTYPE),
            input_d=cell_input_d,
            dtype=DTYPE,
            **options,
        ),
        return_sequences=config["return_sequences"],
        dtype=DTYPE,
    )
    check_output(recurrent(x), config, DTYPE)
    randomize(recurrent.weights, rng, config["discretizer"])
    expected = reference_output(recurrent, config, x)
    assert_matches(check_output(recurrent(x), config, DTYPE), expected)

    def lmu(limit: int):
        with parallel_limit(limit):
            layer = keras_lmu.LMU(
                hidden_cell=exact_hidden(config["hidden"], DTYPE),
                return_sequences=config["return_sequences"],
                conv_mode=config["conv_mode"],
                dtype=DTYPE,
                **options,
            )
            layer(x)
        layer.set_weights(recurrent.get_weights())
        return layer

    forms = [lmu(10**6)]
    if config["memory_to_memory"]:
        forms.append(lmu(0))
    for layer in forms:
        parallel = isinstance(layer.layer, keras_lmu.LMUFeedforward)
        assert parallel == (not config["hidden_to_memory"] and layer is forms[0])
        assert_matches(check_output(layer(x), config, DTYPE), expected)


def test_lmu_without_hidden_cell_runs_input_to_hidden_step_by_step(rng):
    """Regression: ``LMU(hidden_cell=None, input_to_hidden=True)`` whose memory runs step
    by step (memory_to_memory over the parallel limit, or recurrent_dropout) failed to
    build, asking for ``input_d``, although the LMU knows the input's features then."""
    x = rng.uniform(-1, 1, (2, 5, 3)).astype("float32")
    for options in (dict(), dict(recurrent_dropout=0.1)):
        with parallel_limit(0):
            layer = keras_lmu.LMU(
                1, 4, 5.0, None, memory_to_memory=True, input_to_hidden=True, **options
            )
            output = layer(x)
        assert isinstance(layer.layer, keras.layers.RNN)
        assert tuple(output.shape) == (2, 4 + 3)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(output)[:, 4:], x[:, -1])
        assert layer.get_config()["input_d"] is None


@hypothesis.settings(PROPERTY_SETTINGS, max_examples=4)
@hypothesis.given(config=configurations(), through_cell=st.booleans())
def test_keras_file_round_trip_is_bitwise(config, through_cell):
    """(c): a model with Keras's own Dense / SimpleRNNCell, in float32, saved to a
    ``.keras`` file loads with bitwise-equal weights and outputs (``LMU``, or
    ``RNN(LMUCell)``)."""
    keras.utils.clear_session()
    rng = np.random.default_rng(config["seed"])
    x = rng.uniform(-1, 1, (BATCH, config["steps"], config["features"])).astype("float32")
    inputs = keras.Input((config["steps"], config["features"]))
    hidden = keras_hidden(config["hidden"])
    if through_cell:
        cell_input_d = config["features"] if config["hidden"] is None else None
        cell = keras_lmu.LMUCell(hidden_cell=hidden, input_d=cell_input_d, **layer_options(config))
        layer = keras.layers.RNN(cell, return_sequences=config["return_sequences"])
    else:
        layer = keras_lmu.LMU(
            hidden_cell=hidden,
            return_sequences=config["return_sequences"],
            conv_mode=config["conv_mode"],
            **layer_options(config),
        )
    model = keras.Model(inputs, layer(inputs))
    randomize(model.weights, rng, config["discretizer"])
    output = check_output(model(x), config, "float32")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    for saved, restored in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, saved)
    np.testing.assert_array_equal(check_output(loaded(x), config, "float32"), output)
    if config["trainable_theta"]:
        memory = loaded.layers[-1].cell if through_cell else loaded.layers[-1]
        assert memory.theta == (layer.cell if through_cell else layer).theta
