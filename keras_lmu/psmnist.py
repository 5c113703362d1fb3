"""Permuted sequential MNIST (psMNIST) experiments: the ``keras-lmu psmnist`` commands.

``train`` fits one of two models on the first 50000 training images, validates on
the last 10000 after every epoch, keeps the weights of the epoch with the best
validation accuracy, scores them once on the 10000 test images and writes to an
output folder:

``psmnist.keras``
    the model with the best epoch's weights (not compiled: no optimizer state);
``psmnist_curves.png``
    training loss, training and validation accuracy per epoch;
``psmnist_metrics.json``
    the per-epoch metrics, the best epoch, the parameter count, the training
    time, the backend, the configuration and the test accuracy.

``evaluate`` prints the test accuracy of a saved model.

The models:

``parallel``
    ``LMU(memory_d=1, order, theta=784)`` read at the last step (the memory is
    computed in parallel), dropout on the memory, ``Dense`` hidden layers each
    followed by dropout, then ``Dense(10)`` logits; AdamW (Adam without
    ``--weight-decay``) with a cosine-decayed learning rate and a moving average
    of the weights (``--ema``), which is what is validated and kept. The defaults
    (order 512, memory dropout 0.1, Dense(256, relu), dropout 0.3, Dense(128,
    relu), dropout 0.1, weight decay 0.05, EMA 0.999, 50 epochs of batches of 32)
    were chosen on the validation split.
``paper``
    the recurrent psMNIST model of Voelker et al. (2019):
    ``LMU(memory_d=1, order=256, theta=784, hidden_cell=SimpleRNNCell(212),
    hidden_to_memory=True, memory_to_memory=True, input_to_hidden=True)`` then
    ``Dense(10)``, 102,239 parameters; Adam
    (learning rate 1e-3), batch 100, 10 epochs. It runs step by step, so it is slow.
``lstm``
    the baseline: ``keras.layers.LSTM(158)`` then ``Dense(10)`` (102,710
    parameters, as many as the paper's LMU), trained like ``paper``.

Keras is imported inside the functions, so that the command line can pick the
backend first.
"""

from __future__ import annotations

import os
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from keras_lmu.training import (
    make_output_folder,
    missing_folders,
    remove_empty_folders,
    write_json,
)

if TYPE_CHECKING:
    import keras
    import numpy as np

MODELS = ("parallel", "paper", "lstm")
MODEL_FILE = "psmnist.keras"
CURVES_FILE = "psmnist_curves.png"
METRICS_FILE = "psmnist_metrics.json"

#: Defaults of the parallel model and its training: the configuration chosen on the
#: validation split (docs/psmnist.md), 165,515 parameters.
PARALLEL_ORDER = 512
PARALLEL_UNITS = (256, 128)
PARALLEL_ACTIVATION = "relu"
PARALLEL_DROPOUT = (0.3, 0.1)
PARALLEL_MEMORY_DROPOUT = 0.1
PARALLEL_WEIGHT_DECAY = 0.05
PARALLEL_EMA_MOMENTUM = 0.999
PARALLEL_EPOCHS = 50
PARALLEL_BATCH_SIZE = 32
PARALLEL_LEARNING_RATE = 1e-3
#: Defaults of the 2019 paper's model and its training.
PAPER_ORDER = 256
PAPER_UNITS = 212
PAPER_EPOCHS = 10
PAPER_BATCH_SIZE = 100
PAPER_LEARNING_RATE = 1e-3
#: Units of the LSTM baseline: about the parameters of the paper's LMU (102k).
LSTM_UNITS = 158
#: Most parameters a parallel model may have (the budget of the experiments).
PARAMETER_BUDGET = 170_000
#: Sequences per batch when validating and testing.
EVALUATION_BATCH_SIZE = 1000
STEPS = 784
#: MNIST's digits: the models end in one logit per class.
CLASSES = 10


