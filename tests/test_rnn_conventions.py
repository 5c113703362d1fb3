"""Keras RNN conventions on every path: states, stateful streaming, go_backwards, masks,
Bidirectional."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, DTYPE, TOLERANCE, assert_close
from reference import ReluRNNCell, linear_layer

import keras_lmu
from keras_lmu import cell as cell_module
from keras_lmu import hidden_cells
from keras_lmu import layer as layer_module

# (name, LMU options, expected inner form)
CONFIGS = [
    ("parallel-dense", dict(hidden="dense", use_bias=True), keras_lmu.LMUFeedforward),
    ("parallel-rnn", dict(hidden="rnn", input_to_hidden=True), keras_lmu.LMUFeedforward),
    (
        "parallel-m2m-theta",
        dict(hidden=None, memory_to_memory=True, trainable_theta=True),
        keras_lmu.LMUFeedforward,
    ),
    ("parallel-scan", dict(hidden="dense", conv_mode="scan"), keras_lmu.LMUFeedforward),
    # theta 60 at order 5: the powers of A_bar squared as differences from the identity
    (
        "parallel-long-theta",
        dict(hidden=None, trainable_theta=True, theta=60.0),
        keras_lmu.LMUFeedforward,
    ),
    (
        "parallel-scan-m2m-long",
        dict(hidden="dense", memory_to_memory=True, theta=60.0, conv_mode="scan"),
        keras_lmu.LMUFeedforward,
    ),
    (
        "parallel-scan-m2m-theta",
        dict(hidden="rnn", memory_to_memory=True, trainable_theta=True, conv_mode="scan"),
        keras_lmu.LMUFeedforward,
    ),
    (
        "recurrent",
        dict(hidden="rnn", hidden_to_memory=True, memory_to_memory=True),
        keras.layers.RNN,
    ),
    ("recurrent-dense", dict(hidden="dense", hidden_to_memory=True), keras.layers.RNN),
    (
        "recurrent-grouped",
        dict(hidden="rnn", hidden_to_memory=True, memory_to_memory=True),
        keras.layers.RNN,
    ),
    # nested hidden states: [h1, [h2, h3]], flat in the LMU's states
    ("parallel-stacked", dict(hidden="stacked", input_to_hidden=True), keras_lmu.LMUFeedforward),
    (
        "recurrent-stacked",
        dict(hidden="stacked", hidden_to_memory=True, memory_to_memory=True),
        keras.layers.RNN,
    ),
]
pytestmark = pytest.mark.usefixtures("exact_floatx")


@pytest.fixture(autouse=True)
def _grouped_loop(request, monkeypatch):
    """Configs named ``*-grouped`` run the step-by-step loop three steps per iteration
    from three steps on (on every backend; JAX does so for long sequences)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and str(callspec.params.get("name", "")).endswith("-grouped"):
        group_steps(monkeypatch, 3)


def group_steps(monkeypatch, steps: int):
    """Make ``LMU``'s step-by-step loop take ``steps`` steps per iteration."""
    monkeypatch.setattr(layer_module, "GROUPED_LOOP_MIN_STEPS", 1)
    monkeypatch.setattr(layer_module, "LOOP_STEPS_PER_ITERATION", {BACKEND: steps})


def make_lmu(options, **kwargs):
    options = dict(options)
    hidden = options.pop("hidden")
    hidden_cell = {
        "dense": lambda: linear_layer(3, DTYPE),
        "rnn": lambda: ReluRNNCell(3),
        "stacked": stacked_cells,
        None: lambda: None,
    }[hidden]()
    theta = options.pop("theta", 7.0)
    return keras_lmu.LMU(2, 5, theta, hidden_cell, dtype=DTYPE, **options, **kwargs)


def stacked_cells():
    """Cells stacked two deep, states ``[h1, [h2, h3]]``, output ``h3`` (3 features)."""
    listed = ReluRNNCell(2)
    listed.state_size = [2]  # a list, which Keras tracks, as in LSTMCell's [units, units]
    inner = keras.layers.StackedRNNCells([listed, ReluRNNCell(3)])
    return keras.layers.StackedRNNCells([ReluRNNCell(4), inner])


def assign_random_weights(layer, rng):
    """Weights from U(-0.5, 0.5), but theta (its initial value)."""
    for w in layer.weights:
        if w.name != "theta_inv":
            w.assign(rng.uniform(-0.5, 0.5, w.shape))


