"""The per-channel FFT convolution on PyTorch: pieces written in place, its own gradient.

PyTorch runs eagerly, so a loop over pieces that returns each one keeps them all
until they are joined: the pieces and the joined result are twice the memory
sequence, and freed pieces stay in the C allocator's heap as resident memory. Here
every piece is written straight into the output in its final layout, and the
gradient is read from the output's gradient piece by piece, so a training step
holds the memory sequence, its gradient and one piece at a time.

For memory_d 32, order 256 and 512 steps in batches of 16 (the ``seq-ff-full``
benchmark: a 256 MiB memory sequence under ``Dense(2)``), the peak resident memory
of three training steps rose by 534-539 MiB over the built model, against 997-1,028
MiB with the same pieces joined by ``keras.ops.map`` (four runs each, the last one
``python benchmarks/peak_memory.py --backend torch [--joined]``). A
``Dense(8192)`` in the LMU's place, which makes a sequence of the same size with no
convolution, rose by 541 MiB: the sequence and its gradient (512 MiB) are both held
while the ``Dense(2)`` above computes its gradients.
"""

from __future__ import annotations

import torch


def per_channel_fft_convolution(signal, response, fft_length: int, group: int, orders: int):
    """``m_t = sum_k H[k] v_{t-k}`` for each channel of ``v``, in place.

    Parameters
    ----------
    signal
        ``v``, shape (batch, steps, channels).
    response
        ``H``, shape (steps, order): the same response for every channel.
    fft_length
        Points of each FFT, at least ``2 * steps - 1``.
    group, orders
        One piece's channels (a divisor of ``channels``) and orders.

    Returns
    -------
    torch.Tensor
        (batch, steps, channels, order).
    """
    return _PerChannelFFTConvolution.apply(signal, response, fft_length, group, orders)


def traced() -> bool:
    """Whether PyTorch is tracing the model (``torch.jit.trace``, ``torch.export``,
    ``torch.compile``): the exporters take the pieces joined by ``keras.ops``, not a
    custom ``torch.autograd.Function`` that writes into its output."""
    compiler = torch.compiler
    return (
        torch.jit.is_tracing()
        or compiler.is_compiling()
        or bool(getattr(compiler, "is_exporting", lambda: False)())
    )


def _spectrum(x, fft_length: int):
    """``rfft`` of ``x`` over its last axis, zero-padded to ``fft_length`` points."""
    return torch.fft.rfft(x, fft_length)


def _inverse(spectrum, fft_length: int, steps: int):
    """The first ``steps`` points of ``irfft`` of ``spectrum`` over its last axis."""
    return torch.fft.irfft(spectrum, fft_length)[..., :steps]


class _PerChannelFFTConvolution(torch.autograd.Function):
    """Forward: ``M[b, c, k] = irfft(V[b, c] * H[k])``, with ``V`` and ``H`` the
    spectra of the zero-padded signal and response over time.

    Backward, for the gradient ``G[b, c, k]`` of ``M`` (its spectrum over time, of
    the same zero-padding): the adjoint of a causal convolution is the correlation,

    - ``dv[b, c] = irfft(sum_k G[b, c, k] * conj(H[k]))``, and
    - ``dh[k] = irfft(sum_{b, c} G[b, c, k] * conj(V[b, c]))``,

    each cut to its first ``steps`` points. With ``fft_length >= 2 * steps - 1`` the
    circular correlation wraps only onto the zero padding, so both are exact.
    """

    @staticmethod
    def forward(ctx, signal, response, fft_length, group, orders):
        batch, steps, channels = signal.shape
        order = response.shape[1]
        response_spectrum = _spectrum(response.transpose(0, 1), fft_length)
        memory = signal.new_empty((batch, steps, channels, order))
        for start in range(0, channels, group):
            spectrum = _spectrum(signal[:, :, start : start + group].transpose(1, 2), fft_length)
            spectrum = spectrum.unsqueeze(2)  # (batch, group, 1, frequencies)
            for first in range(0, order, orders):
                piece = _inverse(
                    spectrum * response_spectrum[first : first + orders], fft_length, steps
                )  # (batch, group, orders, steps)
                memory[:, :, start : start + group, first : first + orders] = piece.permute(
                    0, 3, 1, 2
                )
        ctx.save_for_backward(signal, response)
        ctx.pieces = fft_length, group, orders
        return memory

    @staticmethod
    def backward(ctx, grad_memory):
        signal, response = ctx.saved_tensors
        fft_length, group, orders = ctx.pieces
        steps, channels = signal.shape[1], signal.shape[2]
        order = response.shape[1]
        needs_signal, needs_response = ctx.needs_input_grad[:2]
        response_spectrum = _spectrum(response.transpose(0, 1), fft_length).conj()
        grad_signal = signal.new_empty(signal.shape) if needs_signal else None
        grad_response_spectrum = torch.zeros_like(response_spectrum) if needs_response else None
        for start in range(0, channels, group):
            if needs_response:
                signal_spectrum = _spectrum(
                    signal[:, :, start : start + group].transpose(1, 2), fft_length
                ).conj()  # (batch, group, frequencies)
            grad_spectrum_sum = 0
            # Each piece of the gradient is copied out whole (rows of ``orders``
            # values) before it is transposed and padded, and the sum over orders is
            # a product and a sum: read through the transposed view, and summed by an
            # einsum (a batched product between copies), the seq-ff-full training
            # step took 1.36x as long (``python benchmarks/bench.py --no-peer
            # --cases seq-ff-full``, both forms alternating, two runs each).
            for first in range(0, order, orders):
                grad_piece = grad_memory[:, :, start : start + group, first : first + orders]
                grad_spectrum = _spectrum(grad_piece.contiguous().permute(0, 2, 3, 1), fft_length)
                if needs_signal:
                    grad_spectrum_sum = grad_spectrum_sum + (
                        grad_spectrum * response_spectrum[first : first + orders]
                    ).sum(2)
                if needs_response:
                    grad_response_spectrum[first : first + orders] += torch.einsum(
                        "bgkf,bgf->kf", grad_spectrum, signal_spectrum
                    )
            if needs_signal:
                grad_signal[:, :, start : start + group] = _inverse(
                    grad_spectrum_sum, fft_length, steps
                ).transpose(1, 2)
        grad_response = None
        if needs_response:
            grad_response = _inverse(grad_response_spectrum, fft_length, steps).transpose(0, 1)
        return grad_signal, grad_response, None, None, None
