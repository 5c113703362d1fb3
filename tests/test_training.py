"""keras_lmu.training: the best-epoch callback of the experiments."""

import keras
import numpy as np
import pytest

from keras_lmu.training import best_weights_callback


@pytest.mark.parametrize(
    ("mode", "values", "best_epoch"),
    [("max", [0.5, 0.7, 0.7, 0.6], 2), ("min", [0.5, 0.3, 0.4, 0.3], 2)],
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
