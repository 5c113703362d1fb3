"""What the experiments (``keras-lmu psmnist``, ``keras-lmu mackey-glass``) share in training.

Keras is imported inside the functions, so that the command line can pick the
backend first.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def folder_write_problem(folder: Path) -> str | None:
    """Why files cannot be written in the existing ``folder``, or None: tried by
    creating and removing an empty file there."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".write-check-")
    except OSError as error:
        return error.strerror or str(error)
    os.close(handle)
    os.unlink(name)
    return None


def make_output_folder(out: Path, files: Sequence[str] = ()) -> bool:
    """Make the folder ``out`` (and its parents) for the ``files`` an experiment
    writes there; False, after printing why, if it cannot be made or written in, or
    one of those names is a folder. Called before training, so that its results are
    not lost at the end."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"error: cannot create the output folder {out}: {error}", file=sys.stderr)
        return False
    problem = folder_write_problem(out)
    if problem is not None:
        print(f"error: cannot write files in the output folder {out}: {problem}", file=sys.stderr)
        return False
    for name in files:
        path = out / name
        if path.is_dir():
            print(
                f"error: {path} is a folder, where the command writes its file {name}; "
                "remove it or give another --out",
                file=sys.stderr,
            )
            return False
        if path.is_symlink() and not path.resolve().parent.is_dir():
            print(
                f"error: {path} is a link to {path.readlink()}, in a folder that does not "
                f"exist, where the command writes its file {name}; remove it or give "
                "another --out",
                file=sys.stderr,
            )
            return False
    return True


def missing_folders(out: Path) -> list[Path]:
    """The folders of the path ``out``, itself and then its parents, that do not exist
    yet: what :func:`make_output_folder` will create."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove ``folders`` in order (innermost first, as :func:`missing_folders` lists
    them), stopping at the first that cannot be removed: one that holds files."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def write_json(path: Path, data) -> None:
    """Write ``data`` to ``path`` as indented JSON, with every number that is not
    finite (NaN or infinite, as in the history of a run that diverged) written as
    ``null``: JSON has no such numbers."""

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value

    path.write_text(json.dumps(finite(data), indent=2, allow_nan=False) + "\n")


def best_weights_callback(monitor: str, mode: str):
    """A callback that restores, at the end of training, the weights of the best epoch.

    Parameters
    ----------
    monitor : str
        A metric of the epoch's logs, e.g. ``"val_accuracy"`` or ``"val_loss"``.
    mode : {"max", "min"}
        Whether the best epoch has the highest or the lowest ``monitor``; on ties,
        the first one. NaN (a diverged epoch) counts as worse than any number.

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
            value = float(value)
            improved = (
                self.best is None
                or (math.isnan(self.best) and not math.isnan(value))
                or sign * value > sign * self.best
            )
            if improved:
                self.best, self.best_epoch = value, epoch + 1
                self.weights = [w.copy() for w in self.model.get_weights()]

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    return BestWeights()
