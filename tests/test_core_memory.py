"""Every form of the LMU against the independent float64 reference of the equations."""

from unittest import mock

import keras
import numpy as np
import pytest
from conftest import DTYPE, TOLERANCE, assert_close, relative_error
from reference import ReluRNNCell, linear_layer, lmu_reference

import keras_lmu

STEPS = 13
exact = pytest.mark.usefixtures("exact_floatx")

# Each option value appears; combinations sampled (not the full product).
CASES = [
    # form, discretizer, memory_d, hidden, h2m, m2m, i2h, bias, return_sequences, kernel, trainable
    ("lmu", "zoh", 1, None, False, False, False, False, True, True, None),
    ("lmu", "euler", 3, "dense", False, True, True, True, False, True, "theta"),
    ("lmu", "zoh", 2, "rnn", True, True, False, True, True, True, "AB"),
    ("lmu", "euler", 1, "rnn", False, False, True, False, True, True, "AB"),
    ("lmu", "zoh", 2, "dense", False, False, False, True, False, False, "theta"),
    ("lmu", "zoh", 2, None, False, True, True, True, False, True, None),
    ("rnn", "zoh", 3, None, False, True, False, True, True, True, "theta"),
    ("rnn", "euler", 2, "rnn", True, False, True, True, False, True, None),
    ("rnn", "zoh", 1, "dense", True, True, True, False, True, True, "AB"),
    ("rnn", "euler", 2, None, False, False, True, False, True, False, "theta"),
    ("fft", "zoh", 2, "dense", False, False, True, True, True, True, "AB"),
    ("fft", "euler", 1, None, False, True, False, False, False, True, "theta"),
    ("fft", "zoh", 3, "rnn", False, False, False, True, False, True, None),
    ("raw", "euler", 3, "dense", False, False, False, False, True, True, "theta"),
    ("raw", "zoh", 1, "rnn", False, True, True, True, True, True, "AB"),
    ("raw", "zoh", 2, None, False, False, True, False, False, False, None),
    ("scan", "zoh", 2, "dense", False, True, False, True, True, True, "theta"),
    ("scan", "euler", 1, "rnn", False, False, True, False, True, True, "AB"),
    ("scan", "zoh", 3, "rnn", False, True, True, True, False, False, None),
    ("scan", "euler", 2, None, False, False, False, False, True, True, None),
    # a StackedRNNCells as the hidden cell: the last cell's output is fed back
    ("lmu", "zoh", 2, "stacked", True, True, False, True, True, True, None),
    ("lmu", "euler", 1, "stacked", False, False, True, False, False, True, None),
    ("rnn", "zoh", 1, "stacked", True, False, True, False, False, True, "theta"),
    ("fft", "zoh", 2, "stacked", False, False, True, True, True, True, None),
]


def make_hidden(kind, dtype):
    if kind == "dense":
        return linear_layer(4, dtype)
    if kind == "rnn":
        return ReluRNNCell(4, dtype=dtype)
    if kind == "stacked":
        cells = [ReluRNNCell(5, dtype=dtype), ReluRNNCell(4, dtype=dtype)]
        return keras.layers.StackedRNNCells(cells, dtype=dtype)
    return None


def make_layer(form, hidden, return_sequences, **options):
    if form == "lmu":
        return keras_lmu.LMU(hidden_cell=hidden, return_sequences=return_sequences, **options)
    if form == "rnn":
        cell = keras_lmu.LMUCell(
            hidden_cell=hidden, dtype=options["dtype"], **options_no_dtype(options)
        )
        return keras.layers.RNN(cell, return_sequences=return_sequences, dtype=options["dtype"])
    options.pop("hidden_to_memory")
    return keras_lmu.LMUFeedforward(
        hidden_cell=hidden,
        return_sequences=return_sequences,
        conv_mode=form,
        truncate_ir=None,
        **options,
    )


def options_no_dtype(options):
    return {k: v for k, v in options.items() if k != "dtype"}


def memory_layer(layer):
    """The layer object that holds kernel/bias/recurrent_kernel."""
    if isinstance(layer, keras_lmu.LMU):
        return layer._memory_layer
    if isinstance(layer, keras.layers.RNN):
        return layer.cell
    return layer


def randomize(layer, rng):
    """Random weights; theta_inv is scaled and A, B perturbed around their start."""
    for weight in layer.weights:
        value = keras.ops.convert_to_numpy(weight)
        if weight.name == "theta_inv":
            weight.assign(value * rng.uniform(0.7, 1.3))
        elif weight.name in ("A", "B"):
            weight.assign(value * (1 + 0.1 * rng.uniform(-1, 1, value.shape)))
        else:
            weight.assign(rng.uniform(-0.5, 0.5, weight.shape))