def build_parallel_model(
    order: int = PARALLEL_ORDER,
    units: int | Sequence[int] = PARALLEL_UNITS,
    activation: str = PARALLEL_ACTIVATION,
    dropout: float | Sequence[float] = PARALLEL_DROPOUT,
    learning_rate: float = PARALLEL_LEARNING_RATE,
    training_steps: int | None = None,
    seed: int | None = None,
    steps: int = STEPS,
    weight_decay: float = PARALLEL_WEIGHT_DECAY,
    memory_dropout: float = PARALLEL_MEMORY_DROPOUT,
    ema_momentum: float = PARALLEL_EMA_MOMENTUM,
    clipnorm: float | None = None,
) -> keras.Model:
    """Return the compiled parallel LMU model.

    ``LMU(memory_d=1, order, theta=steps)`` read at the last step, dropout on the
    memory, then ``Dense(units[i], activation)`` layers each followed by dropout,
    then ``Dense(10)`` logits.

    Parameters
    ----------
    order : int
        Order of the Legendre memory (its dimension).
    units : int or sequence of int
        Sizes of the ``Dense`` hidden layers reading the memory.
    activation : str
        Activation of the hidden layers.
    dropout : float or sequence of float
        Dropout rate after each hidden layer (one rate for all, or one per layer;
        0 for none).
    learning_rate : float
        Initial learning rate of Adam.
    training_steps : int, optional
        Optimizer steps of the whole training: the learning rate then decays to 0
        along a cosine over them. None keeps it constant.
    seed : int, optional
        Seed of the dropout layers (each derives its own from it).
    steps : int
        Sequence length; also the memory's window ``theta``.
    weight_decay : float
        Decoupled weight decay (AdamW) when positive; plain Adam when 0.
    memory_dropout : float
        Dropout rate on the memory, before the first hidden layer.
    ema_momentum : float
        When positive, the optimizer keeps an exponential moving average of the
        weights with this momentum (``use_ema``); :func:`train` validates and
        keeps those averaged weights.
    clipnorm : float, optional
        Clip the global norm of the gradients to this value.
    """
    import keras

    import keras_lmu

    units = [units] if isinstance(units, int) else list(units)
    rates = [dropout] if isinstance(dropout, (int, float)) else list(dropout)
    if len(rates) == 1:
        rates = rates * len(units)
    if len(rates) != len(units):
        raise ValueError(
            f"dropout needs one rate, or one per hidden layer ({len(units)}), got {dropout!r}"
        )
    inputs = keras.Input((steps, 1), name="pixels")
    features = keras_lmu.LMU(
        memory_d=1, order=order, theta=steps, hidden_cell=None, return_sequences=False, name="lmu"
    )(inputs)

    def dropout_seed(layer: int) -> int | None:
        # One seed per dropout layer: layers given the same seed draw the same masks.
        # Below 2**31, which every backend's seed type holds (PyTorch's is int32).
        return None if seed is None else (seed * 1000 + layer) % 2**31

    if memory_dropout > 0:
        features = keras.layers.Dropout(
            memory_dropout, seed=dropout_seed(0), name="memory_dropout"
        )(features)
    for index, (size, rate) in enumerate(zip(units, rates, strict=True)):
        features = keras.layers.Dense(size, activation=activation, name=f"hidden_{index}")(features)
        if rate > 0:
            features = keras.layers.Dropout(
                rate, seed=dropout_seed(index + 1), name=f"dropout_{index}"
            )(features)
    outputs = keras.layers.Dense(CLASSES, name="logits")(features)
    model = keras.Model(inputs, outputs, name="psmnist_parallel")
    compile_classifier(model, learning_rate, training_steps, weight_decay, ema_momentum, clipnorm)
    return model


