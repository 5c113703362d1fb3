"""Training behaviour: gradients, dropout, seeds, regularizers, learning."""

import keras
import numpy as np
import pytest
from conftest import DTYPE, TOLERANCE, assert_close
from reference import ReluRNNCell, discretized, linear_layer

import keras_lmu

FORMS = ["lmu", "rnn", "feedforward"]


def make(form, hidden=None, dtype=None, **options):
    options = dict(memory_d=2, order=4, theta=6.0, hidden_cell=hidden, dtype=dtype, **options)
    if form == "lmu":
        return keras_lmu.LMU(return_sequences=True, **options)
    if form == "rnn":
        return keras.layers.RNN(keras_lmu.LMUCell(**options), return_sequences=True, dtype=dtype)
    conv_mode = "scan" if form == "scan" else "fft"
    return keras_lmu.LMUFeedforward(return_sequences=True, conv_mode=conv_mode, **options)


@pytest.mark.usefixtures("exact_floatx")
@pytest.mark.parametrize(
    "options",
    [
        dict(trainable_theta=True, use_bias=True),
        dict(trainable_theta=True, discretizer="euler", memory_to_memory=True),
        dict(memory_to_memory=True, input_to_hidden=True, use_bias=True),
    ],
)
def test_one_optimizer_step_gives_same_weights_on_every_path(rng, options):
    """Gradients agree: parallel LMUFeedforward (FFT and scan) vs recurrent RNN(LMUCell),
    theta included."""
    x = rng.uniform(-1, 1, (4, 10, 3))
    y = rng.uniform(-1, 1, (4, 10, 3))
    models = []
    for form in ("rnn", "feedforward", "scan"):
        inp = keras.Input((10, 3), dtype=DTYPE)
        out = keras.layers.EinsumDense("btf,fo->bto", (10, 3), dtype=DTYPE)(
            make(form, linear_layer(5, DTYPE), dtype=DTYPE, **options)(inp)
        )
        model = keras.Model(inp, out)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        models.append(model)
    models[0].set_weights([w + rng.uniform(0, 0.01, w.shape) for w in models[0].get_weights()])
    for model in models[1:]:
        model.set_weights(models[0].get_weights())
    for model in models:
        model.train_on_batch(x, y)
    before = {w.path.split("/")[-1] for w in models[0].weights}
    assert ("theta_inv" in before) == bool(options.get("trainable_theta"))
    for parallel in models[1:]:
        for a, b in zip(models[0].get_weights(), parallel.get_weights(), strict=True):
            assert np.max(np.abs(a - b)) <= TOLERANCE * max(1.0, np.max(np.abs(a)))


@pytest.mark.parametrize("form", FORMS)
def test_dropout_only_in_training_with_one_mask_per_sequence(rng, form):
    """With dropout, the memory is that of ``x * mask`` with a mask fixed over time."""
    order, theta = 4, 6.0
    layer = make(form, kernel_initializer=None, dropout=0.5, seed=7)
    x = rng.uniform(0.5, 1.0, (8, 12, 2)).astype("float32")  # no zeros: the mask is visible
    clean = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), clean)
    dropped = keras.ops.convert_to_numpy(layer(x, training=True)).astype(np.float64)
    again = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(dropped, again), "a new mask for each batch"
    A_bar, B_bar = discretized(order, theta, "zoh")
    first = dropped[:, 0].reshape(8, 2, order)[..., 0] / B_bar[0]  # = x_0 * mask
    mask = first / x[:, 0]
    assert set(np.round(mask.ravel(), 4)) <= {0.0, 2.0}
    assert 0 < np.mean(mask == 0) < 1
    expected = np.zeros((8, 2, order))
    outputs = []
    for t in range(12):
        expected = expected @ A_bar.T + (x[:, t] * mask)[..., None] * B_bar
        outputs.append(expected.reshape(8, -1).copy())
    assert_close(dropped, np.stack(outputs, 1), tolerance=1e-5)


