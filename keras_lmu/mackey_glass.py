"""Mackey-Glass prediction: an LMU and an LSTM side by side (``keras-lmu mackey-glass``).

The experiment of Voelker, Kajić and Eliasmith (2019), as corrected by its
authors: predict ``x(t + 15)`` from ``x(s), s <= t`` on chaotic Mackey-Glass
series (``tau = 17``). Every series is made by
:func:`keras_lmu.datasets.mackey_glass` (10 integration sub-steps per sample, a
washout of 100 samples), squashed by ``tanh(x - 1)`` and centred on the mean of
the training series. Half of the series are for training, of which half
validate the model after every epoch; the other half are the test set.

Two models of about 18,000 parameters each read the input one step at a time
and predict at every step through a ``Dense(1)`` readout:

``lmu``
    4 stacked ``LMU(memory_d=1, order=4, theta=4,
    hidden_cell=SimpleRNNCell(49), memory_to_memory=True,
    input_to_hidden=True)`` layers (18,050 parameters). With no connection from
    the hidden state into the memory, the memory stays linear: each layer
    computes it in parallel over the whole sequence and runs the
    ``SimpleRNNCell`` as a Keras RNN over it.
``lstm``
    4 stacked ``LSTM(25)`` layers (18,026 parameters).

Both are trained by the same optimizer on the mean squared error at every
step, for the same epochs and batches: Adam, its learning rate decayed to 0
along a cosine, each weight's gradient clipped to norm 1 (``clipnorm``). The weights of the
epoch with the lowest validation loss are kept and scored once on the test
series. The score is the normalized root mean squared error,
``NRMSE = RMSE / RMS(target)``, over every step of every test series, in
percent; the trivial prediction ``x(t + 15) = x(t)`` is scored alongside.

The paper trains for 500 epochs of batches of 32 on 128 series of 5,000 steps
(NRMSE: LSTM 5.87%, LMU 4.87%, hybrid 4.47%, ``x(t + 15) = x(t)`` 162%). The
command's defaults are a smaller budget that runs on a 2-core CPU in minutes
(see :data:`SERIES`, :data:`STEPS`, :data:`EPOCHS`, :data:`BATCH_SIZE` and
docs/mackey-glass.md).

Keras is imported inside the functions, so that the command line can pick the
backend first.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from keras_lmu import validation
from keras_lmu.training import best_weights_callback, make_output_folder, write_json

if TYPE_CHECKING:
    import argparse

    import keras

#: How many steps ahead the models predict.
AHEAD = 15
#: Delay of the Mackey-Glass equation.
TAU = 17
#: Integration sub-steps per sample.
SUBSTEPS = 10
#: Samples integrated and discarded at the start of every series.
WASHOUT = 100
#: Stacked recurrent layers in either model.
LAYERS = 4
#: Width and memory of the LMU layers.
LMU_UNITS = 49
LMU_ORDER = 4
LMU_THETA = 4
#: Width of the LSTM layers.
LSTM_UNITS = 25
#: The models compared, in the order they are trained and printed.
MODELS = ("lstm", "lmu")

#: The paper's budget.
PAPER_SERIES = 128
PAPER_STEPS = 5000
PAPER_EPOCHS = 500
PAPER_BATCH_SIZE = 32
#: Test NRMSE (%) reported by the paper (corrected version).
PAPER_NRMSE = {"lstm": 5.87, "lmu": 4.87, "hybrid": 4.47, "baseline": 162.0}

#: Defaults of the command: a budget for a 2-core CPU (docs/mackey-glass.md).
SERIES = PAPER_SERIES
STEPS = 1000
EPOCHS = 300
BATCH_SIZE = 8
#: Most samples per series that ``keras-lmu mackey-glass --steps`` accepts (each series then
#: integrates about 10 million points, well inside
#: :data:`keras_lmu.datasets.MAX_INTEGRATION_POINTS`).
MAX_STEPS = 1_000_000
#: Initial learning rate of Adam, decayed to 0 along a cosine over the training.
LEARNING_RATE = 3e-3
#: Each weight's gradient is clipped to this norm (Adam's ``clipnorm``, not a global norm).
CLIPNORM = 1.0
#: Series per batch when validating and testing.
EVALUATION_BATCH_SIZE = 64

RESULTS_FILE = "mackey_glass.json"
PLOT_FILE = "mackey_glass.png"

#: Inputs ``x`` and targets ``y`` of one split, both float32 of shape (series, steps - AHEAD, 1).
Split = tuple[np.ndarray, np.ndarray]


class MackeyGlassData(NamedTuple):
    """The three splits of the Mackey-Glass task and the constant they were centred by."""

    train: Split
    validation: Split
    test: Split
    #: Mean of the squashed training series, subtracted from every series.
    mean: float


def split_sizes(series: int) -> tuple[int, int, int]:
    """How many of ``series`` series go to training, validation and test.

    Half (rounded down) are test series; of the rest, half (rounded down)
    validate and the others train.

    Raises
    ------
    TypeError, ValueError
        If ``series`` is not an integer of at least 3 (one series per split).
    """
    series = validation.integer_at_least("series", series, minimum=3)
    test = series // 2
    validate = (series - test) // 2
    return series - test - validate, validate, test


def series_seeds(series: int, seed: int = 0) -> np.ndarray:
    """Distinct seeds of the random initial histories of ``series`` series.

    Drawn without replacement from [0, 2**31) by ``np.random.default_rng(seed)``,
    so that no two series of a data set are the same.
    """
    series = validation.integer_at_least("series", series, minimum=1)
    seed = validation.integer_at_least("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    return rng.choice(2**31, size=series, replace=False)


def prepare_data(
    series: int = SERIES,
    steps: int = STEPS,
    seed: int = 0,
    ahead: int = AHEAD,
    tau: float = TAU,
    substeps: int = SUBSTEPS,
    washout: int = WASHOUT,
) -> MackeyGlassData:
    """Make the training, validation and test series of the Mackey-Glass task.

    Series ``i`` is ``mackey_glass(steps, tau, seed=series_seeds(series, seed)[i],
    substeps=substeps, washout=washout)``, squashed by ``tanh(x - 1)``. All are
    centred by the mean of the training series (over every step). The input is a
    series without its last ``ahead`` samples and the target the same series
    without its first ``ahead``: ``y[:, t] = x[:, t + ahead]``. The first series
    are for training, the next for validation and the last for test
    (:func:`split_sizes`). The result depends only on the arguments.

    Parameters
    ----------
    series : int
        Number of series, at least 3.
    steps : int
        Samples per series, more than ``ahead``.
    seed : int
        Seed of the series' seeds (:func:`series_seeds`).
    ahead : int
        How many steps ahead the target is.
    tau : float
        Delay of the Mackey-Glass equation.
    substeps : int
        Integration steps per sample.
    washout : int
        Samples integrated and discarded at the start of every series.

    Returns
    -------
    MackeyGlassData
        ``train``, ``validation`` and ``test`` as ``(x, y)`` pairs of float32
        arrays of shape (n, steps - ahead, 1), and the ``mean`` subtracted.

    Raises
    ------
    TypeError, ValueError
        If an argument has the wrong type or value; the message names it.
    """
    from keras_lmu.datasets import mackey_glass

    sizes = split_sizes(series)
    ahead = validation.integer_at_least("ahead", ahead, minimum=1)
    steps = validation.integer_at_least("steps", steps, minimum=ahead + 1)
    squashed = np.stack(
        [
            np.tanh(
                mackey_glass(steps, tau=tau, seed=int(s), substeps=substeps, washout=washout) - 1
            )
            for s in series_seeds(series, seed)
        ]
    )
    mean = float(np.mean(squashed[: sizes[0]]))
    centred = (squashed - mean).astype(np.float32)[..., None]
    x, y = centred[:, :-ahead], centred[:, ahead:]
    ends = np.cumsum(sizes)
    train, validate, test = (
        (x[start:end], y[start:end]) for start, end in zip((0, *ends[:-1]), ends, strict=True)
    )
    return MackeyGlassData(train, validate, test, mean)


def nrmse(prediction: np.ndarray, target: np.ndarray) -> float:
    """Normalized root mean squared error, ``RMSE / RMS(target)``, over all values."""
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction has shape {prediction.shape}, target {target.shape}")
    return float(np.sqrt(np.mean((prediction - target) ** 2) / np.mean(target**2)))


def build_lmu_model(
    steps: int | None = None,
    units: int = LMU_UNITS,
    order: int = LMU_ORDER,
    theta: float = LMU_THETA,
    layers: int = LAYERS,
    learning_rate: float = LEARNING_RATE,
    training_steps: int | None = None,
    memory_to_memory: bool = True,
    hidden_to_memory: bool = False,
) -> keras.Model:
    """Return the compiled LMU model: stacked LMU layers and a ``Dense(1)`` readout.

    Every layer is ``LMU(memory_d=1, order, theta,
    hidden_cell=SimpleRNNCell(units), memory_to_memory, hidden_to_memory,
    input_to_hidden=True, return_sequences=True)``: its input and (with
    ``memory_to_memory``) its previous memory are encoded into one memory, and
    the hidden cell reads the memory and the input. Without ``hidden_to_memory``
    the memory is computed in parallel (:meth:`keras_lmu.LMU.uses_parallel_form`).
    With the defaults the model has 18,050 parameters.

    Parameters
    ----------
    steps : int, optional
        Length of the input sequences, or None for any length. Either way the
        memory is computed in parallel unless ``hidden_to_memory``.
    units : int
        Size of each ``SimpleRNNCell`` (tanh).
    order : int
        Order of each memory.
    theta : float
        Window of each memory, in steps.
    layers : int
        Number of stacked LMU layers.
    learning_rate : float
        Initial learning rate of Adam.
    training_steps : int, optional
        Optimizer steps of the whole training: the learning rate then decays to 0
        along a cosine over them. None keeps it constant.
    memory_to_memory : bool
        Feed the previous memory into the encoder (4 weights per layer).
    hidden_to_memory : bool
        Feed the previous hidden state into the encoder (``units`` weights per
        layer); the memory is then computed step by step.

    Returns
    -------
    keras.Model
        Compiled for the mean squared error; input (batch, steps, 1), output
        (batch, steps, 1).
    """
    import keras

    import keras_lmu

    inputs = keras.Input((steps, 1), name="series")
    hidden = inputs
    for index in range(layers):
        hidden = keras_lmu.LMU(
            memory_d=1,
            order=order,
            theta=theta,
            hidden_cell=keras.layers.SimpleRNNCell(units),
            input_to_hidden=True,
            hidden_to_memory=hidden_to_memory,
            memory_to_memory=memory_to_memory,
            return_sequences=True,
            name=f"lmu_{index}",
        )(hidden)
    outputs = keras.layers.Dense(1, name="readout")(hidden)
    model = keras.Model(inputs, outputs, name="mackey_glass_lmu")
    _compile(model, learning_rate, training_steps)
    return model


def build_lstm_model(
    steps: int | None = None,
    units: int = LSTM_UNITS,
    layers: int = LAYERS,
    learning_rate: float = LEARNING_RATE,
    training_steps: int | None = None,
) -> keras.Model:
    """Return the compiled LSTM model: stacked ``LSTM`` layers and a ``Dense(1)`` readout.

    With the defaults the model has 18,026 parameters.

    Parameters
    ----------
    steps : int, optional
        Length of the input sequences (None: any).
    units : int
        Size of each ``LSTM`` layer.
    layers : int
        Number of stacked LSTM layers.
    learning_rate : float
        Initial learning rate of Adam.
    training_steps : int, optional
        Optimizer steps of the whole training: the learning rate then decays to 0
        along a cosine over them. None keeps it constant.

    Returns
    -------
    keras.Model
        Compiled for the mean squared error; input (batch, steps, 1), output
        (batch, steps, 1).
    """
    import keras

    inputs = keras.Input((steps, 1), name="series")
    hidden = inputs
    for index in range(layers):
        hidden = keras.layers.LSTM(units, return_sequences=True, name=f"lstm_{index}")(hidden)
    outputs = keras.layers.Dense(1, name="readout")(hidden)
    model = keras.Model(inputs, outputs, name="mackey_glass_lstm")
    _compile(model, learning_rate, training_steps)
    return model


def _compile(model: keras.Model, learning_rate: float, training_steps: int | None = None) -> None:
    import keras

    if training_steps is not None:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, training_steps)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=CLIPNORM), loss="mse")


BUILDERS = {"lmu": build_lmu_model, "lstm": build_lstm_model}
DESCRIPTIONS = {
    "lmu": (
        f"{LAYERS} x LMU(memory_d=1, order={LMU_ORDER}, theta={LMU_THETA}, "
        f"hidden_cell=SimpleRNNCell({LMU_UNITS}), memory_to_memory=True, "
        "input_to_hidden=True) + Dense(1)"
    ),
    "lstm": f"{LAYERS} x LSTM({LSTM_UNITS}) + Dense(1)",
}


def train_and_score(
    name: str,
    data: MackeyGlassData,
    epochs: int,
    batch_size: int,
    learning_rate: float = LEARNING_RATE,
    seed: int = 0,
    verbose: int = 2,
) -> dict:
    """Train one model, keep its best epoch on validation and score it on the test series.

    Parameters
    ----------
    name : {"lmu", "lstm"}
        Which model (:func:`build_lmu_model` or :func:`build_lstm_model`).
    data : MackeyGlassData
        The splits, from :func:`prepare_data`.
    epochs, batch_size : int
        Passes over the training series, and series per batch.
    learning_rate : float
        Initial learning rate of Adam, decayed to 0 along a cosine over the
        training.
    seed : int
        Seed of the weights' initialization and of the shuffling.
    verbose : {0, 1, 2}
        Keras ``fit`` verbosity.

    Returns
    -------
    dict
        ``model`` (the trained ``keras.Model``), ``prediction`` (on the test
        series), ``parameters``, ``history`` (per-epoch losses), ``best_epoch``,
        ``validation_nrmse`` and ``test_nrmse`` (fractions, not percent),
        ``training_time_s`` and ``training_cpu_time_s``.
    """
    import keras

    validation.choice("name", name, MODELS)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data.train, data.validation, data.test
    keras.utils.set_random_seed(seed)
    training_steps = epochs * -(-len(x_train) // batch_size)
    model = BUILDERS[name](
        steps=x_train.shape[1], learning_rate=learning_rate, training_steps=training_steps
    )
    best = best_weights_callback("val_loss", mode="min")
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    history = model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(x_val, y_val),
        validation_batch_size=EVALUATION_BATCH_SIZE,
        callbacks=[best],
        verbose=verbose,
    )
    training_time = time.perf_counter() - wall_start
    cpu_time = time.process_time() - cpu_start
    validation_prediction = model.predict(x_val, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
    prediction = model.predict(x_test, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
    return {
        "model": model,
        "prediction": prediction,
        "parameters": int(model.count_params()),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "best_epoch": best.best_epoch,
        "validation_nrmse": nrmse(validation_prediction, y_val),
        "test_nrmse": nrmse(prediction, y_test),
        "training_time_s": training_time,
        "training_cpu_time_s": cpu_time,
    }


def format_table(results: dict[str, dict], baseline: float) -> str:
    """The results as a text table, one row per model and one for the baseline.

    ``results`` maps a model's name to :func:`train_and_score`'s result;
    ``baseline`` is the NRMSE (a fraction) of ``x(t + 15) = x(t)``.
    """
    header = (
        f"{'model':<16}{'parameters':>12}{'best epoch':>12}{'training (s)':>14}"
        f"{'test NRMSE (%)':>16}{'paper (%)':>11}"
    )
    rows = [header, "-" * len(header)]
    for name, result in results.items():
        rows.append(
            f"{name.upper():<16}{result['parameters']:>12,}{result['best_epoch']:>12}"
            f"{result['training_time_s']:>14.1f}{100 * result['test_nrmse']:>16.2f}"
            f"{PAPER_NRMSE[name]:>11.2f}"
        )
    rows.append(
        f"{f'x(t+{AHEAD}) = x(t)':<16}{0:>12}{'-':>12}{'-':>14}{100 * baseline:>16.2f}"
        f"{PAPER_NRMSE['baseline']:>11.2f}"
    )
    rows.append(
        f"paper: {PAPER_EPOCHS} epochs, batch {PAPER_BATCH_SIZE}, {PAPER_SERIES} series of "
        f"{PAPER_STEPS:,} steps (LMU/LSTM hybrid {PAPER_NRMSE['hybrid']:.2f}%)"
    )
    return "\n".join(rows)


def plot_predictions(
    data: MackeyGlassData, results: dict[str, dict], path: Path, window: int = 500
) -> None:
    """Save a PNG of the last ``window`` steps of the first test series.

    The top panel shows the target and every model's prediction, the bottom
    panel every model's error (prediction minus target).
    """
    from matplotlib.figure import Figure

    _, y_test = data.test
    steps = y_test.shape[1]
    start = max(0, steps - window)
    t = np.arange(start, steps) + AHEAD
    target = y_test[0, start:, 0]
    figure = Figure(figsize=(10, 6))
    signal_axes, error_axes = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    signal_axes.plot(t, target, color="black", linewidth=2.5, label="target")
    for name, result in results.items():
        prediction = result["prediction"][0, start:, 0]
        label = f"{name.upper()} (test NRMSE {100 * result['test_nrmse']:.2f}%)"
        signal_axes.plot(t, prediction, linewidth=1, label=label)
        error_axes.plot(t, prediction - target, linewidth=1)
    figure.suptitle(f"Mackey-Glass: x(t) predicted from x(s), s <= t - {AHEAD} (first test series)")
    signal_axes.set(ylabel="tanh(x(t) - 1), centred")
    signal_axes.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=3, fontsize=8, frameon=False)
    error_axes.axhline(0, color="black", linewidth=0.5)
    error_axes.set(xlabel="step t", ylabel="prediction - target")
    figure.tight_layout()
    # Leave matplotlib's version out of the file, so that redrawing changes nothing.
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})


def run(args: argparse.Namespace) -> int:
    """Run ``keras-lmu mackey-glass``; return the exit status."""
    import keras

    out = None if args.out is None else Path(args.out)
    if out is not None and not make_output_folder(out, (RESULTS_FILE, PLOT_FILE)):
        return 1
    start = time.perf_counter()
    data = prepare_data(args.series, args.steps, seed=args.seed)
    sizes = split_sizes(args.series)
    made = time.perf_counter() - start
    epochs = f"{args.epochs} epoch{'' if args.epochs == 1 else 's'}"
    print(
        f"Mackey-Glass (tau {TAU}): predict x(t+{AHEAD}) from x(s), s <= t. "
        f"{args.series} series of {args.steps} steps: {sizes[0]} training, "
        f"{sizes[1]} validation, {sizes[2]} test (made in {made:.1f} s).\n"
        f"Budget of each model: {epochs}, batch {args.batch_size}, Adam from "
        f"{args.learning_rate:g} with cosine decay, each weight's gradient clipped to norm "
        f"{CLIPNORM:g}.",
        flush=True,
    )
    results = {}
    for name in MODELS:
        print(f"\n{name.upper()}: {DESCRIPTIONS[name]}", flush=True)
        result = train_and_score(
            name,
            data,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            verbose=args.verbose,
        )
        print(
            f"{name.upper()}: {result['parameters']:,} parameters, trained in "
            f"{result['training_time_s']:.1f} s, best epoch {result['best_epoch']} "
            f"(validation NRMSE {100 * result['validation_nrmse']:.2f}%)",
            flush=True,
        )
        results[name] = result
    x_test, y_test = data.test
    baseline = nrmse(x_test, y_test)
    print()
    print(format_table(results, baseline))
    print(f"\nTotal time: {time.perf_counter() - start:.1f} s (backend {keras.backend.backend()})")
    if out is not None:
        _write_outputs(out, args, data, results, baseline, sizes)
    return 0


def _write_outputs(
    out: Path,
    args: argparse.Namespace,
    data: MackeyGlassData,
    results: dict[str, dict],
    baseline: float,
    sizes: tuple[int, int, int],
) -> None:
    """Write the results' JSON, and the prediction plot when matplotlib is installed."""
    import keras

    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "task": {
            "ahead": AHEAD,
            "tau": TAU,
            "substeps": SUBSTEPS,
            "washout": WASHOUT,
            "squashing": "tanh(x - 1), centred on the training mean",
            "mean": data.mean,
        },
        "budget": {
            "series": args.series,
            "steps": args.steps,
            "train_series": sizes[0],
            "validation_series": sizes[1],
            "test_series": sizes[2],
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": "Adam",
            "learning_rate": args.learning_rate,
            "clipnorm": CLIPNORM,
            "schedule": "cosine decay to 0",
            "seed": args.seed,
        },
        "backend": keras.backend.backend(),
        "models": {
            name: {
                "description": DESCRIPTIONS[name],
                "parameters": result["parameters"],
                "best_epoch": result["best_epoch"],
                "validation_nrmse_percent": 100 * result["validation_nrmse"],
                "test_nrmse_percent": 100 * result["test_nrmse"],
                "training_time_s": round(result["training_time_s"], 2),
                "training_cpu_time_s": round(result["training_cpu_time_s"], 2),
                "history": result["history"],
            }
            for name, result in results.items()
        },
        "baseline": {"description": f"x(t+{AHEAD}) = x(t)", "test_nrmse_percent": 100 * baseline},
        "paper_nrmse_percent": PAPER_NRMSE,
        "command": "keras-lmu " + " ".join(getattr(args, "argv", [])),
    }
    path = out / RESULTS_FILE
    write_json(path, summary)
    written = [str(path)]
    if importlib.util.find_spec("matplotlib") is not None:
        plot_predictions(data, results, out / PLOT_FILE)
        written.append(str(out / PLOT_FILE))
    print("Wrote " + " and ".join(written))
