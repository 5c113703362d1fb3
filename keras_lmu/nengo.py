"""Run Legendre Memory Units in Nengo: exactly, with rate neurons or with spiking neurons.

The LMU memory is the continuous linear system

.. math:: \\theta \\, \\dot m(t) = A m(t) + B u(t),

.. math:: A_{ij} = (2i + 1) \\begin{cases} -1 & i < j \\\\ (-1)^{i - j + 1} & i \\ge j
          \\end{cases}, \\qquad B_i = (2i + 1) (-1)^i,

with ``theta`` in seconds here. :class:`LMUMemory` realises it in a Nengo network in
one of two ways:

- exactly, by a :class:`nengo.Node` that steps the zero-order-hold discretization
  :math:`m_k = \\bar A m_{k-1} + \\bar B u_k`, :math:`\\bar A = e^{A\\,dt/\\theta}`,
  :math:`\\bar B = A^{-1}(\\bar A - I) B`, for the simulator's ``dt``
  (:class:`LegendreStateSpace`). ``nengo.LinearFilter`` is not used: it goes through a
  transfer function, which loses precision beyond order ~32;
- with neurons, by one ensemble per memory dimension (a
  :class:`nengo.networks.EnsembleArray`) connected to itself through a lowpass synapse
  :math:`h(t) = e^{-t/\\tau}/\\tau`. A population that feeds ``x`` back through ``h``
  with transform ``M`` and receives ``u`` through ``h`` with transform ``N`` follows
  :math:`\\tau \\dot x = (M - I) x + N u`, so ``M = tau A / theta + I`` and
  ``N = tau B / theta`` give the memory.

:func:`from_keras` turns a trained Keras model made of an ``LMU`` and ``Dense`` layers
into a Nengo network in which one Keras step lasts ``dt`` seconds, and
:func:`run_sequences` feeds it Keras-style input sequences. :func:`delay_task` learns,
online with :class:`nengo.PES`, to read the input delayed by ``theta / 2`` out of a
neural memory.

Nengo is an optional dependency: ``pip install "keras-lmu3[nengo]"``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_lmu import legendre, validation

NENGO_INSTALL_HINT = 'pip install "keras-lmu3[nengo]"'

try:
    import nengo
    from nengo.params import EnumParam, IntParam, NdarrayParam, NumberParam
except ImportError as error:  # pragma: no cover - exercised only without Nengo
    raise ImportError(
        f"keras_lmu.nengo needs Nengo 4.1 or later ({error}); install it with: {NENGO_INSTALL_HINT}"
    ) from error

#: Activations of ``Dense`` layers that :func:`from_keras` converts, as NumPy functions.
DENSE_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
}

#: Defaults of the neural memory.
DEFAULT_TAU = 0.1
DEFAULT_N_NEURONS = 100


class LegendreStateSpace(nengo.Process):
    """``memory_d`` LMU memories stepped exactly, as a Nengo process.

    With the simulator's time step ``dt`` it computes, for every memory ``d``,

    .. math:: m_k[d] = \\bar A m_{k-1}[d] + \\bar B u_k[d]

    where ``(A_bar, B_bar)`` discretize :math:`\\theta \\dot m = A m + B u` with step
    ``dt`` (``discretizer="zoh"``: :math:`\\bar A = e^{A\\,dt/\\theta}`,
    :math:`\\bar B = A^{-1}(\\bar A - I) B`, exact for an input held constant over each
    step; ``"euler"``: :math:`\\bar A = I + A\\,dt/\\theta`, :math:`\\bar B = B\\,dt/\\theta`).
    The input ``u_k`` is the one the node receives at step ``k`` (with ``synapse=None``,
    the value of that same step) and is held over ``(t_{k-1}, t_k]``: the output at
    step ``k`` is the memory at the end of that interval. Use it as
    ``nengo.Node(LegendreStateSpace(...), size_in=memory_d)``.

    Parameters
    ----------
    order : int
        Number of Legendre coefficients per memory.
    theta : float
        Window length, in seconds.
    memory_d : int
        Number of independent memories (the input's size); the output is the
        ``memory_d * order`` memories flattened memory by memory, as in the Keras layers.
    discretizer : {"zoh", "euler"}
        How the system is discretized for the simulator's ``dt``.
    A, B : numpy.ndarray, optional
        The continuous system (default: :func:`keras_lmu.legendre.continuous_system`).
    """

    order = IntParam("order", low=1, readonly=True)
    theta = NumberParam("theta", low=0, low_open=True, readonly=True)
    memory_d = IntParam("memory_d", low=1, readonly=True)
    discretizer = EnumParam("discretizer", values=legendre.DISCRETIZERS, readonly=True)
    A = NdarrayParam("A", shape=("*", "*"), readonly=True)
    B = NdarrayParam("B", shape=("*",), readonly=True)

    def __init__(
        self,
        order: int,
        theta: float,
        memory_d: int = 1,
        discretizer: str = "zoh",
        A: np.ndarray | None = None,
        B: np.ndarray | None = None,
        **kwargs,
    ):
        order = validation.positive_int("order", order)
        theta = validation.positive_finite("theta", theta)  # (seconds)
        memory_d = validation.positive_int("memory_d", memory_d)
        super().__init__(default_size_in=memory_d, default_size_out=memory_d * order, **kwargs)
        default_A, default_B = legendre.continuous_system(order)
        self.order = order
        self.theta = theta
        self.memory_d = memory_d
        self.discretizer = discretizer
        self.A = default_A if A is None else np.asarray(A, dtype=np.float64)
        self.B = default_B if B is None else np.asarray(B, dtype=np.float64)
        if self.A.shape != (order, order) or self.B.shape != (order,):
            raise ValueError(
                f"A and B must have shapes ({order}, {order}) and ({order},), got "
                f"{self.A.shape} and {self.B.shape}"
            )
        for name, matrix in (("A", self.A), ("B", self.B)):
            if not np.all(np.isfinite(matrix)):
                raise ValueError(f"{name} must hold finite numbers only, got {matrix!r}")

    def discrete_system(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """``(A_bar, B_bar)`` for a simulator time step ``dt`` (seconds)."""
        return legendre.discretize(self.A, self.B, self.theta / dt, self.discretizer)

    def _warn_if_euler_unstable(self, dt: float) -> None:
        """Warn, as the layers do, when euler is unstable for ``theta / dt`` steps."""
        bound = legendre.euler_stability_bound_of(self.A)
        if self.theta / dt < bound:
            warnings.warn(
                f"LegendreStateSpace: discretizer='euler' is unstable with theta="
                f"{self.theta:g} s at the simulator's dt={dt:g} s (theta / dt = "
                f"{self.theta / dt:g} steps, below the bound of {bound:.6g} for this A): the "
                f"memory grows without bound. Use discretizer='zoh' (stable for every theta), "
                f"theta >= {bound * dt:.6g} s or a smaller dt.",
                validation.UnstableDiscretizationWarning,
                stacklevel=2,
            )

    def make_state(self, shape_in, shape_out, dt, dtype=None):
        return {"memory": np.zeros(shape_out, dtype=np.float64)}

    def make_step(self, shape_in, shape_out, dt, rng, state):
        if shape_in != (self.memory_d,) or shape_out != (self.memory_d * self.order,):
            raise ValueError(
                f"LegendreStateSpace(order={self.order}, memory_d={self.memory_d}) needs "
                f"size_in={self.memory_d} and size_out={self.memory_d * self.order}, got "
                f"{shape_in} and {shape_out}"
            )
        if self.discretizer == "euler":
            self._warn_if_euler_unstable(dt)
        A_bar, B_bar = self.discrete_system(dt)
        A_bar_transposed = np.ascontiguousarray(A_bar.T)
        memory = state["memory"]
        memory_d, order = self.memory_d, self.order

        def step_legendre_memory(t, u):
            current = memory.reshape(memory_d, order)
            memory[...] = (current @ A_bar_transposed + u[:, None] * B_bar).reshape(-1)
            return memory

        return step_legendre_memory


class LMUMemory(nengo.Network):
    """The LMU memory :math:`\\theta \\dot m = A m + B u` as a Nengo network.

    ``input`` (size ``memory_d``) receives ``u(t)``; ``output`` (size
    ``memory_d * order``) gives ``m(t)``, memory by memory.

    With ``neuron_type=None`` the memory is exact: a node stepping the zero-order-hold
    discretization for the simulator's ``dt`` (:class:`LegendreStateSpace`), connected
    with ``synapse=None`` so that ``output`` at a step holds the memory after that
    step's input. Otherwise each of the ``memory_d * order`` dimensions is an ensemble
    of ``n_neurons`` neurons of ``neuron_type`` (``nengo.LIF()`` spikes,
    ``nengo.LIFRate()`` does not), connected to itself through ``Lowpass(tau)`` with
    the transform ``tau A / theta + I`` and fed the input through ``Lowpass(tau)``
    with the transform ``tau B / theta`` (with ``sim_dt``, the transforms for the
    simulator's steps: see :meth:`neural_transforms`); ``output`` is the decoded,
    unfiltered value (spikes included): connect from it with a synapse.

    Parameters
    ----------
    order : int
        Number of Legendre coefficients per memory.
    theta : float
        Window length, in seconds.
    memory_d : int
        Number of independent memories.
    neuron_type : nengo.neurons.NeuronType or None
        None for the exact memory, else the neurons' type.
    n_neurons : int
        Neurons per memory dimension (neural memory only).
    tau : float
        Time constant of the recurrent lowpass synapse, in seconds (neural memory only).
    radius : float
        Radius of each ensemble: the largest ``|m_i|`` represented well (neural only).
    discretizer : {"zoh", "euler"}
        Discretization of the exact memory (and of the neural one, with ``sim_dt``).
    A, B : numpy.ndarray, optional
        The continuous system (default: the Legendre one).
    sim_dt : float, optional
        The simulator's time step in seconds, for a neural memory whose transforms
        are then made for it (see :meth:`neural_transforms`); a simulator with another
        ``dt`` is refused when it builds the network. None (default): the
        continuous-time transforms, whose error grows with ``dt / tau``. Ignored by
        the exact memory, which is made for the simulator's ``dt`` whatever it is.
    label, seed, add_to_container
        As in :class:`nengo.Network`.
    """

    def __init__(
        self,
        order: int,
        theta: float,
        memory_d: int = 1,
        neuron_type: nengo.neurons.NeuronType | None = None,
        n_neurons: int = DEFAULT_N_NEURONS,
        tau: float = DEFAULT_TAU,
        radius: float = 1.0,
        discretizer: str = "zoh",
        A: np.ndarray | None = None,
        B: np.ndarray | None = None,
        sim_dt: float | None = None,
        label: str | None = None,
        seed: int | None = None,
        add_to_container: bool | None = None,
    ):
        super().__init__(label=label, seed=seed, add_to_container=add_to_container)
        if sim_dt is not None:
            sim_dt = validation.positive_finite("sim_dt", sim_dt)  # (seconds)
        self.sim_dt = sim_dt
        order = validation.positive_int("order", order)
        memory_d = validation.positive_int("memory_d", memory_d)
        theta = validation.positive_finite("theta", theta)  # (seconds)
        if neuron_type is not None and not isinstance(neuron_type, nengo.neurons.NeuronType):
            raise TypeError(
                "neuron_type must be None (the exact memory) or a nengo.neurons.NeuronType "
                f"instance such as nengo.LIF(), got {neuron_type!r}"
            )
        n_neurons = validation.positive_int("n_neurons", n_neurons)
        tau = validation.positive_finite("tau", tau)  # (seconds)
        radius = validation.positive_finite("radius", radius)
        self.order, self.theta, self.memory_d = order, theta, memory_d
        self.neuron_type, self.tau = neuron_type, tau
        process = LegendreStateSpace(order, theta, memory_d, discretizer, A, B)
        self.process = process
        size = memory_d * order
        with self:
            self.input = nengo.Node(size_in=memory_d, label="input")
            if neuron_type is None:
                self.ensemble_array = None
                self.memory = nengo.Node(process, size_in=memory_d, label="memory")
                nengo.Connection(self.input, self.memory, synapse=None)
                self.output = self.memory
            else:
                self.ensemble_array = nengo.networks.EnsembleArray(
                    n_neurons,
                    n_ensembles=size,
                    ens_dimensions=1,
                    neuron_type=neuron_type,
                    radius=radius,
                    label="memory",
                )
                recurrent, input_transform = self.neural_transforms()
                if sim_dt is not None:
                    nengo.Node(_SimulatorStepCheck(sim_dt), label="sim_dt check")
                nengo.Connection(
                    self.input,
                    self.ensemble_array.input,
                    transform=input_transform,
                    synapse=nengo.Lowpass(tau),
                )
                nengo.Connection(
                    self.ensemble_array.output,
                    self.ensemble_array.input,
                    transform=recurrent,
                    synapse=nengo.Lowpass(tau),
                )
                self.output = self.ensemble_array.output

    def neural_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """The recurrent transform ``M`` and the input transform ``N`` of the neural
        memory, one block per memory.

        Without ``sim_dt``, ``M = tau A / theta + I`` and ``N = tau B / theta``: in
        continuous time, ``tau dx/dt = (M - I) x + N u`` is the memory. The simulator
        runs the lowpass synapse in steps, ``y_{k+1} = a y_k + (1 - a) v_k`` with
        ``a = exp(-sim_dt / tau)``, so with ``sim_dt``,

        .. math:: M = \\frac{\\bar A - a I}{1 - a}, \\qquad N = \\frac{\\bar B}{1 - a},

        where ``(A_bar, B_bar)`` discretize the memory for ``sim_dt`` (as the exact
        memory does), give ``x_{k+1} = A_bar x_k + B_bar u_k``: the exact memory, one
        step late, for ideal neurons.

        Returns
        -------
        recurrent, input_transform : numpy.ndarray
            Shapes (memory_d * order, memory_d * order) and (memory_d * order, memory_d).
        """
        if self.sim_dt is None:
            ratio = self.tau / self.theta
            recurrent = ratio * self.process.A + np.eye(self.order)
            input_transform = ratio * self.process.B
        else:
            decay = math.exp(-self.sim_dt / self.tau)
            A_bar, B_bar = self.process.discrete_system(self.sim_dt)
            recurrent = (A_bar - decay * np.eye(self.order)) / (1.0 - decay)
            input_transform = B_bar / (1.0 - decay)
        blocks = np.eye(self.memory_d)
        return np.kron(blocks, recurrent), np.kron(blocks, input_transform[:, None])


class _SimulatorStepCheck(nengo.Process):
    """A process of no input and no output that refuses a simulator whose time step
    is not ``sim_dt`` (the one a neural memory's transforms were made for)."""

    def __init__(self, sim_dt: float):
        super().__init__(default_size_in=0, default_size_out=0)
        self.sim_dt = sim_dt

    def make_step(self, shape_in, shape_out, dt, rng, state):
        if abs(dt - self.sim_dt) > 1e-9 * self.sim_dt:
            raise ValueError(
                f"this neural LMUMemory was made for a simulator with dt={self.sim_dt:g} s "
                f"(its sim_dt), but the simulator's dt is {dt:g} s"
            )
        empty = np.zeros(0)
        return lambda t: empty


# -- Keras models -----------------------------------------------------------------------


@dataclass
class DenseSpec:
    """One ``Dense`` layer as NumPy: ``activation(x @ kernel + bias)``."""

    kernel: np.ndarray
    bias: np.ndarray
    activation: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return DENSE_ACTIVATIONS[self.activation](x @ self.kernel + self.bias)


@dataclass
class KerasLMUSpec:
    """The weights of an ``LMU`` + ``Dense`` model, read by :func:`read_keras_model`."""

    order: int
    memory_d: int
    input_d: int
    theta_steps: float
    discretizer: str
    kernel: np.ndarray  # (input_d, memory_d)
    bias: np.ndarray  # (memory_d,)
    A: np.ndarray
    B: np.ndarray
    input_to_hidden: bool
    hidden: DenseSpec | None
    readouts: list[DenseSpec] = field(default_factory=list)

    @property
    def output_d(self) -> int:
        for layer in [self.hidden, *self.readouts][::-1]:
            if layer is not None:
                return layer.kernel.shape[1]
        return self.memory_d * self.order + (self.input_d if self.input_to_hidden else 0)

    def readout(self, memory: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """The hidden ``Dense`` (if any) and the readouts, from the memory (and input)."""
        x = np.concatenate([memory, inputs], axis=-1) if self.input_to_hidden else memory
        for layer in [self.hidden, *self.readouts]:
            if layer is not None:
                x = layer(x)
        return x


def _dense_spec(layer, where: str) -> DenseSpec:
    import keras

    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(
            f"from_keras converts an LMU followed by Dense layers; {where} is "
            f"{type(layer).__name__} {layer.name!r}, which is not supported"
        )
    quantization = getattr(layer, "quantization_mode", None)
    if quantization is not None:
        # its kernel holds the quantized integers; the scales are separate weights
        raise ValueError(
            f"from_keras converts Dense layers with float weights; {where} {layer.name!r} is "
            f"quantized (quantization_mode={quantization!r}): convert the model before "
            "model.quantize()"
        )
    activation = getattr(layer.activation, "__name__", str(layer.activation))
    if activation not in DENSE_ACTIVATIONS:
        raise ValueError(
            f"from_keras supports Dense activations {sorted(DENSE_ACTIVATIONS)}; {where} "
            f"{layer.name!r} has activation {activation!r}, which is not supported"
        )
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64)
    if layer.bias is None:
        bias = np.zeros(kernel.shape[1])
    else:
        bias = np.asarray(keras.ops.convert_to_numpy(layer.bias), dtype=np.float64)
    return DenseSpec(kernel, bias, activation)


def _check_lmu_options(lmu) -> None:
    """Raise a ValueError naming the first option of ``lmu`` that the network cannot
    reproduce."""
    config = lmu.cell_config
    for option in ("hidden_to_memory", "memory_to_memory"):
        if config[option]:
            raise ValueError(f"from_keras does not support LMUs with {option}=True")
    for option in ("go_backwards", "return_state"):
        if getattr(lmu, option):
            raise ValueError(f"from_keras does not support LMUs with {option}=True")
    if lmu.stateful:
        # the network's memory starts from zero for every sequence
        raise ValueError(
            f"from_keras does not support LMUs with stateful=True ({lmu.name!r}): the "
            "network starts every sequence from a zero memory; convert a stateless copy"
        )
    if lmu.truncate_ir is not None and lmu.conv_mode == "raw":
        # the network computes the exact memory; the LMU may drop its response's tail
        raise ValueError(
            f"from_keras does not support LMUs with truncate_ir={lmu.truncate_ir!r} "
            "(conv_mode='raw' may truncate the impulse response): use truncate_ir=None"
        )


def _model_layers(model) -> list:
    """The layers of ``model`` in order, checking that they form a single chain and that
    the network can reproduce each LMU's options."""
    import keras

    from keras_lmu.layer import LMU

    if isinstance(model, LMU):
        _check_lmu_options(model)
        return [model]
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"from_keras takes a keras.Model or an LMU layer, got {type(model).__name__}"
        )
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "from_keras converts models with one input and one output, got "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    if not layers:
        raise ValueError("from_keras found no layers in the model")
    for layer in layers:
        if isinstance(layer, keras.layers.Masking):
            raise ValueError(
                f"from_keras does not support masks: {layer.name!r} is a Masking layer (the "
                "network steps through every time step)"
            )
        if isinstance(layer, LMU):
            _check_lmu_options(layer)
    if model.inputs[0] is not layers[0].input:
        raise ValueError("from_keras converts a chain of layers whose first one is an LMU")
    for previous, layer in zip(layers, layers[1:], strict=False):
        if layer.input is not previous.output:
            raise ValueError(
                "from_keras converts a chain of layers (LMU, then Dense, each taking the "
                f"previous one's output); {layer.name!r} does not take {previous.name!r}'s output"
            )
    if model.outputs[0] is not layers[-1].output:
        raise ValueError("from_keras converts models whose output is their last layer's")
    # Dropout passes its input on unchanged at inference: there is nothing to convert.
    return [layer for layer in layers if not isinstance(layer, keras.layers.Dropout)]


def read_keras_model(model_or_layer) -> KerasLMUSpec:
    """Read the weights of an ``LMU`` (+ ``Dense`` readouts) model into NumPy.

    Supported: a built ``keras_lmu.LMU`` with any ``memory_d``, ``hidden_cell`` a
    ``keras.layers.Dense`` or None, ``input_to_hidden`` either way, no
    ``hidden_to_memory``, no ``memory_to_memory``, not ``go_backwards``,
    ``return_state`` nor ``stateful``; then any number of ``Dense`` layers, with
    ``Dropout`` layers anywhere between them (identities at inference), and no
    ``Masking``. Every ``Dense`` must use the activation ``linear``, ``relu`` or
    ``tanh``, and float (not quantized) weights. Trained ``theta``, ``A`` and ``B``
    are read from the weights.

    Raises
    ------
    ValueError
        Naming the layer or option that is not supported.
    """
    import keras

    from keras_lmu.layer import LMU

    layers = _model_layers(model_or_layer)
    lmu, readouts = layers[0], layers[1:]
    if not isinstance(lmu, LMU):
        raise ValueError(
            f"from_keras converts models whose first layer is a keras_lmu.LMU, got "
            f"{type(lmu).__name__} {lmu.name!r}"
        )
    if lmu.layer is None:
        raise ValueError(f"the LMU {lmu.name!r} is not built: call it on an input first")
    config = lmu.cell_config
    hidden_cell = lmu.hidden_cell
    hidden = None if hidden_cell is None else _dense_spec(hidden_cell, "the LMU's hidden_cell")
    memory = lmu._memory_layer
    order, memory_d, input_d = memory.order, memory.memory_d, memory.input_d

    def numpy(variable) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)

    A, B = legendre.continuous_system(order)
    return KerasLMUSpec(
        order=order,
        memory_d=memory_d,
        input_d=input_d,
        theta_steps=float(memory.theta),
        discretizer=memory.discretizer,
        kernel=np.eye(input_d) if memory.kernel is None else numpy(memory.kernel),
        bias=np.zeros(memory_d) if memory.bias is None else numpy(memory.bias),
        A=A if memory.A is None else numpy(memory.A),
        B=B if memory.B is None else numpy(memory.B),
        input_to_hidden=bool(config["input_to_hidden"]),
        hidden=hidden,
        readouts=[_dense_spec(layer, "the layer") for layer in readouts],
    )


class KerasLMUNetwork(nengo.Network):
    """A Keras ``LMU`` + ``Dense`` model as a Nengo network (made by :func:`from_keras`).

    ``input`` (size ``input_d``) takes the model's input ``x(t)``, one Keras step
    lasting ``dt`` seconds; ``memory`` is an :class:`LMUMemory` with
    ``theta = theta_steps * dt`` fed ``u = x @ kernel + bias``; ``output`` is a node
    computing the hidden ``Dense`` (if any) and the readouts in float64 from the
    memory (through ``readout_synapse`` for a neural memory, directly for the exact
    one) and, with ``input_to_hidden``, from ``x``.

    Attributes
    ----------
    spec : KerasLMUSpec
        The weights it was built from.
    dt : float
        Seconds per Keras step.
    """

    def __init__(
        self,
        spec: KerasLMUSpec,
        dt: float,
        neuron_type: nengo.neurons.NeuronType | None = None,
        n_neurons: int = DEFAULT_N_NEURONS,
        tau: float = DEFAULT_TAU,
        radius: float = 1.0,
        readout_synapse: float | None = 0.01,
        sim_dt: float | None = None,
        label: str | None = None,
        seed: int | None = None,
        add_to_container: bool | None = None,
    ):
        super().__init__(label=label, seed=seed, add_to_container=add_to_container)
        self.spec, self.dt = spec, validation.positive_finite("dt", dt)  # (seconds per step)
        size = spec.memory_d * spec.order
        with self:
            self.input = nengo.Node(size_in=spec.input_d, label="input")
            self.memory = LMUMemory(
                spec.order,
                spec.theta_steps * dt,
                memory_d=spec.memory_d,
                neuron_type=neuron_type,
                n_neurons=n_neurons,
                tau=tau,
                radius=radius,
                discretizer=spec.discretizer,
                A=spec.A,
                B=spec.B,
                sim_dt=sim_dt,
                label="lmu_memory",
            )
            nengo.Connection(self.input, self.memory.input, transform=spec.kernel.T, synapse=None)
            if np.any(spec.bias != 0):
                self.bias = nengo.Node(spec.bias, label="bias")
                nengo.Connection(self.bias, self.memory.input, synapse=None)
            extra = spec.input_d if spec.input_to_hidden else 0

            def readout(t, values):
                return spec.readout(values[:size], values[size:])

            self.output = nengo.Node(
                readout, size_in=size + extra, size_out=spec.output_d, label="readout"
            )
            synapse = None if neuron_type is None else readout_synapse
            nengo.Connection(self.memory.output, self.output[:size], synapse=synapse)
            if extra:
                nengo.Connection(self.input, self.output[size:], synapse=None)


def from_keras(
    model_or_layer,
    dt: float = 0.001,
    neuron_type: nengo.neurons.NeuronType | None = None,
    n_neurons: int = DEFAULT_N_NEURONS,
    tau: float = DEFAULT_TAU,
    radius: float = 1.0,
    readout_synapse: float | None = 0.01,
    seed: int | None = None,
    sim_dt: float | None = None,
) -> KerasLMUNetwork:
    """Convert a trained Keras ``LMU`` (+ ``Dense``) model into a Nengo network.

    One Keras step lasts ``dt`` seconds of simulation, so the memory's window is
    ``theta_seconds = theta_steps * dt``; the encoder ``u = x @ kernel + bias``, theta
    (trained or not), ``A``, ``B`` and the ``Dense`` weights come from the model.

    With ``neuron_type=None`` the memory is exact (:class:`LegendreStateSpace`): fed
    by :func:`run_sequences`, which holds ``x_t`` over the ``t``-th interval of ``dt``
    seconds, the zero-order-hold steps of the simulator compose into Keras's
    :math:`m_t = \\bar A m_{t-1} + \\bar B u_t` for any simulator ``dt`` that divides
    ``dt``, and the outputs match Keras's up to float rounding (Euler steps do not
    compose: a model with ``discretizer="euler"`` is simulated with ``dt`` itself).
    With neurons the memory is approximated (see :class:`LMUMemory`); the readouts
    stay exact.

    Parameters
    ----------
    model_or_layer : keras.Model or keras_lmu.LMU
        A built model: an ``LMU`` then ``Dense`` layers (see :func:`read_keras_model`
        for what is supported).
    dt : float
        Seconds of simulation per Keras step.
    neuron_type, n_neurons, tau, radius
        As in :class:`LMUMemory` (None: the exact memory).
    readout_synapse : float or None
        Synapse from a neural memory to the readout node, in seconds.
    seed : int, optional
        Seed of the network (neural memory: its neurons).
    sim_dt : float, optional
        The simulator's time step in seconds, for a neural memory made for it (see
        :class:`LMUMemory`); :func:`run_sequences` then runs with it.

    Returns
    -------
    KerasLMUNetwork
        With ``input``, ``memory`` and ``output``.

    Raises
    ------
    ValueError
        When the model holds a layer or an option that is not supported.
    """
    spec = read_keras_model(model_or_layer)
    return KerasLMUNetwork(
        spec,
        dt,
        neuron_type=neuron_type,
        n_neurons=n_neurons,
        tau=tau,
        radius=radius,
        readout_synapse=readout_synapse,
        sim_dt=sim_dt,
        label="keras_lmu",
        seed=seed,
    )


class _HeldSequence:
    """Node output: the current sequence's step ``k`` over ``(k dt, (k + 1) dt]``."""

    def __init__(self, input_d: int, dt: float):
        self.sequence = np.zeros((1, input_d))
        self.dt = dt

    def __call__(self, t: float) -> np.ndarray:
        step = math.ceil(t / self.dt - 1e-9) - 1
        return self.sequence[min(max(step, 0), len(self.sequence) - 1)]


def run_sequences(
    network: KerasLMUNetwork,
    inputs: np.ndarray,
    sim_dt: float | None = None,
    return_sequences: bool = False,
) -> np.ndarray:
    """Simulate ``network`` on Keras-style inputs, one sequence after another.

    Step ``t`` of a sequence is held over ``(t dt, (t + 1) dt]`` and the output is
    read at the end of each interval; the simulator is reset between sequences.

    Parameters
    ----------
    network : KerasLMUNetwork
        From :func:`from_keras`.
    inputs : numpy.ndarray
        Shape (batch, steps, input_d).
    sim_dt : float, optional
        The simulator's time step; ``network.dt`` divided by a whole number (default:
        the neural memory's ``sim_dt`` if it was made for one, else ``network.dt``),
        and ``network.dt`` itself for the exact memory of a model with
        ``discretizer="euler"``.
    return_sequences : bool
        Return the output of every step (batch, steps, output_d), or of the last one.

    Returns
    -------
    numpy.ndarray
        The outputs, float64.
    """
    if not isinstance(network, KerasLMUNetwork):
        raise TypeError(
            "network must be a KerasLMUNetwork made by keras_lmu.nengo.from_keras(model), "
            f"got {type(network).__name__}"
        )
    inputs = np.asarray(inputs, dtype=np.float64)
    if inputs.ndim != 3 or inputs.shape[-1] != network.spec.input_d:
        raise ValueError(
            f"inputs must have shape (batch, steps, {network.spec.input_d}), got {inputs.shape}"
        )
    if inputs.shape[0] == 0 or inputs.shape[1] == 0:
        raise ValueError(f"inputs must hold at least one sequence of one step, got {inputs.shape}")
    if not np.all(np.isfinite(inputs)):
        raise ValueError("inputs must hold finite numbers only (they hold NaN or infinity)")
    made_for = network.memory.sim_dt if network.memory.neuron_type is not None else None
    if sim_dt is None:
        sim_dt = network.dt if made_for is None else made_for
    sim_dt = validation.positive_finite("sim_dt", sim_dt)
    if made_for is not None and abs(sim_dt - made_for) > 1e-9 * made_for:
        raise ValueError(
            f"sim_dt={sim_dt} must be the sim_dt={made_for} the network's neural memory was "
            "made for (from_keras(..., sim_dt=...))"
        )
    return_sequences = validation.flag("return_sequences", return_sequences)
    substeps = round(network.dt / sim_dt)
    if substeps < 1 or abs(substeps * sim_dt - network.dt) > 1e-9 * network.dt:
        raise ValueError(f"sim_dt={sim_dt} must divide the network's dt={network.dt}")
    exact_memory = network.memory.neuron_type is None
    if substeps > 1 and exact_memory and network.spec.discretizer == "euler":
        raise ValueError(
            f"sim_dt={sim_dt} must equal the network's dt={network.dt} for a model with "
            "discretizer='euler': Euler steps do not compose (n steps of I + A dt / (n theta) "
            "are not one step of I + A dt / theta), so only sim_dt=dt reproduces the model's "
            "memory"
        )
    batch, steps, _ = inputs.shape
    source = _HeldSequence(network.spec.input_d, network.dt)
    with nengo.Network(add_to_container=False) as wrapper:
        stimulus = nengo.Node(source, size_out=network.spec.input_d, label="sequence")
        wrapper.add(network)
        nengo.Connection(stimulus, network.input, synapse=None)
        probe = nengo.Probe(network.output, synapse=None)
    outputs = []
    with nengo.Simulator(wrapper, dt=sim_dt, progress_bar=False) as simulator:
        for index in range(batch):
            if index:
                simulator.reset()
            source.sequence = inputs[index]
            simulator.run_steps(steps * substeps)
            data = simulator.data[probe]
            simulator.clear_probes()
            outputs.append(data[substeps - 1 :: substeps])
    outputs = np.stack(outputs)
    return outputs if return_sequences else outputs[:, -1]


# -- online learning: the delay task ------------------------------------------------------


@dataclass
class DelayTaskResult:
    """Signals and errors of one run of :func:`delay_task`."""

    label: str
    times: np.ndarray
    signal: np.ndarray
    target: np.ndarray
    output: np.ndarray
    error_before: float
    error_after: float
    window: float
    seconds: float

    @property
    def improvement(self) -> float:
        """``error_before / error_after``."""
        return self.error_before / self.error_after


def normalized_rmse(output: np.ndarray, target: np.ndarray) -> float:
    """``sqrt(mean((output - target)^2)) / sqrt(mean(target^2))``."""
    output, target = np.asarray(output), np.asarray(target)
    return float(np.sqrt(np.mean((output - target) ** 2)) / np.sqrt(np.mean(target**2)))


class DelayLine(nengo.Process):
    """Its input delayed by ``delay`` seconds (rounded to whole simulator steps).

    The output at step ``k`` is the input of step ``k - round(delay / dt)`` (zeros
    before the first).
    """

    delay = NumberParam("delay", low=0, readonly=True)

    def __init__(self, delay: float, size: int = 1, **kwargs):
        super().__init__(default_size_in=size, default_size_out=size, **kwargs)
        self.delay = delay

    def make_state(self, shape_in, shape_out, dt, dtype=None):
        steps = round(self.delay / dt)
        return {"buffer": np.zeros((steps + 1,) + tuple(shape_in)), "position": np.zeros(1)}

    def make_step(self, shape_in, shape_out, dt, rng, state):
        buffer, position = state["buffer"], state["position"]
        length = len(buffer)

        def step_delay(t, x):
            index = int(position[0])
            buffer[index] = x
            position[0] = (index + 1) % length
            return buffer[(index + 1) % length]

        return step_delay


def delay_task(
    neuron_type: nengo.neurons.NeuronType | None = None,
    order: int = 6,
    theta: float = 0.5,
    n_neurons: int = 100,
    tau: float = DEFAULT_TAU,
    high: float = 2.0,
    rms: float = 0.3,
    sim_time: float = 20.0,
    window: float = 2.0,
    learning_rate: float = 1e-4,
    dt: float = 0.001,
    seed: int = 0,
    label: str | None = None,
) -> DelayTaskResult:
    """Learn online, with PES, to output the input delayed by ``theta / 2``.

    Band-limited white noise ``u(t)`` (``nengo.processes.WhiteSignal`` up to ``high``
    Hz, ``rms``, period ``10 * sim_time`` so that it does not repeat) drives a neural
    :class:`LMUMemory`. Every memory ensemble projects to a one-dimensional output
    through decoders that start at zero and are learned by :class:`nengo.PES` from the
    error ``y(t) - u(t - theta / 2)`` (both filtered by 10 ms). The error is
    :func:`normalized_rmse` of ``y`` against the delayed input over the first and the
    last ``window`` seconds.

    Parameters
    ----------
    neuron_type : nengo.neurons.NeuronType, optional
        Neurons of the memory (default ``nengo.LIF()``, spiking).
    order, theta, n_neurons, tau
        The memory (see :class:`LMUMemory`).
    high, rms
        The input signal.
    sim_time, window, learning_rate, dt, seed
        Simulated seconds, the length of the windows the errors are measured on, the
        PES learning rate, the simulator's step and the seed of network and signal.
    label : str, optional
        Name of the run in the result (default: the neuron type).

    Returns
    -------
    DelayTaskResult
    """
    neuron_type = nengo.LIF() if neuron_type is None else neuron_type
    theta = validation.positive_finite("theta", theta)
    sim_time = validation.positive_finite("sim_time", sim_time)
    window = validation.positive_finite("window", window)
    dt = validation.positive_finite("dt", dt)
    for name, value in (("high", high), ("rms", rms)):
        validation.positive_finite(name, value)
    learning_rate = validation.non_negative_finite("learning_rate", learning_rate)
    delay = theta / 2
    if not sim_time > delay:
        raise ValueError(
            f"sim_time must be longer than the delay theta / 2 = {delay:g} s, got {sim_time:g}"
        )
    # the first window starts when the target does (after the delay); the last must not
    # overlap it, and each must hold at least one step
    longest_window = (sim_time - delay) / 2
    if not dt <= window <= longest_window:
        raise ValueError(
            f"window must be between dt={dt:g} and (sim_time - theta / 2) / 2 = "
            f"{longest_window:g} s, so that the first and the last window hold steps and do "
            f"not overlap, got window={window:g} (sim_time={sim_time:g}, theta={theta:g})"
        )
    synapse = 0.01
    with nengo.Network(seed=seed) as network:
        signal = nengo.Node(
            nengo.processes.WhiteSignal(10 * sim_time, high=high, rms=rms, seed=seed),
            label="signal",
        )
        memory = LMUMemory(order, theta, neuron_type=neuron_type, n_neurons=n_neurons, tau=tau)
        nengo.Connection(signal, memory.input, synapse=None)
        delayed = nengo.Node(DelayLine(delay), size_in=1, label="delayed")
        nengo.Connection(signal, delayed, synapse=None)
        output = nengo.Node(size_in=1, label="output")
        error = nengo.Node(size_in=1, label="error")
        nengo.Connection(output, error, synapse=synapse)
        nengo.Connection(delayed, error, transform=-1, synapse=synapse)
        for ensemble in memory.ensemble_array.ea_ensembles:
            connection = nengo.Connection(
                ensemble,
                output,
                function=lambda x: [0.0],
                synapse=synapse,
                learning_rule_type=nengo.PES(learning_rate=learning_rate),
            )
            nengo.Connection(error, connection.learning_rule, synapse=None)
        probes = {
            "signal": nengo.Probe(signal, synapse=None),
            "target": nengo.Probe(delayed, synapse=synapse),
            "output": nengo.Probe(output, synapse=synapse),
        }
    start = time.perf_counter()
    with nengo.Simulator(network, dt=dt, progress_bar=False, seed=seed) as simulator:
        simulator.run(sim_time)
    seconds = time.perf_counter() - start
    data = {name: simulator.data[probe][:, 0] for name, probe in probes.items()}
    times = simulator.trange()
    first = (times > delay) & (times <= delay + window)
    last = times > sim_time - window
    return DelayTaskResult(
        label=label or type(neuron_type).__name__,
        times=times,
        signal=data["signal"],
        target=data["target"],
        output=data["output"],
        error_before=normalized_rmse(data["output"][first], data["target"][first]),
        error_after=normalized_rmse(data["output"][last], data["target"][last]),
        window=window,
        seconds=seconds,
    )


def plot_delay_task(results: Sequence[DelayTaskResult], path: str | Path) -> Path:
    """Draw the first and last seconds of each delay-task run to ``path`` (matplotlib).

    One row per run: the delayed input (target) and the learned output over the
    first and the last 3 seconds, with the errors (over ``result.window`` seconds) in
    the titles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_lmu.plots import save_figure

    path = Path(path)
    figure, axes = plt.subplots(len(results), 2, figsize=(10, 2.6 * len(results)), squeeze=False)
    for row, result in zip(axes, results, strict=True):
        times = result.times
        spans = (
            ("start of learning", times <= 3.0, "first"),
            ("end", times > times[-1] - 3.0, "last"),
        )
        errors = {"first": result.error_before, "last": result.error_after}
        for axis, (name, span, which) in zip(row, spans, strict=True):
            axis.plot(times[span], result.target[span], color="0.3", label="u(t - theta/2)")
            axis.plot(times[span], result.output[span], color="C1", label="learned output")
            axis.set_title(
                f"{result.label}, {name}: NRMSE {errors[which]:.2f} over the {which} "
                f"{result.window:g} s",
                fontsize="medium",
            )
            axis.set_xlabel("time (s)")
        row[0].legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path)  # at exactly ``path``, in the format of its extension
    plt.close(figure)
    return path
