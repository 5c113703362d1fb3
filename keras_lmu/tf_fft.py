"""The per-channel FFT convolution on TensorFlow: its gradient computed piece by piece.

TensorFlow differentiates the loop over pieces (``keras.ops.map``, a ``while_loop``)
through the loop's own gradient: the gradient of the stacked pieces is transposed
and split into one tensor per piece, so the backward pass holds copies of the whole
memory sequence besides the sequence and its gradient. Here the convolution has its
own gradient, a loop that reads each piece's gradient from the output's gradient,
transforms it and correlates it with the response (see
:func:`gradient_in_pieces`); the forward pass is the same loop as on the other
backends.

For memory_d 32, order 256 and 512 steps in batches of 16 (the ``seq-ff-full``
benchmark: a 256 MiB memory sequence under ``Dense(2)``), the peak resident memory
of three training steps rose by 842-865 MiB over the built model, against 1,024-1,158
MiB with TensorFlow's gradient of the loop (three runs each, the last one ``python
benchmarks/peak_memory.py --backend tensorflow [--joined]``), and the training step
took 0.71x as long (1.40x the other way round, ``python benchmarks/fft_pieces.py
--backend tensorflow --joined --piece-values``). With ``MALLOC_TRIM_THRESHOLD_=1048576``,
which makes the C allocator return freed memory to the system, the increase was 583
MiB (twice), about that of a ``Dense(8192)`` in the LMU's place (559-564 MiB): the rest is
freed pieces of the forward loop that the allocator keeps.
"""

from __future__ import annotations

import tensorflow as tf


def with_gradient_in_pieces(
    convolve, signal, response, fft_length: int, group: int, orders: int, fixed_response: bool
):
    """``convolve(signal, response)``, differentiated by :func:`gradient_in_pieces`.

    Parameters
    ----------
    convolve
        The convolution: ``(signal, response) -> memory``, (batch, steps, channels)
        and (steps, order) to (batch, steps, channels, order).
    signal, response
        Its inputs.
    fft_length, group, orders
        FFT points (at least ``2 * steps - 1``), and one piece's channels (a divisor
        of ``channels``) and orders.
    fixed_response : bool
        Whether the response is a constant: then it gets no gradient.
    """

    @tf.custom_gradient
    def convolution(signal, response):
        def gradient(grad_memory):
            return gradient_in_pieces(
                signal, response, grad_memory, fft_length, group, orders, fixed_response
            )

        return convolve(signal, response), gradient

    return convolution(signal, response)


def gradient_in_pieces(
    signal, response, grad_memory, fft_length: int, group: int, orders: int, fixed_response: bool
):
    """Gradients of ``M[b, c, k] = irfft(V[b, c] * H[k])`` (``V``, ``H``: spectra of
    the zero-padded signal and response over time) for the gradient ``G`` of ``M``.

    The adjoint of a causal convolution is the correlation,

    - ``dv[b, c] = irfft(sum_k G[b, c, k] * conj(H[k]))``, and
    - ``dh[k] = irfft(sum_{b, c} G[b, c, k] * conj(V[b, c]))``,

    each cut to its first ``steps`` points; with ``fft_length >= 2 * steps - 1`` the
    circular correlation wraps only onto the zero padding, so both are exact. A loop
    over the groups of channels reads one group's gradient at a time, in blocks of
    ``orders`` orders. Returns ``(dv, dh)``, ``dh`` None where ``fixed_response``.
    """
    steps, channels = signal.shape[1], signal.shape[2]
    order = response.shape[1]
    groups = channels // group
    response_spectrum = tf.math.conj(tf.signal.rfft(tf.transpose(response), [fft_length]))
    grad_memory = tf.reshape(grad_memory, (-1, steps, groups, group, order))
    signal_groups = tf.transpose(tf.reshape(signal, (-1, steps, groups, group)), (2, 0, 3, 1))

    def group_gradient(index_and_signal):
        index, signal_group = index_and_signal  # signal_group: (batch, group, steps)
        grad_group = tf.transpose(tf.gather(grad_memory, index, axis=2), (0, 2, 3, 1))
        signal_spectrum = tf.math.conj(tf.signal.rfft(signal_group, [fft_length]))
        grad_spectrum_sum, response_blocks = 0, []
        for first in range(0, order, orders):
            grad_spectrum = tf.signal.rfft(grad_group[:, :, first : first + orders], [fft_length])
            # A product and a sum: with an einsum (a batched product) the seq-ff-full
            # training step took 650-660 ms against 624-631 (``python
            # benchmarks/bench.py --no-peer --backends tensorflow --cases
            # seq-ff-full``, both forms alternating, two runs each).
            grad_spectrum_sum += tf.reduce_sum(
                grad_spectrum * response_spectrum[first : first + orders], axis=2
            )
            if not fixed_response:
                response_blocks.append(tf.einsum("bgkf,bgf->kf", grad_spectrum, signal_spectrum))
        grad_signal = tf.signal.irfft(grad_spectrum_sum, [fft_length])[..., :steps]
        if fixed_response:
            return grad_signal
        return grad_signal, tf.concat(response_blocks, axis=0)

    signature = tf.TensorSpec((None, group, steps), signal.dtype)
    if not fixed_response:
        response_signature = tf.TensorSpec((order, fft_length // 2 + 1), response_spectrum.dtype)
        signature = (signature, response_signature)
    outputs = tf.map_fn(
        group_gradient, (tf.range(groups), signal_groups), fn_output_signature=signature
    )
    grad_signal, grad_response = (outputs, None) if fixed_response else outputs
    grad_signal = tf.reshape(tf.transpose(grad_signal, (1, 3, 0, 2)), (-1, steps, channels))
    if grad_response is not None:
        grad_response = tf.signal.irfft(tf.reduce_sum(grad_response, axis=0), [fft_length])
        grad_response = tf.transpose(grad_response[:, :steps])
    return grad_signal, grad_response