@pytest.mark.parametrize("form", ["lmu", "feedforward"])
def test_seed_makes_dropout_reproducible(rng, form):
    x = rng.uniform(0.5, 1, (4, 6, 2)).astype("float32")
    outputs = []
    for _ in range(2):
        keras.utils.clear_session()
        layer = make(form, kernel_initializer=None, dropout=0.3, seed=11)
        layer(x)
        outputs.append(keras.ops.convert_to_numpy(layer(x, training=True)))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_recurrent_dropout_only_in_training(rng):
    layer = make("lmu", memory_to_memory=True, recurrent_dropout=0.5, seed=3)
    x = rng.uniform(-1, 1, (4, 8, 2)).astype("float32")
    inference = keras.ops.convert_to_numpy(layer(x))
    assert isinstance(layer.layer, keras.layers.RNN), "recurrent_dropout runs step by step"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), inference)
    assert not np.allclose(keras.ops.convert_to_numpy(layer(x, training=True)), inference)


@pytest.mark.parametrize("form", FORMS)
def test_regularizers_add_their_losses(rng, form):
    memory_to_memory = form != "feedforward"
    layer = make(
        form,
        memory_to_memory=memory_to_memory,
        use_bias=True,
        kernel_regularizer=keras.regularizers.L2(0.1),
        bias_regularizer=keras.regularizers.L1(0.2),
        recurrent_regularizer=keras.regularizers.L2(0.3) if memory_to_memory else None,
    )
    layer(rng.uniform(-1, 1, (2, 5, 3)).astype("float32"))
    memory = {
        "lmu": lambda: layer._memory_layer,
        "rnn": lambda: layer.cell,
        "feedforward": lambda: layer,
    }[form]()
    memory.bias.assign(rng.uniform(-1, 1, memory.bias.shape))

    def value(w):
        return keras.ops.convert_to_numpy(w)

    expected = 0.1 * np.sum(value(memory.kernel) ** 2) + 0.2 * np.sum(np.abs(value(memory.bias)))
    if memory_to_memory:
        expected += 0.3 * np.sum(value(memory.recurrent_kernel) ** 2)
    total = sum(float(keras.ops.convert_to_numpy(loss)) for loss in layer.losses)
    assert total == pytest.approx(expected, rel=1e-5)


def delay_task(rng, samples=256, steps=24, delay=8):
    x = rng.uniform(-1, 1, (samples, steps, 1)).astype("float32")
    return x, x[:, -1 - delay]


@pytest.mark.parametrize("hidden_to_memory", [False, True])
def test_small_model_learns_a_delay_task(rng, hidden_to_memory):
    """Recall the input from 8 steps ago: impossible without memory, easy with it."""
    keras.utils.set_random_seed(0)
    x, y = delay_task(rng)
    inp = keras.Input((24, 1))
    hidden = keras.layers.SimpleRNNCell(16) if hidden_to_memory else keras.layers.Dense(16)
    h = keras_lmu.LMU(1, 16, 12.0, hidden, hidden_to_memory=hidden_to_memory)(inp)
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, y, epochs=25, batch_size=32, verbose=0)
    variance = float(np.var(y))
    assert history.history["loss"][-1] < 0.1 * variance, history.history["loss"][-1]


