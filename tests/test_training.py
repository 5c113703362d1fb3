"""keras_lmu.training: the best-epoch callback of the experiments."""

import json

import keras
import numpy as np
import pytest

from keras_lmu import training
from keras_lmu.training import best_weights_callback, make_output_folder, write_json


@pytest.mark.parametrize(
    ("mode", "values", "best_epoch"),
    [
        ("max", [0.5, 0.7, 0.7, 0.6], 2),
        ("min", [0.5, 0.3, 0.4, 0.3], 2),
        # A diverged epoch (NaN) is worse than any other; before, a first NaN was kept.
        ("min", [float("nan"), 0.3, float("nan"), 0.4], 2),
        ("max", [float("nan"), 0.7, 0.5], 2),
    ],
)
def test_the_first_best_epochs_weights_are_restored(mode, values, best_epoch):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback = best_weights_callback("val_metric", mode=mode)
    callback.set_model(model)
    for epoch, value in enumerate(values):
        model.set_weights([np.full((1, 1), epoch, "float32"), np.zeros(1, "float32")])
        callback.on_epoch_end(epoch, {"val_metric": value})
    callback.on_train_end()
    assert (callback.best_epoch, callback.best) == (best_epoch, pytest.approx(values[1]))
    assert model.get_weights()[0][0, 0] == best_epoch - 1


def test_missing_metric_and_bad_mode_are_refused():
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        best_weights_callback("val_loss", mode="lowest")
    callback = best_weights_callback("val_loss", mode="min")
    with pytest.raises(KeyError, match="val_loss is missing"):
        callback.on_epoch_end(0, {"loss": 1.0})


def test_only_nan_epochs_keep_the_first():
    callback = best_weights_callback("val_loss", mode="min")
    callback.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    for epoch in range(3):
        callback.on_epoch_end(epoch, {"val_loss": float("nan")})
    assert callback.best_epoch == 1


def test_json_files_hold_no_numbers_json_lacks(tmp_path):
    """A diverged run's NaN and infinite numbers are written as null (strict JSON)."""
    path = tmp_path / "metrics.json"
    write_json(path, {"loss": [1.5, float("nan"), float("inf")], "best": -float("inf"), "n": 3})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": [1.5, None, None], "best": None, "n": 3}


def test_output_folder_that_cannot_be_written_in_is_refused(unwritable_folder, tmp_path, capsys):
    assert not make_output_folder(unwritable_folder, ("results.json",))
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write files in the output folder {unwritable_folder}: ")
    assert make_output_folder(tmp_path / "new" / "folder", ("results.json",))
    assert list((tmp_path / "new" / "folder").iterdir()) == []  # the check leaves nothing


def test_output_file_linked_into_a_missing_folder_is_refused(tmp_path, capsys):
    """A link in place of an output file that points into a folder that does not exist
    (writing it failed after training); a link to a file that can be made is kept."""
    (tmp_path / "results.json").symlink_to(tmp_path / "missing" / "results.json")
    assert not make_output_folder(tmp_path, ("results.json",))
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'results.json'} is a link to ")
    assert "in a folder that does not exist" in err
    (tmp_path / "results.json").unlink()
    (tmp_path / "results.json").symlink_to(tmp_path / "elsewhere.json")
    assert make_output_folder(tmp_path, ("results.json",))


def test_missing_folders_lists_what_make_output_folder_makes(tmp_path):
    out = tmp_path / "a" / "b" / "c"
    assert training.missing_folders(out) == [out, out.parent, out.parent.parent]
    assert training.make_output_folder(out)
    assert training.missing_folders(out) == []
    (out / "result.json").write_text("{}")
    training.remove_empty_folders([out, out.parent, out.parent.parent])
    assert (out / "result.json").exists()  # a folder holding a file stops the removal
    (out / "result.json").unlink()
    training.remove_empty_folders([out, out.parent, out.parent.parent])
    assert list(tmp_path.iterdir()) == []
