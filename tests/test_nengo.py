"""keras_lmu.nengo: the Legendre memory in Nengo, exact and with neurons; Keras models
converted to Nengo; online learning of a delay with PES."""

import os
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import DTYPE, TOLERANCE, assert_close

nengo = pytest.importorskip(
    "nengo", reason='Nengo is not installed (pip install "keras-lmu3[nengo]")'
)

import keras_lmu  # noqa: E402
from keras_lmu import legendre  # noqa: E402
from keras_lmu import nengo as lmu_nengo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def simulate_memory(memory_network, signal, dt):
    """Feed ``signal`` (steps, memory_d), one value per simulator step; probe the output."""
    with nengo.Network() as network:
        stimulus = nengo.Node(lambda t: signal[min(round(t / dt), len(signal)) - 1])
        network.add(memory_network)
        nengo.Connection(stimulus, memory_network.input, synapse=None)
        probe = nengo.Probe(memory_network.output, synapse=None)
    with nengo.Simulator(network, dt=dt, progress_bar=False) as simulator:
        simulator.run_steps(len(signal))
    return simulator.data[probe]


@pytest.mark.parametrize("memory_d", [1, 2])
def test_exact_memory_is_the_zoh_memory(memory_d):
    order, theta, dt, steps = 12, 0.05, 0.001, 120
    signal = np.random.default_rng(0).standard_normal((steps, memory_d))
    memory = lmu_nengo.LMUMemory(order, theta, memory_d=memory_d, add_to_container=False)
    nengo_memory = simulate_memory(memory, signal, dt)

    A_bar, B_bar = legendre.discrete_system(order, theta / dt)
    state = np.zeros((memory_d, order))
    reference = []
    for u in signal:
        state = state @ A_bar.T + u[:, None] * B_bar
        reference.append(state.reshape(-1))
    np.testing.assert_allclose(nengo_memory, np.array(reference), rtol=0, atol=1e-12)


def memory_model_and_network(order, theta, discretizer, seed, steps=30):
    """A Keras model of 2 memories (no hidden layer, every step returned), random inputs
    of shape (2, steps, 2), and the model's exact Nengo network with dt = 0.01 s."""
    inputs = keras.Input((steps, 2))
    lmu = keras_lmu.LMU(
        memory_d=2,
        order=order,
        theta=theta,
        hidden_cell=None,
        return_sequences=True,
        discretizer=discretizer,
    )
    model = keras.Model(inputs, lmu(inputs))
    x = np.random.default_rng(seed).standard_normal((2, steps, 2)).astype(DTYPE)
    return model, x, lmu_nengo.from_keras(model, dt=0.01)


def test_exact_memory_with_finer_simulator_steps_is_the_lmu_layer(exact_floatx):
    """One Keras step = 10 simulator steps: the zoh steps compose into the layer's."""
    model, x, network = memory_model_and_network(10, 17.5, "zoh", seed=1)
    nengo_memory = lmu_nengo.run_sequences(network, x, sim_dt=0.001, return_sequences=True)
    assert_close(nengo_memory, model.predict(x, verbose=0), tolerance=max(TOLERANCE, 1e-9))


def test_euler_model_is_simulated_at_its_own_steps_only(exact_floatx):
    """Euler steps do not compose: with sim_dt < dt the memory was 0.3-0.4 off, silently."""
    model, x, network = memory_model_and_network(4, 30.0, "euler", seed=3)
    with pytest.raises(
        ValueError,
        match="must equal the network's dt=0.01 for a model with discretizer='euler'",
    ):
        lmu_nengo.run_sequences(network, x, sim_dt=0.001)
    nengo_memory = lmu_nengo.run_sequences(network, x, sim_dt=0.01, return_sequences=True)
    assert_close(nengo_memory, model.predict(x, verbose=0), tolerance=max(TOLERANCE, 1e-9))


