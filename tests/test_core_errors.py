"""Bad arguments and inputs raise clear errors that name the argument."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_lmu

CLASSES = ["LMU", "LMUCell", "LMUFeedforward"]

BAD_ARGUMENTS = [
    # (argument overrides, exception type, text the message must contain)
    (dict(memory_d=0), ValueError, "memory_d"),
    (dict(memory_d=-2), ValueError, "memory_d"),
    (dict(memory_d=1.5), TypeError, "memory_d"),
    (dict(memory_d="4"), TypeError, "memory_d"),
    (dict(order=0), ValueError, "order"),
    (dict(order=2.5), TypeError, "order"),
    (dict(order=True), TypeError, "order"),
    (dict(theta=0), ValueError, "theta"),
    (dict(theta=-3.0), ValueError, "theta"),
    (dict(theta=float("inf")), ValueError, "theta"),
    (dict(theta=float("nan")), ValueError, "theta"),
    (dict(theta="10"), TypeError, "theta"),
    (dict(discretizer="bilinear"), ValueError, "discretizer"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(dropout=-0.1), ValueError, "dropout"),
    (dict(hidden_cell="dense"), TypeError, "hidden_cell"),
    (dict(hidden_cell=object()), TypeError, "hidden_cell"),
    # bool("False") is True: strings are refused rather than read
    (dict(trainable_theta="False"), TypeError, "trainable_theta must be True or False"),
    (dict(memory_to_memory="no"), TypeError, "memory_to_memory must be True or False"),
    (dict(use_bias=2), TypeError, "use_bias must be True or False"),
    (dict(trainable_A=None), TypeError, "trainable_A must be True or False"),
]


def construct(cls, **overrides):
    kwargs = dict(memory_d=1, order=4, theta=5.0, hidden_cell=None)
    kwargs.update(overrides)
    return getattr(keras_lmu, cls)(**kwargs)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("overrides, error, text", BAD_ARGUMENTS)
def test_bad_argument_raises_at_construction(cls, overrides, error, text):
    with pytest.raises(error, match=text):
        construct(cls, **overrides)


@pytest.mark.parametrize("cls", ["LMU", "LMUCell"])
def test_recurrent_only_arguments(cls):
    with pytest.raises(ValueError, match="recurrent_dropout"):
        construct(cls, recurrent_dropout=1.2)
    with pytest.raises(ValueError, match="hidden_to_memory"):
        construct(cls, hidden_to_memory=True)


def test_cell_input_to_hidden_without_hidden_cell_needs_input_d():
    with pytest.raises(ValueError, match="input_d"):
        keras_lmu.LMUCell(1, 4, 5.0, None, input_to_hidden=True)
    assert keras_lmu.LMUCell(1, 4, 5.0, None, input_to_hidden=True, input_d=2).output_size == 6


@pytest.mark.parametrize("cls", ["LMU", "LMUFeedforward"])
def test_bad_conv_mode_and_truncation(cls):
    with pytest.raises(ValueError, match="conv_mode"):
        construct(cls, conv_mode="direct")
    with pytest.raises(ValueError, match="truncate_ir"):
        construct(cls, truncate_ir=-1e-3)
    with pytest.raises(TypeError, match="truncate_ir"):
        construct(cls, truncate_ir="small")
    with pytest.raises(ValueError, match=r"truncate_ir must be None or a number in \[0, 1\)"):
        construct(cls, truncate_ir=1.0)  # a share: all of the response would go
    with pytest.raises(TypeError, match="return_sequences must be True or False, got 'False'"):
        construct(cls, return_sequences="False")


def test_layer_flags_must_be_booleans():
    for flag in ("return_state", "go_backwards", "stateful", "zero_output_for_mask"):
        with pytest.raises(TypeError, match=f"{flag} must be True or False, got 'True'"):
            construct("LMU", **{flag: "True"})
    # numpy booleans and 0/1 are read as booleans
    assert construct("LMU", return_sequences=np.bool_(True), stateful=0).return_sequences


@pytest.mark.parametrize("cls", ["LMU", "LMUCell", "LMUFeedforward"])
def test_recurrent_dropout_without_memory_to_memory_warns_and_runs(cls):
    """It drops part of the memory_to_memory input: without it, no effect (LMU failed on
    its first call, in the parallel form; RNN(LMUCell) ignored it silently)."""
    with pytest.warns(UserWarning, match="recurrent_dropout=0.3 drops part of the memory_to"):
        layer = construct(cls, recurrent_dropout=0.3)
    if cls == "LMUCell":
        layer = keras.layers.RNN(layer)
    x = np.ones((2, 5, 3), "float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(x, training=True)),
        keras.ops.convert_to_numpy(layer(x)),
    )


def test_feedforward_refuses_recurrent_dropout():
    with pytest.raises(ValueError, match="recurrent_dropout"):
        construct("LMUFeedforward", memory_to_memory=True, recurrent_dropout=0.1)


@pytest.mark.parametrize("cls", ["LMU", "LMUFeedforward"])
def test_inputs_with_another_number_of_features_are_refused_clearly(cls):
    layer = construct(cls)
    layer(np.zeros((2, 6, 3), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 3"):
        layer(np.zeros((2, 6, 4), "float32"))


def test_states_of_another_batch_size_are_refused_clearly():
    layer = keras_lmu.LMU(1, 4, 5.0, keras.layers.SimpleRNNCell(3))
    x = np.zeros((2, 6, 3), "float32")
    with pytest.raises(ValueError, match="batch size 2, but initial_state has batch size 3"):
        layer(x, initial_state=[np.zeros((3, 4), "float32"), np.zeros((3, 3), "float32")])
    inputs = keras.Input((6, 3), batch_size=2)
    stateful = keras_lmu.LMU(1, 4, 5.0, None, stateful=True)
    keras.Model(inputs, stateful(inputs))
    with pytest.raises(ValueError, match="keeps the batch size it was built with"):
        stateful(np.zeros((4, 6, 3), "float32"))
    # With an initial_state of the inputs' batch size: refused before the sequence is
    # computed (Keras's "variable.assign" shape error came after it).
    message = "batch size 4, but this stateful LMU's memory state has batch size 2"
    with pytest.raises(ValueError, match=message):
        stateful(np.zeros((4, 6, 3), "float32"), initial_state=[np.zeros((4, 4), "float32")])


@pytest.mark.parametrize(
    "hidden",
    [
        keras.layers.LSTM(4),
        keras.layers.SimpleRNN(4),
        # (it failed when built: "Shapes used to initialize variables must be fully-defined")
        keras.layers.Bidirectional(keras.layers.LSTM(3)),
    ],
)
@pytest.mark.parametrize("cls", CLASSES)
def test_hidden_layer_with_its_own_loop_is_refused(cls, hidden):
    cell = "SimpleRNNCell" if isinstance(hidden, keras.layers.SimpleRNN) else "LSTMCell"
    with pytest.raises(TypeError, match=rf"an RNN cell \(e.g. keras.layers.{cell}\(...\)\), not"):
        construct(cls, hidden_cell=hidden)


class _CellWithOutputSecond(keras.layers.Layer):
    """An RNN cell whose states are ``[c, h]`` and whose output is ``h``, the second."""

    def __init__(self, c_size, **kwargs):
        super().__init__(**kwargs)
        self.state_size, self.output_size = [c_size, 3], 3

    def call(self, inputs, states):
        c, h = states
        h = keras.ops.tanh(inputs[:, :3] + h)
        return h, [c, h]


class _CellWithoutStateSize(keras.layers.Layer):
    def call(self, inputs, states):
        return inputs, states


def _sequence_layer(layer, hidden, **options):
    memory = dict(memory_d=2, order=3, theta=4.0, hidden_cell=hidden, **options)
    if layer == "RNN(LMUCell)":
        return keras.layers.RNN(keras_lmu.LMUCell(**memory))
    return getattr(keras_lmu, layer)(**memory)


@pytest.mark.parametrize("layer", ["LMU", "RNN(LMUCell)"])
def test_hidden_cell_whose_output_is_not_its_first_state_is_refused_with_hidden_to_memory(
    layer,
):
    """``h_{t-1}`` is read from the cell's first state: a cell whose first state has
    another size than its output (it failed inside a matrix product) is refused; without
    ``hidden_to_memory`` it runs."""
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    with pytest.raises(
        ValueError, match="hidden_cell '.*' outputs 3 features and that state has 5"
    ):
        _sequence_layer(layer, _CellWithOutputSecond(5), hidden_to_memory=True)(x)
    outputs = _sequence_layer(layer, _CellWithOutputSecond(5))(x)
    assert tuple(outputs.shape) == (2, 3)


@pytest.mark.parametrize("layer", ["LMU", "LMUFeedforward", "RNN(LMUCell)"])
@pytest.mark.parametrize(
    "hidden",
    [keras.layers.Reshape((2, 3)), keras.layers.Embedding(10, 4)],
    ids=["reshape", "embedding"],
)
def test_hidden_layer_must_output_batch_by_features(layer, hidden):
    """Accepted before with ``return_sequences=False`` (outputs and states of the wrong
    shape; an ``Embedding`` cast the memory to indices), a backend's error otherwise."""
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"hidden_cell '.*' must output \(batch, features\)"):
        _sequence_layer(layer, hidden)(x)


