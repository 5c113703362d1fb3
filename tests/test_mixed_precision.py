"""Mixed precision: training stays finite, the memory math stays float32, outputs close."""

import keras
import numpy as np
import pytest
from conftest import FLOAT64

import keras_lmu

CONFIGS = {
    "parallel": dict(hidden_to_memory=False, memory_to_memory=True, trainable_theta=True),
    "recurrent": dict(hidden_to_memory=True, memory_to_memory=True),
}
#: max|difference| / max|float32 output| after the same weights, per policy
TOLERANCE = {"mixed_float16": 2e-2, "mixed_bfloat16": 1e-1}


def make_model(options, steps=64):
    inp = keras.Input((steps, 3))
    lmu = keras_lmu.LMU(
        2, 16, 48.0, keras.layers.SimpleRNNCell(8), return_sequences=True, **options
    )
    return keras.Model(inp, keras.layers.Dense(1, dtype="float32")(lmu(inp))), lmu


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_mixed_precision_trains_and_stays_close_to_float32(rng, policy, name):
    keras.utils.set_random_seed(0)
    x = rng.uniform(-1, 1, (16, 64, 3)).astype("float32")
    y = rng.uniform(-1, 1, (16, 64, 1)).astype("float32")
    model, lmu = make_model(CONFIGS[name])
    assert lmu.compute_dtype == policy.split("_")[1]
    assert lmu._memory_layer.memory_dtype == "float32"
    keras.mixed_precision.set_global_policy("float32")
    reference, _ = make_model(CONFIGS[name])
    reference.set_weights(model.get_weights())
    expected = keras.ops.convert_to_numpy(reference(x))
    actual = keras.ops.convert_to_numpy(model(x)).astype("float32")
    error = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    print(f"{keras.backend.backend()} {policy} {name}: relative error {error:.2e}")
    assert error < TOLERANCE[policy], error
    model.compile(optimizer="adam", loss="mse")
    losses = [float(model.train_on_batch(x, y)) for _ in range(3)]
    assert np.all(np.isfinite(losses)), losses
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("theta", [500.0, 1e6])
def test_trainable_theta_is_discretized_from_its_float32_value(rng, policy, theta):
    """Keras rounds a variable read in ``call`` to the 16-bit compute dtype unless it is
    made with ``autocast=False``: ``1 / theta`` rounded to float16 is a window 0.04%
    shorter at theta 500 (and 1.3% at 1e6, a subnormal float16), whose memory differs
    by about 1e-2 after 400 steps. The memory's weights are read in float32."""
    x = rng.uniform(-1, 1, (2, 400, 1)).astype("float32")
    outputs = {}
    for trainable in (False, True):
        layer = keras_lmu.LMUFeedforward(
            1, 64, theta, None, kernel_initializer=None, trainable_theta=trainable
        )
        outputs[trainable] = keras.ops.convert_to_numpy(layer(x)).astype("float32")
    error = np.max(np.abs(outputs[True] - outputs[False])) / np.max(np.abs(outputs[False]))
    assert error < 1e-3, error  # 1.4e-2 (float16) and 2e-2 (bfloat16) when rounded


@pytest.mark.parametrize("policy", ["mixed_float16", "float16", "bfloat16"], indirect=True)
@pytest.mark.parametrize("name", ["parallel", "recurrent"])
def test_stateful_streaming_carries_the_float32_memory(rng, policy, name):
    """A stateful LMU under mixed precision, fed one step per call, carries its states
    from call to call (PyTorch's assign once wrote to a 16-bit copy, leaving them
    zero) and its memory in float32, as within one call: the streamed outputs and final
    memory match one call over the whole sequence. Under a plain 16-bit policy too,
    whose variables are 16-bit: the memory's state was kept in 16 bits between calls
    (the memory up to 2e-3 off after 12 steps in bfloat16)."""
    steps, options = 12, dict(hidden_to_memory=name == "recurrent")
    x = rng.uniform(-1, 1, (2, steps, 1)).astype("float32")

    def make(**kwargs):
        return keras_lmu.LMU(
            1, 8, 10.0, keras.layers.Dense(4), return_sequences=True, **options, **kwargs
        )

    whole = make(return_state=True)
    expected, expected_memory, _ = (keras.ops.convert_to_numpy(t) for t in whole(x))
    assert expected_memory.dtype == np.float32  # returned in the memory's dtype
    streaming = make(stateful=True)
    streaming.build((2, 1, 1))
    streaming.set_weights(whole.get_weights())
    streamed = np.concatenate(
        [keras.ops.convert_to_numpy(streaming(x[:, t : t + 1])) for t in range(steps)], axis=1
    )
    memory = keras.ops.convert_to_numpy(streaming.states[0].value)
    assert np.abs(memory).max() > 0
    np.testing.assert_allclose(memory, expected_memory, rtol=0, atol=1e-6)
    scale = np.abs(expected).max()
    assert np.abs(streamed.astype("float32") - expected).max() <= 2e-3 * scale


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("name", ["parallel", "recurrent"])
@pytest.mark.parametrize("hidden", [None, "Dense", "LSTMCell"])
def test_symbolic_outputs_have_the_dtypes_of_the_real_ones(rng, policy, name, hidden):
    """On a keras.Input the returned memory state is float32, as when the layer runs
    (it was given the 16-bit compute dtype); outputs and hidden states are 16-bit."""
    x = rng.uniform(-1, 1, (2, 6, 3)).astype("float32")
    for return_sequences in (True, False):
        hidden_cell = None if hidden is None else getattr(keras.layers, hidden)(4)
        options = dict(CONFIGS[name], hidden_to_memory=name == "recurrent" and hidden is not None)
        lmu = keras_lmu.LMU(
            1,
            8,
            10.0,
            hidden_cell,
            return_sequences=return_sequences,
            return_state=True,
            **options,
        )
        symbolic = lmu(keras.Input((6, 3)))
        real = lmu(x)
        assert [t.dtype for t in symbolic] == [
            keras.backend.standardize_dtype(t.dtype) for t in real
        ]
        assert [t.dtype for t in symbolic][:2] == [lmu.compute_dtype, "float32"]
        assert [tuple(t.shape[1:]) for t in symbolic] == [tuple(t.shape[1:]) for t in real]


@pytest.mark.skipif(not FLOAT64, reason="float64 needs JAX_ENABLE_X64=1 on JAX")
@pytest.mark.parametrize("hidden", ["Dense", "SimpleRNNCell"])
@pytest.mark.parametrize("name", ["parallel", "recurrent"])
def test_outputs_and_states_in_the_lmus_dtype_whatever_the_hidden_layers(rng, name, hidden):
    """An LMU of dtype float64 whose hidden layer keeps the default float32 policy
    returns float64 outputs and states, in both forms (the parallel form returned the
    hidden layer's float32); the memory is float64 throughout."""
    x = rng.uniform(-1, 1, (2, 5, 3))
    for return_sequences in (True, False):
        hidden_cell = getattr(keras.layers, hidden)(3)
        lmu = keras_lmu.LMU(
            2,
            4,
            6.0,
            hidden_cell,
            dtype="float64",
            return_sequences=return_sequences,
            return_state=True,
            **CONFIGS[name],
        )
        output, *states = lmu(x)
        assert hidden_cell.compute_dtype == "float32"
        dtypes = [keras.backend.standardize_dtype(t.dtype) for t in [output, *states]]
        assert dtypes == ["float64"] * len(dtypes)