def build_pair(options, rng, features=2, **kwargs):
    """An LMU with random weights, and a factory of copies with the same weights."""
    layer = make_lmu(options, **kwargs)
    x = rng.uniform(-1, 1, (3, 16, features))
    layer(x)
    assign_random_weights(layer, rng)

    def copy(**other):
        clone = make_lmu(options, **{**kwargs, **other})
        clone(x[:, :2]) if not other.get("stateful") else None
        return clone

    return layer, x, copy


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("name, options, form", CONFIGS)
def test_inner_form(rng, name, options, form):
    layer, _, _ = build_pair(options, rng)
    assert isinstance(layer.layer, form)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("name, options, form", CONFIGS)
def test_return_state_then_initial_state_continues_exactly(
    rng, name, options, form, return_sequences
):
    layer, x, copy = build_pair(options, rng, return_sequences=return_sequences, return_state=True)
    output, *states = layer(x)
    assert [tuple(s.shape) for s in states] == [(3, size) for size in layer.state_size]
    first_output, *first_states = layer(x[:, :9])
    second_output, *second_states = layer(x[:, 9:], initial_state=first_states)
    for state, expected in zip(second_states, states, strict=True):
        assert_close(state, expected)
    if return_sequences:
        assert_close(np.concatenate([numpy(first_output), numpy(second_output)], 1), output)
    else:
        assert_close(second_output, output)


@pytest.mark.parametrize("hidden_to_memory", [False, True])
def test_states_of_a_hidden_layer_sized_by_its_input(rng, hidden_to_memory):
    """A stateless hidden layer whose output has its input's size (``Activation``), fed
    the input too (``input_to_hidden``): its state's size is known once the LMU knows
    its inputs (every call with ``return_state`` failed, asking for ``input_d``)."""
    x = rng.uniform(-1, 1, (3, 10, 2))
    layer = keras_lmu.LMU(
        1,
        4,
        5.0,
        keras.layers.Activation("tanh", dtype=DTYPE),
        hidden_to_memory=hidden_to_memory,
        input_to_hidden=True,
        return_state=True,
        dtype=DTYPE,
    )
    symbolic = layer(keras.Input((10, 2), dtype=DTYPE))
    assert [tuple(t.shape) for t in symbolic] == [(None, 6), (None, 4), (None, 6)]
    assert layer.state_size == [4, 6]
    output, *states = layer(x)
    _, *first_states = layer(x[:, :4])
    second_output, *second_states = layer(x[:, 4:], initial_state=first_states)
    for actual, expected in zip([second_output, *second_states], [output, *states], strict=True):
        assert_close(actual, expected)


@pytest.mark.parametrize("name, options, form", CONFIGS)
def test_stateful_chunks_equal_one_call_and_reset(rng, name, options, form):
    layer, x, copy = build_pair(options, rng, return_sequences=True)
    expected = numpy(layer(x))
    inp = keras.Input((None, 2), batch_size=3, dtype=DTYPE)
    streaming = copy(stateful=True)
    model = keras.Model(inp, streaming(inp))
    streaming.set_weights(layer.get_weights())
    chunks = [numpy(model(x[:, start : start + 4])) for start in range(0, 16, 4)]
    assert_close(np.concatenate(chunks, axis=1), expected)
    streaming.reset_states()
    assert_close(model(x[:, :4]), expected[:, :4])


@pytest.mark.parametrize("name, options, form", CONFIGS[:1] + CONFIGS[2:3] + CONFIGS[5:6])
def test_stateful_trains_and_carries_its_states(rng, name, options, form):
    """Training steps of a stateful LMU carry its states from step to step (on PyTorch
    the states, read into a step's graph and then assigned in place, once broke its
    gradient): with a learning rate of 0, the memory after k steps on ``x`` is that of
    ``x`` repeated k times. On JAX, whose compiled training step keeps no states, it
    warns."""
    inp = keras.Input((4, 2), batch_size=3, dtype=DTYPE)
    layer = make_lmu(options, return_sequences=True, stateful=True)
    model = keras.Model(inp, layer(inp))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    x = rng.uniform(-1, 1, (3, 4, 2))
    target = np.zeros(model.output_shape, DTYPE)
    alone = make_lmu(options, return_sequences=True, return_state=True)
    alone(x)
    alone.set_weights(layer.get_weights())
    if BACKEND == "jax":  # Keras's compiled step keeps no untracked variable's value
        with pytest.warns(UserWarning, match="on JAX the states it assigns inside"):
            model.train_on_batch(x, target)
        assert np.all(numpy(layer.states[0].value) == 0)
        return
    for repeats in (1, 2, 3):
        assert np.isfinite(float(np.ravel(model.train_on_batch(x, target))[0]))
        _, expected, *_ = alone(np.concatenate([x] * repeats, axis=1))
        # A trainable theta is discretized in float32, in a training step as in a call
        # but along other paths: 1e-7 apart in float64. States not carried: O(1).
        assert_close(layer.states[0].value, expected, max(TOLERANCE, 1e-6))
    layer.reset_states()
    assert all(np.all(numpy(state.value) == 0) for state in layer.states)


