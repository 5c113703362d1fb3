"""``LMU``: the layer people use; it runs the fastest exact form of the memory."""

from __future__ import annotations

import warnings
import weakref

import keras
from keras import ops
from keras.src import backend as keras_backend
from keras.src.backend.common.stateless_scope import get_stateless_scope
from keras.src.utils import tracking

from keras_lmu import hidden_cells, validation
from keras_lmu import ops as lmu_ops
from keras_lmu.cell import LMUCell
from keras_lmu.feedforward import CONV_MODES, LMUFeedforward
from keras_lmu.memory import (
    LegendreMemory,
    assign_saved_variables,
    freeze_sublayers_if_untrainable,
    memory_dtype_for,
)

# The rules below come from training-step times measured on a 2-core CPU with
# ``benchmarks/parallel.py`` (batch 16; see docs/benchmarks-parallel.md).

#: Largest memory state (``order``; ``memory_d * order`` with memory_to_memory) for which
#: ``conv_mode="auto"`` computes a full memory sequence with the chunked scan. It beat
#: the FFT at every size measured (4 to 256, memory_d 1 and 4, T = 256 to 4096): by
#: 2.0-10.6x on JAX, 1.3-3.9x on TensorFlow and 0.97-4.7x on PyTorch (1.45-4.3x with
#: memory_to_memory), except with memory_to_memory at size 256 on TensorFlow, which
#: runs step by step anyway (below). Larger states were not measured: FFT there.
#: Measured before the FFT ran in pieces (``keras_lmu.ops.per_channel_fft_convolution``),
#: which changes only spectra of more than ``FFT_PIECE_VALUES`` complex values
#: (1.36-2.53x faster at memory_d 32, order 256, T 512, batch 16, where the scan was
#: still faster). Measured again after it on a 2-core AMD EPYC (``parallel.py --backend
#: B --threads 1 --cases scan``: benchmarks/results/scan-*-fft-pieces.json), without
#: memory_to_memory: fft/scan 1.13-3.50 on TensorFlow; 0.88-3.16 on PyTorch from T =
#: 1024; on JAX 1.08-4.32 except order 256 at T = 256, where the FFT was faster (0.65;
#: 1.31 and 1.08 at T = 1024 and 4096). Not changed for that one point. On PyTorch
#: with complex spectra (scan-torch-complex-fft.json), memory_d 1: at T = 1024 the FFT
#: was faster at orders 4, 8 and 256 (fft/scan 0.70, 0.80, 0.95), the scan at orders
#: 16 and 64 (1.11, 1.57) and memory_d 4 (1.54), at T = 4096 everywhere (1.08-2.10).
#: Not changed either. With PyTorch's FFT pieces written in place
#: (scan-torch-in-place-fft.json), memory_d 1: at T = 1024 the FFT was faster at orders
#: 4, 8 and 256 (0.73, 0.82, 0.73), the scan at 64 (1.21) and memory_d 4 (1.55), 16
#: tied (1.03); at T = 4096 the scan everywhere (1.11-2.14). For memory_d 32, order 256,
#: T = 512, batch 16 the FFT took 1,231 ms per training step and +541 MiB, the scan
#: 1,421 ms and +674 MiB (``bench.py --no-peer --backends torch --cases seq-lmu-full
#: seq-ff-full``, one run). See ``SCAN_MIN_STEPS_PER_SQUARED_SIZE`` for the rule since.
SCAN_MAX_SIZE = 256
#: Shortest sequence for which ``conv_mode="auto"`` uses the scan, per backend: PyTorch
#: runs its many small operations eagerly, and its FFT was faster at T = 256 for most
#: sizes (fft/scan 0.44-1.12) and tied or slower from T = 1024 on (1.0-5.1).
SCAN_MIN_STEPS = {"torch": 257}
#: With its FFT's pieces written in place, PyTorch's FFT stays faster than the scan the
#: longer the larger the state: ``conv_mode="auto"`` takes the scan there only from
#: ``size**2 / 32`` steps on (2,048 at size 256, 512 at 128). fft/scan time ratios at
#: memory_d 1, batch 16 (``parallel.py --backend torch --threads 1 --cases scan
#: --scan-orders 128 192 256 --scan-steps 512 1024 2048 4096``, two runs:
#: scan-torch-orders-*.json): order 256: 0.58-0.59 at T = 512, 0.70-0.74 at 1024,
#: 0.85-0.93 at 2048, 1.05-1.08 at 4096; order 192: 0.73, 0.79, 1.05, 1.09; order 128:
#: 0.88-0.91 at 512, 1.09-1.21 at 1024, 1.25-1.52 beyond; order 64: 1.21 at 1024.
#: TensorFlow, with its FFT's gradient computed in pieces (``keras_lmu.tf_fft``), takes
#: the scan above ``size**2 / 64`` steps (from 1,025 at size 256, 257 at 128, 65 at 64;
#: below, the FFT, or the direct convolution up to ``DIRECT_CONVOLUTION_MAX_STEPS``).
#: fft/scan at memory_d 1, batch 16 (``parallel.py --backend tensorflow --threads 1
#: --cases scan --scan-orders ... --scan-steps ...``: scan-tensorflow-orders-*.json):
#: order 256: 0.68 (two runs) at T = 512, 1.04-1.13 at 1024, 1.23-1.39 at 2048-4096;
#: order 192: 0.82 at 512, 1.19 at 1024, 1.53 at 2048; order 128: 0.71 at T = 64, 0.80
#: at 128, 0.95 at 256, 1.17-1.68 from 512; order 64: 0.87 at 64, 1.17 at 128, 1.74 at
#: 256; order 16: 1.13-1.34 (T = 64-256). The model of ``seq-lmu-full`` (memory_d 32,
#: batch 16; ``LMUFeedforward(conv_mode=...)``, the forms alternating in one process,
#: five training steps each): order 256: 0.85 and 0.88 at T = 512, 0.93 at 1024, 0.99
#: at 2048; order 192: 1.05 at 512. The direct convolution against the scan (seven
#: steps each): order 64, T = 64: 0.81 (memory_d 1), 0.86 (memory_d 32); order 128,
#: T = 128: 0.54 and 0.76.
SCAN_MIN_STEPS_PER_SQUARED_SIZE = {"torch": 1 / 32, "tensorflow": 1 / 64}
#: Largest ``memory_d * order`` for which a memory_to_memory LMU runs in parallel (the
#: chunked scan; powers of the (memory_d * order)^2 state matrix), per backend, against
#: the step-by-step loop that discretizes a trainable memory once per sequence
#: (measured at T = 1024): JAX's compiled loop is fast, and the scan wins only up to 16
#: (1.5-2.9x; 0.81x at 64, 0.32x at 256); TensorFlow's scan wins up to 64 (2.5-22x),
#: loses at 256 (0.28x); PyTorch's Python loop loses at every size tried (29-113x
#: slower up to 256; the FFT form was 3.5x faster at 1024 in an earlier run).
PARALLEL_MEMORY_TO_MEMORY_MAX_SIZE = {"torch": 1024, "tensorflow": 64, "jax": 16}
#: Longest sequence for which ``conv_mode="auto"`` picks the direct convolution over the
#: FFT, for states larger than ``SCAN_MAX_SIZE``: raw/fft time ratios at 64 steps were
#: 0.44-0.82 on TensorFlow (0.73-0.88 at 128, 1.4-2.2 at 256), 0.64-0.90 on JAX with
#: memory_d=1 (1.1-1.2 with memory_d=16) and 0.86-1.1 on PyTorch.
DIRECT_CONVOLUTION_MAX_STEPS = {"tensorflow": 128, "jax": 64, "torch": 0}
#: Steps of the step-by-step loop (``LMU`` with nonlinear feedback into the memory) per
#: iteration, per backend, for sequences of at least ``GROUPED_LOOP_MIN_STEPS`` steps.
#: On JAX the loop is a compiled ``lax.scan``, and with several steps in its body XLA
#: can run work off the recurrence's critical path (the weights' gradients) next to it.
#: A training step with 8 steps per iteration took, against 1 (2-core AMD EPYC): the
#: ``psmnist-rnn`` model (``bench.py``: batch 100, LMU(1, 256, 784, SimpleRNNCell(212),
#: hidden_to_memory, memory_to_memory), 784 steps) 0.71x and 0.68x as long (two runs,
#: both alternating in one process, five steps each; first step 3.8-4.1 s against
#: 2.5-3.1); with 16 steps 0.63-0.71x in a first version that took longer with large
#: states. In that version, one run each (LMU(memory_d, order, T, SimpleRNNCell(units),
#: hidden_to_memory, memory_to_memory)): the same model at batch 32 0.70x, batch 16
#: 0.72x; order 64 and 64 units, batch 100: 0.88x; memory_d 4, order 128, 128 units,
#: 512 steps: 1.02x; memory_d 32, order 256, no hidden cell, batch 16, 512 steps:
#: 0.79x; order 16 and 32 units, batch 32: 12-17 ms either way. TensorFlow's
#: ``tf.while_loop`` was no faster with 8 (0.83x and 1.03x in two runs of
#: ``psmnist-rnn``), and PyTorch runs the loop in Python: 1 there. On a 2-core Intel
#: Xeon with AVX-512, ``psmnist-rnn`` on JAX took 442 and 450 ms with 8 steps per
#: iteration, 730 and 750 with 1, 467 and 483 with 4, 424 and 438 with 16 (whose first
#: step took 3.0 s against 2.3) (``bench.py --no-peer --backends jax --cases
#: psmnist-rnn --budget 5 --repeats 6``, this value patched, two rounds of the four).
LOOP_STEPS_PER_ITERATION = {"jax": 8}
GROUPED_LOOP_MIN_STEPS = 64


def scan_min_steps(size: int, backend: str) -> int:
    """Shortest sequence for which ``conv_mode="auto"`` computes the memory of a state of
    ``size`` numbers by the chunked scan on ``backend``: ``SCAN_MIN_STEPS``, and more
    than ``size**2`` times ``SCAN_MIN_STEPS_PER_SQUARED_SIZE``."""
    per_squared_size = SCAN_MIN_STEPS_PER_SQUARED_SIZE.get(backend, 0)
    return max(SCAN_MIN_STEPS.get(backend, 0), int(size * size * per_squared_size) + 1)


@keras.saving.register_keras_serializable(package="keras-lmu")
class LMU(keras.layers.Layer):
    """A Legendre Memory Unit layer that picks the fastest exact way to compute it.

    Takes the arguments of :class:`LMUCell`, ``return_sequences``, ``conv_mode`` and
    ``truncate_ir``, and those of Keras's recurrent layers (``return_state``,
    ``go_backwards``, ``stateful``, ``zero_output_for_mask``). The memory is computed in parallel by
    :class:`LMUFeedforward` whenever nothing nonlinear feeds back into it (no
    ``hidden_to_memory``; with ``memory_to_memory`` only while ``memory_d * order``
    is at most ``PARALLEL_MEMORY_TO_MEMORY_MAX_SIZE`` and without
    ``recurrent_dropout``), and step by step by ``keras.layers.RNN(LMUCell(...))``
    otherwise. Both give the same outputs from the same weights (in training, a
    hidden ``BatchNormalization`` normalizes over the batch and all steps at once in
    the parallel form, over each step's batch step by step); the inner layer is
    ``self.layer`` once built.

    Parameters
    ----------
    memory_d, order, theta, hidden_cell, trainable_theta, hidden_to_memory,
    memory_to_memory, input_to_hidden, discretizer, kernel_initializer,
    recurrent_initializer, kernel_regularizer, recurrent_regularizer, use_bias,
    bias_initializer, bias_regularizer, dropout, recurrent_dropout, input_d, seed
        As in :class:`LMUCell`.
    return_sequences : bool
        Return the output of every step, or only of the last one.
    conv_mode : {"auto", "fft", "raw", "scan"}
        How a parallel memory sequence is computed (see :class:`LMUFeedforward`);
        ``"auto"`` picks by state size, sequence length and backend from measured
        rules (``SCAN_MAX_SIZE``, ``DIRECT_CONVOLUTION_MAX_STEPS``), for the length of
        each call's inputs. Whenever only the last step is read, a single contraction
        over time is used instead, in every mode.
    truncate_ir : float or None
        Share of the impulse response's magnitude that ``conv_mode="raw"`` may drop
        from its tail (as in :class:`LMUFeedforward`); None (the default) never
        truncates. Only an explicit ``conv_mode="raw"`` truncates, not ``"auto"``
        where it picks the direct convolution, and only a fixed memory's response;
        elsewhere the layer warns that it has no effect.
    trainable_A, trainable_B : bool
        As in :class:`LMUCell`.
    return_state : bool
        Also return the final states ``[memory, *hidden_states]`` after the output.
    go_backwards : bool
        Read the sequence from its last step to its first (as Keras's ``RNN``: with
        ``return_sequences``, the outputs come in that reversed order).
    stateful : bool
        Start each batch from the final states of the previous one (a fixed batch
        size; ``reset_states()`` sets them back to zeros).
    zero_output_for_mask : bool
        Under a mask, output zeros at masked steps instead of repeating the previous
        output (the states are held either way).
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
        return_sequences=False,
        conv_mode="auto",
        truncate_ir=None,
        trainable_A=False,
        trainable_B=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        zero_output_for_mask=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.cell_config = {
            "memory_d": memory_d,
            "order": order,
            "theta": theta,
            "trainable_theta": trainable_theta,
            "hidden_to_memory": hidden_to_memory,
            "memory_to_memory": memory_to_memory,
            "input_to_hidden": input_to_hidden,
            "discretizer": discretizer,
            "kernel_initializer": kernel_initializer,
            "recurrent_initializer": recurrent_initializer,
            "kernel_regularizer": kernel_regularizer,
            "recurrent_regularizer": recurrent_regularizer,
            "use_bias": use_bias,
            "bias_initializer": bias_initializer,
            "bias_regularizer": bias_regularizer,
            "dropout": dropout,
            "recurrent_dropout": recurrent_dropout,
            "input_d": input_d,
            "seed": seed,
            "trainable_A": trainable_A,
            "trainable_B": trainable_B,
        }
        # Checks every argument now, with the same messages as the cell (in this layer's
        # dtype, on which the smallest trainable theta depends).
        self._template = LegendreMemory(
            hidden_cell=hidden_cell, name=self.name, dtype=self.dtype_policy, **self.cell_config
        )
        self.return_sequences = validation.flag("return_sequences", return_sequences)
        self.conv_mode = validation.choice("conv_mode", conv_mode, ("auto",) + CONV_MODES)
        self.truncate_ir = validation.truncation(truncate_ir)
        self.return_state = validation.flag("return_state", return_state)
        self.go_backwards = validation.flag("go_backwards", go_backwards)
        self.stateful = validation.flag("stateful", stateful)
        self.zero_output_for_mask = validation.flag("zero_output_for_mask", zero_output_for_mask)
        self.layer = None
        self.states = None
        self._input_d = input_d  # the number of input features, once known
        self._built_steps = None  # the sequence length it was built for, if fixed
        self._warned_states_dropped = False
        self._warn_of_form_options_without_effect()

    def _warn_of_form_options_without_effect(self) -> None:
        """Warn where ``conv_mode`` or ``truncate_ir``, which choose how a parallel memory
        is computed, would do nothing: only an explicit ``conv_mode="raw"`` truncates
        (``"auto"`` keeps every form it picks exact, so that the outputs do not depend on
        the backend or the sequence length), and a fixed memory's only."""
        template = self._template
        given = []
        if self.conv_mode != "auto":
            given.append(f"conv_mode={self.conv_mode!r}")
        if self.truncate_ir is not None:
            given.append(f"truncate_ir={self.truncate_ir!r}")
        if not given:
            return
        if not self.uses_parallel_form():
            problem = (
                f"{' and '.join(given)} {'have' if len(given) > 1 else 'has'} no effect: this "
                "LMU computes its memory step by step (hidden_to_memory, or a "
                "memory_to_memory memory that it does not compute in parallel on the "
                f"{keras.backend.backend()} backend: see uses_parallel_form)"
            )
        elif self.truncate_ir is None:
            return
        elif self.conv_mode != "raw":
            problem = (
                f"truncate_ir={self.truncate_ir!r} has no effect with "
                f"conv_mode={self.conv_mode!r}: only conv_mode='raw' truncates the impulse "
                "response ('auto' computes the memory exactly, whichever form it picks)"
            )
        elif template.has_trainable_system or template.memory_to_memory:
            problem = (
                f"truncate_ir={self.truncate_ir!r} has no effect: the impulse response of a "
                "memory with trainable theta, A or B, or with memory_to_memory, is computed "
                "whole"
            )
        else:
            return
        warnings.warn(f"{self.name}: {problem}", stacklevel=4)

    def __setattr__(self, name, value):
        # The template cell only validates arguments: keep it out of Keras's tracking.
        if name == "_template":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def hidden_cell(self):
        """The hidden component (shared with the inner layer)."""
        return self._template.hidden_cell

    @property
    def theta(self) -> float:
        """The window length: the trained value once built, the initial one before."""
        if self.layer is None:
            return self._template.theta
        return self._memory_layer.theta

    @property
    def _memory_layer(self):
        """The ``LMUCell`` or ``LMUFeedforward`` that holds the memory's weights."""
        return self.layer.cell if isinstance(self.layer, keras.layers.RNN) else self.layer

    def uses_parallel_form(self) -> bool:
        """Whether the memory is computed in parallel (``LMUFeedforward``) on this backend."""
        template = self._template
        if template.hidden_to_memory:
            return False
        if not template.memory_to_memory:
            return True
        if template.recurrent_dropout > 0:
            return False
        limit = PARALLEL_MEMORY_TO_MEMORY_MAX_SIZE.get(keras.backend.backend(), 64)
        return template.memory_d * template.order <= limit

    def _resolved_conv_mode(self, steps: int | None) -> str:
        """``conv_mode``, with ``"auto"`` resolved by state size, sequence length and
        backend."""
        if self.conv_mode != "auto":
            return self.conv_mode
        template = self._template
        size = template.order * (template.memory_d if template.memory_to_memory else 1)
        shortest = scan_min_steps(size, keras.backend.backend())
        if size <= SCAN_MAX_SIZE and steps is not None and steps >= shortest:
            return "scan"
        limit = DIRECT_CONVOLUTION_MAX_STEPS.get(keras.backend.backend(), 0)
        if keras.backend.backend() == "jax" and self._template.memory_d > 1:
            limit = 0
        return "raw" if steps is not None and steps <= limit else "fft"

    @property
    def state_size(self) -> list[int]:
        """Sizes of the states ``[memory, *hidden_states]`` (like an RNN cell's)."""
        return self._state_sizes(self._input_d)

    def _state_sizes(self, input_d: int | None) -> list[int]:
        """``state_size`` for inputs of ``input_d`` features (a stateless hidden layer's
        output, one of the states, may depend on it)."""
        template = self._template
        return [template.memory_d * template.order] + template._hidden_state_sizes(input_d)

    def build(self, input_shape):
        # The arguments were checked, and any warning given, when the LMU was made.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", validation.UnstableDiscretizationWarning)
            self._build_inner_layer(input_shape)

    def _build_inner_layer(self, input_shape):
        batch, steps, input_d = validation.sequence_shape(self.name, input_shape)
        self._template._check_input_d(input_d)
        self._input_d = input_d
        self._built_steps = steps
        config = dict(self.cell_config)
        if not config["memory_to_memory"]:  # no effect; warned of when the LMU was made
            config["recurrent_dropout"] = 0
        hidden_cell = self.hidden_cell
        if self.uses_parallel_form():
            for key in ("hidden_to_memory", "input_d"):
                config.pop(key)
            conv_mode = self._resolved_conv_mode(steps)
            self.layer = LMUFeedforward(
                hidden_cell=hidden_cell,
                return_sequences=self.return_sequences,
                conv_mode=conv_mode,
                # Only an explicit "raw" truncates: "auto" may pick it at some lengths.
                truncate_ir=self.truncate_ir if self.conv_mode == "raw" else None,
                dtype=self.dtype_policy,
                **config,
            )
            self.layer.build(input_shape)
            object.__setattr__(self.layer, "cell", _VariablesInCell(self.layer))
        else:
            # The cell sizes its output from input_d, which the LMU knows by now.
            config["input_d"] = input_d
            cell = LMUCell(hidden_cell=hidden_cell, dtype=self.dtype_policy, **config)
            self.layer = _LMURNN(
                cell,
                return_sequences=self.return_sequences,
                return_state=True,
                dtype=self.dtype_policy,
            )
            # This layer's own call has converted the inputs already; a second
            # conversion would round the initial memory to the compute dtype.
            self.layer._convert_input_args = False
            self.layer.build(input_shape)
        if self.stateful:
            if batch is None:
                raise ValueError(
                    f"{self.name} has stateful=True, which needs a fixed batch size: give the "
                    "input one, e.g. keras.Input((steps, features), batch_size=32)"
                )
            self._create_state_variables(batch)
        # Keras then checks the number of features of every input, naming the layer.
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: input_d})
        freeze_sublayers_if_untrainable(self)
        self.built = True

    @tracking.no_automatic_dependency_tracking
    def _create_state_variables(self, batch_size: int):
        # Not weights: kept out of get_weights() and saved files, as in keras.layers.RNN.
        # Read and assigned in their own dtype, also inside the call's autocast scope:
        # under mixed precision PyTorch's assign would write to a 16-bit copy of the
        # variable (keras.layers.RNN's states stay zero there). The memory is kept in
        # the dtype it is computed in (float32 under a 16-bit policy, mixed or not):
        # rounded to 16 bits between calls, a stream of float16 or bfloat16 chunks
        # drifted from one call on the whole sequence (0.0156 off in 10 chunks of 4
        # steps in bfloat16).
        sizes = self.state_size
        dtypes = [memory_dtype_for(self.compute_dtype)] + [self.variable_dtype] * (len(sizes) - 1)
        self.states = [
            keras.Variable(
                ops.zeros((batch_size, size)),
                trainable=False,
                dtype=dtype,
                name="lmu_state",
                autocast=False,
            )
            for size, dtype in zip(sizes, dtypes, strict=True)
        ]

    def reset_state(self):
        """Set the carried states of a stateful LMU back to zero."""
        for state in self.states or []:
            state.assign(ops.zeros_like(state.value))

    def reset_states(self):
        """Alias of :meth:`reset_state`."""
        self.reset_state()

    def call(self, inputs, mask=None, training=None, initial_state=None):
        # As ``__call__`` converts them: ``stateless_call`` calls ``call`` directly, and
        # the step-by-step loop layer takes tensors only.
        inputs = self.dtype_policy.convert_input(inputs, self.autocast, self.input_dtype)
        validation.sequence_and_mask(self.name, inputs, mask)
        validation.length_fixed_when_traced(self.name, self._built_steps, inputs)
        if self.go_backwards:
            inputs = ops.flip(inputs, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        if initial_state is None and self.stateful:
            # Copies: the states are assigned in place at the end of the call, and on
            # PyTorch the gradient of the step that read them needs them unchanged.
            initial_state = self._in_state_dtypes([ops.copy(state.value) for state in self.states])
        elif initial_state is not None:
            initial_state = self._check_initial_state(initial_state)
            self._check_batch(inputs, initial_state[0], "initial_state")
        if self.stateful:  # the final states are kept in the states of the built batch
            self._check_batch(inputs, self.states[0], "this stateful LMU's memory state")
        if mask is not None:
            mask = ops.cast(mask, "bool")
        if isinstance(self.layer, LMUFeedforward):
            # "auto" picks for the length of these inputs (the layer may have been built
            # for another: a direct convolution over a long sequence would be slow).
            self.layer.conv_mode = self._resolved_conv_mode(lmu_ops.static_size(inputs, 1))
            output, states = self.layer.run(
                inputs,
                training=training,
                mask=mask,
                initial_state=initial_state,
                zero_output_for_mask=self.zero_output_for_mask,
            )
        else:
            self.layer.zero_output_for_mask = self.zero_output_for_mask
            output, *states = self.layer(
                inputs, initial_state=initial_state, mask=mask, training=training
            )
        if self.stateful:
            self._warn_if_states_are_dropped()
            for variable, state in zip(self.states, states, strict=True):
                variable.assign(ops.cast(state, variable.dtype))
        if self.return_state:
            return [output, *states]
        return output

    def _warn_if_states_are_dropped(self):
        """Warn, once, where the states this call assigns will not be kept: on JAX in a
        stateless scope, as Keras's compiled ``fit``, ``evaluate`` and ``predict`` run
        a model, which keep the values of the model's tracked variables only (the
        states, as those of ``keras.layers.RNN``, are not weights)."""
        if self._warned_states_dropped or get_stateless_scope() is None:
            return
        if keras.backend.backend() != "jax":
            return
        self._warned_states_dropped = True
        warnings.warn(
            f"{self.name} has stateful=True, but on JAX the states it assigns inside "
            "model.fit, evaluate or predict (and any stateless call) are not kept: each "
            "batch starts from the states before it. Call the model directly "
            "(model(x)) to stream on JAX, or use the TensorFlow or PyTorch backend.",
            stacklevel=2,
        )

    def _check_batch(self, inputs, state, what: str):
        """Raise if the inputs and ``state`` have different known batch sizes."""
        batch, state_batch = inputs.shape[0], state.shape[0]
        if batch is not None and state_batch is not None and batch != state_batch:
            raise ValueError(
                f"{self.name} received inputs of batch size {batch}, but {what} has batch "
                f"size {state_batch}"
                + (
                    ": a stateful LMU keeps the batch size it was built with"
                    if self.stateful
                    else ""
                )
            )

    def _check_initial_state(self, initial_state) -> list:
        states = (
            list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        )
        sizes = self.state_size
        if not all(hasattr(state, "shape") for state in states):
            raise TypeError(
                f"{self.name} expects initial_state as a list of {len(sizes)} tensors "
                f"([memory, *hidden_states]), got {type(initial_state).__name__}"
                + (f" of {[type(state).__name__ for state in states]}" if len(states) > 1 else "")
            )
        shapes = [tuple(state.shape) for state in states]
        if len(states) != len(sizes) or any(
            len(shape) != 2 or shape[-1] != size for shape, size in zip(shapes, sizes, strict=False)
        ):
            raise ValueError(
                f"{self.name} expects initial_state as {len(sizes)} tensors of shapes "
                f"{[('batch', size) for size in sizes]} ([memory, *hidden_states]), got "
                f"shapes {shapes}"
            )
        return self._in_state_dtypes(states)

    def _state_dtypes(self, count: int) -> list[str]:
        """The dtypes the layer carries and returns ``count`` states ``[memory,
        *hidden_states]`` in: the memory in :func:`keras_lmu.memory.memory_dtype_for` the
        compute dtype (float32 under mixed precision), the hidden states in the compute
        dtype."""
        return [memory_dtype_for(self.compute_dtype)] + [self.compute_dtype] * (count - 1)

    def _in_state_dtypes(self, states: list) -> list:
        """``[memory, *hidden_states]`` cast to :meth:`_state_dtypes`."""
        dtypes = self._state_dtypes(len(states))
        return [ops.cast(state, dtype) for state, dtype in zip(states, dtypes, strict=True)]

    def load_own_variables(self, store):
        # An LMU has no variables of its own. Keras visits it before its inner layer at
        # the start of every load: the inner layer's record of the last load is reset.
        super().load_own_variables(store)
        if isinstance(self.layer, LMUFeedforward):
            self.layer._start_loading()

    def compute_output_shape(self, input_shape):
        batch, steps, input_d = validation.sequence_shape(self.name, input_shape)
        self._template._check_input_d(input_d)
        size = self._template._hidden_output_size(input_d)
        output = (batch, steps, size) if self.return_sequences else (batch, size)
        if self.return_state:
            # A tuple, as Keras's RNN layers return (Bidirectional adds tuples to it).
            return (output, *[(batch, state) for state in self._state_sizes(input_d)])
        return output

    def compute_output_spec(self, inputs, *args, **kwargs):
        """Symbolic outputs of :meth:`compute_output_shape`'s shapes, in the dtypes the layer
        returns: the output in the compute dtype, the states in :meth:`_state_dtypes` (the
        memory in float32 under mixed precision; Keras's default gave every output the
        compute dtype)."""
        shapes = self.compute_output_shape(inputs.shape)
        if not self.return_state:
            return keras.KerasTensor(shapes, dtype=self.compute_dtype)
        output, *states = shapes
        dtypes = self._state_dtypes(len(states))
        return (
            keras.KerasTensor(output, dtype=self.compute_dtype),
            *(keras.KerasTensor(s, dtype=d) for s, d in zip(states, dtypes, strict=True)),
        )

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None for _ in self._state_sizes(inputs.shape[-1])]
        return output_mask

    def get_config(self):
        config = self._template._memory_config()
        config.update(
            input_d=self.cell_config["input_d"],
            return_sequences=self.return_sequences,
            conv_mode=self.conv_mode,
            truncate_ir=self.truncate_ir,
            return_state=self.return_state,
            go_backwards=self.go_backwards,
            stateful=self.stateful,
            zero_output_for_mask=self.zero_output_for_mask,
        )
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["hidden_cell"] = keras.saving.deserialize_keras_object(config.get("hidden_cell"))
        return cls(**config)


