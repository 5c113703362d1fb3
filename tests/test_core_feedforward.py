"""LMUFeedforward specifics: impulse response, truncation, unknown lengths, last step."""

import re
import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND, DTYPE, TOLERANCE, assert_close
from reference import discretized, lmu_reference

import keras_lmu
from keras_lmu import legendre


def test_impulse_response_attribute_after_build():
    layer = keras_lmu.LMUFeedforward(1, 6, 10.0, None, conv_mode="fft")
    assert layer.impulse_response is None
    layer(np.zeros((2, 50, 1), "float32"))
    A_bar, B_bar = discretized(6, 10.0, "zoh")
    np.testing.assert_allclose(
        layer.impulse_response, legendre.impulse_response(A_bar, B_bar, 50), rtol=1e-10, atol=1e-14
    )
    # A trainable memory's response is computed in the graph, not kept.
    trainable = keras_lmu.LMUFeedforward(1, 6, 10.0, None, trainable_theta=True)
    trainable(np.zeros((2, 50, 1), "float32"))
    assert trainable.impulse_response is None


def test_scan_never_computes_the_full_impulse_response():
    layer = keras_lmu.LMUFeedforward(1, 6, 10.0, None, conv_mode="scan", return_sequences=True)
    layer(np.zeros((2, 50, 1), "float32"))
    assert layer._responses == {}
    assert layer.impulse_response.shape == (50, 6)  # computed when asked for


def test_raw_mode_truncates_only_a_negligible_tail(rng):
    x = rng.uniform(-1, 1, (2, 400, 1)).astype("float32")
    truncated = keras_lmu.LMUFeedforward(1, 6, 10.0, None, conv_mode="raw", return_sequences=True)
    full = keras_lmu.LMUFeedforward(
        1, 6, 10.0, None, conv_mode="raw", truncate_ir=None, return_sequences=True
    )
    truncated(x)
    full(x)
    full.set_weights(truncated.get_weights())
    assert len(full.impulse_response) == 400
    assert 10 < len(truncated.impulse_response) < 400
    assert_close(truncated(x), full(x), tolerance=1e-3)


def test_lmu_never_truncates_by_default():
    layer = keras_lmu.LMU(1, 6, 10.0, None, conv_mode="raw", return_sequences=True)
    layer(np.zeros((1, 300, 1), "float32"))
    assert len(layer.layer.impulse_response) == 300


def test_lmu_truncates_only_with_conv_mode_raw_given(rng):
    """With ``conv_mode="auto"`` the direct convolution, picked at some lengths on some
    backends, truncated too: the first 64 outputs of 64 and 65 steps differed by 0.52 on
    JAX. Now ``truncate_ir`` applies with an explicit ``"raw"`` only; elsewhere the
    layer warns that it has no effect."""
    x = rng.standard_normal((1, 65, 1)).astype("float32")
    with pytest.warns(UserWarning, match="truncate_ir=0.05 has no effect with conv_mode='auto'"):
        auto = keras_lmu.LMU(1, 300, 40.0, None, return_sequences=True, truncate_ir=0.05)
    exact = keras_lmu.LMU(1, 300, 40.0, None, return_sequences=True, conv_mode="fft")
    exact(x)
    auto(x)
    exact.set_weights(auto.get_weights())
    for steps in (64, 65):  # the direct convolution (JAX), the FFT
        assert_close(auto(x[:, :steps]), exact(x[:, :steps]), tolerance=1e-5)
    truncated = keras_lmu.LMU(
        1, 300, 40.0, None, return_sequences=True, conv_mode="raw", truncate_ir=0.05
    )
    truncated(x)
    truncated.set_weights(auto.get_weights())
    assert not np.allclose(
        keras.ops.convert_to_numpy(truncated(x)), keras.ops.convert_to_numpy(exact(x)), atol=1e-2
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(conv_mode="fft", hidden_to_memory=True), "conv_mode='fft' has no effect: this LMU"),
        (
            dict(conv_mode="raw", truncate_ir=0.1, hidden_to_memory=True),
            "conv_mode='raw' and truncate_ir=0.1 have no effect: this LMU computes its memory "
            "step by step",
        ),
        (dict(conv_mode="scan", truncate_ir=0.1), "truncate_ir=0.1 has no effect with conv_mode"),
        (
            dict(conv_mode="raw", truncate_ir=0.1, trainable_theta=True),
            "truncate_ir=0.1 has no effect: the impulse response of a memory with trainable",
        ),
    ],
)
def test_lmu_warns_of_form_options_without_effect(options, message):
    hidden = keras.layers.SimpleRNNCell(3) if options.get("hidden_to_memory") else None
    with pytest.warns(UserWarning, match=re.escape(message)):
        keras_lmu.LMU(1, 6, 10.0, hidden, **options)


