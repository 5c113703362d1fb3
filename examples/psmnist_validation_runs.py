"""Train psMNIST models to choose a configuration on the validation split only.

Trains one of `keras_lmu.psmnist`'s models (the 2019 paper's recurrent LMU, the LSTM
baseline, or the default parallel LMU), or the two stacked LMUs of
``build_stacked_model``, with a constant or cosine learning rate (``--schedule``,
constant unless given), on the first 50,000 training images and validates it on the
last 10,000 after every epoch (``--train-size`` and ``--validation-size`` keep the
first N of each, for a quick check). The test images are never scored: runs made to
compare configurations cannot leak them. After every epoch the run's
curves go to ``OUT/NAME.json``; at the end the best epoch's weights go to
``OUT/NAME.keras``. ``--deadline`` stops a run after the epoch that passes it, so a
batch of runs fits a fixed time (the JSON says how many epochs were done; ``--deadline
0`` stops after epoch 1).

    python examples/psmnist_validation_runs.py --model paper --schedule cosine \\
        --seed 1 --clipnorm 1 --out runs/paper-sweep

The data comes from ``KERAS_LMU_DATA`` (a folder holding ``mnist.npz``), as for
``keras-lmu psmnist train``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from keras_lmu.validation import command_line_number

_positive_int = command_line_number(int, lambda value: value >= 1, "an integer of 1 or more")
_seed = command_line_number(int, lambda value: 0 <= value < 2**32, "an integer from 0 to 2**32 - 1")
_positive = command_line_number(float, lambda value: 0 < value < math.inf, "a positive number")
_non_negative = command_line_number(
    float, lambda value: 0 <= value < math.inf, "a number of 0 or more"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", choices=("paper", "lstm", "parallel", "stacked"), default="paper"
    )
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--epochs", type=_positive_int, default=None)
    parser.add_argument("--batch-size", type=_positive_int, default=None)
    parser.add_argument("--learning-rate", type=_positive, default=1e-3)
    parser.add_argument("--clipnorm", type=_positive, default=None)
    parser.add_argument(
        "--train-size", type=_positive_int, default=None, help="first N training images"
    )
    parser.add_argument(
        "--validation-size", type=_positive_int, default=None, help="first N validation images"
    )
    parser.add_argument(
        "--deadline", type=_non_negative, default=None, help="seconds (0: stop after epoch 1)"
    )
    parser.add_argument("--name", default=None, help="file names (default: from the options)")
    parser.add_argument("--out", default="psmnist_validation_runs", help="folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out!r} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out: cannot create the folder {args.out!r}: {error}")

    import keras

    from keras_lmu import psmnist
    from keras_lmu.datasets import load_psmnist

    stepwise = args.model in ("paper", "lstm")
    epochs = args.epochs
    if epochs is None:
        epochs = psmnist.PAPER_EPOCHS if stepwise else psmnist.PARALLEL_EPOCHS
    batch_size = args.batch_size
    if batch_size is None:
        batch_size = psmnist.PAPER_BATCH_SIZE if stepwise else psmnist.PARALLEL_BATCH_SIZE
    name = args.name or f"{args.model}-{args.schedule}-seed{args.seed}"

    (x_train, y_train), (x_val, y_val), _ = load_psmnist()
    x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    x_val, y_val = x_val[: args.validation_size], y_val[: args.validation_size]
    keras.utils.set_random_seed(args.seed)
    training_steps = psmnist.schedule_steps(args.schedule, epochs, len(x_train), batch_size)
    if args.model == "paper":
        model = psmnist.build_paper_model(
            args.learning_rate, clipnorm=args.clipnorm, training_steps=training_steps
        )
    elif args.model == "lstm":
        model = psmnist.build_lstm_model(
            args.learning_rate, clipnorm=args.clipnorm, training_steps=training_steps
        )
    elif args.model == "parallel":
        model = psmnist.build_parallel_model(
            learning_rate=args.learning_rate,
            training_steps=training_steps,
            seed=args.seed,
            clipnorm=args.clipnorm,
        )
    else:
        model = build_stacked_model(args.learning_rate, training_steps, args.seed)

    record = {
        "name": name,
        "options": vars(args),
        "backend": keras.backend.backend(),
        "devices": [str(device) for device in _devices()],
        "parameters": int(model.count_params()),
        "epochs_planned": epochs,
        "history": {},
    }
    start, cpu_start = time.perf_counter(), time.process_time()

    def after_epoch(epoch: int, logs: dict) -> None:
        for key, value in logs.items():
            record["history"].setdefault(key, []).append(float(value))
        record["seconds"] = round(time.perf_counter() - start, 1)
        record["cpu_seconds"] = round(time.process_time() - cpu_start, 1)
        val_accuracy = record["history"]["val_accuracy"]
        record["best_val_accuracy"] = max(val_accuracy)
        record["best_epoch"] = val_accuracy.index(max(val_accuracy)) + 1
        (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        if args.deadline is not None and time.perf_counter() - start > args.deadline:
            model.stop_training = True

    _, best = psmnist.fit_keeping_best(
        model,
        (x_train, y_train),
        (x_val, y_val),
        epochs,
        batch_size,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=after_epoch)],
    )
    psmnist.save_for_inference(model, out / f"{name}.keras")
    print(f"{name}: best epoch {best.best_epoch}, validation accuracy {best.best:.4f}")
    return 0


def build_stacked_model(learning_rate: float, training_steps: int | None, seed: int):
    """Two LMUs, both computed in parallel: the first returns per-step features.

    ``LMU(order 128, theta 784, Dense(48, relu) at every step, the pixel too)``, then
    ``LMU(memory_d 8, order 256, theta 784)`` read at the last step, dropout, then
    ``Dense(64, relu)``, dropout and ``Dense(10)``; AdamW (weight decay 0.05) with the
    weights' moving average (0.999), as the default parallel model.
    """
    import keras

    import keras_lmu
    from keras_lmu import psmnist

    inputs = keras.Input((psmnist.STEPS, 1), name="pixels")
    features = keras_lmu.LMU(
        memory_d=1,
        order=128,
        theta=psmnist.STEPS,
        hidden_cell=keras.layers.Dense(48, activation="relu"),
        input_to_hidden=True,
        return_sequences=True,
        name="lmu_steps",
    )(inputs)
    features = keras_lmu.LMU(
        memory_d=8, order=256, theta=psmnist.STEPS, hidden_cell=None, name="lmu_last"
    )(features)
    # One seed per dropout layer, below 2**31 (PyTorch's seeds are int32), as in
    # psmnist.build_parallel_model.
    features = keras.layers.Dropout(0.1, seed=(seed * 1000) % 2**31)(features)
    features = keras.layers.Dense(64, activation="relu")(features)
    features = keras.layers.Dropout(0.3, seed=(seed * 1000 + 1) % 2**31)(features)
    outputs = keras.layers.Dense(10, name="logits")(features)
    model = keras.Model(inputs, outputs, name="psmnist_stacked")
    psmnist.compile_classifier(
        model, learning_rate, training_steps, weight_decay=0.05, ema_momentum=0.999
    )
    return model


def _devices() -> list:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()
    return []


if __name__ == "__main__":
    raise SystemExit(main())