def build_paper_model(
    learning_rate: float = PAPER_LEARNING_RATE,
    steps: int = STEPS,
    clipnorm: float | None = None,
    training_steps: int | None = None,
) -> keras.Model:
    """Return the compiled recurrent psMNIST model of the 2019 LMU paper.

    ``clipnorm``, if given, clips the global norm of the gradients to it. With
    ``training_steps`` (the optimizer steps of the whole training), the learning rate
    decays to 0 along a cosine over them; without, it stays constant.
    """
    import keras
    import numpy as np

    import keras_lmu

    inputs = keras.Input((steps, 1), name="pixels")
    lmu = keras_lmu.LMU(
        memory_d=1,
        order=PAPER_ORDER,
        theta=steps,
        hidden_cell=keras.layers.SimpleRNNCell(PAPER_UNITS),
        hidden_to_memory=True,
        memory_to_memory=True,
        input_to_hidden=True,  # h_t = f(W_x x_t + W_h h_{t-1} + W_m m_t), as in the paper
        recurrent_initializer="zeros",
        return_sequences=False,
        name="lmu",
    )
    outputs = keras.layers.Dense(CLASSES, name="logits")(lmu(inputs))
    model = keras.Model(inputs, outputs, name="psmnist_paper")
    # The paper's start: the memory encodes the pixel alone (u = x), the hidden
    # state's and the memory's encoders start at zero. With random encoders of the
    # memory's own feedback, the memory can start unstable, and the model does not
    # learn (accuracy at chance after an epoch).
    kernel = lmu.layer.cell.kernel  # rows: the pixel, then the hidden state
    encoder = np.zeros(kernel.shape, dtype=kernel.dtype)
    encoder[0] = 1.0
    kernel.assign(encoder)
    compile_classifier(model, learning_rate, training_steps, clipnorm=clipnorm)
    return model


def build_lstm_model(
    learning_rate: float = PAPER_LEARNING_RATE,
    steps: int = STEPS,
    clipnorm: float | None = None,
    training_steps: int | None = None,
) -> keras.Model:
    """Return the compiled LSTM baseline: ``LSTM(LSTM_UNITS)`` then ``Dense(10)``.

    ``clipnorm``, if given, clips the global norm of the gradients to it. With
    ``training_steps`` (the optimizer steps of the whole training), the learning rate
    decays to 0 along a cosine over them; without, it stays constant.
    """
    import keras

    inputs = keras.Input((steps, 1), name="pixels")
    features = keras.layers.LSTM(LSTM_UNITS, name="lstm")(inputs)
    outputs = keras.layers.Dense(CLASSES, name="logits")(features)
    model = keras.Model(inputs, outputs, name="psmnist_lstm")
    compile_classifier(model, learning_rate, training_steps, clipnorm=clipnorm)
    return model