@pytest.fixture
def psmnist_style_model(exact_floatx):
    """20 steps, 1 input, LMU(order 8, theta 20, Dense(16, tanh)), Dense(10) logits,
    trained for 2 epochs on 64 random sequences."""
    steps, classes = 20, 10
    rng = np.random.default_rng(2)
    inputs = keras.Input((steps, 1))
    lmu = keras_lmu.LMU(
        memory_d=1,
        order=8,
        theta=steps,
        hidden_cell=keras.layers.Dense(16, activation="tanh"),
        use_bias=True,
        seed=0,
    )
    logits = keras.layers.Dense(classes)(lmu(inputs))
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = rng.uniform(0, 1, (64, steps, 1)).astype(DTYPE)
    y = rng.integers(0, classes, 64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    return model, x[:4]


def test_from_keras_gives_the_trained_models_logits(psmnist_style_model):
    model, x = psmnist_style_model
    network = lmu_nengo.from_keras(model, dt=0.001)
    assert network.memory.theta == pytest.approx(20 * 0.001)
    # measured: 6e-8 on JAX in float64 (the error of the Keras model's own last-step
    # computation), 1e-7 in float32
    assert_close(
        lmu_nengo.run_sequences(network, x), model.predict(x, verbose=0), max(TOLERANCE, 1e-6)
    )


@pytest.mark.skipif(
    not os.environ.get("KERAS_LMU_DATA"),
    reason="KERAS_LMU_DATA is not set: this test reads real MNIST ($KERAS_LMU_DATA/mnist.npz)",
)
def test_from_keras_runs_the_shipped_psmnist_model_on_test_digits():
    """models/psmnist.keras (LMU of order 512 over 784 pixels, then Dense and Dropout
    layers) in Nengo, with the exact memory: Keras's logits on three test digits."""
    from keras_lmu.datasets import load_psmnist

    _, _, (x_test, _) = load_psmnist()
    x = x_test[:3]
    model = keras.saving.load_model(ROOT / "models" / "psmnist.keras")
    network = lmu_nengo.from_keras(model, dt=0.001)
    logits = lmu_nengo.run_sequences(network, x)
    expected = model.predict(x, verbose=0)
    # the float32 Keras model against the float64 simulation
    assert_close(logits, expected, tolerance=1e-4)
    assert (np.argmax(logits, -1) == np.argmax(expected, -1)).all()


def test_from_keras_neural_memory_error_is_measured(psmnist_style_model):
    model, x = psmnist_style_model
    network = lmu_nengo.from_keras(
        model, dt=0.05, neuron_type=nengo.LIF(), n_neurons=50, seed=0, readout_synapse=0.005
    )
    logits = lmu_nengo.run_sequences(network, x[:2], sim_dt=0.001)
    reference = model.predict(x[:2], verbose=0)
    error = lmu_nengo.normalized_rmse(logits, reference)
    assert np.isfinite(error) and error < 1.0, error


@pytest.mark.parametrize(
    "make_model, message",
    [
        (
            lambda i: keras.layers.Dense(3, activation="softmax")(
                keras_lmu.LMU(1, 4, 10, hidden_cell=None)(i)
            ),
            "activation 'softmax'",
        ),
        (
            lambda i: keras_lmu.LMU(1, 4, 10, hidden_cell=keras.layers.SimpleRNNCell(3))(i),
            "SimpleRNNCell",
        ),
        (
            lambda i: keras_lmu.LMU(
                1, 4, 10, hidden_cell=keras.layers.Dense(3), hidden_to_memory=True
            )(i),
            "hidden_to_memory",
        ),
        (
            lambda i: keras_lmu.LMU(1, 4, 10, hidden_cell=None, memory_to_memory=True)(i),
            "memory_to_memory",
        ),
        (lambda i: keras.layers.Dense(3)(keras.layers.LSTM(4)(i)), "first layer is"),
        (  # (it was converted without its truncation: outputs off by 0.18 of 0.94)
            lambda i: keras_lmu.LMU(1, 4, 3, None, conv_mode="raw", truncate_ir=0.2)(i),
            "truncate_ir=0.2",
        ),
    ],
)
def test_from_keras_names_what_is_unsupported(make_model, message):
    inputs = keras.Input((10, 2))
    model = keras.Model(inputs, make_model(inputs))
    with pytest.raises(ValueError, match=message):
        lmu_nengo.from_keras(model)


def stateful_model():
    inputs = keras.Input((10, 2), batch_size=2)
    return keras.Model(inputs, keras_lmu.LMU(1, 4, 10, None, stateful=True)(inputs))


def return_state_model():
    inputs = keras.Input((10, 2))
    output, _ = keras_lmu.LMU(1, 4, 10, None, return_state=True)(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(output))


def masking_model():
    inputs = keras.Input((10, 2))
    masked = keras.layers.Masking()(inputs)
    return keras.Model(inputs, keras_lmu.LMU(1, 4, 10, None)(masked))


def quantized_model(where):
    inputs = keras.Input((10, 2))
    lmu = keras_lmu.LMU(1, 4, 10, keras.layers.Dense(5, activation="tanh"))
    model = keras.Model(inputs, keras.layers.Dense(3)(lmu(inputs)))
    (model.layers[-1] if where == "readout" else lmu.hidden_cell).quantize("int8")
    return model


@pytest.mark.parametrize(
    "make_model, message",
    [
        # (a stateful LMU's carried memory was dropped: 11-13% of the output off its second call)
        (stateful_model, r"stateful=True \('lmu"),
        # (refused for not being a chain, naming neither)
        (return_state_model, "return_state=True"),
        (masking_model, "does not support masks: 'masking' is a Masking layer"),
        # (the int8 kernel was read without its scale: outputs about 144 times Keras's)
        (lambda: quantized_model("readout"), "quantization_mode='int8'"),
        (lambda: quantized_model("hidden"), "the LMU's hidden_cell .*quantization_mode='int8'"),
    ],
)
def test_from_keras_names_what_it_cannot_reproduce(make_model, message):
    with pytest.raises(ValueError, match=message):
        lmu_nengo.from_keras(make_model())


@pytest.mark.parametrize("dt", [0, -1.0, float("nan")])
def test_from_keras_names_a_bad_dt(dt):
    """(it blamed theta, which the user did not pass: "theta must be positive")"""
    inputs = keras.Input((10, 2))
    model = keras.Model(inputs, keras_lmu.LMU(1, 4, 10, hidden_cell=None)(inputs))
    with pytest.raises(ValueError, match="dt must be a finite positive number, got"):
        lmu_nengo.from_keras(model, dt=dt)


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ((4, float("inf")), ValueError, "theta must be a finite positive number"),  # (accepted)
        ((4, 0.0), ValueError, "theta must be a finite positive number"),
        ((2.5, 1.0), TypeError, "order must be a positive integer"),  # (Nengo's own error)
        ((4, 1.0, 0), ValueError, "memory_d must be a positive integer"),
    ],
)
def test_memory_names_its_bad_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        lmu_nengo.LMUMemory(*arguments, add_to_container=False)


