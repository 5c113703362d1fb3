"""The LMU mathematics as differentiable ``keras.ops`` functions (every backend).

These mirror :mod:`keras_lmu.legendre` inside the computation graph, where the
discretization has to follow a trainable ``theta`` and gradients have to flow.
"""

from __future__ import annotations

import contextlib
import functools

import keras
import numpy as np
from keras import ops

#: Taylor polynomial of :func:`matrix_exponential_minus_identity`: its degree, and the
#: largest 1-norm it is used at per dtype, where its truncation error is below rounding:
#: 2**16 / 16! = 3e-9 in float32 (fewer squarings: each one doubles the rounding error),
#: 0.5**16 / 16! = 7e-19 in float64.
EXPM_TAYLOR_DEGREE = 15
EXPM_TAYLOR_MAX_NORM = {"float16": 2.0, "bfloat16": 2.0, "float32": 2.0, "float64": 0.5}
#: Most squarings :func:`matrix_exponential_minus_identity` does: 1-norms up to
#: 0.5 * 2**31 (about 1e9).
EXPM_MAX_SQUARINGS = 31
#: :func:`per_channel_fft_convolution` in pieces: complex values in one piece (2**19:
#: 4 MiB in complex64, sized for a CPU's cache; 2**17 on PyTorch's CPU, whose pieces
#: run one by one, eagerly; on an accelerator 2**27, 1 GiB, which only bounds the
#: memory), most blocks of orders in one channel (each block is a few operations in
#: the graph), and the batch size assumed where it is unknown.
FFT_PIECE_VALUES = 1 << 19
FFT_TORCH_CPU_PIECE_VALUES = 1 << 17
FFT_ACCELERATOR_PIECE_VALUES = 1 << 27
FFT_MAX_BLOCKS = 16
FFT_ASSUMED_BATCH = 32


@contextlib.contextmanager
def full_float32_precision():
    """Compute float32 matrix products and convolutions with all 24 bits of precision.

    JAX on NVIDIA GPUs (Ampere and later) multiplies float32 matrices in TensorFloat-32
    (a 10-bit mantissa) by default, which costs the memory three orders of magnitude of
    accuracy: on an H200, relative errors of 3.8e-4 (direct convolution) and 9.9e-4
    (chunked scan) against a float64 reference, 3.0e-6 and 4.9e-7 in full float32
    (``benchmarks/numerics.py``, order 64, theta 10,000, 10,000 steps). The operations
    traced inside this context (as a decorator: inside the decorated function) keep
    full float32 precision (JAX's ``default_matmul_precision("float32")``); it only
    changes the memory's own arithmetic, not the hidden layers'. Elsewhere it does
    nothing: PyTorch computes float32 matrix products in full precision unless told
    otherwise, and TensorFlow's switch (``enable_tensor_float_32_execution``) holds for
    the whole process, so it is left to the user.
    """
    if keras.backend.backend() == "jax":
        import jax

        with jax.default_matmul_precision("float32"):
            yield
    else:
        yield


def matrix_exponential_max_norm(dtype: str) -> float:
    """Largest 1-norm of a matrix whose :func:`matrix_exponential_minus_identity` in
    ``dtype`` is computed as designed (``EXPM_TAYLOR_MAX_NORM`` after
    ``EXPM_MAX_SQUARINGS`` halvings); beyond it the Taylor polynomial is evaluated too
    far out and the result is wrong or NaN."""
    return EXPM_TAYLOR_MAX_NORM.get(dtype, 0.5) * 2.0**EXPM_MAX_SQUARINGS