def compile_classifier(
    model: keras.Model,
    learning_rate: float,
    training_steps: int | None,
    weight_decay: float = 0.0,
    ema_momentum: float = 0.0,
    clipnorm: float | None = None,
) -> None:
    """Compile ``model`` (10 logits) with the optimizer and loss of every psMNIST run.

    Adam, or AdamW when ``weight_decay > 0``; the learning rate decays to 0 along a
    cosine over ``training_steps`` (constant when None); a moving average of the
    weights when ``ema_momentum > 0``; the gradients' global norm clipped to
    ``clipnorm`` when given. Sparse categorical cross-entropy, accuracy.
    """
    import keras

    if training_steps is not None:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, training_steps)
    options = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum > 0 else {}
    if clipnorm is not None:
        options["global_clipnorm"] = clipnorm
    if weight_decay > 0:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **options)
    else:
        optimizer = keras.optimizers.Adam(learning_rate, **options)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def schedule_steps(schedule: str, epochs: int, examples: int, batch_size: int) -> int | None:
    """``training_steps`` for :func:`compile_classifier`: the optimizer steps of the
    whole training for ``schedule="cosine"``, None for ``"constant"``."""
    return epochs * -(-examples // batch_size) if schedule == "cosine" else None


def fit_keeping_best(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    epochs: int,
    batch_size: int,
    callbacks: Sequence = (),
    verbose: int = 2,
):
    """Fit ``model``, validating after every epoch; keep the best epoch's weights.

    ``callbacks`` run after the one that tracks the best validation accuracy. With
    a moving average of the weights (``use_ema``), the averaged weights are the ones
    validated and kept. Returns the Keras history and that tracking callback
    (``best_epoch``, ``best``).
    """
    import keras

    from keras_lmu.training import best_weights_callback

    best = best_weights_callback("val_accuracy", mode="max")
    every = [best, *callbacks]
    if getattr(model.optimizer, "use_ema", False):
        # Validate, and keep, the averaged weights: swapped in for validation and at
        # the end of every epoch (before ``best`` copies them), swapped back to train.
        every.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    history = model.fit(
        *train,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation,
        validation_batch_size=EVALUATION_BATCH_SIZE,
        callbacks=every,
        verbose=verbose,
    )
    return history, best


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Share of the sequences ``x`` whose most likely class is the label ``y``."""
    import numpy as np

    logits = model.predict(x, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def load_splits(train_size: int):
    """The psMNIST splits with the training split cut to ``train_size`` sequences.

    Returns None, after printing the reason to stderr, when the data is missing or
    ``train_size`` is larger than the training split.
    """
    from keras_lmu.datasets import load_psmnist

    try:
        (x_train, y_train), validation, test = load_psmnist()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    if train_size > len(x_train):
        print(
            f"error: --train-size must be at most {len(x_train)}, got {train_size}",
            file=sys.stderr,
        )
        return None
    return (x_train[:train_size], y_train[:train_size]), validation, test


#: The options of ``keras-lmu psmnist train`` that shape the parallel model only (their
#: attribute names), and their defaults (``dropout``'s is :data:`PARALLEL_DROPOUT`).
PARALLEL_ONLY_OPTIONS = {
    "order": PARALLEL_ORDER,
    "units": PARALLEL_UNITS,
    "activation": PARALLEL_ACTIVATION,
    "dropout": PARALLEL_DROPOUT,
    "memory_dropout": PARALLEL_MEMORY_DROPOUT,
    "ema": PARALLEL_EMA_MOMENTUM,
    "weight_decay": PARALLEL_WEIGHT_DECAY,
}


def parallel_options(args) -> dict:
    """The parallel model's options, each as given, else its default, named as
    :func:`build_parallel_model`'s arguments (``--ema`` is ``ema_momentum``)."""
    options = {
        "ema_momentum" if name == "ema" else name: (
            getattr(args, name) if getattr(args, name) is not None else default
        )
        for name, default in PARALLEL_ONLY_OPTIONS.items()
    }
    options["units"] = list(options["units"])
    options["dropout"] = list(options["dropout"])
    return options


def train_arguments_problem(args) -> str | None:
    """What is wrong with the options of ``keras-lmu psmnist train`` together (the
    parser checks each on its own), or None."""
    import keras

    if args.model != "parallel":
        given = [
            "--" + name.replace("_", "-")
            for name in PARALLEL_ONLY_OPTIONS
            if getattr(args, name) is not None
        ]
        if given:
            return (
                f"{', '.join(given)}: only the parallel model takes "
                f"{'this option' if len(given) == 1 else 'these options'}; "
                f"--model {args.model} is built as published"
            )
        return None
    options = parallel_options(args)
    dropout, units = options["dropout"], options["units"]
    if len(dropout) not in (1, len(units)):
        given = "--dropout" if args.dropout is not None else "the default --dropout"
        return (
            f"--units gives {len(units)} hidden layer(s) but {given} gives "
            f"{len(dropout)} rates ({' '.join(f'{rate:g}' for rate in dropout)}): pass "
            "--dropout with one rate for all layers or one per layer"
        )
    try:
        keras.activations.get(options["activation"])
    except ValueError:
        return (
            f"--activation: Keras has no activation {options['activation']!r} "
            "(e.g. relu, gelu, tanh)"
        )
    return None


def train(args) -> int:
    """Run ``keras-lmu psmnist train``; return the exit status."""
    import keras

    from keras_lmu.command_backend import is_installed

    problem = train_arguments_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out)
    made = missing_folders(out)
    if not make_output_folder(out, (MODEL_FILE, METRICS_FILE, CURVES_FILE)):
        remove_empty_folders(made)
        return 1
    splits = load_splits(args.train_size)
    if splits is None:  # leave no empty output folder behind
        remove_empty_folders(made)
        return 1
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits
    if args.eval_size is not None:
        x_val, y_val = x_val[: args.eval_size], y_val[: args.eval_size]
        x_test, y_test = x_test[: args.eval_size], y_test[: args.eval_size]
    # The paper's LMU and the LSTM baseline step through the pixels and train alike.
    stepwise = args.model in ("paper", "lstm")
    epochs = args.epochs or (PAPER_EPOCHS if stepwise else PARALLEL_EPOCHS)
    batch_size = args.batch_size or (PAPER_BATCH_SIZE if stepwise else PARALLEL_BATCH_SIZE)
    learning_rate = args.learning_rate or (
        PAPER_LEARNING_RATE if stepwise else PARALLEL_LEARNING_RATE
    )
    keras.utils.set_random_seed(args.seed)
    schedule = args.schedule or ("constant" if stepwise else "cosine")
    training_steps = schedule_steps(schedule, epochs, len(x_train), batch_size)
    if args.model == "paper":
        model = build_paper_model(
            learning_rate, clipnorm=args.clipnorm, training_steps=training_steps
        )
        config = {"order": PAPER_ORDER, "units": PAPER_UNITS, "hidden_cell": "SimpleRNNCell"}
    elif args.model == "lstm":
        model = build_lstm_model(
            learning_rate, clipnorm=args.clipnorm, training_steps=training_steps
        )
        config = {"units": LSTM_UNITS}
    else:
        options = parallel_options(args)
        model = build_parallel_model(
            **options,
            learning_rate=learning_rate,
            training_steps=training_steps,
            seed=args.seed,
            clipnorm=args.clipnorm,
        )
        config = {**options, "readout": "Dense layers after the LMU memory"}
    parameters = int(model.count_params())
    print(
        f"psMNIST, {args.model} model ({parameters} parameters): {len(x_train)} training, "
        f"{len(x_val)} validation and {len(x_test)} test sequences of {x_train.shape[1]} steps",
        flush=True,
    )
    if not stepwise and parameters > PARAMETER_BUDGET:
        print(
            f"warning: {parameters} parameters, more than the budget of {PARAMETER_BUDGET}",
            file=sys.stderr,
        )
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    history, best = fit_keeping_best(
        model, (x_train, y_train), (x_val, y_val), epochs, batch_size, verbose=args.verbose
    )
    training_time = time.perf_counter() - wall_start
    cpu_time = time.process_time() - cpu_start
    print(
        f"Trained in {training_time:.1f} s; best epoch {best.best_epoch} "
        f"(validation accuracy {best.best:.4f})",
        flush=True,
    )
    model_path = out / MODEL_FILE
    save_for_inference(model, model_path)
    test_accuracy = accuracy(model, x_test, y_test)
    curves = {key: [float(v) for v in values] for key, values in history.history.items()}
    metrics = {
        "model": args.model,
        "backend": keras.backend.backend(),
        "config": config,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "schedule": "cosine decay to 0" if schedule == "cosine" else "constant",
        "clipnorm": args.clipnorm,
        "optimizer": "AdamW" if config.get("weight_decay", 0) > 0 else "Adam",
        "seed": args.seed,
        "train_size": len(x_train),
        "validation_size": len(x_val),
        "test_size": len(x_test),
        "parameters": parameters,
        "history": curves,
        "best_epoch": best.best_epoch,
        "best_val_accuracy": best.best,
        "training_time_s": round(training_time, 2),
        "training_cpu_time_s": round(cpu_time, 2),
        "test_accuracy": test_accuracy,
        "command": "keras-lmu " + " ".join(args.argv),
    }
    write_json(out / METRICS_FILE, metrics)
    if is_installed("matplotlib"):
        title = "psMNIST, LSTM" if args.model == "lstm" else f"psMNIST, {args.model} LMU"
        plot_curves(curves, best.best_epoch, out / CURVES_FILE, title=title)
        print(f"Wrote {model_path}, {out / CURVES_FILE} and {out / METRICS_FILE}")
    else:
        print(f"Wrote {model_path} and {out / METRICS_FILE}")
        print(
            "warning: matplotlib is not installed: no training curves drawn (install it "
            "with: pip install 'keras-lmu3[plots]')",
            file=sys.stderr,
        )
    print(f"Test accuracy: {test_accuracy:.4f}")
    return 0