@pytest.mark.parametrize("layer", ["LMU", "LMUFeedforward", "RNN(LMUCell)"])
@pytest.mark.parametrize("stacked", [False, True], ids=["simple", "stacked"])
def test_hidden_cell_built_for_another_input_size_is_refused(layer, stacked):
    """(It failed inside a matrix product.) The memory gives it 2 * 3 = 6 features."""
    hidden = keras.layers.SimpleRNNCell(4)
    if stacked:
        hidden = keras.layers.StackedRNNCells([keras.layers.GRUCell(4), keras.layers.LSTMCell(3)])
    hidden.build((None, 10))
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    with pytest.raises(ValueError, match="was built for inputs of 10 features, but this LMU"):
        _sequence_layer(layer, hidden)(x)


@pytest.mark.parametrize("cls", CLASSES)
def test_hidden_cell_without_state_size_is_refused(cls):
    with pytest.raises(TypeError, match="takes states in its call but has no state_size"):
        construct(cls, hidden_cell=_CellWithoutStateSize())


def test_feedforward_refuses_hidden_to_memory():
    """A hidden state fed back to the memory needs the step-by-step form."""
    hidden = keras.layers.Dense(3)
    with pytest.raises(ValueError, match="LMUFeedforward has no hidden_to_memory"):
        construct("LMUFeedforward", hidden_cell=hidden, hidden_to_memory=True)
    layer = construct("LMUFeedforward", hidden_cell=hidden, hidden_to_memory=False)
    assert "hidden_to_memory" not in layer.get_config()