def test_stateful_needs_a_fixed_batch_size():
    layer = keras_lmu.LMU(1, 4, 5.0, None, stateful=True)
    with pytest.raises(ValueError, match="batch size"):
        keras.Model(keras.Input((5, 1)), layer(keras.Input((5, 1))))


@pytest.mark.parametrize("name, options, form", CONFIGS)
def test_streaming_one_step_at_a_time(rng, name, options, form):
    """A parallel-trained LMU runs online, one step per call, with identical outputs."""
    layer, x, copy = build_pair(options, rng, return_sequences=True)
    expected = numpy(layer(x))
    online = copy(stateful=True, return_sequences=False)
    online.build((3, 1, 2))
    online.set_weights(layer.get_weights())
    steps = [numpy(online(x[:, t : t + 1])) for t in range(x.shape[1])]
    assert_close(np.stack(steps, axis=1), expected)


@pytest.mark.parametrize("name, options, form", CONFIGS)
def test_go_backwards_processes_the_reversed_sequence(rng, name, options, form):
    layer, x, copy = build_pair(options, rng, return_sequences=True)
    backwards = copy(go_backwards=True)
    backwards.set_weights(layer.get_weights())
    assert_close(backwards(x), layer(x[:, ::-1]))


def masked_reference(layer, x, mask, zero_output_for_mask=False, initial_state=None):
    """Unmasked steps give the outputs of the layer on the unmasked steps alone (from
    ``initial_state``); masked steps repeat the previous output (zeros before the
    first unmasked step, an initial state or not), or are zero with
    ``zero_output_for_mask``. Also returns the output of a layer that returns only the
    last step's: that step's, as in Keras's RNN layers."""
    outputs = np.zeros((x.shape[0], x.shape[1], layer.compute_output_shape(x.shape)[-1]))
    for b in range(x.shape[0]):
        kept = np.flatnonzero(mask[b])
        initial = None if initial_state is None else [s[b : b + 1] for s in initial_state]
        compact = numpy(layer(x[b : b + 1, kept], initial_state=initial))[0]
        previous = np.zeros(outputs.shape[-1])
        j = 0
        for t in range(x.shape[1]):
            if mask[b, t]:
                previous = compact[j]
                j += 1
                outputs[b, t] = previous
            else:
                outputs[b, t] = 0 if zero_output_for_mask else previous
    return outputs, outputs[:, -1]