@pytest.mark.parametrize(
    "arguments, error, message",
    [  # (in brackets: what happened before)
        ({"neuron_type": "LIF"}, TypeError, "neuron_type must be None .* got 'LIF'"),  # (Nengo's)
        ({"tau": float("inf")}, ValueError, "tau must be a finite positive number"),  # (-inf)
        ({"tau": "abc"}, TypeError, "tau must be a finite positive number"),  # (float('abc'))
        ({"radius": float("nan")}, ValueError, "radius must be a finite positive number"),
        ({"n_neurons": 0}, ValueError, "n_neurons must be a positive integer"),
        ({"A": [[np.nan, 0.0], [0.0, -1.0]]}, ValueError, "A must hold finite numbers only"),
    ],
)
def test_neural_memory_names_its_bad_arguments(arguments, error, message):
    arguments = {"neuron_type": nengo.LIF(), **arguments}
    with pytest.raises(error, match=message):
        lmu_nengo.LMUMemory(2, 0.1, add_to_container=False, **arguments)


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ((float("inf"),), ValueError, "theta must be a finite positive number"),  # (accepted)
        ((0.1, 0), ValueError, "memory_d must be a positive integer"),
    ],
)
def test_state_space_names_its_bad_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        lmu_nengo.LegendreStateSpace(4, *arguments)
    # (a float order failed in Nengo's check of the output size, naming neither)
    with pytest.raises(TypeError, match="order must be a positive integer, got 2.5"):
        lmu_nengo.LegendreStateSpace(2.5, 0.1)


@pytest.mark.parametrize(
    "arguments, error, message",
    [  # (in brackets: what happened before)
        ({"window": 0.0}, ValueError, "window must be a finite positive number"),  # (NaN errors)
        ({"window": 5.0}, ValueError, r"window must be between dt=0.001 and .* = 0.375 s"),
        ({"sim_time": 0.2}, ValueError, "sim_time must be longer than the delay"),  # (NaN)
        ({"sim_time": -1.0}, ValueError, "sim_time must be a finite positive number"),
        ({"dt": 0.0}, ValueError, "dt must be a finite positive number"),  # (ZeroDivisionError)
        ({"learning_rate": float("nan")}, ValueError, "learning_rate must be a finite number"),
        ({"learning_rate": "fast"}, TypeError, "learning_rate must be a finite number"),
        ({"rms": 0.0}, ValueError, "rms must be a finite positive number"),
    ],
)
def test_delay_task_names_its_bad_arguments(arguments, error, message):
    """(a window longer than half the run gave the same error before and after learning)"""
    with pytest.raises(error, match=message):
        lmu_nengo.delay_task(**{"sim_time": 1.0, "window": 0.3, **arguments})


