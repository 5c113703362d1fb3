"""Reproducible training and resumed training (``keras.callbacks.BackupAndRestore``)."""

import keras
import numpy as np
import pytest

import keras_lmu


def make_model(dropout: float = 0.0, hidden_to_memory: bool = False) -> keras.Model:
    inputs = keras.Input((12, 2))
    hidden = keras.layers.SimpleRNNCell(4) if hidden_to_memory else keras.layers.Dense(4)
    features = keras_lmu.LMU(
        2,
        6,
        8.0,
        hidden,
        trainable_theta=True,
        hidden_to_memory=hidden_to_memory,
        dropout=dropout,
        return_sequences=False,
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(features))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def data():
    rng = np.random.default_rng(5)
    return rng.uniform(-1, 1, (32, 12, 2)).astype("float32"), rng.uniform(-1, 1, (32, 1))


@pytest.mark.parametrize("hidden_to_memory", [False, True])
def test_same_seed_gives_identical_weights_dropout_included(hidden_to_memory):
    x, y = data()
    weights = []
    for _ in range(2):
        keras.utils.clear_session()
        keras.utils.set_random_seed(3)
        model = make_model(dropout=0.3, hidden_to_memory=hidden_to_memory)
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


class StopAfter(keras.callbacks.Callback):
    """Interrupts training at the end of an epoch, as a crash would."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_to_the_same_weights(tmp_path):
    """Interrupted after epoch 2 of 4 and resumed: the same weights as one uninterrupted
    fit (shuffle=False, no dropout), theta included."""
    x, y = data()
    keras.utils.set_random_seed(1)
    reference = make_model()
    start = reference.get_weights()
    reference.fit(x, y, epochs=4, batch_size=8, shuffle=False, verbose=0)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = make_model()
    interrupted.set_weights(start)
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(
            x, y, epochs=4, batch_size=8, shuffle=False, verbose=0, callbacks=[backup, StopAfter(1)]
        )
    resumed = make_model()  # a fresh process would build the model anew
    history = resumed.fit(
        x, y, epochs=4, batch_size=8, shuffle=False, verbose=0, callbacks=[backup]
    )
    assert len(history.history["loss"]) == 2, "epochs 3 and 4 only"
    for a, b in zip(reference.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