def matrix_exponential_minus_identity(x):
    """``expm(x) - I`` of a square matrix, accurate when it is small (as ``expm1``).

    Scaling and squaring: ``expm(x) = expm(x / 2^s)^(2^s)`` with ``s`` the fewest
    halvings that bring the 1-norm to ``EXPM_TAYLOR_MAX_NORM``, where a Taylor
    polynomial of degree ``EXPM_TAYLOR_DEGREE`` (Paterson-Stockmeyer: six products)
    is exact to float64 rounding. The polynomial leaves out its constant ``I`` and each
    squaring ``(I + Y)^2 = I + (2 Y + Y^2)`` updates ``Y`` alone, so the small
    difference from the identity of the exponential of a small ``x`` (``A / theta``
    for a long window) is not rounded against the 1s of the diagonal. The squarings
    are done in blocks of 16, 8, 4, 2 and 1, each under ``keras.ops.cond``, so only
    those needed run.

    Written in ``keras.ops`` (differentiable on every backend) rather than with the
    backends' ``expm``, whose solves (LU factorizations) neither ONNX nor a
    TensorFlow SavedModel exported from JAX can run: with this, an LMU with a
    trainable ``theta``, ``A`` or ``B`` exports like the others.
    """
    dtype = x.dtype
    norm = ops.max(ops.sum(ops.abs(x), axis=0))
    tiny = ops.cast(np.finfo(np.float32).tiny, dtype)
    largest = EXPM_TAYLOR_MAX_NORM.get(ops.dtype(x), 0.5)
    squarings = ops.ceil(ops.log2(ops.maximum(norm, tiny) / largest))
    squarings = ops.clip(squarings, 0.0, float(EXPM_MAX_SQUARINGS))
    x = x * ops.power(ops.cast(2, dtype), -squarings)

    # Paterson-Stockmeyer: sum_{k >= 1} x^k / k! = B0 + x^4 (B1 + x^4 (B2 + x^4 B3)),
    # where B_j = sum_{i < 4} x^i / (4j + i)! (B0 without its i = 0 term, the identity).
    powers = [ops.eye(x.shape[-1], dtype=dtype), x]
    for _ in range(2, 5):
        powers.append(matrix_product(powers[-1], x))
    factorials = [float(value) for value in np.cumprod(np.arange(1.0, EXPM_TAYLOR_DEGREE + 1))]
    factorials = [1.0] + factorials
    blocks = [
        sum(powers[i] / factorials[4 * j + i] for i in range(4) if 4 * j + i > 0)
        for j in range((EXPM_TAYLOR_DEGREE + 1) // 4)
    ]
    result = blocks[-1]
    for block in reversed(blocks[:-1]):
        result = block + matrix_product(powers[4], result)

    def square(difference, times):
        for _ in range(times):
            difference = 2.0 * difference + matrix_product(difference, difference)
        return difference

    remaining = squarings
    for times in (16, 8, 4, 2, 1):
        take = remaining >= times
        result = ops.cond(
            take, lambda result=result, times=times: square(result, times), lambda r=result: r
        )
        remaining = remaining - ops.where(take, ops.cast(times, dtype), ops.cast(0, dtype))
    return result


def matrix_product(a, b):
    """``a @ b`` for a 2-D ``b`` and ``a`` of rank 2 (of any rank >= 2 on PyTorch), in
    their dtype.

    ``keras.ops.matmul`` where it is the faster: TensorFlow's ``MatMul`` is faster
    than its ``einsum``, which matters in the step-by-step loop, and so is PyTorch's
    ``matmul``: its ``einsum`` is a batched product (``bmm``) between permutes and
    reshapes, each a node of the autograd graph: a ``psmnist-rnn`` training step took
    1,330 ms with ``matmul`` against 2,417-2,472 with ``einsum`` (``benchmarks/bench.py
    --no-peer --backends torch --cases psmnist-rnn``). But on PyTorch
    ``keras.ops.matmul`` returns the product of float64 tensors in float32 (Keras's
    type promotion), so float64 is multiplied by ``einsum`` there, as on JAX.
    """
    backend = keras.config.backend()
    if backend == "tensorflow" or (
        backend == "torch" and keras.backend.standardize_dtype(a.dtype) != "float64"
    ):
        return ops.matmul(a, b)
    return ops.einsum("...j,jk->...k", a, b)


def last_axis_product(x, matrix):
    """``x @ matrix`` over the last axis of ``x`` (of any rank).

    On TensorFlow as one product of 2-D matrices: ``keras.ops.einsum("btj,jk->btk")``
    is a batched product there (``BatchMatMulV2``, the matrix broadcast over the
    batch), which without oneDNN made a training step of
    ``LMUFeedforward(32, 256, 784, None, return_sequences=True, conv_mode="scan")``
    3.2x as long on an AMD EPYC (5,983 against 1,863 ms, docs/benchmarks-amd-epyc.md).
    JAX was 5-15% slower with the 2-D product and keeps the einsum, as does PyTorch
    (the same either way).
    """
    middle = [static_size(x, axis) for axis in range(1, len(x.shape) - 1)]
    if keras.config.backend() != "tensorflow" or None in middle:
        return ops.einsum("...j,jk->...k", x, matrix)
    rows = ops.reshape(x, (-1, static_size(x, -1)))
    return ops.reshape(matrix_product(rows, matrix), (-1, *middle, static_size(matrix, 1)))


def discretize_zoh_difference(A, B, theta_inv):
    """``(A_bar - I, B_bar)`` of the zero-order hold (dt = 1) of
    ``dm/dt = theta_inv * (A m + B u)``, differentiable in ``A``, ``B`` and ``theta_inv``.

    ``expm(M theta_inv) - I = [[A_bar - I, B_bar], [0, 0]]``, computed as such
    (:func:`matrix_exponential_minus_identity`): for a long window ``A_bar - I`` is
    small, and ``A_bar`` rounded to float32 would keep few of its digits.
    """
    return _split_augmented(matrix_exponential_minus_identity(augmented_system(A, B) * theta_inv))


def discretize_zoh_difference_near(
    A, B, theta_inv, reference_theta_inv: float, reference_difference
):
    """``(A_bar - I, B_bar)`` of the zero-order hold (dt = 1) at ``theta_inv``, from an
    exact one at ``reference_theta_inv``, for fixed ``A`` and ``B``.

    With ``M = [[A, B], [0, 0]]`` (:func:`augmented_system`), ``M`` commutes with
    itself, so ``expm(M t) = expm(M t0) expm(M (t - t0))``, and with
    ``F = expm(M t0) - I`` and ``E = expm(M (t - t0)) - I``::

        expm(M t) - I = F + E + F E

    ``reference_difference`` is ``F``, computed once, exactly (float64, on the host);
    for ``t >= t0`` (theta at or below its reference) only ``E`` is computed in the
    graph, whose norm is small while theta stays near its reference: at ``t0`` the
    result is the exact discretization, rounded once. For ``t < t0`` (theta grown) it
    is ``expm(M t) - I`` (``F = 0``): ``expm(M (t - t0))`` would be a growing
    exponential there.

    784 steps of memory (``LMUFeedforward``, ``conv_mode="raw"``) at the initial theta
    784 in float32, relative to a float64 reference, on JAX, TensorFlow and PyTorch:
    order 256, 1.5e-5 to 1.6e-5 from ``expm(M t)`` (as for a trainable ``A``; 2.0e-4
    to 2.9e-4 before :func:`matrix_exponential_minus_identity` squared
    ``expm(x) - I``), 5.6e-6 to 7.8e-6 this way; order 512, 3.6e-5 to 5.3e-5 (8.8e-4
    to 4.5e-3 before) against 6.4e-6 to 1.1e-5. A fixed memory, whose response is
    computed in float64 on the host, is off by 4.4e-7 to 9.0e-7.

    Returns
    -------
    A_bar - I, B_bar
        Tensors of shape (order, order) and (order,), differentiable in ``theta_inv``.
    """
    augmented = augmented_system(A, B)
    dtype = augmented.dtype
    reference_theta_inv = ops.convert_to_tensor(reference_theta_inv, dtype)
    above = theta_inv >= reference_theta_inv
    start = ops.where(above, reference_theta_inv, ops.zeros_like(reference_theta_inv))
    factor = ops.where(above, reference_difference, ops.zeros_like(reference_difference))
    difference = matrix_exponential_minus_identity(augmented * (theta_inv - start))
    return _split_augmented(factor + difference + matrix_product(factor, difference))


def augmented_system(A, B):
    """``[[A, B], [0, 0]]``, shape (order + 1, order + 1): its exponential
    ``expm(M / theta) = [[A_bar, B_bar], [0, 1]]`` is the zero-order hold."""
    top = ops.concatenate([A, ops.expand_dims(B, 1)], axis=1)
    return ops.pad(top, [[0, 1], [0, 0]])


def _split_augmented(exponential):
    """``(A_bar, B_bar)`` out of ``[[A_bar, B_bar], [0, 1]]``."""
    order = static_size(exponential, 0) - 1
    return exponential[:order, :order], exponential[:order, order]


def discretize_difference(A, B, theta_inv, discretizer: str):
    """``(A_bar - I, B_bar)`` with ``discretizer``: :func:`discretize_zoh_difference`,
    or ``(A theta_inv, B theta_inv)`` for forward Euler."""
    if discretizer == "zoh":
        return discretize_zoh_difference(A, B, theta_inv)
    return A * theta_inv, B * theta_inv


def memory_step(memory, u, transition, B_bar, fixed_system: bool = False):
    """One step of the memories: ``m_t = m_{t-1} + (m_{t-1} transition + u_t B_bar^T)``.

    With ``transition = (A_bar - I)^T`` this is ``m_t = A_bar m_{t-1} + B_bar u_t``
    for each of the ``memory_d`` memories, written so that the small
    ``(A_bar - I) m`` is computed on its own (see ``LegendreMemory.step_weights``).
    Per step this is the hot loop of a recurrent LMU: kept to few operations.

    Parameters
    ----------
    memory
        ``m_{t-1}``, shape (batch, memory_d * order), memory ``d`` in
        ``[:, d * order:(d + 1) * order]``.
    u
        The memories' inputs ``u_t``, shape (batch, memory_d).
    transition
        ``(A_bar - I)^T``, shape (order, order).
    B_bar
        Shape (order,).
    fixed_system : bool
        Whether ``transition`` and ``B_bar`` are constants (no gradient flows to
        them). On TensorFlow the step then has its gradient written out
        (:func:`memory_step_gradient`), which needs neither ``m_{t-1}`` nor ``u_t``:
        TensorFlow's own gradient of a matrix product includes the product's
        gradient with respect to the constant, for which the loop over the steps
        keeps every step's memory (batch * memory_d * order values a step). For
        ``seq-rnn`` (``keras.layers.RNN(LMUCell(32, 256, 784, None))``, 512 steps,
        batch 16) the peak RSS increase of training fell from +326-330 to +63-64
        MiB and the training step took 2-5% less time, ``psmnist-rnn``'s 3-7% less
        (``python benchmarks/bench.py --no-peer --backends tensorflow --cases
        seq-rnn psmnist-rnn``, three runs each, alternating; ``python
        benchmarks/step_forms.py`` times it in a bare loop).

    Returns
    -------
    Tensor
        ``m_t``, shape (batch, memory_d * order).
    """
    if fixed_system and keras.config.backend() == "tensorflow":
        return _memory_step_with_written_gradient(memory, u, transition, B_bar)
    return _memory_step(memory, u, transition, B_bar)


def _memory_step(memory, u, transition, B_bar):
    """The arithmetic of :func:`memory_step`, differentiated by the backend."""
    order = static_size(transition, 0)
    size = static_size(memory, -1)
    if keras.config.backend() == "torch":
        # PyTorch runs each operation of each step on its own, from Python: fewest
        # operations (Keras's reshape alone costs ~16 us there), ``u_t B_bar^T`` as a
        # broadcast multiply, and ``matmul``, not ``einsum`` (a ``bmm`` between
        # reshapes), for the memories as a batch of (memory_d, order) matrices. With
        # seq-rnn's sizes, 128 steps of this function alone took 697-698 us a step
        # forward and backward against 839-1,148 with the other backends' form
        # (forward only 352-356 against 468-491; two runs), and a seq-rnn training
        # step 615-621 ms against 689-718 (inference 414-421 against 482-498).
        if size == order:  # a single memory; u_t is (batch, 1)
            return memory + (matrix_product(memory, transition) + u * B_bar)
        per_memory = ops.reshape(memory, (-1, size // order, order))
        per_memory = per_memory + (
            matrix_product(per_memory, transition) + ops.expand_dims(u, -1) * B_bar
        )
        return ops.reshape(per_memory, (-1, size))
    # B_bar u_t as a matrix product (u_t as a column times B_bar^T as a row): a
    # seq-rnn training step on TensorFlow took 11% less time than with a broadcasting
    # multiply here and the sum in its gradient (the notes in docs/benchmarks.md).
    B_row = ops.reshape(B_bar, (1, order))
    if size == order:  # a single memory
        return memory + (matrix_product(memory, transition) + matrix_product(u, B_row))
    drive = matrix_product(ops.reshape(u, (-1, 1)), B_row)  # one memory per row
    if stacks_memories_in_batches():
        per_memory = ops.reshape(memory, (-1, size // order, order))
        drive = ops.reshape(drive, (-1, size // order, order))
        per_memory = per_memory + (ops.einsum("bdj,ji->bdi", per_memory, transition) + drive)
        return ops.reshape(per_memory, (-1, size))
    rows = ops.reshape(memory, (-1, order))  # one memory per row of a 2-D tensor
    return ops.reshape(rows + (matrix_product(rows, transition) + drive), (-1, size))


@ops.custom_gradient
def _memory_step_with_written_gradient(memory, u, transition, B_bar):
    """:func:`memory_step` differentiated by :func:`memory_step_gradient` (used on
    TensorFlow only); ``transition`` and ``B_bar`` get no gradient."""

    def gradient(upstream):
        return (*memory_step_gradient(upstream, transition, B_bar), None, None)

    return _memory_step(memory, u, transition, B_bar), gradient


def memory_step_gradient(upstream, transition, B_bar):
    """Gradient of :func:`memory_step` with respect to ``m_{t-1}`` and ``u_t``.

    With ``g = dL/dm_t``: ``dL/dm_{t-1} = g + g transition^T`` and
    ``dL/du_t[d] = g[d] . B_bar``, per memory ``d`` (the step is linear in both).

    Parameters
    ----------
    upstream
        ``dL/dm_t``, shape (batch, memory_d * order).
    transition, B_bar
        As in :func:`memory_step`.

    Returns
    -------
    tuple of Tensor
        ``dL/dm_{t-1}`` (batch, memory_d * order) and ``dL/du_t`` (batch, memory_d).
    """
    order = static_size(transition, 0)
    size = static_size(upstream, -1)
    if size != order and stacks_memories_in_batches():
        per_memory = ops.reshape(upstream, (-1, size // order, order))
        memory_grad = per_memory + ops.einsum("bdi,ji->bdj", per_memory, transition)
        u_grad = ops.einsum("bdi,i->bd", per_memory, B_bar)
        return ops.reshape(memory_grad, (-1, size)), u_grad
    rows = ops.reshape(upstream, (-1, order))  # one memory per row
    memory_grad = rows + ops.einsum("ri,ji->rj", rows, transition)
    u_grad = ops.reshape(matrix_product(rows, ops.reshape(B_bar, (order, 1))), (-1, size // order))
    return ops.reshape(memory_grad, (-1, size)), u_grad


@functools.cache
def stacks_memories_in_batches() -> bool:
    """Whether :func:`memory_step` multiplies ``memory_d > 1`` memories as a batch of
    (memory_d, order) matrices (an einsum) rather than as the rows of one matrix.

    Chosen by which was faster in a seq-rnn training step (``benchmarks/bench.py``):
    TensorFlow's batched product was faster with oneDNN on an Intel Xeon with AVX-512
    (the 2-D product took 22% longer), and 4.1x slower without oneDNN on an AMD EPYC
    (TensorFlow runs oneDNN by default only on CPUs with AVX-512 VNNI, BF16 or AMX):
    3,999 against 979 ms per step (docs/benchmarks-amd-epyc.md). JAX and PyTorch were
    as fast either way (within 6%) and keep the batched einsum.
    """
    if keras.config.backend() != "tensorflow":
        return True
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - a TensorFlow without this module
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def impulse_response(difference, B_bar, steps: int, near_identity: bool = True):
    """Impulse response ``H[k] = A_bar^k B_bar`` for ``k < steps``, by doubling, from
    ``difference = A_bar - I``.

    ``H[0] = B_bar`` and ``H[n:2n] = A_bar^n H[0:n]`` with ``A_bar^2n = (A_bar^n)^2``:
    about ``2 log2(steps)`` dependent matrix products instead of a loop over the
    steps, and differentiable. With ``near_identity`` the powers are kept as their
    differences from the identity, ``H[n:2n] = H[0:n] + D_n H[0:n]`` with
    ``D_n = A_bar^n - I`` and ``D_2n = 2 D_n + D_n^2``: squaring ``A_bar^n`` itself
    would round its small difference from the identity (a long window) against the
    diagonal's 1s at every squaring, and the rounding would double with each. Order
    256 over 10,000 steps in float32 (NumPy, from float64 ``A_bar - I`` rounded
    once), theta 100,000: 3.5e-5 (of the response's largest value) squaring
    ``A_bar``, 2.5e-6 squaring ``D``; theta 10,000: 4.6e-5 and 9.7e-6. Where
    ``A_bar`` is far from the identity squaring it is the more exact: theta 784,
    1.7e-5 and 1.9e-5; order 64, theta 100, 1.7e-6 and 3.2e-6.

    Parameters
    ----------
    difference
        ``A_bar - I``, shape (size, size).
    B_bar
        Input vector (size,) or input matrix (size, channels).
    steps : int
        Length of the response.
    near_identity : bool
        Square the powers' differences from the identity (else the powers).

    Returns
    -------
    Tensor
        Shape (steps, size) for an input vector, (steps, size, channels) for a
        matrix.
    """
    response = ops.expand_dims(B_bar, 0)  # (1, size[, channels])
    power = difference
    if not near_identity:
        power = ops.eye(static_size(difference, 0), dtype=difference.dtype) + difference
    steps = int(steps)
    while static_size(response, 0) < steps:
        later = ops.einsum("ij,tj...->ti...", power, response)
        if near_identity:
            later = response + later
        response = ops.concatenate([response, later], axis=0)
        if static_size(response, 0) < steps:
            if near_identity:
                power = squared_difference(power)
            else:
                power = ops.einsum("ij,jk->ik", power, power)
    return response[:steps]


def squared_difference(difference):
    """``(I + D)^2 - I = 2 D + D^2``: the square of a matrix near the identity, kept
    as its difference from the identity."""
    return 2.0 * difference + ops.einsum("ij,jk->ik", difference, difference)


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
    batch, steps = ops.shape(signal)[0], static_size(signal, 1)
    chunk, size, channels = (static_size(response, axis) for axis in range(3))
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
    # Rows taken from a matrix: PyTorch's ONNX export has no ``take`` from a 3-D tensor.
    rows = ops.reshape(padded, (chunk + 1, size * channels))
    toeplitz = ops.take(rows, np.where(lag <= 0, -lag, chunk), axis=0)
    toeplitz = ops.reshape(toeplitz, (chunk, chunk, size, channels))  # (i, j, s, c)
    toeplitz = ops.reshape(ops.transpose(toeplitz, (0, 3, 1, 2)), (chunk * channels, -1))
    carried = ops.reshape(ops.transpose(transition, (2, 0, 1)), (size, chunk * size))
    inputs = ops.concatenate(
        [ops.reshape(blocks, (batch, chunks, chunk * channels)), previous], axis=-1
    )
    states = last_axis_product(inputs, ops.concatenate([toeplitz, carried], axis=0))
    return ops.reshape(states, (batch, chunks * chunk, size))[:, :steps]


def matrix_power(difference, exponent: int, near_identity: bool = True):
    """``M^exponent`` of ``M = I + difference`` by repeated squaring (about
    ``2 log2(exponent)`` products). With ``near_identity`` the squarings keep the
    powers' differences from the identity (:func:`power_difference`, see
    :func:`impulse_response`) and the result is rounded once; else ``M`` itself is
    squared."""
    identity = ops.eye(static_size(difference, 0), dtype=difference.dtype)
    if near_identity:
        return identity + power_difference(difference, exponent)
    result = None
    power = identity + difference
    while True:
        if exponent & 1:
            result = power if result is None else ops.einsum("ij,jk->ik", result, power)
        exponent >>= 1
        if not exponent:
            break
        power = ops.einsum("ij,jk->ik", power, power)
    if result is None:
        return identity
    return result


def power_difference(difference, exponent: int):
    """``(I + D)^exponent - I`` by repeated squaring of differences from the identity
    (about ``2 log2(exponent)`` products): ``(I + X)(I + Y) - I = X + Y + X Y``, and
    :func:`squared_difference` (see :func:`impulse_response`)."""
    result = None
    power = difference
    while True:
        if exponent & 1:
            if result is None:
                result = power
            else:
                result = result + power + ops.einsum("ij,jk->ik", result, power)
        exponent >>= 1
        if not exponent:
            break
        power = squared_difference(power)
    if result is None:
        return ops.zeros_like(difference)
    return result


def doubled_powers(difference, count: int) -> list:
    """``[I + D, (I + D)^2, (I + D)^4, ...]``, ``count`` of them, squared as differences
    from the identity (:func:`squared_difference`) and each rounded once."""
    identity = ops.eye(static_size(difference, 0), dtype=difference.dtype)
    powers = [identity + difference]
    for _ in range(count - 1):
        difference = squared_difference(difference)
        powers.append(identity + difference)
    return powers


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
    steps = static_size(inputs, 1)
    states = inputs
    power = matrix
    shift, level = 1, 0
    while shift < steps:
        if powers is not None:
            power = powers[level]
        later = states[:, shift:] + last_axis_product(states[:, :-shift], ops.transpose(power))
        states = ops.concatenate([states[:, :shift], later], axis=1)
        shift, level = 2 * shift, level + 1
        if shift < steps and powers is None:
            power = ops.einsum("ij,jk->ik", power, power)
    return states


def unmasked_steps_together(mask, at_end: bool = False):
    """Step indices that gather each sequence's unmasked steps together, in order.

    A masked step leaves a linear time-invariant memory unchanged, so under a mask the
    memory after step ``t`` is the unmasked memory of the sequence of unmasked steps
    alone, after as many of them as there are up to ``t``: gathering them to the front
    of the sequence makes that sequence, and gathering them to the end makes one whose
    last memory is the masked sequence's.

    Parameters
    ----------
    mask
        Boolean (batch, steps).
    at_end : bool
        Put the unmasked steps after the masked ones instead of before them.

    Returns
    -------
    Tensor
        Integer (batch, steps): ``x[b, order[b, s]]`` is the sequence ``b`` with its
        unmasked steps first (or last), each group in its original order.
    """
    unmasked = ops.cast(mask, "int32")
    steps = ops.shape(mask)[1]
    group = unmasked if at_end else 1 - unmasked
    return ops.argsort(ops.arange(steps, dtype="int32") + steps * group, axis=1)


def unmasked_steps_are_contiguous(mask, from_the_start: bool = False):
    """Whether in every sequence no masked step lies between two unmasked ones.

    Then the memory of a linear time-invariant system that holds its state at masked
    steps equals, at the unmasked steps, the memory of the sequence with its masked
    inputs zeroed: zero input before the first unmasked step leaves a zero memory.

    Parameters
    ----------
    mask
        Boolean (batch, steps).
    from_the_start : bool
        Also require the first step of every sequence with an unmasked step to be
        unmasked (a nonzero initial memory would change over masked steps before it).

    Returns
    -------
    Tensor
        A boolean scalar.
    """
    unmasked = ops.cast(mask, "int32")
    starts = ops.maximum(unmasked[:, 1:] - unmasked[:, :-1], 0)
    runs = unmasked[:, 0] + ops.sum(starts, axis=1)
    contiguous = ops.all(runs <= 1)
    if from_the_start:
        contiguous = ops.logical_and(contiguous, ops.all((unmasked[:, 0] == 1) | (runs == 0)))
    return contiguous


def unmasked_counts(mask):
    """For each step, how many steps up to and including it are unmasked.

    ``mask`` is boolean (batch, steps); returns int32 (batch, steps).
    """
    return ops.cumsum(ops.cast(mask, "int32"), axis=1)


def gather_steps(x, index):
    """``x[b, index[b, s]]``: the steps ``index`` (batch, steps') of each sequence of ``x``
    (batch, steps, ...)."""
    for _ in range(len(x.shape) - 2):
        index = ops.expand_dims(index, -1)
    return ops.take_along_axis(x, index, axis=1)


def gather_unmasked_steps(x, mask, at_end: bool = False):
    """The unmasked steps of each sequence of ``x`` (batch, steps, features) gathered to
    its front (or end), in order, with zeros in place of the masked steps.

    The masked steps' values never reach the result (NaN there is harmless).
    """
    steps = ops.shape(mask)[1]
    unmasked = unmasked_counts(mask)[:, -1:]  # (batch, 1)
    position = ops.arange(steps, dtype="int32")
    gathered = position >= steps - unmasked if at_end else position < unmasked
    return ops.where(
        ops.expand_dims(gathered, -1),
        gather_steps(x, unmasked_steps_together(mask, at_end)),
        ops.zeros((), x.dtype),
    )


def last_unmasked_index(mask):
    """For each step, the index of the last unmasked step up to it, or -1 if none.

    ``mask`` is boolean (batch, steps); returns int32 (batch, steps). Computed for all
    steps at once: the ``count``-th unmasked step, where ``count`` unmasked steps come
    up to ``t``.
    """
    counts = unmasked_counts(mask)
    index = gather_steps(unmasked_steps_together(mask), ops.maximum(counts - 1, 0))
    return ops.where(counts > 0, ops.cast(index, "int32"), -1)


def hold_masked_steps(outputs, mask, zero_output_for_mask: bool = False, initial=None):
    """Outputs as a Keras RNN gives them under a mask.

    A masked step repeats the output of the last unmasked step before it (``initial``
    when there is none, zeros by default), or is zero when ``zero_output_for_mask``.

    Parameters
    ----------
    outputs
        Per-step outputs computed as if nothing were masked, (batch, steps, features).
    mask
        Boolean (batch, steps).
    zero_output_for_mask : bool
        Zeros at masked steps instead.
    initial : optional
        The output before the first step, (batch, features).
    """
    if zero_output_for_mask:
        return ops.where(ops.expand_dims(mask, -1), outputs, ops.zeros((), outputs.dtype))
    source = last_unmasked_index(mask)
    held = gather_steps(outputs, ops.maximum(source, 0))
    before_any = ops.zeros_like(held)
    if initial is not None:
        before_any = before_any + ops.expand_dims(ops.cast(initial, held.dtype), 1)
    return ops.where(ops.expand_dims(source >= 0, -1), held, before_any)


def causal_convolution_fft(signal, response, fixed_response: bool = False):
    """Every step of ``m_t = sum_k H[k] v_{t-k}``, by FFT over time.

    Parameters
    ----------
    signal
        Encoded input ``v``, shape (batch, steps, channels).
    response
        ``H`` of shape (length, order), applied to each channel separately, or of
        shape (length, size, channels), mixing the channels. Only its first
        ``steps`` rows are used; missing rows count as zero.
    fixed_response : bool
        Whether ``response`` is a constant (no trainable system): on TensorFlow its
        gradient is then not computed (see :func:`per_channel_fft_convolution`).

    Returns
    -------
    Tensor
        (batch, steps, channels, order) for a per-channel response,
        (batch, steps, size) for a mixing one.
    """
    steps = static_size(signal, 1)
    response = _fit_length(response, steps)
    fft_length = _fft_length(2 * steps)
    if len(response.shape) == 2:
        return per_channel_fft_convolution(signal, response, fft_length, fixed_response)
    # (real, imaginary) pairs: PyTorch's ONNX exporter has no complex einsum.
    signal_real, signal_imag = ops.rfft(ops.transpose(signal, (0, 2, 1)), fft_length)
    response_real, response_imag = ops.rfft(ops.transpose(response, (1, 2, 0)), fft_length)

    def mix(a, b):
        return ops.einsum("bcf,kcf->bkf", a, b)

    product_real = mix(signal_real, response_real) - mix(signal_imag, response_imag)
    product_imag = mix(signal_real, response_imag) + mix(signal_imag, response_real)
    memory = ops.irfft((product_real, product_imag), fft_length)[..., :steps]
    return ops.transpose(memory, (0, 2, 1))


def per_channel_fft_convolution(signal, response, fft_length: int, fixed_response: bool = False):
    """``m_t = sum_k H[k] v_{t-k}`` for each channel of ``v``: FFTs of ``fft_length``
    points, in pieces.

    ``signal`` is (batch, steps, channels), ``response`` (steps, order); returns
    (batch, steps, channels, order). Both are zero-padded to ``fft_length`` (at least
    ``2 * steps - 1``, so that the circular convolution is the causal one).

    The spectra are multiplied and transformed back piece by piece: a loop
    (``keras.ops.map``) over groups of channels, each in a few blocks of orders
    (:func:`fft_piece_shape`), rather than all at once. A piece's spectrum and inverse
    can stay in the processor's cache, where the whole product and inverse (each
    twice the size of the result) stream through memory. In a JAX training step,
    pieces of 67, 17, 8 and 4 MiB of spectrum were each faster than the one before,
    2 MiB no faster than 4, and a loop over the channels about as fast as the same
    pieces written out one by one, which took 3-4x as long to compile. For memory_d
    32, order 256 and 512 steps in batches of 16 (the ``seq-ff-full`` benchmark) on a
    2-core AMD EPYC with a 32 MiB L3 cache, the FFT in one piece took 1.48x (JAX),
    1.36x (TensorFlow) and 2.53x (PyTorch) as long per training step as these pieces,
    and 1.62x, 1.61x and 2.22x per forward pass (``python benchmarks/fft_pieces.py
    --backend B --repeats 7``; on PyTorch 1.62x and 1.57x since its spectra are
    complex tensors, see :func:`_rfft`, and 1.89x and 2.61x against its pieces
    written in place, below).

    On PyTorch, outside tracing and export, the pieces are written straight into the
    result, with their own gradient (:mod:`keras_lmu.torch_fft`): it runs eagerly, and
    a loop that returns its pieces keeps them all until they are joined. For
    ``seq-ff-full`` the pieces joined here took 1.17x as long per training step and
    1.62x per forward pass (``python benchmarks/fft_pieces.py --backend torch
    --joined --piece-values``; 1.23x and 1.60x in an earlier run of the same
    comparison); the peak memory is in :mod:`keras_lmu.torch_fft`. Its pieces are
    smaller (:data:`FFT_TORCH_CPU_PIECE_VALUES`), see :func:`fft_piece_values`.

    On TensorFlow the loop has its own gradient, computed piece by piece
    (:mod:`keras_lmu.tf_fft`; not for a ``fixed_response``, which gets none):
    TensorFlow's gradient of the loop took 1.40x as long per training step of
    ``seq-ff-full`` (``python benchmarks/fft_pieces.py --backend tensorflow --joined
    --piece-values``), and its peak memory is in :mod:`keras_lmu.tf_fft`.

    On an accelerator (:func:`on_accelerator`) the pieces are
    :data:`FFT_ACCELERATOR_PIECE_VALUES` large, which makes ``seq-ff-full`` one piece:
    a GPU has no such cache to fit, and every piece is a few more kernel launches. On
    an NVIDIA H200, that model's training step took 0.46x (JAX) and 0.19x (PyTorch)
    as long in one piece as in the CPU's pieces, 0.51x and 0.24x in pieces of 2**24
    values (``bash benchmarks/gpu.sh``, which runs ``fft_pieces.py --piece-values``).
    The CPU's pieces held the peak GPU memory of that step at 801 MiB (JAX) and 583
    MiB (PyTorch); one piece adds the whole product (16 x 32 x 256 x 513 complex
    values, 513 MiB in complex64) and its inverse (512 MiB) to it.
    """
    channels, order = static_size(signal, 2), static_size(response, 1)
    batch = signal.shape[0]  # None, or symbolic in an export with a free batch size
    batch = batch if isinstance(batch, int) else None
    piece_values = fft_piece_values(signal)
    group, orders = fft_piece_shape(batch, channels, order, fft_length // 2 + 1, piece_values)
    if keras.backend.backend() == "torch":
        from keras_lmu import torch_fft

        if not torch_fft.traced():
            return torch_fft.per_channel_fft_convolution(
                signal, response, fft_length, group, orders
            )
    if keras.backend.backend() == "tensorflow":
        from keras_lmu import tf_fft

        return tf_fft.with_gradient_in_pieces(
            functools.partial(_joined_pieces, fft_length=fft_length, group=group, orders=orders),
            signal,
            response,
            fft_length,
            group,
            orders,
            fixed_response,
        )
    return _joined_pieces(signal, response, fft_length, group, orders)


def _joined_pieces(signal, response, fft_length: int, group: int, orders: int):
    """:func:`per_channel_fft_convolution` as a loop (``keras.ops.map``) over groups of
    ``group`` channels, each in blocks of ``orders`` orders, whose pieces are joined."""
    steps, channels = static_size(signal, 1), static_size(signal, 2)
    order = static_size(response, 1)
    groups = ops.reshape(signal, (-1, steps, channels // group, group))
    groups = ops.transpose(groups, (2, 0, 3, 1))  # (channels / group, batch, group, steps)
    response_spectrum = _rfft(ops.transpose(response), fft_length)  # (order, frequencies)
    # Slices of one spectrum: with each block of the response transformed on its own,
    # XLA kept a third full-size buffer in the JAX training step of ``seq-ff-full``
    # (770 MiB of temporaries against 514).
    blocks = [response_spectrum[start : start + orders] for start in range(0, order, orders)]

    # The loop runs over the real signal, each group transformed inside it: PyTorch's
    # ONNX exporter takes complex tensors through FFTs, products and slices, but
    # cannot index or expand them.
    # Each block is moved to the output's layout (time before orders) while it is
    # small, and the groups are joined along rows of group * order values: with one
    # transpose of the whole memory sequence, time innermost, the seq-ff-full
    # training step took 1.22x as long on JAX (and on TensorFlow as long, its forward
    # pass 1.04x) (``python benchmarks/bench.py --no-peer --cases seq-ff-full``,
    # both forms alternating, two runs each).
    def convolve_group(signal):  # (batch, group, steps) -> (batch, steps, group, order)
        spectrum = _rfft(ops.expand_dims(signal, 2), fft_length)
        memory = [
            ops.transpose(_irfft(spectrum * block, fft_length)[..., :steps], (0, 3, 1, 2))
            for block in blocks
        ]
        return memory[0] if len(memory) == 1 else ops.concatenate(memory, axis=3)

    memory = ops.map(convolve_group, groups)  # (groups, batch, steps, group, order)
    memory = ops.transpose(memory, (1, 2, 0, 3, 4))
    return ops.reshape(memory, (-1, steps, channels, order))


def fft_piece_shape(
    batch: int | None,
    channels: int,
    order: int,
    frequencies: int,
    piece_values: int | None = None,
):
    """(channels, orders) in one piece of :func:`per_channel_fft_convolution`.

    A piece holds about ``piece_values`` complex values (default
    :data:`FFT_PIECE_VALUES`): a group of channels (a divisor of ``channels``) with
    every order, or one channel with a block of orders, in at most
    :data:`FFT_MAX_BLOCKS` blocks of about equal size. An unknown batch size counts
    as :data:`FFT_ASSUMED_BATCH`.
    """
    piece_values = piece_values or FFT_PIECE_VALUES
    per_order = (batch or FFT_ASSUMED_BATCH) * frequencies
    if per_order * order <= piece_values:
        fitting = piece_values // (per_order * order)
        return max(g for g in range(1, channels + 1) if channels % g == 0 and g <= fitting), order
    blocks = min(-(-per_order * order // piece_values), FFT_MAX_BLOCKS, order)
    return 1, -(-order // blocks)


def fft_piece_values(x) -> int:
    """Complex values in one piece of :func:`per_channel_fft_convolution` of ``x``:
    :data:`FFT_ACCELERATOR_PIECE_VALUES` on an accelerator,
    :data:`FFT_TORCH_CPU_PIECE_VALUES` on PyTorch's CPU, else :data:`FFT_PIECE_VALUES`.

    With the pieces written in place on PyTorch, the ``seq-ff-full`` training step
    took 0.71-0.79x as long in pieces of 2**17 values (16 blocks of 16 orders) as in
    pieces of 2**19 (three runs of ``python benchmarks/fft_pieces.py --backend torch
    --repeats 9 --piece-values 131072``, 7-9 repeats); 20 orders took 0.78x, 32
    orders 1.09x. In the same comparison JAX took 1.18x as long and TensorFlow 1.00x.
    """
    if on_accelerator(x):
        return FFT_ACCELERATOR_PIECE_VALUES
    if keras.backend.backend() == "torch":
        return FFT_TORCH_CPU_PIECE_VALUES
    return FFT_PIECE_VALUES


def on_accelerator(x) -> bool:
    """Whether the backend computes ``x`` on an accelerator (a GPU or TPU), not the CPU.

    PyTorch: the tensor's device. JAX: the default device (``keras.device`` sets it),
    else the default backend; arrays traced inside a compiled function have no device
    yet. TensorFlow: the tensor's device where it has one, else whether a GPU is
    visible (TensorFlow places operations there first).
    """
    backend = keras.backend.backend()
    if backend == "torch":
        return x.device.type != "cpu"
    if backend == "jax":
        import jax

        device = jax.config.jax_default_device
        platform = getattr(device, "platform", device) or jax.default_backend()
        return platform != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        device = getattr(x, "device", None) or ""
        if device:
            return "CPU" not in device.rsplit("device:", 1)[-1].upper()
        return bool(tf.config.list_logical_devices("GPU"))
    return False


def _rfft(x, fft_length: int):
    """The spectrum of ``x`` over its last axis, as a complex tensor of the backend.

    ``keras.ops.rfft`` returns (real, imaginary) pairs instead: a product of pairs
    takes four real products, and ``keras.ops.irfft`` on PyTorch joins the pair with
    ``torch.complex``, which keeps both parts of its input for the backward pass, the
    size of the whole product. On JAX and TensorFlow complex products were 1.2-1.3x
    faster per training step than pairs. On PyTorch, for ``seq-ff-full`` (see
    :func:`per_channel_fft_convolution`), pairs took 1.36-1.39x as long per training
    step and 1.49-1.56x per forward pass as complex tensors (two runs alternating
    both forms in one process), and the peak memory increase fell from 2,039 to 983
    MiB (``python benchmarks/bench.py --cases seq-ff-full``).
    """
    return _backend_fft("rfft", x, fft_length)


def _irfft(spectrum, fft_length: int):
    """The inverse of :func:`_rfft` over the last axis (``fft_length`` real points)."""
    return _backend_fft("irfft", spectrum, fft_length)


def _backend_fft(name: str, x, fft_length: int):
    """The backend's own ``rfft`` or ``irfft`` (``name``) of ``x`` over its last axis."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return getattr(tf.signal, name)(x, [fft_length])
    if backend == "torch":
        import torch

        return getattr(torch.fft, name)(x, fft_length)
    if backend == "jax":
        import jax.numpy as jnp

        return getattr(jnp.fft, name)(x, fft_length)
    raise NotImplementedError(
        f"The per-channel FFT convolution runs on the JAX, TensorFlow and PyTorch "
        f"backends, not on {backend!r}: use conv_mode='scan' or 'raw'."
    )


def causal_convolution_direct(signal, response):
    """Every step of ``m_t = sum_k H[k] v_{t-k}``, as a direct (sliding) convolution.

    Costs ``steps * length`` products per output; a truncated response shorter
    than the sequence makes it cheaper. Shapes as in :func:`causal_convolution_fft`.
    """
    batch, channels = ops.shape(signal)[0], ops.shape(signal)[2]
    steps, length = static_size(signal, 1), static_size(response, 0)
    kernel = ops.flip(response, axis=0)
    if len(response.shape) == 2:
        order = static_size(response, 1)
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
    response = ops.flip(_fit_length(response, static_size(signal, 1)), axis=0)
    if len(response.shape) == 2:
        return ops.einsum("btc,tn->bcn", signal, response)
    return ops.einsum("btc,tkc->bk", signal, response)


def static_size(tensor, axis: int) -> int | None:
    """The size of ``axis`` of ``tensor`` as a Python int (None where it is unknown).

    Loops and lengths here need plain integers, but while PyTorch traces a model
    (``torch.onnx.export``, which ``model.export(format="onnx")`` uses) a tensor's
    sizes are 0-d tensors; they are read once here, as the constants they are. While
    JAX exports a model for any size of an axis (``model.export`` with a ``None``
    dimension), that axis's size is symbolic: unknown, as ``None``.
    """
    size = tensor.shape[axis]
    if size is None or _is_symbolic_size(size):
        return None
    return int(size)


def _is_symbolic_size(size) -> bool:
    """Whether ``size`` is a symbolic dimension of ``jax.export`` (a size left unknown)."""
    if isinstance(size, int) or keras.backend.backend() != "jax":
        return False
    from jax import export

    return export.is_symbolic_dim(size)


def _fit_length(response, steps: int):
    """``response[:steps]``, padded with zero rows when it is shorter."""
    length = static_size(response, 0)
    if length >= steps:
        return response[:steps]
    padding = [[0, steps - length]] + [[0, 0]] * (len(response.shape) - 1)
    return ops.pad(response, padding)


def _fft_length(minimum: int) -> int:
    """Smallest power of two ``>= minimum`` (fast for every FFT backend)."""
    return 1 << max(minimum - 1, 0).bit_length()