@pytest.mark.parametrize("cls", ["LMU", "LMUFeedforward"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 4, 3, 1)])
def test_inputs_must_be_three_dimensional(cls, shape):
    layer = construct(cls)
    with pytest.raises(ValueError, match=r"\(batch, steps, features\)"):
        layer(np.zeros(shape, "float32"))
    with pytest.raises(ValueError, match=r"\(batch, steps, features\)"):
        keras.Model(keras.Input(shape[1:]), construct(cls)(keras.Input(shape[1:])))


def test_input_size_contradicting_input_d():
    # named after the layer the user made (not an inner one)
    with pytest.raises(ValueError, match="my_lmu was given input_d=3"):
        keras_lmu.LMU(1, 4, 5.0, None, input_d=3, name="my_lmu")(np.zeros((2, 5, 4), "float32"))
    with pytest.raises(ValueError, match="input_d=3"):
        keras.layers.RNN(keras_lmu.LMUCell(1, 4, 5.0, None, input_d=3))(
            np.zeros((2, 5, 4), "float32")
        )


@pytest.mark.parametrize("cls", CLASSES)
def test_no_kernel_needs_input_of_memory_d(cls):
    layer = construct(cls, memory_d=2, kernel_initializer=None)
    if cls == "LMUCell":
        layer = keras.layers.RNN(layer)
    with pytest.raises(ValueError, match="memory_d=2"):
        layer(np.zeros((2, 5, 3), "float32"))
    assert layer(np.zeros((2, 5, 2), "float32")).shape == (2, 8)