def assert_close_to(actual, expected):
    """``actual`` within ``TOLERANCE`` of ``expected``, relative to its largest value or
    1 (outputs under a mask may be all zero)."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(numpy(actual), expected, atol=TOLERANCE * scale, rtol=0)


def mask_with_every_kind_of_step(rng, shape):
    """A random mask, with masked steps at the start of one sequence and at the end of
    another (every sequence keeps an unmasked step)."""
    mask = rng.uniform(size=shape) > 0.35
    mask[0, :2] = False
    mask[1, -2:] = False
    mask[:, shape[1] // 2] = True
    return mask


# A hidden layer of each kind, in each form (the other options change no convention).
STATE_CONFIGS = [
    config
    for config in CONFIGS
    if config[0]
    in ("parallel-dense", "parallel-rnn", "parallel-stacked", "recurrent", "recurrent-stacked")
]


@pytest.mark.parametrize(
    "name, options, form, zero_output_for_mask",
    [(*config, False) for config in CONFIGS] + [(*config, True) for config in STATE_CONFIGS],
)
def test_arbitrary_masks(rng, name, options, form, zero_output_for_mask):
    layer, x, copy = build_pair(options, rng, return_sequences=True)
    mask = mask_with_every_kind_of_step(rng, x.shape[:2])
    expected, last_expected = masked_reference(layer, x, mask, zero_output_for_mask)
    masked = copy(zero_output_for_mask=zero_output_for_mask)
    masked.set_weights(layer.get_weights())
    assert_close_to(masked(x, mask=mask), expected)
    last = copy(return_sequences=False, zero_output_for_mask=zero_output_for_mask)
    last.set_weights(layer.get_weights())
    assert_close_to(last(x, mask=mask), last_expected)


@pytest.mark.parametrize("zero_output_for_mask", [False, True])
@pytest.mark.parametrize("name, options, form", STATE_CONFIGS)
def test_masks_after_an_initial_state(rng, name, options, form, zero_output_for_mask):
    """From an initial state, masked steps before the first unmasked one output zeros
    too, in every form and on every backend (Keras's JAX loop would repeat the initial
    state there, its other loops zeros)."""
    layer, x, copy = build_pair(options, rng, return_sequences=True, return_state=True)
    _, *states = layer(x[:, ::-1])  # some nonzero states to start from
    states = [numpy(state) for state in states]
    plain = copy(return_sequences=True, return_state=False)
    plain.set_weights(layer.get_weights())
    mask = mask_with_every_kind_of_step(rng, x.shape[:2])
    expected, last_expected = masked_reference(plain, x, mask, zero_output_for_mask, states)
    for return_sequences, wanted in ((True, expected), (False, last_expected)):
        masked = copy(
            return_sequences=return_sequences,
            return_state=False,
            zero_output_for_mask=zero_output_for_mask,
        )
        masked.set_weights(layer.get_weights())
        assert_close_to(masked(x, mask=mask, initial_state=states), wanted)


# Each kind of mask once with and once without return_sequences, over the configs.
@pytest.mark.parametrize(
    "name, options, form, return_sequences, padding",
    [
        (*config, return_sequences, padding)
        for index, config in enumerate(CONFIGS)
        for return_sequences, padding in (
            ((True, "holes"), (False, "after"))
            if index % 2
            else ((False, "holes"), (True, "after"))
        )
    ],
)
def test_masked_halves_continue_exactly(rng, name, options, form, return_sequences, padding):
    """Under a mask, a sequence in two calls, the second from the first's states, gives
    the states and outputs of one call; a sequence whose second half is masked
    throughout keeps the states it was given (in the parallel form: the memory before
    the first unmasked step is the initial one). Masks with holes, and padding only
    (where the parallel form needs no gathering, but for padding before the unmasked
    steps after an initial memory)."""
    layer, x, _ = build_pair(options, rng, return_sequences=return_sequences, return_state=True)
    # Masked steps before the first unmasked one of a call repeat an output that
    # depends on conventions for the initial output: outputs are compared from the
    # sequence ``compared`` on, states for all.
    if padding == "holes":
        mask = rng.uniform(size=x.shape[:2]) > 0.35
        mask[:, [0, 9]] = True
        compared = 1
    else:  # padding after the unmasked steps of the first half, before in the second
        mask = np.ones(x.shape[:2], bool)
        mask[:, 6:9] = np.arange(6, 9) < np.array([[6], [7], [9]])
        mask[1, 9:12] = False
        compared = 2
    mask[0, 9:] = False
    output, *states = layer(x, mask=mask)
    first_output, *first_states = layer(x[:, :9], mask=mask[:, :9])
    second_output, *second_states = layer(x[:, 9:], mask=mask[:, 9:], initial_state=first_states)
    for state, expected, first in zip(second_states, states, first_states, strict=True):
        assert_close(state, expected)
        scale = max(1.0, float(np.abs(numpy(first)).max()))  # a state may be zero
        np.testing.assert_allclose(numpy(state)[0], numpy(first)[0], atol=TOLERANCE * scale, rtol=0)
    if return_sequences:
        second_output = np.concatenate([numpy(first_output), numpy(second_output)], axis=1)
    expected = numpy(output)[compared:]  # may be zero (a relu)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(
        numpy(second_output)[compared:], expected, atol=TOLERANCE * scale, rtol=0
    )


@pytest.mark.parametrize(
    "name, return_sequences, padding",
    [
        ("parallel-dense", True, "holes"),
        ("parallel-dense", False, "before"),
        ("parallel-rnn", False, "holes"),
        ("parallel-rnn", True, "before"),
        ("parallel-scan-m2m-theta", True, "holes"),
        ("parallel-scan-m2m-theta", False, "before"),
    ],
)
def test_masked_parallel_form_trains_as_step_by_step(
    rng, monkeypatch, name, return_sequences, padding
):
    """Behind a ``Masking`` layer, the parallel form and the step-by-step loop give the
    same outputs and, after a training step, the same weights: masks with holes, and
    padding before the unmasked steps."""
    options = {config: options for config, options, _ in CONFIGS}[name]
    x = rng.uniform(-1, 1, (4, 12, 2))
    if padding == "holes":
        x[rng.uniform(size=x.shape[:2]) < 0.35] = 0.0
    else:
        x[np.arange(12) < np.array([[5], [12], [0], [9]])] = 0.0
    x[0, :5] = x[1] = 0.0  # leading masked steps; every step masked
    y = rng.uniform(-1, 1, (4, 12, 3) if return_sequences else (4, 3))
    models = []
    for parallel in (True, False):
        monkeypatch.setattr(keras_lmu.LMU, "uses_parallel_form", lambda self, p=parallel: p)
        inp = keras.Input((12, 2), dtype=DTYPE)
        lmu = make_lmu(options, return_sequences=return_sequences)
        models.append(keras.Model(inp, lmu(keras.layers.Masking(0.0, dtype=DTYPE)(inp))))
        models[-1].compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        assert isinstance(lmu.layer, keras_lmu.LMUFeedforward) == parallel
    assign_random_weights(models[0], rng)
    initial = models[0].get_weights()
    models[1].set_weights(initial)
    results = []
    for model in models:
        outputs = numpy(model(x))
        model.train_on_batch(x, y)
        results.append([outputs] + [numpy(w) for w in model.weights])
    assert not all(map(np.allclose, results[0][1:], initial))  # the step changed weights
    for parallel, step_by_step in zip(*results, strict=True):
        assert_close(parallel, step_by_step)


@pytest.mark.parametrize(
    "return_sequences, go_backwards, masked",
    [(True, False, False), (False, False, True), (True, True, True), (False, True, False)],
)
def test_steps_grouped_per_iteration_train_as_one_per_iteration(
    rng, monkeypatch, return_sequences, go_backwards, masked
):
    """Eleven steps four per iteration of the loop (two whole iterations and three
    steps left over): the same outputs, and the same weights after a training step,
    as one step per iteration."""
    x = rng.uniform(-1, 1, (3, 11, 2))
    if masked:
        x[0, 7:] = 0.0  # padding
    y = rng.uniform(-1, 1, (3, 11, 3) if return_sequences else (3, 3))
    models = []
    for _ in range(2):
        inp = keras.Input((11, 2), dtype=DTYPE)
        hidden = keras.layers.Masking(0.0, dtype=DTYPE)(inp) if masked else inp
        lmu = make_lmu(
            dict(hidden="rnn", hidden_to_memory=True, memory_to_memory=True),
            return_sequences=return_sequences,
            go_backwards=go_backwards,
        )
        models.append(keras.Model(inp, lmu(hidden)))
        models[-1].compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    # Weights drawn here, not by Keras's initializers from the global seed: with some
    # of those every relu was off at the last step, and nothing trained.
    assign_random_weights(models[0], rng)
    initial = models[0].get_weights()
    models[1].set_weights(initial)
    results = []
    for model, steps_per_iteration in zip(models, (1, 4), strict=True):
        group_steps(monkeypatch, steps_per_iteration)
        outputs = numpy(model(x))
        model.train_on_batch(x, y)
        results.append([outputs] + [numpy(w) for w in model.weights])
    assert not all(map(np.allclose, results[0][1:], initial))  # the step changed weights
    for grouped, expected in zip(results[1], results[0], strict=True):
        assert_close(grouped, expected)


@pytest.mark.parametrize(
    "grouped, layer, stacked",
    [
        (False, "LMU", False),
        (True, "LMU", True),
        (False, "RNN(LMUCell)", False),
        (False, "RNN(LMUCell)", True),
    ],
)
def test_hidden_cell_dropout_draws_new_masks_for_every_call(
    rng, monkeypatch, grouped, layer, stacked
):
    """A hidden cell's dropout masks (or those of the cells of a StackedRNNCells) are
    made before the step-by-step loop and dropped after it, with the LMUCell's own
    (Keras's RNN does so for its cell): every training call draws new ones (they were
    cached past the loop: the same masks for every batch, and on JAX a tracer that
    escaped the loop), and training trains. ``grouped``: ``LMU``'s loop takes three
    steps per iteration (as JAX's does for long sequences)."""
    steps = 10
    if grouped:
        group_steps(monkeypatch, 3)
    x = rng.uniform(-1, 1, (4, steps, 3))
    dropout = dict(dropout=0.5, recurrent_dropout=0.5, dtype=DTYPE)
    cells = [keras.layers.SimpleRNNCell(5, **dropout)]
    cell = cells[0]
    if stacked:
        cells = [keras.layers.SimpleRNNCell(4, **dropout), keras.layers.GRUCell(5, **dropout)]
        cell = keras.layers.StackedRNNCells(cells, dtype=DTYPE)
    options = dict(hidden_to_memory=True, dtype=DTYPE)
    if layer == "LMU":
        lmu = keras_lmu.LMU(2, 8, 50.0, cell, **options)
    else:
        lmu = keras.layers.RNN(keras_lmu.LMUCell(2, 8, 50.0, cell, **options), dtype=DTYPE)
    first, second = (numpy(lmu(x, training=True)) for _ in range(2))
    assert not np.allclose(first, second)
    for inner in cells:
        assert inner._dropout_mask is None and inner._recurrent_dropout_mask is None
    assert_close(lmu(x), lmu(x, training=False))
    model = keras.Sequential([keras.Input((steps, 3), dtype=DTYPE), lmu])
    model.compile(optimizer="sgd", loss="mse")
    losses = model.fit(x, rng.uniform(-1, 1, (4, 5)), epochs=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))