@pytest.mark.usefixtures("exact_floatx")
@pytest.mark.parametrize("conv_mode", ["fft", "raw", "scan"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_unknown_sequence_length(rng, conv_mode, return_sequences):
    """A model built for (None, features) works for any length, exactly."""
    inp = keras.Input((None, 2), dtype=DTYPE)
    layer = keras_lmu.LMUFeedforward(
        2,
        5,
        8.0,
        None,
        conv_mode=conv_mode,
        truncate_ir=None,
        return_sequences=return_sequences,
        dtype=DTYPE,
    )
    model = keras.Model(inp, layer(inp))
    for steps in (7, 19):
        x = rng.uniform(-1, 1, (3, steps, 2))
        expected, _ = lmu_reference(
            x, memory_d=2, order=5, theta=8.0, kernel=keras.ops.convert_to_numpy(layer.kernel)
        )
        actual = model.predict(x, verbose=0)
        assert_close(actual, expected if return_sequences else expected[:, -1])


def test_unknown_length_inside_a_traced_function_is_exact_and_warns(rng):
    """Where the length is unknown while tracing (TensorFlow graphs), step by step, exactly."""
    if BACKEND != "tensorflow":
        pytest.skip("only TensorFlow traces with an unknown length")
    import tensorflow as tf

    layer = keras_lmu.LMUFeedforward(1, 5, 8.0, None, return_sequences=True, dtype="float64")
    x = rng.uniform(-1, 1, (2, 11, 1))
    layer(x)
    function = tf.function(layer, input_signature=[tf.TensorSpec((None, None, 1), tf.float64)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        actual = function(x)
    assert any("unknown" in str(w.message) for w in caught)
    assert_close(actual, layer(x), tolerance=TOLERANCE)


def test_unknown_length_warning_says_a_truncation_does_not_apply(rng):
    """(``model.predict`` on TensorFlow, traced with an unknown length from its second
    length on, silently did not truncate what a direct call truncated)"""
    if BACKEND != "tensorflow":
        pytest.skip("only TensorFlow traces with an unknown length")
    import tensorflow as tf

    layer = keras_lmu.LMUFeedforward(1, 5, 8.0, None, conv_mode="raw", truncate_ir=1e-2)
    x = rng.uniform(-1, 1, (2, 11, 1)).astype("float32")
    function = tf.function(layer, input_signature=[tf.TensorSpec((None, None, 1), tf.float32)])
    with pytest.warns(UserWarning, match=r"exactly: truncate_ir=0.01 does not apply"):
        function(x)


def test_unknown_length_under_a_mask_inside_a_traced_function(rng):
    """A mask and a length unknown while tracing: step by step, holding the memory at
    masked steps (Keras's TensorFlow scan failed on the mask as a second sequence)."""
    if BACKEND != "tensorflow":
        pytest.skip("only TensorFlow traces with an unknown length")
    import tensorflow as tf

    layer = keras_lmu.LMUFeedforward(1, 5, 8.0, None, return_sequences=True, dtype="float64")
    x = rng.uniform(-1, 1, (2, 11, 1))
    mask = rng.uniform(size=(2, 11)) > 0.3
    layer(x)
    signature = [tf.TensorSpec((None, None, 1), tf.float64), tf.TensorSpec((None, None), tf.bool)]
    function = tf.function(lambda x, mask: layer(x, mask=mask), input_signature=signature)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        actual = function(x, mask)
    assert_close(actual, layer(x, mask=mask), tolerance=TOLERANCE)


@pytest.mark.parametrize("layer_class", [keras_lmu.LMU, keras_lmu.LMUFeedforward])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_padded_sequences_of_any_length_with_embedding_masks(rng, layer_class, return_sequences):
    """Behind ``Embedding(mask_zero=True)`` in a model built for any length: trailing
    padding changes nothing, the mask goes on to the next layer with the sequence, and
    no warning says that the mask is dropped. On TensorFlow the second length is traced
    as unknown (it failed there)."""
    tokens = rng.integers(1, 20, (6, 12))
    tokens[:3, 8:] = 0
    tokens[1, :] = 0
    inp = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(20, 3, mask_zero=True)(inp)
    lmu = layer_class(1, 6, 9.0, keras.layers.Dense(4), return_sequences=return_sequences)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        hidden = lmu(embedded)
    model = keras.Model(inp, hidden)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unknown length's step by step, on TensorFlow
        padded = model.predict(tokens, verbose=0)
        unpadded = model.predict(tokens[:3, :8], verbose=0)
    if return_sequences:  # the mask reaches the pooling: the mean of the unmasked steps
        pooled = keras.Model(inp, keras.layers.GlobalAveragePooling1D()(hidden))
        assert_close(pooled.predict(tokens[:1], verbose=0)[0], padded[0, :8].mean(0), 1e-5)
        padded = padded[:, :8]
    assert_close(padded[:3], unpadded, tolerance=1e-5)
    assert np.all(padded[1] == 0)  # every step masked: zero output


def test_last_step_path_matches_full_sequence(rng):
    x = rng.uniform(-1, 1, (3, 30, 2)).astype("float32")
    last = keras_lmu.LMUFeedforward(2, 8, 12.0, keras.layers.Dense(4))
    full = keras_lmu.LMUFeedforward(2, 8, 12.0, keras.layers.Dense(4), return_sequences=True)
    last(x)
    full(x)
    full.set_weights(last.get_weights())
    assert_close(last(x), keras.ops.convert_to_numpy(full(x))[:, -1], tolerance=1e-5)


@pytest.mark.parametrize("conv_mode", ["fft", "raw", "scan"])
def test_float64_rnn_hidden_cell_in_the_parallel_form(rng, conv_mode):
    """A float64 LMU with a float64 SimpleRNNCell, in parallel: on JAX Keras's tanh
    returns float32 for float64 inputs, and the hidden cell's loop failed ('scan body
    function carry input and carry output must have equal types'). Its outputs are the
    step-by-step form's, in float64."""
    x = rng.standard_normal((2, 9, 3))

    def make_lmu():
        hidden = keras.layers.SimpleRNNCell(4, dtype="float64")
        return keras_lmu.LMU(
            1, 5, 6.0, hidden, return_sequences=True, conv_mode=conv_mode, dtype="float64"
        )

    parallel = make_lmu()
    assert parallel.uses_parallel_form()
    outputs = parallel(x)
    recurrent = make_lmu()
    recurrent.uses_parallel_form = lambda: False
    recurrent.build(x.shape)
    recurrent.set_weights(parallel.get_weights())
    assert keras.backend.standardize_dtype(outputs.dtype) == "float64"
    tolerance = 1e-6 if BACKEND != "tensorflow" else 1e-12  # Keras's tanh: see above
    assert_close(outputs, recurrent(x), tolerance=tolerance)