def reference_for(layer, x, hidden_kind, mask=None, **options):
    memory = memory_layer(layer)
    hidden_cell = memory.hidden_cell
    hidden = None
    if hidden_kind == "dense":
        hidden = (
            "dense",
            *(keras.ops.convert_to_numpy(w) for w in (hidden_cell.kernel, hidden_cell.bias)),
        )
    elif hidden_kind == "rnn":
        hidden = (
            "simple_rnn",
            *(
                keras.ops.convert_to_numpy(w)
                for w in (hidden_cell.kernel, hidden_cell.recurrent_kernel, hidden_cell.bias)
            ),
        )
    elif hidden_kind == "stacked":
        cells = [
            [keras.ops.convert_to_numpy(w) for w in (c.kernel, c.recurrent_kernel, c.bias)]
            for c in hidden_cell.cells
        ]
        hidden = ("stacked_rnn", cells)

    def value(w):
        return None if w is None else keras.ops.convert_to_numpy(w).astype(np.float64)

    return lmu_reference(
        x.astype(np.float64),
        memory_d=options["memory_d"],
        order=options["order"],
        theta=memory.theta,
        discretizer=options["discretizer"],
        kernel=value(memory.kernel),
        bias=value(memory.bias),
        recurrent_kernel=value(memory.recurrent_kernel),
        hidden=hidden,
        hidden_size=4 if hidden_kind else 0,
        hidden_to_memory=options["hidden_to_memory"],
        input_to_hidden=options["input_to_hidden"],
        A=value(memory.A),
        B=value(memory.B),
        mask=mask,
    )


@exact
@pytest.mark.parametrize(
    "form, discretizer, memory_d, hidden_kind, h2m, m2m, i2h, use_bias, return_sequences, kernel, "
    "trainable",
    CASES,
)
@pytest.mark.parametrize("long_window", [False, True])
def test_matches_reference(
    rng,
    long_window,
    form,
    discretizer,
    memory_d,
    hidden_kind,
    h2m,
    m2m,
    i2h,
    use_bias,
    return_sequences,
    kernel,
    trainable,
):
    """A long window (theta 60 at order 5) makes ``A_bar`` near the identity, whose
    powers are then squared as their differences from it (``powers_near_identity``)."""
    input_d = 3 if kernel else memory_d
    theta = 7.0 if discretizer == "zoh" else 15.0
    options = dict(
        memory_d=memory_d,
        order=5,
        theta=60.0 if long_window else theta,
        discretizer=discretizer,
        hidden_to_memory=h2m,
        memory_to_memory=m2m,
        input_to_hidden=i2h,
        use_bias=use_bias,
        kernel_initializer="glorot_uniform" if kernel else None,
        dtype=DTYPE,
        trainable_theta=trainable == "theta",
        trainable_A=trainable == "AB",
        trainable_B=trainable == "AB",
    )
    if hidden_kind is None and i2h and form in ("lmu", "rnn"):
        options["input_d"] = input_d
    layer = make_layer(form, make_hidden(hidden_kind, DTYPE), return_sequences, **options)
    x = rng.uniform(-1, 1, (4, STEPS, input_d))
    layer(x)
    assert memory_layer(layer).powers_near_identity == long_window
    randomize(layer, rng)
    expected, _ = reference_for(layer, x, hidden_kind, **options)
    if not return_sequences:
        expected = expected[:, -1]
    assert_close(layer(x), expected)


# conv_mode, memory_d, hidden, memory_to_memory, input_to_hidden, trainable, return_sequences
MASKED_CASES = [
    ("fft", 2, "dense", False, True, None, True),
    ("fft", 1, None, False, False, "theta", False),  # only the last memory, under the mask
    ("fft", 2, "stacked", False, False, None, True),
    ("raw", 2, "rnn", True, False, None, False),
    ("raw", 1, "dense", False, True, "AB", False),
    ("scan", 2, "dense", True, True, "theta", True),
    ("scan", 1, "rnn", False, True, None, True),
]


def masked_inputs(rng, input_d, padding, steps=STEPS):
    """Inputs of 5 sequences and a mask, NaN at every masked step (never used).

    ``padding="holes"``: every step masked, the first 4, none, some at random, and
    all but the first; ``"after"`` and ``"before"``: padding after (before) 0, 3, 5
    and 12 unmasked steps and none.
    """
    x = rng.uniform(-1, 1, (5, steps, input_d))
    if padding == "holes":
        mask = rng.uniform(size=(5, steps)) > 0.4
        mask[0], mask[1, :4], mask[2], mask[4], mask[4, 0] = False, False, True, False, True
    else:
        lengths = np.array([0, 3, 5, 12, steps])[:, None]
        mask = np.arange(steps) < lengths
        if padding == "before":
            mask = mask[:, ::-1]
    x[~mask] = np.nan
    return x, mask


@exact
@pytest.mark.parametrize("padding", ["holes", "after", "before"])
@pytest.mark.parametrize(
    "conv_mode, memory_d, hidden_kind, m2m, i2h, trainable, return_sequences", MASKED_CASES
)
def test_masked_parallel_form_matches_reference(
    rng, conv_mode, memory_d, hidden_kind, m2m, i2h, trainable, return_sequences, padding
):
    """Under a mask the parallel form computes the memory of the unmasked steps
    gathered together (with holes in the mask) or of the sequence with its masked
    inputs zeroed (padding only): the outputs and final states are the reference's,
    which holds the memory and hidden states at masked steps (where the input is NaN)."""
    options = dict(
        memory_d=memory_d,
        order=5,
        theta=7.0,
        discretizer="zoh",
        hidden_to_memory=False,
        memory_to_memory=m2m,
        input_to_hidden=i2h,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        dtype=DTYPE,
        trainable_theta=trainable == "theta",
        trainable_A=trainable == "AB",
        trainable_B=trainable == "AB",
    )
    layer = keras_lmu.LMU(
        hidden_cell=make_hidden(hidden_kind, DTYPE),
        return_sequences=return_sequences,
        return_state=True,
        conv_mode=conv_mode,
        truncate_ir=None,
        **options,
    )
    x, mask = masked_inputs(rng, 3, padding)
    contiguous = keras_lmu.ops.unmasked_steps_are_contiguous(mask)
    assert bool(keras.ops.convert_to_numpy(contiguous)) == (padding != "holes")
    layer(np.nan_to_num(x))
    assert layer.uses_parallel_form()
    randomize(layer, rng)
    expected, expected_memory = reference_for(layer, x, hidden_kind, mask=mask, **options)
    output, memory, *_ = layer(x, mask=mask)
    assert_close(output, expected if return_sequences else expected[:, -1])
    assert_close(memory, expected_memory)