def test_float64_on_jax_without_x64_warns():
    """Run in a fresh JAX process without 64-bit mode (the JAX suite runs with it on)."""
    if keras.backend.backend() != "jax":
        pytest.skip("checked once, in the JAX run")
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env["KERAS_BACKEND"] = "jax"
    script = "import keras_lmu; keras_lmu.LMUCell(1, 4, 5.0, None, dtype='float64')"
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert "JAX_ENABLE_X64=1" in result.stderr


@pytest.mark.parametrize("cls", CLASSES)
def test_unstable_euler_warns_once_naming_the_bound(cls):
    """euler below its stability bound warns (a warning: old code uses such settings)."""
    from keras_lmu.validation import UnstableDiscretizationWarning

    with pytest.warns(UnstableDiscretizationWarning) as record:
        layer = construct(cls, order=256, theta=784.0, discretizer="euler", name="my_layer")
        if cls != "LMUCell":
            layer(np.zeros((1, 3, 1), "float32"))  # building the inner layer adds none
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("my_layer: discretizer='euler' is unstable")
    assert "theta < 6541.5" in message and "theta=784" in message and "zoh" in message


@pytest.mark.parametrize("overrides", [dict(discretizer="zoh"), dict(theta=6600.0)])
def test_stable_discretization_does_not_warn(overrides):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        construct("LMU", **{"order": 256, "theta": 784.0, "discretizer": "euler", **overrides})


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("trainable", ["trainable_theta", "trainable_A", "trainable_B"])
def test_theta_too_small_for_the_graph_discretization_is_refused(cls, trainable):
    """Below the matrix exponential's range (order 4: theta ~3.7e-9 in float32) the
    in-graph zero-order hold was NaN; just above it the memory is the fixed one's."""
    from keras_lmu import legendre
    from keras_lmu import ops as lmu_ops

    A, B = legendre.continuous_system(4)
    norm = np.max(np.sum(np.abs(np.concatenate([A, B[:, None]], axis=1)), axis=0))
    smallest = norm / lmu_ops.matrix_exponential_max_norm("float32")
    with pytest.raises(
        ValueError, match=r"theta=3\.50177e-09 is too small .* needs theta >= 3\.73e-09"
    ):
        construct(cls, theta=0.94 * smallest, **{trainable: True})
    if cls == "LMUCell":
        return
    x = np.random.default_rng(0).standard_normal((2, 6, 1)).astype("float32")
    outputs = []
    for flag in (True, False):
        layer = construct(cls, theta=1.01 * smallest, return_sequences=True, **{trainable: flag})
        layer.build(x.shape)
        for weight in layer.weights:  # the same encoder
            if weight.name == "kernel":
                weight.assign(np.ones(weight.shape))
        outputs.append(keras.ops.convert_to_numpy(layer(x)))
    assert np.all(np.isfinite(outputs[0]))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls", CLASSES)
def test_smallest_trainable_theta_is_that_of_the_layers_own_dtype(cls):
    """``LMU`` checked it in the global floatx: a float64 LMU accepted a theta that
    float64's matrix exponential cannot take, then failed at its first call, naming an
    inner layer."""
    from keras_lmu import legendre
    from keras_lmu import ops as lmu_ops

    A, B = legendre.continuous_system(4)
    norm = np.max(np.sum(np.abs(np.concatenate([A, B[:, None]], axis=1)), axis=0))
    float64_smallest = norm / lmu_ops.matrix_exponential_max_norm("float64")
    theta = 0.5 * float64_smallest  # enough for float32
    assert theta > norm / lmu_ops.matrix_exponential_max_norm("float32")
    with pytest.raises(ValueError, match=r"^mine: theta=.* is too small .* in float64 needs"):
        construct(cls, theta=theta, trainable_theta=True, dtype="float64", name="mine")
    construct(cls, theta=theta, trainable_theta=True, dtype="float32")


def test_euler_stability_bound_is_where_euler_becomes_stable():
    from keras_lmu import legendre

    for order in (4, 16, 64, 256):
        bound = legendre.euler_stability_bound(order)
        assert legendre.euler_is_stable(order, bound * 1.001)
        assert not legendre.euler_is_stable(order, bound * 0.999)
    assert legendre.euler_stability_bound(256) == pytest.approx(6541.5, abs=0.1)