def test_trainable_theta_learns_and_survives_saving(rng, tmp_path):
    """theta is a weight: training moves it, saving keeps the trained value."""
    keras.utils.set_random_seed(0)  # a fixed start: convergence depends on it
    x, y = delay_task(rng)
    inp = keras.Input((24, 1))
    lmu = keras_lmu.LMU(1, 16, 10.0, keras.layers.Dense(16), trainable_theta=True)
    model = keras.Model(inp, keras.layers.Dense(1)(lmu(inp)))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, y, epochs=10, batch_size=32, verbose=0).history["loss"]
    assert abs(lmu.theta - 10.0) > 0.05, lmu.theta
    assert history[-1] < 0.5 * history[0]
    path = str(tmp_path / "theta.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[1].theta == pytest.approx(lmu.theta, rel=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x[:4])),
        keras.ops.convert_to_numpy(model(x[:4])),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.usefixtures("exact_floatx")
@pytest.mark.parametrize("form", ["rnn", "feedforward"])
def test_trainable_A_and_B_start_from_legendre_and_learn(rng, form):
    layer = make(form, trainable_A=True, trainable_B=True, trainable_theta=True, dtype=DTYPE)
    x = rng.uniform(-1, 1, (3, 7, 3))
    reference = make(form, dtype=DTYPE)
    reference(x)
    layer(x)
    memory = layer.cell if form == "rnn" else layer
    names = [w.name for w in memory.weights]
    assert names == ["kernel", "theta_inv", "A", "B"]
    reference.set_weights(layer.get_weights()[:1])
    assert_close(layer(x), reference(x))
    memory.A.assign(memory.A * 1.1)
    assert not np.allclose(
        keras.ops.convert_to_numpy(layer(x)), keras.ops.convert_to_numpy(reference(x))
    )


@pytest.mark.parametrize("hidden_to_memory", [False, True])  # in parallel, step by step
def test_stateless_call_takes_numpy_inputs(rng, hidden_to_memory):
    """``stateless_call`` (how JAX takes gradients of a layer's weights) calls ``call``
    directly, without ``__call__``'s conversion of the inputs: the step-by-step form
    refused a NumPy array ("Only input tensors may be passed as positional arguments")."""
    layer = keras_lmu.LMU(
        1, 4, 10.0, keras.layers.Dense(3), trainable_theta=True, hidden_to_memory=hidden_to_memory
    )
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(layer(x))
    trainable = [variable.value for variable in layer.trainable_variables]
    non_trainable = [variable.value for variable in layer.non_trainable_variables]
    output, _ = layer.stateless_call(trainable, non_trainable, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(output), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("exact_floatx")
@pytest.mark.parametrize("discretizer", ["zoh", "euler"])
def test_recurrent_lmu_discretizes_once_per_sequence_with_same_gradients(rng, discretizer):
    """On its step-by-step path LMU computes A_bar, B_bar once per sequence, not per step;
    one training step equals that of RNN(LMUCell), which re-discretizes at every step."""
    options = dict(
        hidden_to_memory=True,
        memory_to_memory=True,
        trainable_theta=True,
        trainable_A=True,
        trainable_B=True,
        discretizer=discretizer,
    )
    x = rng.uniform(-1, 1, (4, 10, 3))
    y = rng.uniform(-1, 1, (4, 10, 3))
    models, layers = [], []
    for form in ("rnn", "lmu"):
        layer = make(form, ReluRNNCell(5, dtype=DTYPE), dtype=DTYPE, **options)
        inp = keras.Input((10, 3), dtype=DTYPE)
        out = keras.layers.EinsumDense("btf,fo->bto", (10, 3), dtype=DTYPE)(layer(inp))
        model = keras.Model(inp, out)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        models.append(model)
        layers.append(layer)
    cell = layers[1].layer.cell
    assert isinstance(layers[1].layer, keras.layers.RNN)
    calls = []
    discrete_difference = cell.discrete_difference
    cell.discrete_difference = lambda: calls.append(1) or discrete_difference()
    models[0].set_weights([w + rng.uniform(0, 0.01, w.shape) for w in models[0].get_weights()])
    models[1].set_weights(models[0].get_weights())
    layers[1](x)
    assert len(calls) == 1, "one discretization for the 10 steps"
    for model in models:
        model.train_on_batch(x, y)
    for a, b in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        assert np.max(np.abs(a - b)) <= TOLERANCE * max(1.0, np.max(np.abs(a)))