def match_reference_then_step(form, options, x, y, rng, weights=None):
    """Build ``form`` (no hidden component, every step returned) with ``weights``
    (random ones when None), check its memories against the reference, and train
    it one SGD step on ``y``. Returns the weights before and after that step."""
    layer = make_layer(form, None, True, **options)
    layer(x)
    if weights is None:
        randomize(layer, rng)
        weights = layer.get_weights()
    layer.set_weights(weights)
    expected, _ = reference_for(layer, x, None, **options)
    assert_close(layer(x), expected)
    model = keras.Sequential([keras.Input(x.shape[1:], dtype=DTYPE), layer])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.train_on_batch(x, y)
    return weights, model.get_weights()


@exact
def test_step_by_step_memories_in_either_layout_match_reference(rng, monkeypatch):
    """``memory_step`` multiplies ``memory_d > 1`` memories as a batch of matrices or
    as the rows of one (which one runs depends on the backend and the CPU): both
    give the reference's memories, and one training step gives the same weights."""
    options = dict(
        memory_d=3,
        order=5,
        theta=7.0,
        discretizer="zoh",
        hidden_to_memory=False,
        memory_to_memory=False,
        input_to_hidden=False,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        dtype=DTYPE,
    )
    x = rng.uniform(-1, 1, (4, STEPS, 2))
    y = rng.uniform(-1, 1, (4, STEPS, 15))
    trained, weights = [], None
    for batched in (True, False):
        monkeypatch.setattr(keras_lmu.ops, "stacks_memories_in_batches", lambda b=batched: b)
        weights, after_step = match_reference_then_step("rnn", options, x, y, rng, weights)
        trained.append(after_step)
    assert not np.allclose(trained[0][0], weights[0]), "the step changed the kernel"
    for a, b in zip(*trained, strict=True):
        assert_close(a, b)


@exact
@pytest.mark.parametrize("memory_d", [1, 3])
@pytest.mark.parametrize("batched", [True, False])
def test_written_step_gradient_matches_reference(rng, monkeypatch, memory_d, batched):
    """``memory_step_gradient``: ``dL/dm_{t-1} = g (I + transition^T)`` and
    ``dL/du_t = g B_bar`` per memory, against NumPy, in either layout."""
    monkeypatch.setattr(keras_lmu.ops, "stacks_memories_in_batches", lambda: batched)
    order = 5
    transition = rng.normal(size=(order, order))
    B_bar = rng.normal(size=order)
    upstream = rng.normal(size=(4, memory_d * order))
    grad_memory, grad_u = keras_lmu.ops.memory_step_gradient(
        *(keras.ops.convert_to_tensor(v, DTYPE) for v in (upstream, transition, B_bar))
    )
    per_memory = upstream.reshape(4, memory_d, order)
    expected_memory = (per_memory + per_memory @ transition.T).reshape(4, -1)
    assert_close(keras.ops.convert_to_numpy(grad_memory), expected_memory)
    assert_close(keras.ops.convert_to_numpy(grad_u), per_memory @ B_bar)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's gradient only")
@exact
@pytest.mark.parametrize("memory_d", [1, 3])
@pytest.mark.parametrize("batched", [True, False])
def test_fixed_system_step_has_tensorflows_gradient(rng, monkeypatch, memory_d, batched):
    """On TensorFlow a step of a fixed system is differentiated by its written-out
    gradient: the same gradients as TensorFlow's own, through a nonlinear loss."""
    import tensorflow as tf

    monkeypatch.setattr(keras_lmu.ops, "stacks_memories_in_batches", lambda: batched)
    order = 5
    memory = tf.constant(rng.normal(size=(4, memory_d * order)), DTYPE)
    u = tf.constant(rng.normal(size=(4, memory_d)), DTYPE)
    transition = tf.constant(rng.normal(size=(order, order)) * 0.1, DTYPE)
    B_bar = tf.constant(rng.normal(size=order), DTYPE)
    written_calls = []
    written = keras_lmu.ops.memory_step_gradient

    def counted(*args):
        written_calls.append(1)
        return written(*args)

    monkeypatch.setattr(keras_lmu.ops, "memory_step_gradient", counted)
    gradients = []
    for fixed_system in (True, False):
        with tf.GradientTape() as tape:
            tape.watch([memory, u])
            out = keras_lmu.ops.memory_step(memory, u, transition, B_bar, fixed_system)
            loss = tf.reduce_sum(tf.sin(out) * out)
        gradients.append([g.numpy() for g in tape.gradient(loss, [memory, u])])
        gradients[-1].append(out.numpy())
    assert len(written_calls) == 1, "only the fixed system's step has the written gradient"
    for with_written, automatic in zip(*gradients, strict=True):
        assert_close(with_written, automatic)


