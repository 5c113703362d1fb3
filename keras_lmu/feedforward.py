"""``LMUFeedforward``: the LMU memory computed in parallel over the whole sequence."""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops
from keras.src import backend as keras_backend

from keras_lmu import legendre, validation
from keras_lmu import ops as lmu_ops
from keras_lmu.hidden_cells import flatten_states, nest_states, output_state_index
from keras_lmu.memory import LegendreMemory, freeze_sublayers_if_untrainable

CONV_MODES = ("fft", "raw", "scan")
#: Chunk length of ``conv_mode="scan"`` (measured: see docs/benchmarks-parallel.md).
SCAN_CHUNK = 32


@keras.saving.register_keras_serializable(package="keras-lmu")
class LMUFeedforward(LegendreMemory):
    """A Legendre Memory Unit whose memory is computed for all steps at once.

    Without recurrence into the memory the LMU is a linear time-invariant system,
    and the memory sequence is the causal convolution of the encoded input
    ``v_t = kernel^T x_t (+ bias)`` with the impulse response ``H[k] = A_bar^k B_bar``
    (Chilkuri & Eliasmith, 2021)::

        m_t[d] = sum_{k <= t} H[k] v_{t-k}[d]

    With ``memory_to_memory`` the memory is still linear: ``s_t = M s_{t-1} + G v_t``
    with ``M = I (x) A_bar + G R^T`` and ``G = I (x) B_bar``, so the same convolution
    applies with the response ``M^k G``. When only the last step is read
    (``return_sequences=False`` and a hidden component without state), only
    ``m_{T-1} = sum_t H[T-1-t] v_t`` is computed, a single contraction over time.

    Parameters
    ----------
    memory_d, order, theta, hidden_cell, input_to_hidden, discretizer,
    kernel_initializer, kernel_regularizer, use_bias, bias_initializer,
    bias_regularizer, dropout
        As in :class:`LMUCell`. A ``hidden_cell`` with state runs over the memory
        sequence as a Keras RNN; a stateless one is applied at every step (or only
        the last one when ``return_sequences=False``).
    return_sequences : bool
        Return every step's output, or only the last one.
    conv_mode : {"fft", "raw", "scan"}
        How the full memory sequence is computed: FFT convolution, direct
        convolution, or a chunked scan of the recurrence (chunks of
        ``SCAN_CHUNK`` steps by one matrix product, then a parallel scan across
        chunks; fast for a small memory, see
        :func:`keras_lmu.ops.chunked_linear_recurrence`).
    truncate_ir : float or None
        With ``conv_mode="raw"``, drop the tail of the impulse response holding
        less than this share of its total magnitude over the sequence's steps
        (:func:`keras_lmu.legendre.truncation_length`; so where it is cut depends on
        the sequence's length), None keeps it all. Only a fixed memory's response
        (not with trainable ``theta``, ``A``, ``B`` or ``memory_to_memory``, whose
        response is computed in the graph), and not where the length is unknown
        while tracing: the memory is then computed step by step, exactly.
    trainable_theta, memory_to_memory, recurrent_initializer,
    recurrent_regularizer, recurrent_dropout, trainable_A, trainable_B, seed
        As in :class:`LMUCell`. With trainable parameters the impulse response is
        recomputed in the graph by repeated squaring. ``recurrent_dropout`` needs
        the step-by-step form: use :class:`LMU` or ``RNN(LMUCell)``.
    input_d : int, optional
        As in :class:`LMUCell`, by keyword: the number of input features, checked
        against the input when the layer is built.
    """

    def __init__(
        self,
        memory_d,
        order,
        theta,
        hidden_cell,
        input_to_hidden=False,
        discretizer="zoh",
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        use_bias=False,
        bias_initializer="zeros",
        bias_regularizer=None,
        dropout=0,
        return_sequences=False,
        conv_mode="fft",
        truncate_ir=1e-4,
        trainable_theta=False,
        memory_to_memory=False,
        recurrent_initializer="orthogonal",
        recurrent_regularizer=None,
        recurrent_dropout=0,
        trainable_A=False,
        trainable_B=False,
        seed=None,
        **kwargs,
    ):
        if kwargs.pop("hidden_to_memory", False):
            raise ValueError(
                "LMUFeedforward has no hidden_to_memory: its memory is computed from the "
                "input alone, before the hidden layer; use LMU or "
                "keras.layers.RNN(LMUCell(...)), which run step by step with it, got "
                "hidden_to_memory=True"
            )
        super().__init__(
            memory_d,
            order,
            theta,
            hidden_cell,
            trainable_theta=trainable_theta,
            memory_to_memory=memory_to_memory,
            input_to_hidden=input_to_hidden,
            discretizer=discretizer,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            use_bias=use_bias,
            bias_initializer=bias_initializer,
            bias_regularizer=bias_regularizer,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            trainable_A=trainable_A,
            trainable_B=trainable_B,
            **kwargs,
        )
        if self.recurrent_dropout > 0 and self.memory_to_memory:
            raise ValueError(
                "LMUFeedforward cannot apply recurrent_dropout (the dropped memory differs "
                "per sample and step); use LMU or keras.layers.RNN(LMUCell(...)), got "
                f"recurrent_dropout={recurrent_dropout!r}"
            )
        self.return_sequences = validation.flag("return_sequences", return_sequences)
        self.conv_mode = validation.choice("conv_mode", conv_mode, CONV_MODES)
        self.truncate_ir = validation.truncation(truncate_ir)
        self._built_steps = None
        self._responses = {}
        self._scan_constants = {}
        self._warned_unknown_length = False
        self._awaiting_variables = False
        self._load_error = None
        if self._hidden_is_rnn_cell:
            # In the LMU's dtype: by default Keras would give the RNN the global floatx.
            self.hidden_rnn = _HiddenCellRNN(
                self.hidden_cell,
                return_sequences=return_sequences,
                return_state=True,
                dtype=self.dtype_policy,
            )

    # -- building -----------------------------------------------------------------

    def build(self, input_shape):
        _, steps, input_d = validation.sequence_shape(self.name, input_shape)
        self._build_memory(int(input_d))
        self._check_hidden_output(int(input_d))
        hidden_input = (None, steps, self._hidden_input_size(int(input_d)))
        if self._hidden_is_rnn_cell:
            self.hidden_rnn.build(hidden_input)
        elif self.hidden_cell is not None and not self.hidden_cell.built:
            self.hidden_cell.build(hidden_input[::2])
        self._built_steps = steps
        # Keras then checks the number of features of every input, naming the layer.
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: input_d})
        freeze_sublayers_if_untrainable(self)
        self.built = True

    def compute_output_shape(self, input_shape):
        batch, steps, input_d = validation.sequence_shape(self.name, input_shape)
        size = self._hidden_output_size(input_d)
        return (batch, steps, size) if self.return_sequences else (batch, size)

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    # -- impulse response -------------------------------------------------------------

    @property
    def impulse_response(self) -> np.ndarray | None:
        """The float64 impulse response of a fixed memory for the built sequence length.

        Shape (steps, order), cut to the ``truncate_ir`` length with
        ``conv_mode="raw"``; None while the layer is not built, for an unknown length
        and for a trainable memory (whose response is computed in the graph). It is
        computed when first needed (the scan form never needs it).
        """
        if self._built_steps is None or self.has_trainable_system:
            return None
        return self._fixed_response(self._built_steps)

    @property
    def _truncates(self) -> bool:
        return self.conv_mode == "raw" and self.truncate_ir is not None

    def _fixed_response(self, steps: int) -> np.ndarray:
        """The (possibly truncated) float64 impulse response of a fixed memory."""
        key = (steps, self._truncates)  # (an LMU may change conv_mode between calls)
        if key not in self._responses:
            A_bar, B_bar = self._fixed_system
            response = legendre.impulse_response(A_bar, B_bar, steps)
            if self._truncates:
                response = response[: legendre.truncation_length(response, self.truncate_ir)]
            self._responses[key] = response
        return self._responses[key]

    def _memory_response(self, steps: int):
        """``H`` for ``steps`` steps: (steps, order), or (steps, D * order, D) with
        memory_to_memory."""
        dtype = self.memory_dtype
        if self.memory_to_memory:
            return lmu_ops.impulse_response(
                *self._state_difference(), steps, self.powers_near_identity
            )
        if not self.has_trainable_system:
            return ops.convert_to_tensor(self._fixed_response(steps), dtype)
        return lmu_ops.impulse_response(
            *self.discrete_difference(), steps, self.powers_near_identity
        )

    # -- computation ----------------------------------------------------------------------

    def call(self, inputs, training=False, mask=None):
        validation.length_fixed_when_traced(self.name, self._built_steps, inputs)
        return self.run(inputs, training=training, mask=mask)[0]

    def run(
        self, inputs, training=False, mask=None, initial_state=None, zero_output_for_mask=False
    ):
        """Outputs and final states ``[memory, *hidden_states]``, as a Keras RNN gives them.

        Parameters
        ----------
        inputs
            Shape (batch, steps, features).
        training : bool
            Whether dropout is active.
        mask
            Optional boolean (batch, steps): masked steps leave the state unchanged
            and repeat the previous output (zeros with ``zero_output_for_mask``).
            The memory is still computed in parallel: with the masked inputs
            zeroed where the mask is padding, or over the unmasked steps gathered
            together (a masked step holds the memory).
        initial_state
            Optional ``[memory, *hidden_states]`` to continue from; the memory's
            free response ``A_bar^(t+1) m_0`` is added to the parallel result.
        zero_output_for_mask : bool
            Under a mask, output zeros at masked steps instead of repeating the
            previous output.

        Returns
        -------
        tuple
            The output and ``[memory, *hidden_states]``, the final memory in
            :attr:`memory_dtype` (float32 under mixed precision).
        """
        validation.sequence_and_mask(self.name, inputs, mask)
        if training and self.dropout > 0:
            batch, _, features = ops.shape(inputs)
            inputs = keras.random.dropout(
                inputs, self.dropout, noise_shape=(batch, 1, features), seed=self.seed_generator
            )
        encoded = self.encode(inputs)  # the memory's arithmetic is in self.memory_dtype
        initial_memory = None if initial_state is None else initial_state[0]
        hidden_states = None if initial_state is None else list(initial_state[1:])
        final_memory = None
        if lmu_ops.static_size(inputs, 1) is None:
            memory = self._memory_by_recurrence(encoded, initial_memory, mask)
        elif (
            not self.return_sequences
            and not self._hidden_is_rnn_cell
            and (mask is None or initial_memory is None)
        ):
            output, states = self._last_output(
                inputs, encoded, initial_memory, mask, training, zero_output_for_mask
            )
            return self._in_compute_dtype(output, states)
        elif mask is not None:
            memory, final_memory = self._masked_memories(encoded, initial_memory, mask)
        else:
            memory = self._all_memories(encoded, initial_memory)
        if final_memory is None:  # the last step's memory, held there under a mask
            final_memory = memory[:, -1]
        memory = ops.cast(memory, self.compute_dtype)
        output, hidden_states = self._hidden_sequence(
            memory, inputs, training, mask, hidden_states, zero_output_for_mask
        )
        return self._in_compute_dtype(output, [final_memory] + hidden_states)

    def _in_compute_dtype(self, output, states: list) -> tuple:
        """The output and hidden states in the compute dtype, as ``LMUCell`` returns
        them (a hidden layer with a dtype policy of its own computes in that one); the
        memory as it is."""
        dtype = self.compute_dtype
        memory, *hidden_states = states
        return ops.cast(output, dtype), [memory, *(ops.cast(s, dtype) for s in hidden_states)]

    def _last_output(
        self, inputs, encoded, initial_memory, mask, training, zero_output_for_mask=False
    ):
        """The output and states of the last step alone, from only the last memory.

        Under a mask (without an initial memory) the unmasked steps are gathered to
        the end of the sequence, the masked ones zeroed before them: the last memory
        of that sequence is the masked sequence's, and the output is computed from the
        input of its last unmasked step (zeros where every step is masked, and with
        ``zero_output_for_mask`` where the last step is; the state keeps it).
        """
        last_input = inputs[:, -1]
        if mask is not None:
            encoded = lmu_ops.gather_unmasked_steps(encoded, mask, at_end=True)
            last = lmu_ops.last_unmasked_index(mask)[:, -1:]  # (batch, 1), -1 if none
            last_input = lmu_ops.gather_steps(inputs, ops.maximum(last, 0))[:, 0]
        final_memory = self._last_memory(encoded, initial_memory)
        output = self._stateless_hidden(
            ops.cast(final_memory, self.compute_dtype), last_input, training
        )
        if mask is not None:
            output = ops.where(last >= 0, output, ops.zeros((), output.dtype))
        hidden_states = [output] if self.hidden_cell is not None else []
        if mask is not None and zero_output_for_mask:
            shown = ops.expand_dims(ops.cast(mask[:, -1], "bool"), -1)
            output = ops.where(shown, output, ops.zeros((), output.dtype))
        return output, [final_memory] + hidden_states

    def _masked_memories(self, encoded, initial_memory, mask):
        """The memory at every unmasked step under a mask, and the final memory,
        computed in parallel.

        A masked step leaves the memory unchanged, so the memory after step ``t`` is
        the unmasked memory of the unmasked steps alone, after the ``count_t`` of them
        that come up to ``t`` (before the first one, the initial memory). Where the
        unmasked steps of every sequence follow each other (padding before or after
        them, and no initial memory or no padding before), that is the memory of the
        sequence with its masked inputs zeroed, at the unmasked steps; otherwise the
        unmasked steps are gathered to the front of the sequence (the rest zeroed)
        and every step's memory is gathered back. The memory at masked steps is that
        of the last unmasked step in the second case and unspecified in the first:
        the outputs of masked steps are held from the unmasked ones.
        """

        def in_place():
            zeroed = ops.where(ops.expand_dims(mask, -1), encoded, ops.zeros((), encoded.dtype))
            return self._all_memories(zeroed, initial_memory)

        def gathered():
            signal = lmu_ops.gather_unmasked_steps(encoded, mask)
            memory = self._all_memories(signal, initial_memory)
            return lmu_ops.gather_steps(memory, ops.maximum(lmu_ops.unmasked_counts(mask) - 1, 0))

        contiguous = lmu_ops.unmasked_steps_are_contiguous(
            mask, from_the_start=initial_memory is not None
        )
        memory = ops.cond(contiguous, in_place, gathered)
        last = lmu_ops.last_unmasked_index(mask)[:, -1:]  # (batch, 1), -1 if none
        final_memory = lmu_ops.gather_steps(memory, ops.maximum(last, 0))[:, 0]
        before_any = ops.zeros((), memory.dtype)
        if initial_memory is not None:
            before_any = ops.cast(initial_memory, memory.dtype)
        return memory, ops.where(last >= 0, final_memory, before_any)

    def _free_response(self, initial_memory, steps: int):
        """``s_t = M^(t+1) s_0`` for ``t < steps``: how the initial memory evolves without input."""
        batch = ops.shape(initial_memory)[0]
        if self.memory_to_memory:
            difference = self._state_difference()[0]
            states = ops.cast(initial_memory, difference.dtype)  # (batch, D*N)
        else:
            difference = self.discrete_difference()[0]
            states = ops.reshape(ops.cast(initial_memory, difference.dtype), (-1, self.order))
        states = ops.transpose(states)  # one column per state
        first = states + ops.einsum("ij,jb->ib", difference, states)  # M s_0
        # (steps, size, states)
        response = lmu_ops.impulse_response(difference, first, steps, self.powers_near_identity)
        response = ops.transpose(response, (2, 0, 1))
        if not self.memory_to_memory:  # (batch * D, steps, N) -> (batch, steps, D * N)
            response = ops.reshape(response, (batch, self.memory_d, steps, self.order))
            response = ops.reshape(ops.transpose(response, (0, 2, 1, 3)), (batch, steps, -1))
        return response

    def _state_difference(self):
        """``M - I`` and ``G`` of the memory_to_memory system ``s_t = M s_{t-1} + G v_t``,
        ``M = I (x) A_bar + G R^T`` and ``G = I (x) B_bar``: ``M - I = I (x) (A_bar - I)
        + G R^T``, kept as a difference from the identity as ``A_bar - I`` is
        (:meth:`discrete_difference`)."""
        difference, B_bar = self.discrete_difference()
        G = _block_diagonal(ops.expand_dims(B_bar, 1), self.memory_d)
        difference = _block_diagonal(difference, self.memory_d) + ops.einsum(
            "id,jd->ij", G, ops.cast(self.recurrent_kernel, self.memory_dtype)
        )
        return difference, G

    @lmu_ops.full_float32_precision()
    def _last_memory(self, encoded, initial_memory=None):
        steps = lmu_ops.static_size(encoded, 1)
        response = self._memory_response(steps)
        memory = lmu_ops.last_step_memory(encoded, response)
        memory = ops.reshape(memory, (-1, self.memory_d * self.order))
        if initial_memory is not None:
            memory = memory + self._free_response_last(initial_memory, steps)
        return memory

    def _free_response_last(self, initial_memory, steps: int):
        """``M^steps s_0``: only the final step of the free response."""
        system = self._state_difference() if self.memory_to_memory else self.discrete_difference()
        matrix = lmu_ops.matrix_power(system[0], steps, self.powers_near_identity)
        if self.memory_to_memory:
            return ops.einsum("ij,bj->bi", matrix, ops.cast(initial_memory, matrix.dtype))
        states = ops.reshape(
            ops.cast(initial_memory, matrix.dtype), (-1, self.memory_d, self.order)
        )
        return ops.reshape(
            ops.einsum("ij,bdj->bdi", matrix, states), (-1, self.memory_d * self.order)
        )

    @lmu_ops.full_float32_precision()
    def _all_memories(self, encoded, initial_memory=None):
        steps = lmu_ops.static_size(encoded, 1)
        if self.conv_mode == "scan":
            return self._memories_by_scan(encoded, initial_memory)
        response = self._memory_response(steps)
        if self.conv_mode == "fft":
            memory = lmu_ops.causal_convolution_fft(
                encoded, response, fixed_response=not self.has_trainable_system
            )
        else:
            memory = lmu_ops.causal_convolution_direct(encoded, response)
        memory = ops.reshape(memory, (-1, steps, self.memory_d * self.order))
        if initial_memory is not None:
            memory = memory + self._free_response(initial_memory, steps)
        return memory

    def _memories_by_scan(self, encoded, initial_memory=None):
        """Every step's memory by a chunked scan of ``s_t = M s_{t-1} + G v_t``
        (:func:`keras_lmu.ops.chunked_linear_recurrence`)."""
        batch, steps = ops.shape(encoded)[0], lmu_ops.static_size(encoded, 1)
        chunk = min(SCAN_CHUNK, steps)
        chunks = -(-steps // chunk)
        if self.memory_to_memory:
            difference, G = self._state_difference()
            signal = encoded
            initial = initial_memory
        else:  # memory_d independent memories of one input each
            difference, B_bar = self.discrete_difference()
            G = ops.expand_dims(B_bar, 1)
            signal = ops.reshape(ops.transpose(encoded, (0, 2, 1)), (-1, steps, 1))
            initial = None
            if initial_memory is not None:
                initial = ops.reshape(initial_memory, (-1, self.order))
        if self._fixed_system is not None and not self.memory_to_memory:
            # A fixed memory: the powers of A_bar in float64 (as the FFT's response).
            dtype = self.memory_dtype
            transition, response, carry_powers = (
                ops.convert_to_tensor(value, dtype)
                for value in self._fixed_scan_constants(chunk, chunks)
            )
        else:  # computed in the graph, from A_bar - I (keras_lmu.ops.impulse_response)
            identity = ops.eye(lmu_ops.static_size(difference, 0), dtype=difference.dtype)
            near = self.powers_near_identity
            transition = lmu_ops.impulse_response(difference, identity + difference, chunk, near)
            response = lmu_ops.impulse_response(difference, G, chunk, near)  # H[n] = M^n G
            carry_powers = None  # squared from M^C (transition[-1])
            if near:  # M^C, M^(2C), M^(4C), ...
                carry_powers = lmu_ops.doubled_powers(
                    lmu_ops.power_difference(difference, chunk), max(chunks - 1, 1).bit_length()
                )
        memory = lmu_ops.chunked_linear_recurrence(
            signal, response, transition, initial, carry_powers
        )
        if not self.memory_to_memory:  # (batch * D, steps, N) -> (batch, steps, D * N)
            memory = ops.reshape(memory, (batch, self.memory_d, steps, self.order))
            memory = ops.transpose(memory, (0, 2, 1, 3))
        return ops.reshape(memory, (batch, steps, self.memory_d * self.order))

    def _fixed_scan_constants(self, chunk: int, chunks: int):
        """float64 ``A_bar^(n+1)`` and ``A_bar^n B_bar`` for ``n < chunk``, and
        ``A_bar^(chunk * 2^k)`` for the scan over ``chunks`` chunks."""
        if (chunk, chunks) in self._scan_constants:
            return self._scan_constants[chunk, chunks]
        A_bar, B_bar = self._fixed_system
        transition = [A_bar]
        while len(transition) < chunk:
            transition.append(A_bar @ transition[-1])
        response = legendre.impulse_response(A_bar, B_bar, chunk)[:, :, None]
        carry_powers = [transition[-1]]
        while len(carry_powers) < max(chunks - 1, 1).bit_length():
            carry_powers.append(carry_powers[-1] @ carry_powers[-1])
        # A tuple of arrays, not of lists: TensorFlow's tracking of layer attributes
        # cannot save a dict that maps to mutable values (model.export failed).
        constants = tuple(np.stack(value) for value in (transition, response, carry_powers))
        self._scan_constants[chunk, chunks] = constants
        return constants

    @lmu_ops.full_float32_precision()
    def _memory_by_recurrence(self, encoded, initial_memory=None, mask=None):
        """Exact step-by-step memory, for lengths unknown while tracing."""
        if not self._warned_unknown_length:
            truncation = (
                f" (exactly: truncate_ir={self.truncate_ir!r} does not apply)"
                if self._truncates
                else ""
            )
            warnings.warn(
                f"{self.name}: the sequence length is unknown while tracing, so the "
                f"memory is computed step by step{truncation}; give the input a fixed "
                "length (e.g. keras.Input((steps, features))) to compute it in parallel.",
                stacklevel=3,
            )
            self._warned_unknown_length = True
        difference, B_bar = self.discrete_difference()
        batch = ops.shape(encoded)[0]
        dtype = self.memory_dtype
        if self.memory_to_memory:
            recurrent_kernel = ops.cast(self.recurrent_kernel, dtype)

        def update(memory, u):
            if self.memory_to_memory:
                u = u + ops.einsum("bk,kd->bd", ops.reshape(memory, (batch, -1)), recurrent_kernel)
            change = ops.einsum("bdj,ij->bdi", memory, difference)  # (A_bar - I) m
            return memory + (change + ops.expand_dims(u, -1) * B_bar)

        def step(memory, u):
            memory = update(memory, u)
            return memory, memory

        def masked_step(memory, inputs):
            u, keep = inputs[:, :-1], inputs[:, -1:] > 0
            memory = ops.where(ops.expand_dims(keep, -1), update(memory, u), memory)
            return memory, memory

        if initial_memory is None:
            initial = ops.zeros((batch, self.memory_d, self.order), dtype=dtype)
        else:
            initial = ops.reshape(
                ops.cast(initial_memory, dtype), (batch, self.memory_d, self.order)
            )
        if mask is None:
            _, memory = ops.scan(step, initial, ops.transpose(encoded, (1, 0, 2)))
        else:
            # The mask as one more feature: Keras's TensorFlow scan fails on several
            # sequences of unknown length.
            keep = ops.expand_dims(ops.cast(mask, encoded.dtype), -1)
            sequence = ops.transpose(ops.concatenate([encoded, keep], axis=-1), (1, 0, 2))
            _, memory = ops.scan(masked_step, initial, sequence)
        memory = ops.transpose(memory, (1, 0, 2, 3))
        return ops.reshape(memory, (batch, -1, self.memory_d * self.order))

    def _stateless_hidden(self, memory, inputs, training):
        """The hidden component without state (or none) on one step or on every step."""
        hidden_input = memory
        if self.input_to_hidden:
            hidden_input = ops.concatenate([memory, ops.cast(inputs, memory.dtype)], axis=-1)
        if self.hidden_cell is None:
            return hidden_input
        if len(hidden_input.shape) == 2:
            return self.hidden_cell(hidden_input, training=training)
        batch, steps = ops.shape(hidden_input)[0], ops.shape(hidden_input)[1]
        flat = ops.reshape(hidden_input, (-1, hidden_input.shape[-1]))
        output = self.hidden_cell(flat, training=training)
        return ops.reshape(output, (batch, steps, output.shape[-1]))

    def _hidden_sequence(self, memory, inputs, training, mask, hidden_states, zero_output_for_mask):
        """Outputs and final hidden states from the whole memory sequence."""
        if self._hidden_is_rnn_cell:
            cell = self.hidden_cell
            # Under a mask, the outputs of masked steps are held here, the same way on
            # every backend: Keras's JAX loop repeats the first state at masked steps
            # before the first unmasked one (the initial state, where Keras's other
            # loops give zeros), and a StackedRNNCells outputs another state.
            output_index = output_state_index(cell)
            hold_outputs = mask is not None and not zero_output_for_mask
            self.hidden_rnn.zero_output_for_mask = zero_output_for_mask or hold_outputs
            hidden_input = memory
            if self.input_to_hidden:
                hidden_input = ops.concatenate([memory, ops.cast(inputs, memory.dtype)], axis=-1)
            initial_states = hidden_states
            if hidden_states is not None:
                initial_states = nest_states(cell, hidden_states)
            output, *states = self.hidden_rnn(
                hidden_input, initial_state=initial_states, mask=mask, training=training
            )
            states = flatten_states(states)
            if hold_outputs:
                if self.return_sequences:
                    output = lmu_ops.hold_masked_steps(output, mask)
                else:  # the output of the last unmasked step (held in the states), if any
                    any_step = ops.any(ops.cast(mask, "bool"), axis=1, keepdims=True)
                    held = states[output_index]
                    output = ops.where(any_step, held, ops.zeros((), held.dtype))
            return output, states
        outputs = self._stateless_hidden(memory, inputs, training)
        last = outputs[:, -1]
        if mask is not None:
            last = lmu_ops.hold_masked_steps(outputs, mask)[:, -1]
            outputs = lmu_ops.hold_masked_steps(outputs, mask, zero_output_for_mask)
        # The last step's output: zero where it is masked with zero_output_for_mask (as
        # in Keras's RNN layers); the state keeps the last unmasked step's output.
        output = outputs if self.return_sequences else outputs[:, -1]
        if self.hidden_cell is None:
            return output, []
        if mask is not None and hidden_states:
            # a sequence that is masked throughout keeps its initial hidden state
            any_step = ops.any(ops.cast(mask, "bool"), axis=1, keepdims=True)
            last = ops.where(any_step, last, ops.cast(hidden_states[0], last.dtype))
        return output, [last]

    # -- saving -----------------------------------------------------------------------------

    def load_own_variables(self, store):
        # Inside an ``LMU``, a file may hold these variables one level down, where
        # ``RNN(LMUCell)`` keeps them; ``_VariablesInCell`` loads them from there.
        own = self._trainable_variables + self._non_trainable_variables
        if own and len(store.keys()) == 0 and hasattr(self, "cell"):
            if self._load_error is not None:
                # Keras visits this layer again (through ``LMU._memory_layer``, with
                # nothing to load) after a failed visit, and counts it as loaded if the
                # second visit succeeds: fail again rather than hide the first error.
                raise self._load_error
            self._awaiting_variables = True
            return
        self._awaiting_variables = False
        try:
            super().load_own_variables(store)
        except ValueError as error:
            self._load_error = error
            raise

    def _start_loading(self):
        """Forget the last load (the ``LMU`` holding this layer calls it as a load starts)."""
        self._load_error = None
        self._awaiting_variables = False

    def get_config(self):
        config = {**super().get_config(), **self._memory_config()}
        for key in ("hidden_to_memory",):
            config.pop(key)
        config.update(
            return_sequences=self.return_sequences,
            conv_mode=self.conv_mode,
            truncate_ir=self.truncate_ir,
            input_d=self.input_d,
        )
        return config


def _block_diagonal(block, copies: int):
    """``I_copies (x) block``: ``copies`` copies of ``block`` on the diagonal."""
    if copies == 1:
        return block
    rows, columns = block.shape
    blocks = ops.einsum("de,ij->diej", ops.eye(copies, dtype=block.dtype), block)
    return ops.reshape(blocks, (copies * rows, copies * columns))


class _HiddenCellRNN(keras.layers.RNN):
    """``keras.layers.RNN`` of the hidden cell over the memory sequence, whose steps
    return each of the cell's states in the dtype it came in.

    Some Keras operations return float32 for float64 inputs on JAX (``keras.ops.tanh``
    in Keras 3.15, and so ``SimpleRNNCell``'s step), and JAX's loop refuses states whose
    dtype changes from one step to the next (``LMUCell`` casts its own the same way).
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cell_kwargs = {"training": training} if self.cell._call_has_training_arg else {}

        def step(inputs, states):
            output, new_states = self.cell(inputs, states, **cell_kwargs)
            if not keras.tree.is_nested(new_states):
                new_states = [new_states]
            cast = [
                ops.cast(new, old.dtype)
                for new, old in zip(
                    keras.tree.flatten(new_states), keras.tree.flatten(states), strict=True
                )
            ]
            return output, keras.tree.pack_sequence_as(new_states, cast)

        if not keras.tree.is_nested(initial_state):
            initial_state = [initial_state]
        return keras_backend.rnn(
            step,
            sequences,
            initial_state,
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )
