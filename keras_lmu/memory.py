"""What every LMU layer shares: its arguments, its weights and its discretized memory."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_lmu import hidden_cells, legendre, validation
from keras_lmu import ops as lmu_ops

# Below this largest entry of ``A / theta`` the powers of ``A_bar`` are squared as their
# differences from the identity. A float32 trainable-theta memory over 10,000 steps
# (``benchmarks/trainable_theta_numerics.py``) squaring the differences against
# squaring ``A_bar`` (JAX, at, below and above the initial theta): at 0.0013-0.2 (orders
# 64, 256 and 1024 at theta 10,000 and 100,000, order 64 at 1,000) 1.2x to 44x more
# exact; at 0.51-20 (theta 100; orders 256 and 1024 at theta 1,000) from 1.01x more
# to 3.3x less exact.
NEAR_IDENTITY_MAX_ENTRY = 0.25


class StepWeights(NamedTuple):
    """The tensors one step of the memory multiplies by (None where absent).

    ``u_t = x_t input_kernel + h_{t-1} hidden_kernel + s_{t-1} recurrent_kernel + bias``
    and ``m_t = m_{t-1} + (m_{t-1} transition + u_t B_bar^T)`` per memory, with
    ``transition = (A_bar - I)^T`` (order, order) and ``B_bar`` (order,).
    """

    input_kernel: Any
    hidden_kernel: Any
    recurrent_kernel: Any
    bias: Any
    transition: Any
    B_bar: Any


def freeze_sublayers_if_untrainable(layer: keras.layers.Layer) -> None:
    """At the end of ``layer``'s build: if it was made untrainable, make the sublayers
    and variables it has just created untrainable too.

    Keras's ``trainable`` setter reaches only the sublayers and variables that exist
    when it runs, and a new sublayer is trainable, so ``trainable=False`` given to the
    constructor (or read back from a saved config) would leave them trained.
    """
    if not layer.trainable:
        # The setter itself: TensorFlow's attribute tracking skips an assignment of the
        # value an attribute already has.
        keras.layers.Layer.trainable.fset(layer, False)


def memory_dtype_for(compute_dtype: str) -> str:
    """dtype of the memory's arithmetic and state for a layer computing in
    ``compute_dtype``: float32 under mixed precision (float16 or bfloat16 compute),
    where rounding the memory to 16 bits at every step would accumulate; the compute
    dtype otherwise."""
    return "float32" if compute_dtype in ("float16", "bfloat16") else compute_dtype


class LegendreMemory(keras.layers.Layer):
    """Base of :class:`LMUCell` and :class:`LMUFeedforward` (not a layer on its own).

    Holds the constructor arguments common to both, creates the weights in the
    order ``kernel, bias, theta_inv, recurrent_kernel, A, B`` (those that exist)
    before the hidden component's, and gives the discretized system
    ``(A_bar, B_bar)`` either as exact float64 constants (fixed) or computed in
    the graph (trainable ``theta``, ``A`` or ``B``).
    """

    def __init__(
        self,
        memory_d,
        order,
        theta,
        hidden_cell,
        *,
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
        super().__init__(**kwargs)
        validation.warn_if_float64_unavailable(self)
        self.memory_d = validation.positive_int("memory_d", memory_d)
        self.order = validation.positive_int("order", order)
        self._init_theta = validation.positive_finite("theta", theta)
        self.hidden_cell = validation.hidden_layer(hidden_cell)
        self.trainable_theta = validation.flag("trainable_theta", trainable_theta)
        self.hidden_to_memory = validation.flag("hidden_to_memory", hidden_to_memory)
        self.memory_to_memory = validation.flag("memory_to_memory", memory_to_memory)
        self.input_to_hidden = validation.flag("input_to_hidden", input_to_hidden)
        self.discretizer = validation.discretizer(discretizer)
        if self.discretizer == "euler":
            validation.warn_if_euler_unstable(self.name, self.order, self._init_theta)
        self.kernel_initializer = _optional(keras.initializers.get, kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.use_bias = validation.flag("use_bias", use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.dropout = validation.rate("dropout", dropout)
        self.recurrent_dropout = validation.rate("recurrent_dropout", recurrent_dropout)
        if self.recurrent_dropout > 0 and not self.memory_to_memory:
            warnings.warn(
                f"recurrent_dropout={recurrent_dropout!r} drops part of the memory_to_memory "
                "input, which memory_to_memory=False leaves out: it has no effect",
                stacklevel=3,
            )
        self.input_d = None if input_d is None else validation.positive_int("input_d", input_d)
        self.seed = seed
        self.trainable_A = validation.flag("trainable_A", trainable_A)
        self.trainable_B = validation.flag("trainable_B", trainable_B)
        if self.has_trainable_system and self.discretizer == "zoh":
            self._check_theta_for_graph_discretization()
        if self.hidden_to_memory and hidden_cell is None:
            raise ValueError("hidden_to_memory=True needs a hidden_cell, got hidden_cell=None")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kernel = self.bias = self.theta_inv = self.recurrent_kernel = None
        self.A = self.B = None
        self._fixed_system = None
        self._reference_difference = None
        self._fixed_step_system = None
        self._fixed_step_arrays_by_dtype = {}

    # -- the hidden component ---------------------------------------------------

    @property
    def _hidden_is_rnn_cell(self) -> bool:
        return self.hidden_cell is not None and hasattr(self.hidden_cell, "state_size")

    def _hidden_input_size(self, input_d: int) -> int:
        return self.memory_d * self.order + (input_d if self.input_to_hidden else 0)

    def _hidden_output_size(self, input_d: int | None = None) -> int:
        """Number of features the hidden component outputs."""
        cell = self.hidden_cell
        input_d = self.input_d if input_d is None else input_d
        if cell is None:
            if self.input_to_hidden and input_d is None:
                raise ValueError("input_d must be known to size the output of this LMU")
            return self._hidden_input_size(input_d or 0)
        if self._hidden_is_rnn_cell:
            return hidden_cells.output_size(cell)
        if hasattr(cell, "units"):
            return int(cell.units)
        if input_d is not None or not self.input_to_hidden:
            return int(cell.compute_output_shape((None, self._hidden_input_size(input_d or 0)))[-1])
        # Input size unknown: fine if the layer's output size does not depend on it.
        sizes = {
            int(cell.compute_output_shape((None, self._hidden_input_size(d)))[-1]) for d in (1, 2)
        }
        if len(sizes) > 1:
            raise ValueError(
                f"The output size of hidden_cell {cell.name!r} depends on the number of "
                "input features; pass input_d"
            )
        return sizes.pop()

    def _hidden_state_sizes(self, input_d: int | None = None) -> list[int]:
        """Sizes of the hidden component's states, flattened (its output, for a stateless
        layer)."""
        if self.hidden_cell is None:
            return []
        if self._hidden_is_rnn_cell:
            return hidden_cells.state_sizes(self.hidden_cell)
        return [self._hidden_output_size(input_d)]

    def _build_hidden(self, input_d: int):
        self._check_hidden_output(input_d)
        if self.hidden_cell is not None and not self.hidden_cell.built:
            self.hidden_cell.build((None, self._hidden_input_size(input_d)))

    def _check_hidden_output(self, input_d: int) -> None:
        """Refuse a hidden component whose output the LMU cannot use.

        A cell or layer built already must have been built for its input
        ``(batch, memory_d * order [+ input_d])``, and a layer without state must output
        ``(batch, features)`` for it. With ``hidden_to_memory``, an RNN
        cell's previous output ``h_{t-1}`` is read from its states: the first (Keras's
        cells return their output as their first state; a ``StackedRNNCells``, its last
        cell's), which must then be of the output's size.
        """
        cell = self.hidden_cell
        if cell is None:
            return
        input_size = self._hidden_input_size(input_d)
        first = cell.cells[0] if isinstance(cell, keras.layers.StackedRNNCells) else cell
        kernel = getattr(first, "kernel", None) if cell.built else None
        if kernel is not None and len(kernel.shape) == 2 and kernel.shape[0] != input_size:
            raise ValueError(
                f"hidden_cell {cell.name!r} was built for inputs of {kernel.shape[0]} "
                f"features, but this LMU gives it {input_size} (memory_d * order"
                f"{' + input_d' if self.input_to_hidden else ''})"
            )
        if self._hidden_is_rnn_cell:
            if not self.hidden_to_memory:
                return
            index = hidden_cells.output_state_index(cell)
            state_size = hidden_cells.state_sizes(cell)[index]
            size = hidden_cells.output_size(cell)
            if state_size != size:
                raise ValueError(
                    f"hidden_to_memory feeds the hidden cell's previous output back into "
                    f"the memory, read from its state {index} (Keras's cells return their "
                    f"output as their first state), but hidden_cell {cell.name!r} outputs "
                    f"{size} features and that state has {state_size}: give a cell whose "
                    "first state is its output, or hidden_to_memory=False"
                )
            return
        input_shape = (None, input_size)
        try:
            shape = tuple(cell.compute_output_shape(input_shape))
        except NotImplementedError:
            return
        if len(shape) != 2:
            raise ValueError(
                f"hidden_cell {cell.name!r} must output (batch, features) for its input of "
                f"shape {input_shape}, got shape {shape}"
            )

    # -- weights ----------------------------------------------------------------

    def _check_input_d(self, input_d: int):
        if self.input_d is not None and input_d != self.input_d:
            raise ValueError(
                f"{self.name} was given input_d={self.input_d} but receives inputs with "
                f"{input_d} features"
            )

    def _build_memory(self, input_d: int):
        """Create the memory's weights for inputs with ``input_d`` features."""
        self._check_input_d(input_d)
        encoder_d = input_d
        if self.hidden_to_memory:
            encoder_d += self._hidden_output_size(input_d)
        if self.kernel_initializer is not None:
            self.kernel = self.add_weight(
                name="kernel",
                shape=(encoder_d, self.memory_d),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
            )
        elif encoder_d != self.memory_d:
            raise ValueError(
                "With kernel_initializer=None the encoder input must have memory_d="
                f"{self.memory_d} features, got {encoder_d}"
            )
        self.input_d = input_d
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.memory_d,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        if self.trainable_theta:
            self.theta_inv = self.add_weight(
                name="theta_inv",
                shape=(),
                initializer=_exact_constant(1.0 / self._init_theta),
                constraint=keras.constraints.NonNeg(),
                autocast=False,  # the discretization's input: float32 in mixed precision
            )
        if self.memory_to_memory:
            self.recurrent_kernel = self.add_weight(
                name="recurrent_kernel",
                shape=(self.memory_d * self.order, self.memory_d),
                initializer=self.recurrent_initializer,
                regularizer=self.recurrent_regularizer,
                autocast=False,  # part of the memory's linear recurrence
            )
        A, B = legendre.continuous_system(self.order)
        # Read inside ``call``, Keras would round these to a 16-bit compute dtype.
        if self.trainable_A:
            self.A = self.add_weight(
                name="A", shape=A.shape, initializer=_exact_constant(A), autocast=False
            )
        if self.trainable_B:
            self.B = self.add_weight(
                name="B", shape=B.shape, initializer=_exact_constant(B), autocast=False
            )
        only_theta_trained = self.trainable_theta and not (self.trainable_A or self.trainable_B)
        if only_theta_trained and self.discretizer == "zoh":
            # Discretized in the graph from the exact system at the initial theta.
            # expm(M / theta) - I = [[A_bar - I, B_bar], [0, 0]], in float64.
            A_bar, B_bar = legendre.discrete_system(self.order, self._init_theta)
            top = np.concatenate([A_bar - np.eye(self.order), B_bar[:, None]], axis=1)
            self._reference_difference = np.pad(top, [(0, 1), (0, 0)])
        if not self.has_trainable_system:
            self._fixed_system = legendre.discrete_system(
                self.order, self._init_theta, self.discretizer
            )
            A_bar, B_bar = self._fixed_system
            # (A_bar - I)^T, in float64 before the rounding to the memory dtype.
            transition = np.ascontiguousarray((A_bar - np.eye(self.order)).T)
            self._fixed_step_system = (transition, B_bar)

    def _check_theta_for_graph_discretization(self) -> None:
        """Refuse a ``theta`` too small for the zero-order hold computed in the graph.

        A trainable ``theta``, ``A`` or ``B`` is discretized in the memory dtype by
        :func:`keras_lmu.ops.matrix_exponential_minus_identity`, which handles 1-norms of
        ``[A, B] / theta`` up to :func:`keras_lmu.ops.matrix_exponential_max_norm`
        (about 4.3e9 in float32): below the ``theta`` that reaches it the memory
        would be NaN (a fixed memory is discretized in float64 on the host, down to
        ``theta`` ~1e-38).
        """
        A, B = legendre.continuous_system(self.order)
        augmented = np.concatenate([A, B[:, None]], axis=1)
        norm = float(np.max(np.sum(np.abs(augmented), axis=0)))
        smallest = norm / lmu_ops.matrix_exponential_max_norm(self.memory_dtype)
        if self._init_theta < smallest:
            raise ValueError(
                f"{self.name}: theta={self._init_theta:g} is too small for an order-"
                f"{self.order} memory discretized in the graph (trainable theta, A or B, "
                f"discretizer='zoh'): the matrix exponential of A / theta in "
                f"{self.memory_dtype} needs theta >= {smallest:.3g}"
            )

    @property
    def has_trainable_system(self) -> bool:
        """Whether ``A_bar, B_bar`` depend on weights (theta, A or B trainable)."""
        return self.trainable_theta or self.trainable_A or self.trainable_B

    @property
    def theta(self) -> float:
        """The window length: the trained value once built, the initial one before."""
        if self.theta_inv is None:
            return self._init_theta
        return float(1.0 / ops.convert_to_numpy(self.theta_inv))

    @property
    def powers_near_identity(self) -> bool:
        """Whether the powers of ``A_bar`` computed in the graph are squared as their
        differences from the identity (:func:`keras_lmu.ops.impulse_response`): where
        ``A_bar`` is near it, ``max |A| / theta`` (about ``max |A_bar - I|``) below
        ``NEAR_IDENTITY_MAX_ENTRY`` at the initial ``theta``."""
        return (2 * self.order - 1) / self._init_theta < NEAR_IDENTITY_MAX_ENTRY

    @property
    def memory_dtype(self) -> str:
        """dtype of the memory's arithmetic (:func:`memory_dtype_for` the compute dtype)."""
        return memory_dtype_for(self.compute_dtype)

    def discrete_system(self):
        """``(A_bar, B_bar)`` as tensors of the memory dtype (order, order), (order,)."""
        difference, B_bar = self.discrete_difference()
        return ops.eye(self.order, dtype=difference.dtype) + difference, B_bar

    @lmu_ops.full_float32_precision()
    def discrete_difference(self):
        """``(A_bar - I, B_bar)`` as tensors of the memory dtype (order, order), (order,).

        A long window makes ``A_bar`` close to the identity, and ``A_bar`` rounded to
        float32 keeps few digits of its difference from it, which every step and every
        power of ``A_bar`` depends on: ``A_bar - I`` is computed as such, in float64
        for a fixed memory and rounded once.
        """
        dtype = self.memory_dtype
        if self._fixed_system is not None:
            transition, B_bar = self._fixed_step_arrays(dtype)  # (A_bar - I)^T
            return ops.convert_to_tensor(transition.T, dtype), ops.convert_to_tensor(B_bar, dtype)
        A, B = legendre.continuous_system(self.order)
        A = ops.cast(self.A, dtype) if self.A is not None else ops.convert_to_tensor(A, dtype)
        B = ops.cast(self.B, dtype) if self.B is not None else ops.convert_to_tensor(B, dtype)
        if self.theta_inv is not None:
            theta_inv = ops.cast(self.theta_inv, dtype)
        else:
            theta_inv = ops.convert_to_tensor(1.0 / self._init_theta, dtype)
        if self._reference_difference is not None:
            # Only theta is trained: from the exact system at the initial theta.
            return lmu_ops.discretize_zoh_difference_near(
                A,
                B,
                theta_inv,
                1.0 / self._init_theta,
                ops.convert_to_tensor(self._reference_difference, dtype),
            )
        return lmu_ops.discretize_difference(A, B, theta_inv, self.discretizer)

    def step_weights(self) -> StepWeights:
        """What one step multiplies by (:class:`StepWeights`), in the memory dtype.

        A long window makes ``A_bar`` close to the identity: stepping with ``A_bar``
        rounded to float32 loses most digits of its small difference from ``I``, which
        compound over the steps. Each step adds ``(A_bar - I) m`` to ``m``
        (:func:`keras_lmu.ops.memory_step`), with ``A_bar - I`` from
        :meth:`discrete_difference` (for a fixed memory computed in float64 and
        rounded once), so that the step-by-step memory keeps the accuracy of its
        parallel forms.
        """
        dtype = self.memory_dtype
        if self._fixed_system is not None:
            arrays = self._fixed_step_arrays(dtype)
            transition, B_bar = (ops.convert_to_tensor(x, dtype) for x in arrays)
        else:
            difference, B_bar = self.discrete_difference()
            transition = ops.transpose(difference)
        input_kernel = hidden_kernel = None
        if self.kernel is not None:
            input_kernel = ops.cast(self.kernel, dtype)
            if self.hidden_to_memory:  # rows: the input's features, then the hidden state's
                input_kernel, hidden_kernel = (
                    input_kernel[: self.input_d],
                    input_kernel[self.input_d :],
                )
        return StepWeights(
            input_kernel=input_kernel,
            hidden_kernel=hidden_kernel,
            recurrent_kernel=_optional(lambda k: ops.cast(k, dtype), self.recurrent_kernel),
            bias=_optional(lambda b: ops.cast(b, dtype), self.bias),
            transition=transition,
            B_bar=B_bar,
        )

    def _fixed_step_arrays(self, dtype: str) -> tuple[np.ndarray, np.ndarray]:
        """The fixed ``(transition, B_bar)`` as NumPy arrays of ``dtype``, rounded from
        float64 once per dtype.

        ``keras.layers.RNN(LMUCell)`` on PyTorch converts them to tensors at every step:
        132 us from the float64 arrays, 24 us from arrays of the tensors' dtype; seq-rnn's
        inference took 497-517 ms against 555-609, its training step 792-826 against
        824-922 (``bench.py``'s model, six runs each, alternating).
        """
        arrays = self._fixed_step_arrays_by_dtype.get(dtype)
        if arrays is None:
            arrays = tuple(array.astype(dtype) for array in self._fixed_step_system)
            self._fixed_step_arrays_by_dtype[dtype] = arrays
        return arrays

    @lmu_ops.full_float32_precision()
    def encode(self, inputs):
        """``inputs @ kernel (+ bias)``, the memory's input that is not recurrent, in the
        memory dtype."""
        dtype = self.memory_dtype
        encoded = ops.cast(inputs, dtype)
        if self.kernel is not None:
            encoded = lmu_ops.last_axis_product(encoded, ops.cast(self.kernel, dtype))
        if self.bias is not None:
            encoded = encoded + ops.cast(self.bias, dtype)
        return encoded

    # -- serialization ----------------------------------------------------------

    def load_own_variables(self, store):
        """Load this layer's own variables from a file, checking their number and shapes."""
        variables = self._trainable_variables + self._non_trainable_variables
        assign_saved_variables(self.name, variables, store)

    def _memory_config(self) -> dict:
        return {
            "memory_d": self.memory_d,
            "order": self.order,
            "theta": self._init_theta,
            "hidden_cell": keras.saving.serialize_keras_object(self.hidden_cell),
            "trainable_theta": self.trainable_theta,
            "hidden_to_memory": self.hidden_to_memory,
            "memory_to_memory": self.memory_to_memory,
            "input_to_hidden": self.input_to_hidden,
            "discretizer": self.discretizer,
            "kernel_initializer": _optional(keras.initializers.serialize, self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
            "use_bias": self.use_bias,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "trainable_A": self.trainable_A,
            "trainable_B": self.trainable_B,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["hidden_cell"] = keras.saving.deserialize_keras_object(config.get("hidden_cell"))
        return cls(**config)


def assign_saved_variables(layer_name: str, variables: list, store) -> None:
    """Assign the values a saved file holds for a memory's variables, in order.

    Nothing is assigned unless the file holds as many values as there are variables,
    each of the variable's shape.

    Parameters
    ----------
    layer_name : str
        Name of the layer the variables belong to, for the error messages.
    variables : list of keras.Variable
        The layer's own variables, in the order they were created.
    store
        The file's values for that layer, under the keys ``"0"``, ``"1"``, ...

    Raises
    ------
    ValueError
        When the file holds another number of values, or a value of another shape
        (a file saved from a differently configured LMU); the message names the
        variable, its shape and the shape found in the file.
    """
    saved = len(store.keys())
    if saved != len(variables):
        names = ", ".join(variable.name for variable in variables)
        raise ValueError(
            f"The file holds {saved} variables for the memory of {layer_name!r}, which has "
            f"{len(variables)} ({names}): the file was saved from a differently configured "
            "LMU."
        )
    values = [store[str(index)] for index in range(saved)]
    for variable, value in zip(variables, values, strict=True):
        expected, found = tuple(variable.shape), tuple(np.shape(value))
        if found != expected:
            raise ValueError(
                f"Cannot load the variable {variable.name!r} of {layer_name!r}: it has shape "
                f"{expected}, but the file holds shape {found} for it. The file was saved "
                "from a differently configured LMU (another memory_d, order, input size or "
                "hidden size)."
            )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _exact_constant(value):
    """Initializer with a float64 value, rounded once to the variable's dtype.

    (``keras.initializers.Constant`` rounds through float32 first.)
    """
    value = np.asarray(value, dtype=np.float64)

    def initializer(shape, dtype=None):
        return ops.cast(np.broadcast_to(value, shape), dtype)

    return initializer


def _optional(function, value):
    return None if value is None else function(value)
