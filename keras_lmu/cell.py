"""``LMUCell``: one step of the Legendre Memory Unit, for ``keras.layers.RNN``."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
from keras import ops
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

from keras_lmu import ops as lmu_ops
from keras_lmu.hidden_cells import (
    calls_directly,
    dropout_cells,
    flatten_states,
    nest_states,
    output_state_index,
    variables_assigned_per_call,
)
from keras_lmu.memory import LegendreMemory, freeze_sublayers_if_untrainable


@keras.saving.register_keras_serializable(package="keras-lmu")
class LMUCell(DropoutRNNCell, LegendreMemory):
    """One step of a Legendre Memory Unit (Voelker, Kajić & Eliasmith, 2019).

    For input ``x_t`` and state ``[s_{t-1}, *hidden_states]``::

        u_t = kernel^T [x_t; h_{t-1} if hidden_to_memory]
              (+ recurrent_kernel^T s_{t-1} if memory_to_memory) (+ bias)
        m_t[d] = A_bar m_{t-1}[d] + B_bar u_t[d]            for d < memory_d
               (computed as m_{t-1}[d] + ((A_bar - I) m_{t-1}[d] + B_bar u_t[d]))
        h_t, hidden_states = hidden_cell([s_t; x_t if input_to_hidden], hidden_states)

    where ``s_t`` is the flattened memory ``[m_t[0], ..., m_t[memory_d - 1]]``
    and ``A_bar, B_bar`` discretize ``theta * dm/dt = A m + B u`` with dt = 1.

    Parameters
    ----------
    memory_d : int
        Number of independent memories (dimensions of ``u``).
    order : int
        Legendre coefficients per memory.
    theta : float
        Length of the sliding window, in steps (initial value if trainable).
    hidden_cell : keras.layers.Layer or None
        A Keras RNN cell (e.g. ``SimpleRNNCell``, or a ``StackedRNNCells``, whose
        last cell's output is fed back with ``hidden_to_memory``), a layer without
        state (e.g. ``Dense``), or None, in which case the output is the memory (plus
        the input when ``input_to_hidden``). Its states, however nested, are flat in
        this cell's states ``[memory, *hidden_states]``. With ``hidden_to_memory``,
        ``h_{t-1}`` is read from the cell's first state (its last cell's, in a
        ``StackedRNNCells``), which Keras's cells keep equal to their output: a cell of
        one's own must do the same. A layer without state must output
        ``(batch, features)``.
    trainable_theta : bool
        Learn ``theta`` through the weight ``theta_inv = 1 / theta``.
    hidden_to_memory, memory_to_memory, input_to_hidden : bool
        Optional connections: ``h_{t-1}`` and ``s_{t-1}`` into the encoder, and
        ``x_t`` into the hidden component.
    discretizer : {"zoh", "euler"}
        Zero-order hold (exact for piecewise-constant input) or forward Euler.
    kernel_initializer : initializer or None
        Initializer of ``kernel``; None means no kernel (the input, of size
        ``memory_d``, is fed to the memory directly).
    recurrent_initializer, kernel_regularizer, recurrent_regularizer, use_bias,
    bias_initializer, bias_regularizer
        As in Keras's RNN cells.
    dropout : float
        Fraction of the input dropped in training (one mask per sequence).
    recurrent_dropout : float
        Fraction of ``s_{t-1}`` dropped from the memory_to_memory input in training.
    input_d : int, optional
        Number of input features; required when ``hidden_cell=None`` and
        ``input_to_hidden=True``, checked against the input otherwise.
    seed : int, optional
        Seed of the dropout masks.
    trainable_A, trainable_B : bool
        Learn the continuous ``A`` (order, order) and ``B`` (order,), starting from
        the Legendre matrices; they are discretized in the graph.

    Notes
    -----
    With masks, use :class:`keras_lmu.LMU` rather than ``keras.layers.RNN(LMUCell)``:
    Keras's loops take a cell's first state to be its previous output, and this
    cell's first state is the memory. On JAX, whose loop outputs that state at a
    masked step after an unmasked one, the outputs are then wrong (the memory) where
    the output has the memory's size, and the call fails with a shape error where it
    does not; only ``hidden_cell=None`` without ``input_to_hidden``, whose output is the
    memory, is right there, except at masked steps before the first unmasked one after a
    nonzero ``initial_state``, which output that state where the others output zeros
    (as Keras's own ``SimpleRNN`` does on JAX). ``LMU`` holds states and outputs at
    masked steps itself, in both of its forms. Under mixed precision, likewise: Keras's
    ``RNN`` casts the initial states to the 16-bit compute dtype and this cell returns
    each state in the dtype it was given, so the memory is rounded to 16 bits at every
    step; ``LMU`` carries it in float32.
    """

    def __init__(
        self,
        memory_d,
        order,
        theta,
        hidden_cell,
        trainable_theta=False,
        hidden_to_memory=False,
        memory_to_memory=False,
        input_to_hidden=False,
        discretizer="zoh",
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        use_bias=False,
        bias_initializer="zeros",
        bias_regularizer=None,
        dropout=0,
        recurrent_dropout=0,
        input_d=None,
        seed=None,
        trainable_A=False,
        trainable_B=False,
        **kwargs,
    ):
        super().__init__(
            memory_d,
            order,
            theta,
            hidden_cell,
            trainable_theta=trainable_theta,
            hidden_to_memory=hidden_to_memory,
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
            input_d=input_d,
            seed=seed,
            trainable_A=trainable_A,
            trainable_B=trainable_B,
            **kwargs,
        )
        if hidden_cell is None and self.input_to_hidden and self.input_d is None:
            raise ValueError(
                "input_to_hidden=True with hidden_cell=None needs input_d (the number of "
                "input features, which sizes the output), got input_d=None"
            )
        self._variables_loaded_by_rnn = False
        self._load_error = None
        self._sequence_weights = None
        self._hidden_assigns_variables = False
        self._hidden_variables_carried = False
        # States keep the dtype they are carried in (float32 memory under mixed
        # precision); ``call`` casts what it needs.
        self._convert_input_args = False

    def __call__(self, inputs, states, *args, **kwargs):
        # Keras's conversion of the arguments is off (see __init__): NumPy arrays are
        # converted here, as Keras converts them for its own cells (floats to the compute
        # dtype), the memory to the dtype it is carried in.
        inputs = _numpy_to_tensor(inputs, self.compute_dtype)
        if isinstance(states, (list, tuple)):
            dtypes = [self.memory_dtype] + [self.compute_dtype] * (len(states) - 1)
            states = [_numpy_to_tensor(s, d) for s, d in zip(states, dtypes, strict=True)]
        return super().__call__(inputs, states, *args, **kwargs)

    @property
    def state_size(self) -> list[int]:
        """``[memory_d * order]`` and the hidden component's state sizes (its output
        size for a layer without state)."""
        return [self.memory_d * self.order] + self._hidden_state_sizes()

    @property
    def output_size(self) -> int:
        return self._hidden_output_size()

    def build(self, input_shape):
        input_d = input_shape[-1]
        if input_d is None:
            raise ValueError(f"{self.name} needs a known number of input features")
        self._build_memory(int(input_d))
        self._build_hidden(int(input_d))
        self._hidden_assigns_variables = bool(variables_assigned_per_call(self.hidden_cell))
        freeze_sublayers_if_untrainable(self)
        self.built = True

    @contextlib.contextmanager
    def hidden_variables_carried(self):
        """Within this context, the loop over the steps carries the variables that the
        hidden layers assign when called in training (``LMU``'s loop on JAX and
        TensorFlow: random states, moving statistics;
        :func:`keras_lmu.hidden_cells.variables_assigned_per_call`)."""
        object.__setattr__(self, "_hidden_variables_carried", True)
        try:
            yield
        finally:
            object.__setattr__(self, "_hidden_variables_carried", False)

    # Keras's RNN makes its cell's dropout masks before the loop over the steps and drops
    # them after it (``get_dropout_mask`` and ``get_recurrent_dropout_mask`` once before
    # the loop, ``reset_dropout_mask`` and ``reset_recurrent_dropout_mask`` after it, on
    # every call). The hidden cell's masks (or those of the cells in a hidden
    # StackedRNNCells) follow the LMUCell's: made inside the loop, they would stay cached
    # in the hidden cell past it, the same masks for every later batch (on JAX, a tracer
    # of the loop, which fails). So do the step's weights (``StepWeights``): they depend
    # on weights only, and made before the loop the steps neither slice the kernel nor,
    # for a trainable theta, A or B, re-discretize (a matrix exponential for zoh, which
    # in every step made a training step of ``RNN(LMUCell(1, 256, 784, None,
    # trainable_theta=True))`` over 200 steps 44x as long as with a fixed theta on JAX,
    # 330x on TensorFlow, 47x on PyTorch).

    def _hidden_dropout_cells(self, input_d: int):
        return dropout_cells(self.hidden_cell, self._hidden_input_size(input_d))

    def get_dropout_mask(self, step_input):
        """This cell's input mask, made before the loop over the steps; also makes the
        hidden cells' input masks and the weights every step of the loop uses."""
        object.__setattr__(self, "_sequence_weights", self.step_weights())
        return self._input_dropout_mask(step_input)

    def _input_dropout_mask(self, step_input):
        """This cell's input mask; also makes the hidden cells' input masks."""
        batch = ops.shape(step_input)[0]
        for cell, input_size, _ in self._hidden_dropout_cells(int(step_input.shape[-1])):
            cell.get_dropout_mask(ops.zeros((batch, input_size), dtype=self.compute_dtype))
        return super().get_dropout_mask(step_input)

    def get_recurrent_dropout_mask(self, step_input):
        """This cell's mask of ``s_{t-1}``; also makes the hidden cells' recurrent masks."""
        batch = ops.shape(step_input)[0]
        for cell, _, state_size in self._hidden_dropout_cells(self.input_d or 0):
            cell.get_recurrent_dropout_mask(
                ops.zeros((batch, state_size), dtype=self.compute_dtype)
            )
        return super().get_recurrent_dropout_mask(step_input)

    def reset_dropout_mask(self):
        object.__setattr__(self, "_sequence_weights", None)  # no tensor kept past the loop
        super().reset_dropout_mask()
        for cell, _, _ in self._hidden_dropout_cells(self.input_d or 0):
            cell.reset_dropout_mask()

    def reset_recurrent_dropout_mask(self):
        super().reset_recurrent_dropout_mask()
        for cell, _, _ in self._hidden_dropout_cells(self.input_d or 0):
            cell.reset_recurrent_dropout_mask()

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in self.state_size]

    def call(self, inputs, states, training=False):
        if (
            training
            and self._hidden_assigns_variables
            and keras.backend.backend() == "jax"
            and not self._hidden_variables_carried
        ):
            raise ValueError(
                f"hidden_cell {self.hidden_cell.name!r} draws random numbers or updates "
                "variables when called in training (e.g. Dropout, GaussianNoise, "
                "BatchNormalization), which JAX cannot do inside the loop over the steps of "
                "keras.layers.RNN(LMUCell) (the updates would be lost, or fail); use "
                "keras_lmu.LMU, whose loop carries them, an RNN cell's own dropout (e.g. "
                "SimpleRNNCell(units, dropout=0.2, recurrent_dropout=0.2)), or apply Dropout "
                "to the output"
            )
        memory, hidden_states = states[0], list(states[1:])
        if training and self.dropout > 0:
            inputs = inputs * self._input_dropout_mask(inputs)
        weights = self._sequence_weights or self.step_weights()
        dtype = self.memory_dtype
        carried_dtype = memory.dtype
        memory = self._memory_update(
            ops.cast(memory, dtype), ops.cast(inputs, dtype), hidden_states, weights, training
        )
        dtype = self.compute_dtype
        output, hidden_states = self._hidden_step(
            ops.cast(memory, dtype), inputs, hidden_states, training
        )
        # Each state leaves in the dtype it came in, so that the loop over steps stays
        # well typed: ``LMU`` carries the memory in float32 under mixed precision, and
        # some Keras activations return float32 for float64 inputs on JAX.
        memory = ops.cast(memory, carried_dtype)
        return ops.cast(output, dtype), [memory] + [ops.cast(s, dtype) for s in hidden_states]

    @lmu_ops.full_float32_precision()
    def _memory_update(self, memory, inputs, hidden_states, weights, training):
        """``m_t = A_bar m_{t-1} + B_bar u_t``, from states and inputs in the memory dtype."""
        u = self._memory_input(inputs, hidden_states, weights)
        if self.memory_to_memory:
            memory_input = memory
            if training and self.recurrent_dropout > 0:
                memory_input = memory * ops.cast(
                    self.get_recurrent_dropout_mask(memory), self.memory_dtype
                )
            u = u + lmu_ops.matrix_product(memory_input, weights.recurrent_kernel)
        return lmu_ops.memory_step(
            memory,
            u,
            weights.transition,
            weights.B_bar,
            fixed_system=not self.has_trainable_system,
        )

    def _memory_input(self, inputs, hidden_states, weights):
        """``u_t`` without the memory_to_memory term, from inputs in the memory dtype."""
        if weights.input_kernel is None:  # no kernel: the encoder input is u_t itself
            u = inputs
            if self.hidden_to_memory:
                hidden = ops.cast(self._previous_hidden_output(hidden_states), inputs.dtype)
                u = ops.concatenate([inputs, hidden], axis=-1)
        else:
            u = lmu_ops.matrix_product(inputs, weights.input_kernel)
            if self.hidden_to_memory:
                hidden = ops.cast(self._previous_hidden_output(hidden_states), inputs.dtype)
                u = u + lmu_ops.matrix_product(hidden, weights.hidden_kernel)
        if weights.bias is not None:
            u = u + weights.bias
        return u

    def _previous_hidden_output(self, hidden_states):
        """``h_{t-1}``: the state that holds the hidden component's last output."""
        if self._hidden_is_rnn_cell:
            return hidden_states[output_state_index(self.hidden_cell)]
        return hidden_states[0]

    def _hidden_step(self, memory, inputs, hidden_states, training):
        hidden_input = memory
        if self.input_to_hidden:
            hidden_input = ops.concatenate([memory, ops.cast(inputs, memory.dtype)], axis=-1)
        if self.hidden_cell is None:
            return hidden_input, []
        call = self._hidden_call()
        if self._hidden_is_rnn_cell:
            states = nest_states(self.hidden_cell, hidden_states)
            output, hidden_states = call(hidden_input, states, training=training)
            return output, flatten_states(hidden_states)
        output = call(hidden_input, training=training)
        return output, [output]

    def _hidden_call(self):
        """The hidden component's ``call`` itself on PyTorch, which runs every step's
        Python anew, where ``Layer.__call__`` adds nothing to it (``calls_directly``);
        else the hidden component."""
        hidden = self.hidden_cell
        if keras.backend.backend() == "torch" and calls_directly(hidden, self.dtype_policy):
            return hidden.call
        return hidden

    def load_own_variables(self, store):
        # Inside an ``LMU``, a file may hold these variables one level up, where an
        # ``LMUFeedforward`` keeps them; the RNN wrapper has then loaded them already.
        if len(store.keys()) == 0:
            if self._variables_loaded_by_rnn:
                return
            if self._load_error is not None:
                # Keras visits the cell of an LMU again (through ``LMU._memory_layer``,
                # with nothing to load) after a failed visit: repeat the first error.
                raise self._load_error
        try:
            super().load_own_variables(store)
        except ValueError as error:
            self._load_error = error
            raise

    def get_config(self):
        return {**super().get_config(), **self._memory_config(), "input_d": self.input_d}


def _numpy_to_tensor(value, dtype: str):
    """``value`` as a tensor if it is a NumPy array (of ``dtype`` if it holds floats),
    else ``value`` unchanged."""
    if not isinstance(value, (np.ndarray, np.generic)):
        return value
    floating = np.issubdtype(value.dtype, np.floating)
    return ops.convert_to_tensor(value, dtype=dtype if floating else None)
