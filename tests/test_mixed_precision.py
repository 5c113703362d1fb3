"""Mixed precision: training stays finite, the memory math stays float32, outputs close."""

import keras
import numpy as np
import pytest

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
