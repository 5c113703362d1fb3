"""What the experiments (``keras-lmu psmnist``, ``keras-lmu mackey-glass``) share in training.

Keras is imported inside the functions, so that the command line can pick the
backend first.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def make_output_folder(out: Path, files: Sequence[str] = ()) -> bool:
    """Make the folder ``out`` (and its parents) for the ``files`` an experiment
    writes there; False, after printing why, if it cannot be made or one of those
    names is a folder. Called before training, so that its results are not lost at
    the end."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"error: cannot create the output folder {out}: {error}", file=sys.stderr)
        return False
    for name in files:
        if (out / name).is_dir():
            print(
                f"error: {out / name} is a folder, where the command writes its file {name}; "
                "remove it or give another --out",
                file=sys.stderr,
            )
            return False
    return True


def best_weights_callback(monitor: str, mode: str):
    """A callback that restores, at the end of training, the weights of the best epoch.

    Parameters
    ----------
    monitor : str
        A metric of the epoch's logs, e.g. ``"val_accuracy"`` or ``"val_loss"``.
    mode : {"max", "min"}
        Whether the best epoch has the highest or the lowest ``monitor``; on ties,
        the first one.

    Returns
    -------
    keras.callbacks.Callback
        With ``best`` (the best value, None before the first epoch) and
        ``best_epoch`` (counted from 1).
    """
    import keras

    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    sign = 1.0 if mode == "max" else -1.0

    class BestWeights(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = None
            self.best_epoch = None
            self.weights = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is None:
                raise KeyError(f"{monitor} is missing from the epoch's logs")
            if self.best is None or sign * value > sign * self.best:
                self.best, self.best_epoch = float(value), epoch + 1
                self.weights = [w.copy() for w in self.model.get_weights()]

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    return BestWeights()