@pytest.mark.parametrize("cls", ["LMU", "LMUFeedforward"])
def test_zero_length_sequences_are_refused_clearly(cls):
    with pytest.raises(ValueError, match="at least one step"):
        construct(cls)(np.zeros((2, 0, 1), "float32"))
    built = construct(cls)
    built(np.zeros((2, 5, 1), "float32"))
    with pytest.raises(ValueError, match="at least one step"):
        built(np.zeros((2, 0, 1), "float32"))


@pytest.mark.parametrize("hidden_to_memory", [False, True])
@pytest.mark.parametrize("mask_shape", [(2, 4), (2, 5, 1), (3, 5)])
def test_mask_of_the_wrong_shape_is_refused_clearly(hidden_to_memory, mask_shape):
    layer = keras_lmu.LMU(
        1, 4, 5.0, keras.layers.SimpleRNNCell(3), hidden_to_memory=hidden_to_memory
    )
    with pytest.raises(ValueError, match=r"mask of shape \(batch, steps\) = \(2, 5\)"):
        layer(np.ones((2, 5, 1), "float32"), mask=np.ones(mask_shape, bool))


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_integer_and_boolean_inputs_compute_as_floats(dtype):
    x = np.random.default_rng(0).integers(0, 2, (1, 6, 1))  # batch size 1 too
    layer = construct("LMU", return_sequences=True)
    expected = keras.ops.convert_to_numpy(layer(x.astype("float32")))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x.astype(dtype))), expected)


@pytest.mark.parametrize("hidden_to_memory", [False, True])
@pytest.mark.parametrize(
    "shapes", [[(2, 5), (2, 3)], [(2, 4)], [(2, 4), (2, 3), (2, 3)], [(4,), (2, 3)]]
)
def test_initial_state_of_the_wrong_shape_is_refused_clearly(hidden_to_memory, shapes):
    layer = keras_lmu.LMU(
        1, 4, 5.0, keras.layers.SimpleRNNCell(3), hidden_to_memory=hidden_to_memory
    )
    states = [np.zeros(shape, "float32") for shape in shapes]
    with pytest.raises(
        ValueError, match=r"initial_state as 2 tensors of shapes \[\('batch', 4\), \('batch', 3\)\]"
    ):
        layer(np.ones((2, 5, 1), "float32"), initial_state=states)


@pytest.mark.parametrize("given", ["dict", "ints"])
def test_initial_state_that_is_not_tensors_is_refused_clearly(given):
    layer = keras_lmu.LMU(1, 4, 5.0, keras.layers.SimpleRNNCell(3))
    memory, hidden = np.zeros((2, 4), "float32"), np.zeros((2, 3), "float32")
    states = {"memory": memory, "hidden": hidden} if given == "dict" else [4, 3]
    with pytest.raises(TypeError, match="initial_state as a list of 2 tensors"):
        layer(np.ones((2, 5, 1), "float32"), initial_state=states)


def test_nan_in_the_initial_state_propagates_and_nothing_else_turns_nan():
    layer = construct("LMU", return_sequences=True, memory_d=1)
    x = np.ones((2, 5, 1), "float32")
    state = np.zeros((2, 4), "float32")
    state[0, 0] = np.nan
    out = keras.ops.convert_to_numpy(layer(x, initial_state=[state]))
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def test_a_hidden_cell_given_to_two_lmus_shares_its_weights():
    cell = keras.layers.Dense(3)
    first, second = (keras_lmu.LMU(1, 4, 5.0, cell) for _ in range(2))
    x = np.ones((2, 5, 1), "float32")
    inputs = keras.Input((5, 1))
    model = keras.Model(inputs, [first(inputs), second(inputs)])
    assert first.hidden_cell is second.hidden_cell is cell
    assert sum(w is cell.kernel for w in model.weights) == 1
    before = [keras.ops.convert_to_numpy(y) for y in model(x)]
    cell.kernel.assign(cell.kernel * 2.0)
    after = [keras.ops.convert_to_numpy(y) for y in model(x)]
    for old, new in zip(before, after, strict=True):
        assert not np.allclose(old, new)