def test_stacked_hidden_cells_after_given_states_and_leading_masked_steps(rng):
    """In the parallel form, a hidden StackedRNNCells continuing from given states
    outputs zeros at masked steps before the first unmasked one (as the step-by-step
    loop does; Keras's JAX loop would repeat an initial state there), and then
    continues as if the masked steps were not there."""
    layer, x, _ = build_pair(dict(hidden="stacked"), rng, return_sequences=True, return_state=True)
    _, *states = layer(x[:, :5])
    mask = np.ones(x[:, 5:].shape[:2], bool)
    mask[:, :3] = False
    output, *final = layer(x[:, 5:], initial_state=states, mask=mask)
    assert np.abs(numpy(states[-1])).max() > 0  # [memory, h1, h2, h3]: h3, the output
    assert np.all(numpy(output[:, :3]) == 0)
    unmasked, *unmasked_final = layer(x[:, 8:], initial_state=states)
    assert_close(output[:, 3:], unmasked)
    for state, expected in zip(final, unmasked_final, strict=True):
        assert_close(state, expected)


def test_batch_normalization_hidden_layer_in_either_form(rng, monkeypatch):
    """A hidden ``BatchNormalization``: in inference both forms give the same outputs;
    in training the parallel form normalizes every step's memory over the batch and
    all steps at once (as ``TimeDistributed`` would, one update of the statistics per
    call), the step-by-step form over the batch at each step."""
    x = rng.uniform(-1, 1, (3, 7, 2))
    # Keras's BatchNormalization rounds through float32 on JAX (9.6e-8 from its float64
    # formula)
    tolerance = max(TOLERANCE, 1e-6)
    lmus = []
    for parallel in (True, False):
        monkeypatch.setattr(keras_lmu.LMU, "uses_parallel_form", lambda self, p=parallel: p)
        norm = keras.layers.BatchNormalization(momentum=0.5, dtype=DTYPE)
        lmus.append(keras_lmu.LMU(1, 4, 5.0, norm, return_sequences=True, dtype=DTYPE))
        lmus[-1](x[:, :1])
        assert isinstance(lmus[-1].layer, keras_lmu.LMUFeedforward) == parallel
    parallel, step_by_step = lmus
    for w in parallel.weights:
        w.assign(rng.uniform(0.5, 1.0, w.shape))  # (positive variances too)
    step_by_step.set_weights(parallel.get_weights())
    assert_close(parallel(x), step_by_step(x), tolerance)
    memory = keras_lmu.LMU(1, 4, 5.0, None, return_sequences=True, dtype=DTYPE)
    memory(x[:, :1])
    memory.set_weights(parallel.get_weights()[:1])  # the kernel
    norm = keras.layers.BatchNormalization(momentum=0.5, dtype=DTYPE)
    norm.build((None, 4))
    norm.set_weights(parallel.hidden_cell.get_weights())
    flat = keras.ops.reshape(memory(x), (-1, 4))
    expected = keras.ops.reshape(norm(flat, training=True), (3, 7, 4))
    assert_close(parallel(x, training=True), expected, tolerance)
    for actual, wanted in zip(parallel.hidden_cell.weights, norm.weights, strict=True):
        assert_close(actual, wanted, tolerance)