@exact
def test_fft_in_pieces_matches_reference(rng, monkeypatch):
    """The FFT convolution computed in pieces (one order, blocks of orders, groups of
    channels) gives the reference's memories, and one training step with a trainable
    theta gives the weights of the FFT in one piece."""
    options = dict(
        memory_d=4,
        order=6,
        theta=7.0,
        discretizer="zoh",
        hidden_to_memory=False,
        memory_to_memory=False,
        input_to_hidden=False,
        use_bias=True,
        trainable_theta=True,
        kernel_initializer="glorot_uniform",
        dtype=DTYPE,
    )
    x = rng.uniform(-1, 1, (2, STEPS, 2))
    y = rng.uniform(-1, 1, (2, STEPS, 24))
    # 13 steps: 32-point FFTs, 17 frequencies, 34 values per order in a batch of 2.
    pieces = {1 << 62: (4, 6), 34: (1, 1), 100: (1, 2), 500: (2, 6)}
    trained, weights = [], None
    for values, shape in pieces.items():
        for name in ("FFT_PIECE_VALUES", "FFT_TORCH_CPU_PIECE_VALUES"):
            monkeypatch.setattr(keras_lmu.ops, name, values)
        assert keras_lmu.ops.fft_piece_shape(2, 4, 6, 17) == shape
        weights, after_step = match_reference_then_step("fft", options, x, y, rng, weights)
        trained.append(after_step)
    assert not np.allclose(trained[0][1], weights[1]), "the step changed theta"
    for other in trained[1:]:
        for a, b in zip(trained[0], other, strict=True):
            assert_close(a, b)