def save_for_inference(model: keras.Model, path: os.PathLike) -> None:
    """Save ``model``'s architecture and weights, without its optimizer's state.

    The copy is not compiled, so the file holds no optimizer variables (which
    would triple its size); it is ready for ``predict``.
    """
    import keras

    # A new functional model on the same layers and weights, never compiled.
    copy = keras.Model(model.inputs, model.outputs, name=model.name)
    copy.save(path)


def plot_curves(curves: dict, best_epoch: int | None, path: os.PathLike, title: str = "") -> None:
    """Save a PNG of the training loss and the accuracies per epoch.

    ``best_epoch`` (the epoch whose weights were kept) is marked, unless None.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(curves["loss"]) + 1)
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    marker = "o" if len(epochs) == 1 else None  # a single epoch is a point, not a line
    loss_axes.plot(epochs, curves["loss"], marker=marker, label="training")
    if "val_loss" in curves:
        loss_axes.plot(epochs, curves["val_loss"], marker=marker, label="validation")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    loss_axes.legend()
    accuracy_axes.plot(epochs, curves["accuracy"], marker=marker, label="training")
    accuracy_axes.plot(epochs, curves["val_accuracy"], marker=marker, label="validation")
    if best_epoch is not None:
        accuracy_axes.axvline(best_epoch, color="gray", linestyle=":", label="best epoch")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    accuracy_axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def load_classifier(path: os.PathLike, input_shape: tuple) -> keras.Model:
    """Load the ``.keras`` model at ``path`` and check that it takes sequences of
    ``input_shape`` (steps, features; a model built for any length or number of
    features, ``None``, takes them) and returns :data:`CLASSES` logits per sequence.

    Raises
    ------
    ValueError
        When Keras cannot load the file (not a ``.keras`` file, a layer it does not
        know, ...), or the model takes inputs or returns outputs of other shapes; the
        message names the file and the reason.
    """
    import keras

    import keras_lmu  # noqa: F401 (registers the LMU layers for loading)

    if str(path).endswith(".keras") and not zipfile.is_zipfile(path):
        # (Keras reports "File not found" for a file that is there)
        raise ValueError(
            f"cannot load {path} (not a .keras file: Keras saves them as zip archives)"
        )
    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # whatever Keras finds wrong with the file
        raise ValueError(f"cannot load {path} ({type(error).__name__}: {error})") from error
    expected = tuple(input_shape)
    shape = _batch_shape_rest(model.input_shape)
    if not _shape_accepts(shape, expected):
        raise ValueError(f"{path} takes inputs of shape {shape}, not psMNIST's {expected}")
    shape = _batch_shape_rest(model.output_shape)
    if not _shape_accepts(shape, (CLASSES,)):
        raise ValueError(
            f"{path} returns outputs of shape {shape}, not psMNIST's {CLASSES} class logits "
            "per sequence"
        )
    return model


def _batch_shape_rest(shape) -> tuple | list:
    """A model's input or output shape without its batch size; a list of them as
    it is (a model with several inputs or outputs)."""
    return tuple(shape[1:]) if isinstance(shape, tuple) else shape


def _shape_accepts(shape, expected: tuple) -> bool:
    """Whether arrays of shape ``expected`` fit ``shape`` (where ``None`` fits any size)."""
    return (
        isinstance(shape, tuple)
        and len(shape) == len(expected)
        and all(
            size is None or size == wanted for size, wanted in zip(shape, expected, strict=True)
        )
    )


def evaluate(args) -> int:
    """Run ``keras-lmu psmnist evaluate``; return the exit status."""
    from keras_lmu.datasets import load_psmnist

    path = Path(args.model_path)
    if not path.is_file():
        print(f"error: no model file {path}", file=sys.stderr)
        return 1
    try:
        _, _, (x_test, y_test) = load_psmnist()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.eval_size is not None:
        x_test, y_test = x_test[: args.eval_size], y_test[: args.eval_size]
    try:
        model = load_classifier(path, x_test.shape[1:])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    test_accuracy = accuracy(model, x_test, y_test)
    print(f"Test accuracy: {test_accuracy:.4f} ({len(x_test)} test sequences)")
    return 0