def test_masking_layer_is_respected(rng):
    x = rng.uniform(-1, 1, (2, 10, 2))
    x[0, 6:] = 0.0  # padding
    inp = keras.Input((10, 2), dtype=DTYPE)
    lmu = keras_lmu.LMU(1, 4, 6.0, linear_layer(3, DTYPE), dtype=DTYPE)
    model = keras.Model(inp, lmu(keras.layers.Masking(0.0, dtype=DTYPE)(inp)))
    assert_close(model(x[:1]), lmu(x[:1, :6]))


@pytest.mark.parametrize("name, options, form", CONFIGS[:1] + CONFIGS[3:4])
def test_bidirectional_trains_saves_and_loads(rng, tmp_path, name, options, form):
    inp = keras.Input((12, 2), dtype=DTYPE)
    layer = make_lmu(options, return_sequences=True)
    hidden = keras.layers.Bidirectional(layer)(keras.layers.Masking(0.0, dtype=DTYPE)(inp))
    model = keras.Model(inp, keras.layers.Dense(1, dtype=DTYPE)(hidden))
    model.compile(optimizer="adam", loss="mse")
    x = rng.uniform(-1, 1, (8, 12, 2))
    x[:4, 9:] = 0.0
    model.fit(x, rng.uniform(size=(8, 12, 1)), epochs=2, verbose=0)
    path = str(tmp_path / "bidirectional.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"ReluRNNCell": ReluRNNCell})
    assert_close(loaded(x), model(x))
    bidirectional = model.layers[2]
    assert bidirectional.backward_layer.go_backwards
    assert bidirectional.forward_layer.zero_output_for_mask


@pytest.mark.parametrize("name, options, form", CONFIGS[:1] + CONFIGS[5:6])
def test_bidirectional_returns_each_directions_states(rng, name, options, form):
    """``Bidirectional(LMU(return_state=True))`` in a functional model (symbolic shapes,
    as Keras's RNN layers give them) returns the output and then each direction's
    states, those of an LMU run forward and of one run backward over the sequence."""
    inp = keras.Input((9, 2), dtype=DTYPE)
    bidirectional = keras.layers.Bidirectional(make_lmu(options, return_state=True))
    model = keras.Model(inp, bidirectional(inp))
    x = rng.uniform(-1, 1, (3, 9, 2))
    output, *states = model(x)
    count = len(bidirectional.forward_layer.state_size)
    assert len(states) == 2 * count
    for layer, direction_states, reverse in (
        (bidirectional.forward_layer, states[:count], False),
        (bidirectional.backward_layer, states[count:], True),
    ):
        alone = make_lmu(options, return_state=True)
        alone(x)
        alone.set_weights(layer.get_weights())
        _, *expected = alone(x[:, ::-1] if reverse else x)
        for state, value in zip(direction_states, expected, strict=True):
            assert_close(state, value)
    size = bidirectional.forward_layer.compute_output_shape((None, 9, 2))[0][-1]
    assert tuple(output.shape) == (3, 2 * size)


def test_calls_directly_only_where_layer_call_adds_nothing():
    """``hidden_cells.calls_directly``: a built layer whose ``call`` takes ``training``,
    with the caller's dtype policy and no activity regularizer; else ``__call__``."""
    policy = keras.dtype_policies.get(DTYPE)

    def built(layer):
        layer.build((None, 4))
        return layer

    assert hidden_cells.calls_directly(built(keras.layers.SimpleRNNCell(3, dtype=DTYPE)), policy)
    assert hidden_cells.calls_directly(built(keras.layers.Dense(3, dtype=DTYPE)), policy)
    assert not hidden_cells.calls_directly(keras.layers.SimpleRNNCell(3, dtype=DTYPE), policy)
    assert not hidden_cells.calls_directly(built(ReluRNNCell(3, dtype=DTYPE)), policy)
    regularized = keras.layers.Dense(3, activity_regularizer="l2", dtype=DTYPE)
    assert not hidden_cells.calls_directly(built(regularized), policy)
    mixed = keras.layers.SimpleRNNCell(3, dtype="mixed_float16")
    assert not hidden_cells.calls_directly(built(mixed), policy)


# Only PyTorch calls hidden layers directly: elsewhere one case per layer checks that
# it does not.
DIRECT_CALL_CASES = [
    (hidden, layer)
    for hidden in ("SimpleRNNCell", "LSTMCell", "Dense")
    for layer in ("LMU", "RNN(LMUCell)")
    if BACKEND == "torch"
    or (hidden, layer) in {("SimpleRNNCell", "LMU"), ("Dense", "RNN(LMUCell)")}
]


@pytest.mark.parametrize("hidden, layer", DIRECT_CALL_CASES)
def test_hidden_layer_called_directly_computes_what_its_layer_call_does(
    rng, monkeypatch, layer, hidden
):
    """On PyTorch the cell calls its hidden layer's ``call`` directly, and ``LMU`` its
    cell's (``hidden_cells.calls_directly``): outputs, and weights after a training
    step with dropout, as through ``Layer.__call__``. Elsewhere the cell takes
    ``__call__`` (one run, which must not ask ``calls_directly``)."""
    x = rng.uniform(-1, 1, (3, 9, 2))
    y = rng.uniform(-1, 1, (3, 3))
    calls_directly = hidden_cells.calls_directly
    taken = []

    def recording(*args):
        taken.append(calls_directly(*args))
        return taken[-1]

    def never(*args):
        return False

    results = []
    initial = None
    for rule in (recording, never) if BACKEND == "torch" else (recording,):
        monkeypatch.setattr(hidden_cells, "calls_directly", rule)
        monkeypatch.setattr(cell_module, "calls_directly", rule)
        keras.utils.set_random_seed(1)
        hidden_cell = {
            "SimpleRNNCell": lambda: keras.layers.SimpleRNNCell(
                3, dropout=0.3, recurrent_dropout=0.3, dtype=DTYPE
            ),
            "LSTMCell": lambda: keras.layers.LSTMCell(3, dtype=DTYPE),
            "Dense": lambda: keras.layers.Dense(3, activation="tanh", dtype=DTYPE),
        }[hidden]()
        options = dict(hidden_to_memory=True, memory_to_memory=True, dropout=0.2, dtype=DTYPE)
        if layer == "LMU":
            lmu = keras_lmu.LMU(2, 5, 7.0, hidden_cell, **options)
        else:
            lmu = keras.layers.RNN(keras_lmu.LMUCell(2, 5, 7.0, hidden_cell, **options))
        inp = keras.Input((9, 2), dtype=DTYPE)
        model = keras.Model(inp, lmu(inp))
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        if initial is None:
            initial = model.get_weights()
        model.set_weights(initial)
        outputs = numpy(model(x))
        keras.utils.set_random_seed(2)
        model.train_on_batch(x, y)
        results.append([outputs] + [numpy(w) for w in model.weights])
    assert any(taken) == (BACKEND == "torch")
    assert not all(map(np.allclose, results[-1][1:], initial))  # the step changed weights
    if BACKEND == "torch":
        for direct, through_call in zip(*results, strict=True):
            assert_close(direct, through_call)


@pytest.mark.parametrize("hidden", [None, "Dense", "SimpleRNNCell"])
def test_cell_takes_numpy_arrays_as_keras_cells_do(rng, hidden):
    """``LMUCell(...)(x, states)`` with NumPy arrays, float64 ones included, gives what
    it gives for tensors of its compute dtype (it raised "Only input tensors may be
    passed as positional arguments"; Keras's cells take NumPy arrays)."""
    hidden_cell = {
        None: None,
        "Dense": keras.layers.Dense(4),
        "SimpleRNNCell": keras.layers.SimpleRNNCell(4),
    }[hidden]
    cell = keras_lmu.LMUCell(1, 4, 5.0, hidden_cell, hidden_to_memory=hidden is not None)
    x = rng.uniform(-1, 1, (2, 3))
    states = [rng.uniform(-1, 1, (2, size)) for size in cell.state_size]
    dtype = cell.compute_dtype
    expected, expected_states = cell(
        keras.ops.convert_to_tensor(x, dtype),
        [keras.ops.convert_to_tensor(s, dtype) for s in states],
    )
    output, new_states = cell(x, states)
    assert keras.backend.standardize_dtype(output.dtype) == dtype
    np.testing.assert_array_equal(numpy(output), numpy(expected))
    for state, expected_state in zip(new_states, expected_states, strict=True):
        assert keras.backend.standardize_dtype(state.dtype) == dtype
        np.testing.assert_array_equal(numpy(state), numpy(expected_state))


FROZEN_LAYERS = {
    "LMU-parallel": lambda **kw: keras_lmu.LMU(1, 3, 4.0, keras.layers.SimpleRNNCell(2), **kw),
    "LMU-recurrent": lambda **kw: keras_lmu.LMU(
        1, 3, 4.0, keras.layers.SimpleRNNCell(2), hidden_to_memory=True, **kw
    ),
    "LMUFeedforward": lambda **kw: keras_lmu.LMUFeedforward(
        1, 3, 4.0, keras.layers.SimpleRNNCell(2), trainable_theta=True, **kw
    ),
    "RNN(LMUCell)": lambda **kw: keras.layers.RNN(
        keras_lmu.LMUCell(1, 3, 4.0, keras.layers.Dense(2), **kw)
    ),
}


@pytest.mark.parametrize("name", FROZEN_LAYERS)
@pytest.mark.parametrize("when", ["made", "before its build"])
@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_untrainable_layer_stays_frozen_when_trained_saved_and_cloned(rng, tmp_path, name, when):
    """As Keras's own layers: ``trainable=False`` freezes every weight, the hidden
    layer's included. (Given to the constructor, or set before the layer was built,
    it reached none of the sublayers made in the build: ``fit`` trained every weight;
    and a model saved with a frozen LMU loaded with its kernel trainable again.)"""
    layer = FROZEN_LAYERS[name](**({"trainable": False} if when == "made" else {}))
    frozen = layer.cell if name == "RNN(LMUCell)" else layer
    if when == "before its build":
        frozen.trainable = False
    inputs = keras.Input((5, 2))
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.Adam(0.1), "mse")
    before = [np.array(weight) for weight in model.get_weights()]
    x = rng.normal(size=(4, 5, 2)).astype(DTYPE)
    model.fit(x, np.ones((4, 2), DTYPE), epochs=1, verbose=0)
    assert model.trainable_weights == []
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    model.save(tmp_path / "frozen.keras")
    for copy in (
        keras.saving.load_model(tmp_path / "frozen.keras"),
        keras.models.clone_model(model),
    ):
        assert copy.trainable_weights == [], [weight.path for weight in copy.trainable_weights]
        assert len(copy.non_trainable_weights) == len(before)