@pytest.mark.parametrize("layer", ["LMU", "RNN(LMUCell)"])
def test_random_hidden_layer_in_the_step_by_step_loop(layer):
    """A hidden layer that draws random numbers at every step (here a Dropout after a
    Dense) trains step by step, with new draws at every step and call. JAX cannot assign
    a variable (the seed's state) inside its loop: ``LMU``'s loop carries the state;
    Keras's (``RNN(LMUCell)``) cannot, which is a clear error in training there, and
    inference (where Dropout does nothing) works."""
    hidden = keras.Sequential([keras.layers.Dense(3), keras.layers.Dropout(0.5)])
    options = dict(hidden_to_memory=True)
    if layer == "LMU":
        lmu = keras_lmu.LMU(1, 4, 5.0, hidden, return_sequences=True, **options)
    else:
        lmu = keras.layers.RNN(
            keras_lmu.LMUCell(1, 4, 5.0, hidden, **options), return_sequences=True
        )
    x = np.random.default_rng(0).uniform(-1, 1, (2, 6, 2)).astype("float32")
    inference = keras.ops.convert_to_numpy(lmu(x))
    assert np.all(np.isfinite(inference))
    if keras.backend.backend() == "jax" and layer != "LMU":
        with pytest.raises(ValueError, match="hidden_cell .* draws random numbers"):
            lmu(x, training=True)
        return
    first, second = (keras.ops.convert_to_numpy(lmu(x, training=True)) for _ in range(2))
    assert not np.allclose(first, second)
    dropped = first == 0
    assert np.sum(dropped) > 0
    assert len({tuple(step) for step in dropped.reshape(-1, 3)}) > 1  # new draws per step