def test_fft_piece_shape_bounds_size_and_blocks():
    ops = keras_lmu.ops
    for batch, channels, order, frequencies in [
        (16, 32, 256, 513),
        (None, 32, 256, 513),
        (100, 1, 256, 1025),
        (1, 1, 256, 32769),
        (4096, 512, 1024, 4097),
        (1, 12, 3, 9),
        (2, 7, 3, 9),
    ]:
        group, orders = ops.fft_piece_shape(batch, channels, order, frequencies)
        blocks = -(-order // orders)
        assert channels % group == 0 and 1 <= orders <= order
        assert group == 1 or orders == order
        assert blocks <= ops.FFT_MAX_BLOCKS
        size = (batch or ops.FFT_ASSUMED_BATCH) * frequencies * group * orders
        if blocks < ops.FFT_MAX_BLOCKS and orders > 1:
            assert size <= ops.FFT_PIECE_VALUES, (batch, channels, order)
    assert ops.fft_piece_shape(16, 32, 256, 513) == (1, 52)  # 5 blocks of orders a channel
    assert ops.fft_piece_shape(1, 12, 3, 9) == (12, 3)
    assert ops.fft_piece_shape(2**16, 12, 3, 9) == (1, 1)


@exact
def test_fft_on_an_accelerator_runs_in_pieces_of_its_own_size(rng, monkeypatch):
    """Where the signal is on an accelerator, the pieces hold up to
    ``FFT_ACCELERATOR_PIECE_VALUES`` complex values (on the CPU ``FFT_PIECE_VALUES``),
    and the memories are the same."""
    layer = keras_lmu.LMUFeedforward(
        4, 6, 7.0, None, conv_mode="fft", return_sequences=True, dtype=DTYPE
    )
    x = rng.uniform(-1, 1, (2, STEPS, 2))
    one_piece = keras.ops.convert_to_numpy(layer(x))
    shapes = []
    piece_shape = keras_lmu.ops.fft_piece_shape

    def record_piece_shape(*args):
        shapes.append(piece_shape(*args))
        return shapes[-1]

    monkeypatch.setattr(keras_lmu.ops, "fft_piece_shape", record_piece_shape)
    monkeypatch.setattr(keras_lmu.ops, "FFT_ACCELERATOR_PIECE_VALUES", 34)
    for accelerator, shape in ((True, (1, 1)), (False, (4, 6))):
        monkeypatch.setattr(keras_lmu.ops, "on_accelerator", lambda x, a=accelerator: a)
        assert_close(layer(x), one_piece)
        assert shapes[-1] == shape  # 13 steps: 34 values per order in a batch of 2


def test_on_accelerator_is_false_for_a_tensor_on_the_cpu():
    with keras.device("cpu:0"):
        assert not keras_lmu.ops.on_accelerator(keras.ops.zeros((2, 3)))


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's autograd only")
def test_fft_keeps_no_product_for_the_backward_pass(rng):
    """The backward pass of the FFT convolution needs only the factors' spectra.

    Complex products are linear in each factor, so autograd keeps the factors, a
    fraction of the result's size; (real, imaginary) pairs joined by ``torch.complex``
    kept both parts of every product, twice the result's size.
    """
    import torch

    signal = torch.tensor(rng.normal(size=(4, 64, 3)), dtype=torch.float32, requires_grad=True)
    response = torch.tensor(rng.normal(size=(64, 64)), dtype=torch.float32, requires_grad=True)
    kept = {}

    def keep(tensor):
        kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        memory = keras_lmu.ops.per_channel_fft_convolution(signal, response, 128)
    result_bytes = memory.numel() * memory.element_size()
    assert sum(kept.values()) < result_bytes / 2, (sum(kept.values()), result_bytes)
    memory.sum().backward()
    assert signal.grad is not None and response.grad is not None


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's own convolution")
@pytest.mark.parametrize("group, orders", [(1, 1), (1, 2), (3, 5)])
def test_torch_convolution_in_place_matches_joined_pieces_and_gradients(rng, group, orders):
    """On PyTorch the pieces are written into the result with their own gradient
    (``keras_lmu.torch_fft``): the memories and the gradients with respect to the
    signal and the response equal those of the pieces joined by ``keras.ops``, which
    run while PyTorch traces (an export), and PyTorch's numerical gradient check (and
    its check of second derivatives) passes in float64."""
    import torch

    from keras_lmu import torch_fft

    signal = torch.tensor(rng.normal(size=(2, 9, 3)), requires_grad=True)
    response = torch.tensor(rng.normal(size=(9, 5)), requires_grad=True)
    weights = torch.tensor(rng.normal(size=(2, 9, 3, 5)))

    def convolve(signal, response):
        return torch_fft.per_channel_fft_convolution(signal, response, 32, group, orders)

    memory = convolve(signal, response)
    (memory * weights).sum().backward()
    in_place = [memory.detach(), signal.grad.clone(), response.grad.clone()]
    signal.grad = response.grad = None
    with mock.patch.object(torch_fft, "traced", lambda: True):
        memory = keras_lmu.ops.per_channel_fft_convolution(signal, response, 32)
    (memory * weights).sum().backward()
    for a, b in zip(in_place, [memory.detach(), signal.grad, response.grad], strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(convolve, (signal, response))
    assert torch.autograd.gradgradcheck(convolve, (signal, response))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's own gradient")
@pytest.mark.parametrize("group, orders", [(1, 1), (1, 2), (3, 5)])
def test_tensorflow_convolution_gradient_in_pieces_matches_joined_pieces(rng, group, orders):
    """On TensorFlow the convolution has its own gradient, computed piece by piece
    (``keras_lmu.tf_fft``): eagerly and in a ``tf.function``, the memories and the
    gradients with respect to the signal and the response equal TensorFlow's own
    gradient of the loop over pieces, and a fixed response gets no gradient."""
    import tensorflow as tf

    from keras_lmu import ops as lmu_ops
    from keras_lmu import tf_fft

    signal = tf.constant(rng.normal(size=(2, 9, 3)))
    response = tf.constant(rng.normal(size=(9, 5)))
    weights = tf.constant(rng.normal(size=(2, 9, 3, 5)))

    def joined(signal, response):
        return lmu_ops._joined_pieces(signal, response, 32, group, orders)

    def gradients(convolve):
        with tf.GradientTape() as tape:
            tape.watch([signal, response])
            memory = convolve(signal, response)
            loss = tf.reduce_sum(memory * weights)
        return [memory, *tape.gradient(loss, [signal, response])]

    expected = gradients(joined)
    for fixed_response in (False, True):

        def in_pieces(signal, response, fixed=fixed_response):
            return tf_fft.with_gradient_in_pieces(
                joined, signal, response, 32, group, orders, fixed
            )

        for computed in (gradients(in_pieces), tf.function(lambda: gradients(in_pieces))()):
            np.testing.assert_allclose(computed[0], expected[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(computed[1], expected[1], rtol=1e-12, atol=1e-12)
            if fixed_response:
                assert computed[2] is None
            else:
                np.testing.assert_allclose(computed[2], expected[2], rtol=1e-12, atol=1e-12)


@exact
@pytest.mark.parametrize("trained_theta", [9.5, 4.5])  # above and below the initial 6
@pytest.mark.parametrize("discretizer", ["zoh", "euler"])
@pytest.mark.parametrize("form", ["lmu", "rnn", "fft", "raw", "scan"])
def test_trainable_theta_uses_trained_value(rng, form, discretizer, trained_theta):
    options = dict(
        memory_d=2,
        order=4,
        theta=6.0,
        discretizer=discretizer,
        hidden_to_memory=False,
        memory_to_memory=form != "raw",
        input_to_hidden=False,
        use_bias=False,
        trainable_theta=True,
        dtype=DTYPE,
    )
    layer = make_layer(form, None, True, **options)
    x = rng.uniform(-1, 1, (3, STEPS, 2))
    layer(x)
    memory = memory_layer(layer)
    memory.theta_inv.assign(1 / trained_theta)
    assert memory.theta == pytest.approx(trained_theta)
    randomize(layer, rng)
    expected, _ = reference_for(layer, x, None, **options)
    assert_close(layer(x), expected)


def memory_by_reference(x, order, theta):
    """Every step's memory of ``x`` (batch, steps), float64."""
    A_bar, B_bar = keras_lmu.legendre.discrete_system(order, theta)
    memory, memories = np.zeros((len(x), order)), []
    for u in x.T:
        memory = memory @ A_bar.T + u[:, None] * B_bar
        memories.append(memory)
    return np.stack(memories, 1)


@pytest.mark.parametrize("form", ["lmu", "raw", "scan"])
def test_trainable_theta_at_its_start_is_as_accurate_as_a_fixed_one(rng, form):
    """Order 256, theta 784, 784 steps in float32: the trainable theta's memory was
    2-3e-4 (relative) off the float64 reference, as its matrix exponential was computed
    from A / theta in the graph; from the exact one at the initial theta, 6-8e-6 (the
    fixed memory's: 4.5-9e-7)."""
    order, theta, steps = 256, 784.0, 784
    x = rng.standard_normal((2, steps)).astype("float32")
    options = dict(kernel_initializer=None, trainable_theta=True, return_sequences=True)
    if form == "lmu":
        layer = keras_lmu.LMU(1, order, theta, None, **options)
    else:
        layer = keras_lmu.LMUFeedforward(1, order, theta, None, conv_mode=form, **options)
    expected = memory_by_reference(x.astype(np.float64), order, theta)
    assert relative_error(layer(x[..., None]), expected) < 2e-5


def gradient_wrt(variable, loss):
    """d loss() / d variable by the backend's own differentiation."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss()
        return tape.gradient(value, variable.value)
    if backend == "torch":
        import torch

        return torch.autograd.grad(loss(), [variable.value])[0]
    import jax

    def stateless_loss(value):
        with keras.StatelessScope(state_mapping=[(variable, value)]):
            return loss()

    return jax.grad(stateless_loss)(variable.value)


@exact
@pytest.mark.parametrize("discretizer", ["zoh", "euler"])
@pytest.mark.parametrize("trainable", [None, "theta", "AB"])
def test_layer_discrete_system_and_its_difference_from_the_identity(discretizer, trainable):
    """``discrete_system()`` is ``(A_bar, B_bar)`` and ``discrete_difference()``
    ``(A_bar - I, B_bar)`` of the layer's current theta, fixed or trainable."""
    order, theta = 5, 30.0
    layer = keras_lmu.LMUFeedforward(
        1,
        order,
        theta,
        None,
        discretizer=discretizer,
        trainable_theta=trainable == "theta",
        trainable_A=trainable == "AB",
        trainable_B=trainable == "AB",
        dtype=DTYPE,
    )
    layer(np.zeros((1, 3, 1)))
    if trainable == "theta":
        layer.theta_inv.assign(1 / 24.0)  # trained away from its start
        theta = 24.0
    A_bar, B_bar = keras_lmu.legendre.discrete_system(order, theta, discretizer)
    difference, difference_B = layer.discrete_difference()
    system, system_B = layer.discrete_system()
    assert_close(difference, A_bar - np.eye(order))
    assert_close(system, A_bar)
    assert_close(difference_B, B_bar)
    assert_close(system_B, B_bar)


@pytest.mark.parametrize("order, theta, bound", [(512, 100.0, 3e-5), (64, 1.0, 6e-5)])
def test_float32_matrix_exponential_keeps_its_small_difference_from_the_identity(
    order, theta, bound
):
    """The squarings update ``expm(x) - I``, not ``expm(x)``: ``A_bar`` at order 512,
    theta 100 was 2.4e-4 to 5.9e-3 (of its largest entry) off the float64 one, 3.8e-6 to
    6.4e-6 now; order 64, theta 1: 2.6e-4 to 5.3e-4, now 1.4e-5 to 2.1e-5."""
    from keras_lmu import ops as lmu_ops

    A, B = keras_lmu.legendre.continuous_system(order)
    difference, B_bar = lmu_ops.discretize_zoh_difference(
        *(keras.ops.convert_to_tensor(value, "float32") for value in (A, B, 1.0 / theta))
    )
    A_bar = np.eye(order) + keras.ops.convert_to_numpy(difference)  # in float64
    expected_A_bar, expected_B_bar = keras_lmu.legendre.discrete_system(order, theta)
    assert relative_error(A_bar, expected_A_bar) < bound
    assert relative_error(B_bar, expected_B_bar) < bound


@exact
@pytest.mark.parametrize("form", ["rnn", "raw"])
@pytest.mark.parametrize("scale", [1.0, 0.8, 1.25])  # theta at, above and below its start
def test_trainable_theta_gradient_matches_finite_differences(rng, form, scale):
    """d loss / d theta_inv against central differences of the float64 reference, at the
    initial theta (where the exact system is the start of the discretization) and on
    either side of it."""
    order, theta, steps = 6, 5.0, 9
    x = rng.uniform(-1, 1, (2, steps, 1))
    weights = rng.uniform(-1, 1, (2, steps, order))
    options = dict(kernel_initializer=None, trainable_theta=True, dtype=DTYPE)
    if form == "rnn":
        cell = keras_lmu.LMUCell(1, order, theta, None, **options)
        layer = keras.layers.RNN(cell, return_sequences=True, dtype=DTYPE)
    else:
        layer = keras_lmu.LMUFeedforward(
            1, order, theta, None, conv_mode="raw", return_sequences=True, **options
        )
    layer(x)
    variable = next(w for w in layer.weights if w.name == "theta_inv")
    theta_inv = scale / theta
    variable.assign(theta_inv)
    gradient = gradient_wrt(variable, lambda: keras.ops.sum(keras.ops.multiply(layer(x), weights)))

    def loss(inverse):
        return np.sum(weights * memory_by_reference(x[..., 0], order, 1.0 / inverse))

    step = 1e-6 * theta_inv
    expected = (loss(theta_inv + step) - loss(theta_inv - step)) / (2 * step)
    assert float(keras.ops.convert_to_numpy(gradient)) == pytest.approx(expected, rel=1e-8)


@exact
def test_long_sequence_fft_raw_and_scan_agree_with_reference(rng, monkeypatch):
    """Hundreds of steps, order 32: the FFT and direct convolutions and the scan (with its
    default chunk length) stay exact."""
    monkeypatch.setattr(keras_lmu.feedforward, "SCAN_CHUNK", 32)
    options = dict(
        memory_d=1,
        order=32,
        theta=100.0,
        discretizer="zoh",
        hidden_to_memory=False,
        memory_to_memory=False,
        input_to_hidden=False,
        use_bias=False,
        dtype=DTYPE,
    )
    x = rng.uniform(-1, 1, (2, 300, 1))
    fft = make_layer("fft", None, True, **options)
    others = [make_layer(form, None, True, **options) for form in ("raw", "scan")]
    fft(x)
    randomize(fft, rng)
    expected, _ = reference_for(fft, x, None, **options)
    assert_close(fft(x), expected)
    for layer in others:
        layer(x)
        layer.set_weights(fft.get_weights())
        assert_close(layer(x), expected)


@exact
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize(
    "options",
    [
        dict(memory_d=2, order=6, theta=9.0, hidden_cell="dense", use_bias=True),
        dict(memory_d=1, order=6, theta=9.0, hidden_cell="rnn", input_to_hidden=True),
        dict(
            memory_d=2,
            order=4,
            theta=5.0,
            hidden_cell=None,
            trainable_theta=True,
            discretizer="euler",
        ),
    ],
)
def test_cell_and_feedforward_agree_with_same_weights(rng, options, return_sequences):
    """``set_weights`` moves weights between RNN(LMUCell) and LMUFeedforward."""
    options = dict(options)
    hidden = options.pop("hidden_cell")
    x = rng.uniform(-1, 1, (3, STEPS, 2))
    if hidden is None and options.get("input_to_hidden"):
        options["input_d"] = 2
    cell = keras_lmu.LMUCell(hidden_cell=make_hidden(hidden, DTYPE), dtype=DTYPE, **options)
    recurrent = keras.layers.RNN(cell, return_sequences=return_sequences, dtype=DTYPE)
    options.pop("input_d", None)
    feedforward = keras_lmu.LMUFeedforward(
        hidden_cell=make_hidden(hidden, DTYPE),
        return_sequences=return_sequences,
        dtype=DTYPE,
        **options,
    )
    recurrent(x)
    feedforward(x)
    randomize(recurrent, rng)
    names = [w.name for w in recurrent.weights]
    assert names == [w.name for w in feedforward.weights]
    feedforward.set_weights(recurrent.get_weights())
    assert relative_error(feedforward(x), recurrent(x)) <= TOLERANCE


def test_weight_order_and_shapes():
    cell = keras_lmu.LMUCell(
        2,
        5,
        4.0,
        keras.layers.SimpleRNNCell(3),
        trainable_theta=True,
        hidden_to_memory=True,
        memory_to_memory=True,
        use_bias=True,
    )
    keras.layers.RNN(cell)(np.zeros((1, 2, 7), "float32"))
    names = [(w.name, tuple(w.shape)) for w in cell.weights]
    assert names == [
        ("kernel", (10, 2)),
        ("bias", (2,)),
        ("theta_inv", ()),
        ("recurrent_kernel", (10, 2)),
        ("kernel", (10, 3)),
        ("recurrent_kernel", (3, 3)),
        ("bias", (3,)),
    ]
    assert cell.state_size == [10, 3]
    assert cell.output_size == 3


def test_state_sizes_for_each_hidden_kind():
    lstm = keras_lmu.LMUCell(1, 4, 5.0, keras.layers.LSTMCell(3))
    dense = keras_lmu.LMUCell(1, 4, 5.0, keras.layers.Dense(6))
    none = keras_lmu.LMUCell(2, 4, 5.0, None, input_to_hidden=True, input_d=3)
    assert (lstm.state_size, lstm.output_size) == ([4, 3, 3], 3)
    assert (dense.state_size, dense.output_size) == ([4, 6], 6)
    assert (none.state_size, none.output_size) == ([8], 11)


def test_lmu_picks_parallel_form_when_memory_has_no_feedback():
    x = np.zeros((1, 5, 2), "float32")
    parallel = keras_lmu.LMU(1, 4, 5.0, keras.layers.SimpleRNNCell(3), trainable_theta=True)
    recurrent = keras_lmu.LMU(1, 4, 5.0, keras.layers.SimpleRNNCell(3), hidden_to_memory=True)
    parallel(x)
    recurrent(x)
    assert isinstance(parallel.layer, keras_lmu.LMUFeedforward)
    assert isinstance(recurrent.layer, keras.layers.RNN)
    assert isinstance(recurrent.layer.cell, keras_lmu.LMUCell)


def test_theta_property():
    layer = keras_lmu.LMU(1, 4, 5.0, None, trainable_theta=True)
    assert layer.theta == 5.0
    layer(np.zeros((1, 3, 1), "float32"))
    layer.layer.theta_inv.assign(0.25)
    assert layer.theta == pytest.approx(4.0)
    assert keras_lmu.LMUCell(1, 4, 7.0, None).theta == 7.0


def test_measured_rule_for_memory_to_memory():
    """The parallel/recurrent choice follows the per-backend table in keras_lmu.layer,
    trainable memory or not (the recurrence discretizes once per sequence)."""
    from keras_lmu import layer as layer_module

    limit = layer_module.PARALLEL_MEMORY_TO_MEMORY_MAX_SIZE[keras.backend.backend()]
    for order in (limit, limit + 1):
        for trainable in (False, True):
            lmu = keras_lmu.LMU(
                1, order, 5.0, None, memory_to_memory=True, trainable_theta=trainable
            )
            lmu.build((1, 6, 2))  # the form is picked when the layer is built
            parallel = isinstance(lmu.layer, keras_lmu.LMUFeedforward)
            assert parallel == (order <= limit), (order, trainable)
            assert parallel == lmu.uses_parallel_form()


@pytest.mark.parametrize(
    "order, memory_d, memory_to_memory, steps",
    [
        (4, 1, False, 32),
        (4, 3, False, 1024),
        (300, 1, False, 32),
        (300, 1, False, 1024),
        (8, 2, True, 1024),
    ],
)
def test_auto_conv_mode_follows_measured_rule(order, memory_d, memory_to_memory, steps):
    """Scan for states up to SCAN_MAX_SIZE; beyond, raw for short sequences, else FFT."""
    from keras_lmu import layer as layer_module

    lmu = keras_lmu.LMU(
        memory_d, order, 5.0, None, memory_to_memory=memory_to_memory, return_sequences=True
    )
    lmu.build((1, steps, 1))  # the form is picked when the layer is built
    size = order * (memory_d if memory_to_memory else 1)
    limit = layer_module.DIRECT_CONVOLUTION_MAX_STEPS[keras.backend.backend()]
    if keras.backend.backend() == "jax" and memory_d > 1:
        limit = 0
    shortest = layer_module.scan_min_steps(size, keras.backend.backend())
    if size <= layer_module.SCAN_MAX_SIZE and steps >= shortest:
        expected = "scan"
    else:
        expected = "raw" if steps <= limit else "fft"
    assert lmu.layer.conv_mode == expected
    assert lmu.get_config()["conv_mode"] == "auto"


def test_auto_conv_mode_is_picked_again_for_each_calls_length(rng):
    """An LMU built for short sequences and then called on long ones computes them in
    the form picked for their length (it kept the direct convolution of the short ones,
    3.6x slower than the FFT at 8,000 steps on TensorFlow), with the same outputs as
    an LMU built for them."""
    changed = []
    for order in (16, 300):  # a change on every backend: raw->fft, fft->scan
        lmu = keras_lmu.LMU(1, order, 50.0, None, return_sequences=True, dtype=DTYPE)
        lmu(rng.uniform(-1, 1, (2, 10, 1)))
        built = lmu.layer.conv_mode
        assert built == lmu._resolved_conv_mode(10)
        x = rng.uniform(-1, 1, (2, 400, 1))
        output = lmu(x)
        assert lmu.layer.conv_mode == lmu._resolved_conv_mode(400)
        changed.append(lmu.layer.conv_mode != built)
        fresh = keras_lmu.LMU(1, order, 50.0, None, return_sequences=True, dtype=DTYPE)
        fresh(x)
        fresh.set_weights(lmu.get_weights())
        assert_close(output, fresh(x))
        lmu(x[:, :10])  # and back
        assert lmu.layer.conv_mode == built
    assert any(changed)


@pytest.mark.parametrize(
    "order, steps, torch_mode, tensorflow_mode",
    [
        (64, 128, "fft", "scan"),
        (64, 256, "fft", "scan"),
        (64, 1024, "scan", "scan"),
        (128, 256, "fft", "fft"),
        (128, 512, "fft", "scan"),
        (128, 1024, "scan", "scan"),
        (256, 1024, "fft", "fft"),
        (256, 2048, "fft", "scan"),
        (256, 4096, "scan", "scan"),
    ],
)
def test_auto_conv_mode_keeps_the_fft_longer_for_larger_states(
    order, steps, torch_mode, tensorflow_mode
):
    """PyTorch takes the scan from 257 steps, and for larger states only beyond
    ``order**2 / 32`` steps (memory_d 1); TensorFlow beyond ``order**2 / 64``; JAX
    at any length."""
    lmu = keras_lmu.LMU(1, order, 5.0, None, return_sequences=True)
    lmu.build((1, steps, 1))  # the form is picked when the layer is built
    expected = {"torch": torch_mode, "tensorflow": tensorflow_mode}
    assert lmu.layer.conv_mode == expected.get(keras.backend.backend(), "scan")


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_rnn_of_lmucell_discretizes_once_per_sequence(rng, dropout):
    """Keras's RNN makes the cell's step weights with its dropout masks, before its loop:
    a trainable theta was discretized (a matrix exponential) at every step (a training
    step over 200 steps at order 256 took 44x to 330x as long as with a fixed theta).
    The weights are made again at every call: a theta changed between calls is used."""
    cell = keras_lmu.LMUCell(1, 4, 6.0, None, trainable_theta=True, dropout=dropout, seed=3)
    layer = keras.layers.RNN(cell, return_sequences=True)
    x = rng.uniform(-1, 1, (2, 12, 1)).astype("float32")
    layer(x)
    original = type(cell).discrete_difference
    with mock.patch.object(
        type(cell), "discrete_difference", autospec=True, side_effect=original
    ) as discretizations:
        layer(x, training=True)
    assert discretizations.call_count == 1
    assert cell._sequence_weights is None  # nothing kept past the loop

    cell.theta_inv.assign(1 / 9.0)
    states = cell.get_initial_state(2)
    expected = []
    for t in range(12):  # the cell called directly discretizes at every call
        output, states = cell(keras.ops.convert_to_tensor(x[:, t]), states)
        expected.append(keras.ops.convert_to_numpy(output))
    assert_close(layer(x), np.stack(expected, 1), tolerance=1e-6)