def test_euler_memory_warns_where_it_grows_and_matches_the_layers_bound():
    """theta (seconds) / dt below euler's bound in steps: the memory runs away (it did
    without a warning); at the bound it does not, and stays silent."""
    order, dt = 4, 0.001
    bound = legendre.euler_stability_bound(order)  # about 5.2 steps
    signal = np.ones((200, 1))
    unstable = lmu_nengo.LMUMemory(order, 0.9 * bound * dt, discretizer="euler")
    with pytest.warns(keras_lmu.UnstableDiscretizationWarning, match=r"theta >= 0\.00515196 s"):
        runaway = simulate_memory(unstable, signal, dt)
    assert np.max(np.abs(runaway[-1])) > 1e3
    stable = lmu_nengo.LMUMemory(order, 1.01 * bound * dt, discretizer="euler")
    with warnings.catch_warnings():
        warnings.simplefilter("error", keras_lmu.UnstableDiscretizationWarning)
        bounded = simulate_memory(stable, signal, dt)
    assert np.max(np.abs(bounded)) < 10.0


def test_euler_bound_of_a_custom_system_leaves_out_growing_modes():
    A = np.diag([-2.0, 0.5])  # the growing mode grows in any discretization
    assert legendre.euler_stability_bound_of(A) == pytest.approx(1.0)
    assert legendre.euler_stability_bound_of(np.eye(2)) == 0.0
    with pytest.raises(ValueError, match=r"A must be a square matrix, got shape \(2, 3\)"):
        legendre.euler_stability_bound_of(np.ones((2, 3)))


def test_run_sequences_names_bad_inputs_and_steps():
    """(an empty batch failed inside NumPy, sim_dt=0 with a ZeroDivisionError)"""
    inputs = keras.Input((10, 2))
    model = keras.Model(inputs, keras_lmu.LMU(1, 4, 10, hidden_cell=None)(inputs))
    network = lmu_nengo.from_keras(model, dt=0.001)
    x = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match=r"at least one sequence of one step, got \(0, 3, 2\)"):
        lmu_nengo.run_sequences(network, x[:0])
    with pytest.raises(ValueError, match="sim_dt must be a finite positive number, got 0.0"):
        lmu_nengo.run_sequences(network, x, sim_dt=0.0)
    with pytest.raises(TypeError, match="sim_dt must be a finite positive number, got 'abc'"):
        lmu_nengo.run_sequences(network, x, sim_dt="abc")
    with pytest.raises(ValueError, match="sim_dt=0.003 must divide the network's dt=0.001"):
        lmu_nengo.run_sequences(network, x, sim_dt=0.003)
    with pytest.raises(TypeError, match="return_sequences must be True or False, got 'False'"):
        lmu_nengo.run_sequences(network, x, return_sequences="False")
    # (NaN failed in Nengo's check of the input node's output; a Keras model or an
    # LMUMemory in place of the network with an AttributeError)
    with pytest.raises(ValueError, match="inputs must hold finite numbers only"):
        lmu_nengo.run_sequences(network, np.full_like(x, np.nan))
    with pytest.raises(TypeError, match="network must be a KerasLMUNetwork .* got Functional"):
        lmu_nengo.run_sequences(model, x)


def neural_memory_error(n_neurons, seed=0):
    """Normalized RMS error of a spiking memory against the exact one (white noise)."""
    order, theta, duration = 6, 0.5, 1.5
    with nengo.Network(seed=seed) as network:
        signal = nengo.Node(nengo.processes.WhiteSignal(duration, high=2, rms=0.3, seed=seed))
        exact = lmu_nengo.LMUMemory(order, theta)
        neural = lmu_nengo.LMUMemory(order, theta, neuron_type=nengo.LIF(), n_neurons=n_neurons)
        for memory in (exact, neural):
            nengo.Connection(signal, memory.input, synapse=None)
        probes = [nengo.Probe(m.output, synapse=0.01) for m in (exact, neural)]
    with nengo.Simulator(network, progress_bar=False) as simulator:
        simulator.run(duration)
    after_window = simulator.trange() > theta
    exact_memory, neural_memory = (simulator.data[p][after_window] for p in probes)
    return lmu_nengo.normalized_rmse(neural_memory, exact_memory)