class _LMURNN(keras.layers.RNN):
    """``keras.layers.RNN`` that can load memory weights from where ``LMUFeedforward`` keeps them.

    An ``LMU`` saves its memory's weights under ``layer/`` when it runs in parallel
    and under ``layer/cell/`` when it runs ``RNN(LMUCell)``; files load whichever
    form the loading ``LMU`` picks.
    """

    def call(self, sequences, initial_state=None, mask=None, training=False):
        """``keras.layers.RNN.call``, with the memory carried past its casts of every
        state to the compute dtype before and after the loop: in its own dtype (float32
        under mixed precision), as within the loop. Returns the output and the states."""
        memory = None if initial_state is None else initial_state[0]
        object.__setattr__(self, "_carried_memory", memory)
        output, _, *hidden_states = super().call(
            sequences, initial_state=initial_state, mask=mask, training=training
        )
        memory = self._carried_memory
        object.__setattr__(self, "_carried_memory", None)  # no tensor kept past the call
        return output, memory, *hidden_states

    def inner_loop(self, sequences, initial_state, mask, training=False):
        """Step through the sequence (the cell's step weights are made once for all steps,
        before the loop, with its dropout masks: ``LMUCell.get_dropout_mask``)."""
        memory = getattr(self, "_carried_memory", None)
        if memory is not None:  # the memory as given, not rounded to the compute dtype
            initial_state = [memory, *initial_state[1:]]
        last_output, outputs, states = self._masked_loop(sequences, initial_state, mask, training)
        object.__setattr__(self, "_carried_memory", states[0])
        return last_output, outputs, states

    def _masked_loop(self, sequences, initial_state, mask, training):
        """Step through the sequence; with a mask, hold states and outputs at masked steps.

        Keras's loops take the first state to be the previous output, which for an
        ``LMUCell`` is the memory, so masking is done here: masked steps keep every
        state and repeat the last output (zeros with ``zero_output_for_mask``).
        """
        cell = self.cell
        # The memory is carried in float32 under mixed precision (rounding it to 16 bits
        # at every step would accumulate).
        initial_state = [ops.cast(initial_state[0], cell.memory_dtype), *initial_state[1:]]
        call_cell = self._cell_call()
        carried = self._carried_variables(training)
        if mask is None:
            keras_loop = self._steps_per_iteration(sequences) == 1 and not self._runs_eagerly()
            if keras_loop and not carried:
                return super().inner_loop(sequences, initial_state, None, training=training)

            def step(inputs, states):
                output, new_states = call_cell(inputs, states, training=training)
                return output, list(new_states)

            return self._loop_carrying(carried, step, sequences, initial_state)
        keep = ops.cast(ops.expand_dims(mask, -1), sequences.dtype)
        batch = ops.shape(sequences)[0]
        no_output = ops.zeros((batch, cell.output_size), dtype=cell.compute_dtype)

        def step(inputs, states):
            inputs, keep = inputs[:, :-1], inputs[:, -1:] > 0
            *states, previous_output = states
            output, new_states = call_cell(inputs, states, training=training)
            new_states = [
                ops.where(keep, new, old) for new, old in zip(new_states, states, strict=True)
            ]
            held = ops.where(keep, output, previous_output)
            shown = ops.where(keep, output, no_output) if self.zero_output_for_mask else held
            return shown, new_states + [held]

        last_output, outputs, states = self._loop_carrying(
            carried,
            step,
            ops.concatenate([sequences, keep], axis=-1),
            list(initial_state) + [no_output],
        )
        # The last step's output: zero where it is masked with zero_output_for_mask, as
        # in Keras's RNN layers (the held output stays in the states).
        return last_output, outputs, states[:-1]

    def _carried_variables(self, training) -> list:
        """In training, the variables that the hidden layers assign when called
        (:func:`keras_lmu.hidden_cells.variables_assigned_per_call`: the states of seed
        generators of layers that draw random numbers at every step, e.g. ``Dropout``;
        ``BatchNormalization``'s moving statistics), which the backend's loop carries:
        a variable cannot be assigned inside JAX's loop, and TensorFlow's runs the
        first step once more, before the loop, to learn its output's shape (which
        would update moving statistics once too often). PyTorch's loop is Python's:
        the steps assign them."""
        if not training or self._runs_eagerly():
            return []
        return hidden_cells.variables_assigned_per_call(self.cell.hidden_cell)

    def _loop_carrying(self, variables, step, sequences, initial_state):
        """``_loop``, with ``variables`` (seed states, moving statistics) carried through
        the loop as extra states: each step reads and assigns them in a
        ``keras.StatelessScope`` that holds the carried values (on top of the enclosing
        scope's, as in a training step), and the variables are assigned their last
        values after the loop."""
        if not variables:
            return self._loop(step, sequences, initial_state)
        count = len(variables)

        def carrying_step(inputs, states):
            states, carried = states[:-count], states[-count:]
            scope = keras.StatelessScope(initialize_variables=False)
            enclosing = get_stateless_scope()
            if enclosing is not None:
                scope.state_mapping.update(enclosing.state_mapping)
            scope.state_mapping.update(
                {id(variable): value for variable, value in zip(variables, carried, strict=True)}
            )
            with scope, self.cell.hidden_variables_carried():
                output, new_states = step(inputs, states)
            return output, list(new_states) + [scope.get_current_value(v) for v in variables]

        initial_state = list(initial_state) + [variable.value for variable in variables]
        last_output, outputs, states = self._loop(carrying_step, sequences, initial_state)
        for variable, value in zip(variables, states[-count:], strict=True):
            variable.assign(value)
        return last_output, outputs, states[:-count]

    def _runs_eagerly(self) -> bool:
        """Whether the loop over the steps runs in Python, one operation at a time
        (PyTorch), where ``_eager_loop`` saves Keras's generic loop's per-step work."""
        return keras.backend.backend() == "torch" and not (self.unroll or self.go_backwards)

    def _cell_call(self):
        """What each step calls: on PyTorch, which runs every step's Python anew, the
        cell's ``call`` itself where ``Layer.__call__`` adds nothing to it
        (:func:`keras_lmu.hidden_cells.calls_directly`); else the cell.

        Without ``Layer.__call__`` a step of the ``psmnist-rnn`` model (batch 100,
        order 256, ``SimpleRNNCell(212)``) took 0.77 ms instead of 1.24 forward only,
        and two training steps raised the peak RSS by 317 MiB instead of 609 (one run
        each, the plain loop either way). The cell calls its hidden cell the same way.
        """
        cell = self.cell
        direct = self._runs_eagerly() and hidden_cells.calls_directly(cell, self.dtype_policy)
        return cell.call if direct else cell

    def _steps_per_iteration(self, sequences) -> int:
        """Steps per iteration of the loop: ``LOOP_STEPS_PER_ITERATION`` for long enough
        sequences of known length, else 1 (also with ``unroll``, and ``go_backwards``,
        which ``LMU`` does not pass on: it reverses the sequence itself)."""
        group = LOOP_STEPS_PER_ITERATION.get(keras.backend.backend(), 1)
        steps = lmu_ops.static_size(sequences, 1)
        unrolled_or_reversed = self.unroll or self.go_backwards
        if unrolled_or_reversed or steps is None or steps < max(group, GROUPED_LOOP_MIN_STEPS):
            return 1
        return group

    def _loop(self, step, sequences, initial_state):
        """``(last_output, outputs, states)`` of ``step`` over ``sequences``, as
        ``keras.src.backend.rnn`` with this layer's direction and options returns them,
        ``_steps_per_iteration`` steps per iteration of the backend's loop (the steps
        left over after the last whole iteration run one per iteration).
        """
        group = self._steps_per_iteration(sequences)
        steps = sequences.shape[1]
        if self._runs_eagerly():
            return self._eager_loop(step, sequences, initial_state)
        if group == 1:
            return keras_backend.rnn(
                step,
                sequences,
                initial_state,
                go_backwards=self.go_backwards,
                unroll=self.unroll,
                input_length=steps,
                return_all_outputs=self.return_sequences,
            )
        whole = steps - steps % group
        blocks = ops.reshape(sequences[:, :whole], (-1, whole // group, group, sequences.shape[2]))

        def steps_of_block(block, states):
            outputs = []
            for index in range(group):
                output, states = step(block[:, index], states)
                outputs.append(output)
            if not self.return_sequences:  # only the last output is read
                return outputs[-1], states
            return ops.stack(outputs, axis=1), states

        _, outputs, states = keras_backend.rnn(
            steps_of_block, blocks, initial_state, input_length=whole // group
        )
        if self.return_sequences:
            outputs = ops.reshape(outputs, (-1, whole, *outputs.shape[3:]))
        if whole < steps:
            _, rest, states = keras_backend.rnn(
                step, sequences[:, whole:], states, input_length=steps - whole
            )
            outputs = ops.concatenate([outputs, rest], axis=1) if self.return_sequences else rest
        last_output = outputs[:, -1]
        if not self.return_sequences:
            outputs = ops.expand_dims(last_output, 1)
        return last_output, outputs, states

    def _eager_loop(self, step, sequences, initial_state):
        """``_loop`` as a plain Python loop over the steps, for a backend that runs
        eagerly: Keras's generic loop restructures the inputs, outputs and states of
        every step (``tree.flatten`` and ``pack_sequence_as``).

        With ``_cell_call`` and 2-D products by ``mm`` (``keras_lmu.ops.matrix_product``)
        a ``psmnist-rnn`` training step on PyTorch took 1,130 and 1,164 ms against
        2,472 and 2,417 before (``benchmarks/bench.py --no-peer --backends torch --cases
        psmnist-rnn seq-rnn --budget 10 --repeats 5``, medians of two runs each,
        alternating), 1,330 with the products alone; its peak RSS rose by 788-810 MiB
        against 2,079-2,087.
        """
        states = list(initial_state)
        outputs = []  # every step's output only if returned (inference keeps no others)
        for inputs in ops.unstack(sequences, axis=1):  # at least one step (validated)
            output, states = step(inputs, states)
            if self.return_sequences:
                outputs.append(output)
        if not self.return_sequences:
            return output, ops.expand_dims(output, 1), states
        return output, ops.stack(outputs, axis=1), states

    def load_own_variables(self, store):
        # Visited before the cell at every load: the cell's record of the last one is reset.
        cell = self.cell
        cell._variables_loaded_by_rnn = False
        cell._load_error = None
        if len(store.keys()) == 0:
            return
        variables = cell._trainable_variables + cell._non_trainable_variables
        try:
            assign_saved_variables(cell.name, variables, store)
        except ValueError as error:
            cell._load_error = error
            raise
        cell._variables_loaded_by_rnn = True


class _VariablesInCell(keras.layers.Layer):
    """Loads an ``LMUFeedforward``'s weights from a file saved by ``RNN(LMUCell)``.

    Attached as ``feedforward.cell`` (untracked) so that Keras visits ``layer/cell/``
    when loading; it saves nothing itself.
    """

    def __init__(self, feedforward):
        super().__init__(name=f"{feedforward.name}_cell_variables")
        # A weak reference: Keras's loader follows attributes that are layers.
        object.__setattr__(self, "_feedforward", weakref.ref(feedforward))
        self.built = True

    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        feedforward = self._feedforward()
        if not feedforward._awaiting_variables:
            return
        if len(store.keys()) == 0 and feedforward._load_error is not None:
            # a second visit, through ``LMU._memory_layer``, after a failed one
            raise feedforward._load_error
        variables = feedforward._trainable_variables + feedforward._non_trainable_variables
        try:
            assign_saved_variables(feedforward.name, variables, store)
        except ValueError as error:
            feedforward._load_error = error
            raise
        feedforward._awaiting_variables = False