@pytest.mark.parametrize("layer", ["LMU", "RNN(LMUCell)"])
def test_batch_normalization_hidden_layer_in_the_step_by_step_loop(layer):
    """A hidden layer that updates variables when called in training (here
    BatchNormalization's moving statistics), step by step: a training call gives the
    outputs and statistics of the cell's steps called one by one in Python, and fit
    trains. On JAX ``LMU``'s loop carries the statistics (they were lost in a call, and
    fit failed with UnexpectedTracerError); Keras's loop (``RNN(LMUCell)``) cannot,
    which is a clear error in training there. (Keras's loops on TensorFlow and PyTorch
    call the first step once more, before the loop, to learn its output's shape: one
    more update of the statistics, not checked there.)"""
    x = np.random.default_rng(0).uniform(-1, 1, (3, 6, 2)).astype("float32")

    def make():
        norm = keras.layers.BatchNormalization(momentum=0.5)
        options = dict(hidden_to_memory=True)
        if layer == "LMU":
            return keras_lmu.LMU(1, 4, 5.0, norm, return_sequences=True, **options), norm
        cell = keras_lmu.LMUCell(1, 4, 5.0, norm, **options)
        return keras.layers.RNN(cell, return_sequences=True), norm

    lmu, norm = make()
    lmu(x[:, :1])  # built; inference leaves the statistics alone
    initial = lmu.get_weights()
    if keras.backend.backend() == "jax" and layer != "LMU":
        with pytest.raises(ValueError, match="hidden_cell .* draws random numbers or updates"):
            lmu(x, training=True)
        return
    outputs = keras.ops.convert_to_numpy(lmu(x, training=True))
    reference, reference_norm = make()
    reference(x[:, :1])
    reference.set_weights(initial)
    cell = reference.layer.cell if layer == "LMU" else reference.cell
    states = [keras.ops.zeros((3, size)) for size in cell.state_size]
    expected = []
    with cell.hidden_variables_carried():  # (eager steps assign the variables themselves)
        for step in range(x.shape[1]):
            output, states = cell(keras.ops.convert_to_tensor(x[:, step]), states, training=True)
            expected.append(keras.ops.convert_to_numpy(output))
    np.testing.assert_allclose(outputs, np.stack(expected, axis=1), atol=1e-5)
    weights = zip(norm.non_trainable_weights, reference_norm.non_trainable_weights, strict=True)
    for actual, wanted in weights:
        actual = keras.ops.convert_to_numpy(actual)
        assert not np.allclose(actual, np.zeros_like(actual) + actual.flat[0])  # moved
        if layer == "LMU":
            wanted = keras.ops.convert_to_numpy(wanted)
            np.testing.assert_allclose(actual, wanted, atol=1e-6)
    model = keras.Sequential([keras.Input((6, 2)), lmu, keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    before = keras.ops.convert_to_numpy(norm.moving_mean)
    history = model.fit(x, np.ones((3, 6, 1)), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.allclose(keras.ops.convert_to_numpy(norm.moving_mean), before)


@pytest.mark.parametrize("steps", [6, 70])  # one step, or several, per iteration on JAX
@pytest.mark.parametrize("masked", [False, True])
def test_random_hidden_layer_trains_in_a_compiled_step(steps, masked):
    """In ``fit`` (compiled on JAX and TensorFlow) a Dropout inside the hidden layer of
    an ``LMU`` run step by step draws at every step (the cell runs at masked steps too;
    their results are dropped): its seed advances by at least one per step and batch
    (TensorFlow's loop also runs one step ahead of it to learn its output's shape),
    and the weights train."""
    dropout = keras.layers.Dropout(0.5, seed=1)
    # tanh bounds the feedback (a linear Dense fed back through the memory can grow
    # without bound over 70 steps)
    hidden = keras.Sequential([keras.layers.Dense(3, activation="tanh"), dropout])
    inputs = keras.Input((steps, 2))
    lmu = keras_lmu.LMU(1, 4, 5.0, hidden, hidden_to_memory=True)
    masking = keras.layers.Masking(0.0)(inputs) if masked else inputs
    model = keras.Model(inputs, keras.layers.Dense(1)(lmu(masking)))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.2, (4, steps, 2)).astype("float32")
    if masked:
        x[:, -2:] = 0.0  # masked steps, whose hidden layer does not run
    y = rng.uniform(-1, 1, (4, 1)).astype("float32")
    seed = keras.ops.convert_to_numpy(dropout.seed_generator.state)
    weights = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = keras.ops.convert_to_numpy(dropout.seed_generator.state)
    assert after[1] - seed[1] >= 2 * steps
    assert not all(np.allclose(a, b) for a, b in zip(weights, model.get_weights(), strict=True))


@pytest.mark.parametrize("discretizer", ["zoh", "euler"])
@pytest.mark.parametrize(
    "form", [dict(conv_mode="fft"), dict(conv_mode="scan"), dict(conv_mode="raw"), "last", "step"]
)
def test_theta_turned_nan_infinite_or_zero_by_training(form, discretizer):
    """No error is possible at call time (traced graphs cannot raise on a value), so:
    theta_inv NaN or inf (theta NaN or 0) turns every output NaN; theta_inv 0 (theta
    infinite, which the NonNeg constraint lets training reach) freezes the memory at
    zero (A_bar = I, B_bar = 0), and ``theta`` reads inf."""
    options = dict(return_sequences=form != "last")
    if isinstance(form, dict):
        options.update(form)
    layer = keras_lmu.LMU(
        2, 4, 10.0, None, trainable_theta=True, discretizer=discretizer, **options
    )
    if form == "step":  # computed step by step: memory_to_memory, parallel limit 0
        layer = keras_lmu.LMU(
            2,
            4,
            10.0,
            None,
            trainable_theta=True,
            discretizer=discretizer,
            memory_to_memory=True,
            recurrent_dropout=0.1,
            return_sequences=True,
        )
    x = np.random.default_rng(0).uniform(-1, 1, (2, 7, 3)).astype("float32")
    layer(x)
    assert layer.uses_parallel_form() == (form != "step")
    theta_inv = next(w for w in layer.weights if w.name == "theta_inv")
    for value in (np.nan, np.inf):
        theta_inv.assign(value)
        assert np.isnan(keras.ops.convert_to_numpy(layer(x))).all()
    theta_inv.assign(0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), 0.0)
    with np.errstate(divide="ignore"):
        assert layer.theta == np.inf


def test_fft_on_another_backend_names_the_way_out(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "numpy")
    signal, response = np.zeros((1, 4, 2), "float32"), np.zeros((4, 3), "float32")
    with pytest.raises(NotImplementedError, match="not on 'numpy': use conv_mode='scan'"):
        keras_lmu.ops.per_channel_fft_convolution(signal, response, 8)
