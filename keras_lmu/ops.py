"""The LMU mathematics as differentiable ``keras.ops`` functions (every backend).

These mirror :mod:`keras_lmu.legendre` inside the computation graph, where the
discretization has to follow a trainable ``theta`` and gradients have to flow.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def matrix_exponential(x):
    """Matrix exponential ``expm(x)`` of a square matrix, with the backend's native op.

    Keras has no ``expm``; this dispatches to ``jax.scipy.linalg.expm``,
    ``tf.linalg.expm`` or ``torch.linalg.matrix_exp`` (all differentiable).
    """
    name = keras.backend.backend()
    if name == "jax":
        import jax.scipy.linalg

        return jax.scipy.linalg.expm(x)
    if name == "tensorflow":
        import tensorflow as tf

        return tf.linalg.expm(x)
    if name == "torch":
        import torch

        return torch.linalg.matrix_exp(x)
    if name == "numpy":
        import scipy.linalg

        return scipy.linalg.expm(np.asarray(x))
    raise NotImplementedError(f"No matrix exponential for the {name!r} backend.")


def discretize_zoh(A, B, theta_inv):
    """Zero-order hold (dt = 1) of ``dm/dt = theta_inv * (A m + B u)``.

    ``expm([[A theta_inv, B theta_inv], [0, 0]]) = [[A_bar, B_bar], [0, 1]]``,
    differentiable in ``A``, ``B`` and ``theta_inv``.

    Returns
    -------
    A_bar, B_bar
        Tensors of shape (order, order) and (order,).
    """
    order = A.shape[0]
    top = ops.concatenate([A * theta_inv, ops.expand_dims(B * theta_inv, 1)], axis=1)
    augmented = ops.pad(top, [[0, 1], [0, 0]])
    exponential = matrix_exponential(augmented)
    return exponential[:order, :order], exponential[:order, order]


def discretize_euler(A, B, theta_inv):
    """Forward Euler (dt = 1): ``A_bar = I + A theta_inv``, ``B_bar = B theta_inv``."""
    return ops.eye(A.shape[0], dtype=A.dtype) + A * theta_inv, B * theta_inv


def discretize(A, B, theta_inv, discretizer: str):
    """Discretize with ``discretizer`` (``"zoh"`` or ``"euler"``)."""
    if discretizer == "zoh":
        return discretize_zoh(A, B, theta_inv)
    return discretize_euler(A, B, theta_inv)


def impulse_response(A_bar, B_bar, steps: int):
    """Impulse response ``H[k] = A_bar^k B_bar`` for ``k < steps``, by doubling.

    ``H[0] = B_bar`` and ``H[n:2n] = A_bar^n H[0:n]`` with
    ``A_bar^{2n} = (A_bar^n)^2``: about ``2 log2(steps)`` dependent matrix
    products instead of a loop over the steps, and differentiable.

    Parameters
    ----------
    A_bar
        State matrix, shape (size, size).
    B_bar
        Input vector (size,) or input matrix (size, channels).
    steps : int
        Length of the response.

    Returns
    -------
    Tensor
        Shape (steps, size) for an input vector, (steps, size, channels) for a
        matrix.
    """
    response = ops.expand_dims(B_bar, 0)  # (1, size[, channels])
    power = A_bar
    while response.shape[0] < steps:
        later = ops.einsum("ij,tj...->ti...", power, response)
        response = ops.concatenate([response, later], axis=0)
        if response.shape[0] < steps:
            power = ops.einsum("ij,jk->ik", power, power)
    return response[:steps]


def chunked_linear_recurrence(signal, response, transition, initial_state=None, carry_powers=None):
    """Every state of ``s_t = M s_{t-1} + G v_t``, chunk by chunk: one matrix product
    for all chunks, and a parallel scan over the states that end the chunks.

    With chunks of ``C`` steps, the state at step ``j`` of chunk ``k`` is::

        s_{kC+j} = sum_{i <= j} H[j-i] v_{kC+i}  +  M^(j+1) s_{kC-1}

    with ``H[n] = M^n G``: a product of ``[v_{kC:kC+C}, s_{kC-1}]`` with the
    block-Toeplitz matrix of ``H[0:C]`` stacked on ``M^(1:C+1)``. The states that
    end the chunks follow ``s_{kC+C-1} = M^C s_{kC-1} + sum_i H[C-1-i] v_{kC+i}``,
    a recurrence over ``steps / C`` chunks computed by :func:`linear_recurrence`.
    About ``steps * (C * channels + size) * size`` multiply-adds per sequence, in
    large matrix products: exact, and fast for a small state.

    Parameters
    ----------
    signal
        ``v``, shape (batch, steps, channels).
    response
        ``H[n] = M^n G`` for ``n < C``, shape (C, size, channels); ``C`` is the
        chunk length.
    transition
        ``M^(n+1)`` for ``n < C``, shape (C, size, size).
    initial_state
        Optional ``s_{-1}``, shape (batch, size); zeros when None.
    carry_powers
        Optional ``[M^C, M^(2C), M^(4C), ...]`` for the scan across chunks (see
        :func:`linear_recurrence`).

    Returns
    -------
    Tensor
        ``s``, shape (batch, steps, size).
    """
    batch, steps = ops.shape(signal)[0], signal.shape[1]
    chunk, size, channels = response.shape
    chunks = -(-steps // chunk)
    signal = ops.pad(signal, [[0, 0], [0, chunks * chunk - steps], [0, 0]])
    blocks = ops.reshape(signal, (batch, chunks, chunk, channels))
    # The part of each chunk's last state that comes from the chunk's own input.
    ends = ops.einsum("bkic,isc->bks", blocks, ops.flip(response, axis=0))
    carry_matrix = transition[-1]  # M^C
    if initial_state is not None:
        initial_state = ops.cast(initial_state, ends.dtype)
        pushed = ops.einsum("ij,bj->bi", carry_matrix, initial_state)
        ends = ops.concatenate([ends[:, :1] + ops.expand_dims(pushed, 1), ends[:, 1:]], axis=1)
    carries = linear_recurrence(ends, carry_matrix, carry_powers)  # states ending chunks
    if initial_state is None:
        previous = ops.pad(carries[:, :-1], [[0, 0], [1, 0], [0, 0]])
    else:
        previous = ops.concatenate([ops.expand_dims(initial_state, 1), carries[:, :-1]], axis=1)
    # Toeplitz[i, c, j, s] = H[j - i][s, c] for i <= j, else 0 (index C: a zero row).
    lag = np.subtract.outer(np.arange(chunk), np.arange(chunk))  # [i, j] = i - j
    padded = ops.concatenate([response, ops.zeros_like(response[:1])], axis=0)
    toeplitz = ops.take(padded, np.where(lag <= 0, -lag, chunk), axis=0)  # (i, j, s, c)
    toeplitz = ops.reshape(ops.transpose(toeplitz, (0, 3, 1, 2)), (chunk * channels, -1))
    carried = ops.reshape(ops.transpose(transition, (2, 0, 1)), (size, chunk * size))
    inputs = ops.concatenate(
        [ops.reshape(blocks, (batch, chunks, chunk * channels)), previous], axis=-1
    )
    states = ops.einsum("bkx,xy->bky", inputs, ops.concatenate([toeplitz, carried], axis=0))
    return ops.reshape(states, (batch, chunks * chunk, size))[:, :steps]


def matrix_power(matrix, exponent: int):
    """``matrix ** exponent`` by repeated squaring (about ``2 log2(exponent)`` products)."""
    result = None
    power = matrix
    while True:
        if exponent & 1:
            result = power if result is None else ops.einsum("ij,jk->ik", result, power)
        exponent >>= 1
        if not exponent:
            break
        power = ops.einsum("ij,jk->ik", power, power)
    if result is None:
        return ops.eye(matrix.shape[0], dtype=matrix.dtype)
    return result


def linear_recurrence(inputs, matrix, powers=None):
    """Every state of ``s_t = M s_{t-1} + x_t`` (with ``s_{-1} = 0``), by a parallel scan.

    A prefix scan over time for a time-invariant ``M`` (Hillis-Steele doubling):
    after level ``k`` each step holds ``sum_{j < 2^k} M^j x_{t-j}``, and level
    ``k + 1`` adds ``M^(2^k)`` times the same sum ``2^k`` steps earlier. That is
    ``ceil(log2(steps))`` levels of one (size x size) product over the whole
    sequence, ``steps * log2(steps) * size^2`` multiply-adds per sequence: cheaper
    than an FFT convolution for a small state, and exact (no response truncated).

    Parameters
    ----------
    inputs
        ``x``, shape (batch, steps, ..., size); ``M`` acts on the last axis.
    matrix
        ``M``, shape (size, size).
    powers
        Optional ``[M, M^2, M^4, ...]`` computed beforehand (e.g. in float64 for a
        fixed ``M``); by default they are squared here.

    Returns
    -------
    Tensor
        ``s``, the shape of ``inputs``.
    """
    steps = inputs.shape[1]
    states = inputs
    power = matrix
    shift, level = 1, 0
    while shift < steps:
        if powers is not None:
            power = powers[level]
        later = states[:, shift:] + ops.einsum("bt...j,ij->bt...i", states[:, :-shift], power)
        states = ops.concatenate([states[:, :shift], later], axis=1)
        shift, level = 2 * shift, level + 1
        if shift < steps and powers is None:
            power = ops.einsum("ij,jk->ik", power, power)
    return states


def last_unmasked_index(mask):
    """For each step, the index of the last unmasked step up to it, or -1 if none.

    ``mask`` is boolean (batch, steps); returns int32 (batch, steps).
    """
    mask = ops.transpose(ops.cast(mask, "bool"))  # (steps, batch)
    steps = ops.shape(mask)[0]
    index = ops.where(mask, ops.expand_dims(ops.arange(steps, dtype="int32"), 1), -1)

    def running_max(latest, current):
        latest = ops.maximum(latest, current)
        return latest, latest

    start = ops.full_like(index[0], -1)
    return ops.transpose(ops.scan(running_max, start, index)[1])


def hold_masked_steps(outputs, mask, zero_output_for_mask: bool = False):
    """Outputs as a Keras RNN gives them under a mask.

    A masked step repeats the output of the last unmasked step before it (zeros
    when there is none), or is zero when ``zero_output_for_mask``.

    Parameters
    ----------
    outputs
        Per-step outputs computed as if nothing were masked, (batch, steps, features).
    mask
        Boolean (batch, steps).
    """
    if zero_output_for_mask:
        return outputs * ops.cast(ops.expand_dims(mask, -1), outputs.dtype)
    source = last_unmasked_index(mask)
    held = ops.take_along_axis(outputs, ops.expand_dims(ops.maximum(source, 0), -1), axis=1)
    return ops.where(ops.expand_dims(source >= 0, -1), held, ops.zeros_like(held))


def causal_convolution_fft(signal, response):
    """Every step of ``m_t = sum_k H[k] v_{t-k}``, by FFT over time.

    Parameters
    ----------
    signal
        Encoded input ``v``, shape (batch, steps, channels).
    response
        ``H`` of shape (length, order), applied to each channel separately, or of
        shape (length, size, channels), mixing the channels. Only its first
        ``steps`` rows are used; missing rows count as zero.

    Returns
    -------
    Tensor
        (batch, steps, channels, order) for a per-channel response,
        (batch, steps, size) for a mixing one.
    """
    steps = signal.shape[1]
    response = _fit_length(response, steps)
    fft_length = _fft_length(2 * steps)
    signal_real, signal_imag = ops.rfft(ops.transpose(signal, (0, 2, 1)), fft_length)
    axes = tuple(range(1, len(response.shape))) + (0,)
    response_real, response_imag = ops.rfft(ops.transpose(response, axes), fft_length)
    if len(response.shape) == 2:
        # (batch, channels, 1, freq) x (order, freq) -> (batch, channels, order, freq)
        signal_real = ops.expand_dims(signal_real, 2)
        signal_imag = ops.expand_dims(signal_imag, 2)
        product_real = signal_real * response_real - signal_imag * response_imag
        product_imag = signal_real * response_imag + signal_imag * response_real
        memory = ops.irfft((product_real, product_imag), fft_length)[..., :steps]
        return ops.transpose(memory, (0, 3, 1, 2))

    def mix(a, b):
        return ops.einsum("bcf,kcf->bkf", a, b)

    product_real = mix(signal_real, response_real) - mix(signal_imag, response_imag)
    product_imag = mix(signal_real, response_imag) + mix(signal_imag, response_real)
    memory = ops.irfft((product_real, product_imag), fft_length)[..., :steps]
    return ops.transpose(memory, (0, 2, 1))


def causal_convolution_direct(signal, response):
    """Every step of ``m_t = sum_k H[k] v_{t-k}``, as a direct (sliding) convolution.

    Costs ``steps * length`` products per output; a truncated response shorter
    than the sequence makes it cheaper. Shapes as in :func:`causal_convolution_fft`.
    """
    batch, steps, channels = (ops.shape(signal)[i] for i in range(3))
    length = response.shape[0]
    kernel = ops.flip(response, axis=0)
    if len(response.shape) == 2:
        order = response.shape[1]
        sequences = ops.reshape(ops.transpose(signal, (0, 2, 1)), (-1, steps, 1))
        sequences = ops.pad(sequences, [[0, 0], [length - 1, 0], [0, 0]])
        memory = ops.conv(sequences, ops.expand_dims(kernel, 1), padding="valid")
        memory = ops.reshape(memory, (batch, channels, steps, order))
        return ops.transpose(memory, (0, 2, 1, 3))
    sequences = ops.pad(signal, [[0, 0], [length - 1, 0], [0, 0]])
    return ops.conv(sequences, ops.transpose(kernel, (0, 2, 1)), padding="valid")


def last_step_memory(signal, response):
    """Only the final memory ``m_{T-1} = sum_t H[T-1-t] v_t``: one contraction over time.

    Never builds a (batch, steps, order) tensor. ``response`` has at least
    ``steps`` rows, or missing rows count as zero (a truncated response).

    Returns
    -------
    Tensor
        (batch, channels, order) for a per-channel response, (batch, size) for a
        mixing one.
    """
    response = ops.flip(_fit_length(response, signal.shape[1]), axis=0)
    if len(response.shape) == 2:
        return ops.einsum("btc,tn->bcn", signal, response)
    return ops.einsum("btc,tkc->bk", signal, response)


def _fit_length(response, steps: int):
    """``response[:steps]``, padded with zero rows when it is shorter."""
    length = response.shape[0]
    if length >= steps:
        return response[:steps]
    padding = [[0, steps - length]] + [[0, 0]] * (len(response.shape) - 1)
    return ops.pad(response, padding)


def _fft_length(minimum: int) -> int:
    """Smallest power of two ``>= minimum`` (fast for every FFT backend)."""
    return 1 << max(minimum - 1, 0).bit_length()