def test_neural_memory_made_for_the_simulator_step_is_exact_with_ideal_neurons():
    """The continuous-time transforms miss the memory by O(dt / tau) even with ideal
    neurons (0.17 at tau = 10 ms); the ones made for ``sim_dt`` follow it one step late."""
    order, theta, tau, dt, steps = 6, 0.5, 0.01, 0.001, 1000
    signal = np.random.default_rng(0).normal(size=(steps, 1))
    exact = simulate_memory(lmu_nengo.LMUMemory(order, theta), signal, dt)
    errors = {}
    for sim_dt in (None, dt):
        memory = lmu_nengo.LMUMemory(
            order, theta, neuron_type=nengo.Direct(), tau=tau, sim_dt=sim_dt
        )
        neural = simulate_memory(memory, signal, dt)
        errors[sim_dt] = np.max(np.abs(neural[1:] - exact[:-1])) / np.max(np.abs(exact))
    assert errors[dt] < 1e-10 and errors[None] > 0.05, errors
    with pytest.raises(ValueError, match=r"made for a simulator with dt=0.001 s .* is 0.002 s"):
        simulate_memory(memory, signal, 0.002)


def test_run_sequences_runs_at_the_neural_memorys_sim_dt():
    inputs = keras.Input((10, 2))
    model = keras.Model(inputs, keras_lmu.LMU(1, 4, 10, hidden_cell=None)(inputs))
    network = lmu_nengo.from_keras(model, dt=0.01, neuron_type=nengo.Direct(), sim_dt=0.002)
    assert network.memory.sim_dt == 0.002
    x = np.random.default_rng(0).normal(size=(1, 3, 2))
    assert lmu_nengo.run_sequences(network, x, return_sequences=True).shape == (1, 3, 4)
    with pytest.raises(ValueError, match="sim_dt=0.001 must be the sim_dt=0.002 the network's"):
        lmu_nengo.run_sequences(network, x, sim_dt=0.001)


def test_neural_memory_error_falls_with_more_neurons():
    few, many = neural_memory_error(50), neural_memory_error(400)
    # measured: about 0.15 with 50 LIF neurons per dimension, 0.04 with 400
    assert many < 0.5 * few, (few, many)
    assert many < 0.1, many


def test_pes_learns_the_delay():
    result = lmu_nengo.delay_task(nengo.LIF(), sim_time=20.0, seed=0)
    # measured (seed 0): the error falls from 0.52 to 0.10 (5.1x) in 20 s
    assert result.improvement > 3.0, (result.error_before, result.error_after)
    assert result.error_after < 0.2, result.error_after


def test_nengo_demo_help(capsys):
    from keras_lmu import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["nengo-demo", "--help"])
    assert exit_info.value.code == 0
    assert "PES" in capsys.readouterr().out


def test_nengo_demo_writes_exactly_its_figure_path(monkeypatch, tmp_path, capsys):
    """``--out`` without an extension: a PNG at exactly that path (matplotlib alone
    would add ``.png``)."""
    from keras_lmu import cli

    short = lmu_nengo.delay_task

    def delay_task(neuron_type, seed, label):
        return short(neuron_type, n_neurons=20, sim_time=7.0, seed=seed, label=label)

    monkeypatch.setattr(lmu_nengo, "delay_task", delay_task)
    path = tmp_path / "figure"
    assert cli.main(["nengo-demo", "--out", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [path]
    assert f"Wrote {path} (" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, message",
    [("figure.docx", "matplotlib writes no .docx files"), ("a_folder", "it is a folder")],
)
def test_nengo_demo_checks_its_figure_path_before_running(
    name, message, monkeypatch, tmp_path, capsys
):
    from keras_lmu import cli

    def no_run(*args, **kwargs):
        raise AssertionError("the path is checked before the simulations")

    monkeypatch.setattr(lmu_nengo, "delay_task", no_run)
    (tmp_path / "a_folder").mkdir()
    path = tmp_path / name
    assert cli.main(["nengo-demo", "--out", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {path}: ") and message in err
