"""Tests of keras_lmu.mackey_glass and the ``keras-lmu mackey-glass`` command."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_lmu import cli
from keras_lmu import mackey_glass as mg
from keras_lmu.datasets import mackey_glass

BACKEND = keras.backend.backend()
TIMEOUT_S = 300
#: The end-to-end run: tiny, so that it takes seconds.
TINY = ["--series", "4", "--steps", "300", "--epochs", "1", "--batch-size", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def command_run(tmp_path_factory):
    """Start ``python -m keras_lmu mackey-glass`` on a tiny budget with the first test.

    It runs in the background while the in-process tests go on; the tests that
    read its results wait for it.
    """
    folder = tmp_path_factory.mktemp("mackey_glass_run")
    out = folder / "results"
    stdout_path, stderr_path = folder / "stdout", folder / "stderr"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "keras_lmu", "mackey-glass", *TINY, "--out", str(out)],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "KERAS_BACKEND": BACKEND},
        )

    def result():
        returncode = process.wait(timeout=TIMEOUT_S)
        return returncode, stdout_path.read_text(), stderr_path.read_text(), out

    yield result
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def small_data():
    return mg.prepare_data(series=8, steps=120, seed=5)


def test_starts_the_command(command_run):
    """Requests the background run first, so that it overlaps the other tests."""
    assert callable(command_run)


# Data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "series, sizes", [(128, (32, 32, 64)), (8, (2, 2, 4)), (4, (1, 1, 2)), (3, (1, 1, 1))]
)
def test_split_sizes(series, sizes):
    assert mg.split_sizes(series) == sizes


@pytest.mark.parametrize("series", [2, 0, -1, 4.0, None])
def test_split_sizes_rejects_too_few_series(series):
    with pytest.raises((TypeError, ValueError), match="series"):
        mg.split_sizes(series)


def test_data_shapes_and_dtypes(small_data):
    assert [len(split[0]) for split in small_data[:3]] == [2, 2, 4]
    for x, y in small_data[:3]:
        assert x.shape == y.shape == (len(x), 120 - mg.AHEAD, 1)
        assert x.dtype == y.dtype == np.float32
    assert isinstance(small_data.mean, float)


def test_target_is_the_input_shifted_by_15(small_data):
    for x, y in small_data[:3]:
        np.testing.assert_array_equal(y[:, : -mg.AHEAD], x[:, mg.AHEAD :])
        # ... and not merely a constant: the series moves over 15 steps.
        assert np.mean(np.abs(y - x)) > 0.02


def test_series_are_squashed_mackey_glass_centred_on_the_training_mean(small_data):
    seeds = mg.series_seeds(8, seed=5)
    squashed = np.stack(
        [
            np.tanh(mackey_glass(120, tau=17, seed=int(s), substeps=10, washout=100) - 1)
            for s in seeds
        ]
    )
    assert small_data.mean == pytest.approx(np.mean(squashed[:2]), abs=1e-12)
    inputs = np.concatenate([split[0][..., 0] for split in small_data[:3]])
    targets = np.concatenate([split[1][..., 0] for split in small_data[:3]])
    np.testing.assert_allclose(inputs, squashed[:, : -mg.AHEAD] - small_data.mean, atol=1e-6)
    np.testing.assert_allclose(targets, squashed[:, mg.AHEAD :] - small_data.mean, atol=1e-6)
    # Centred: the whole training series (input and the last 15 targets) average to 0.
    x_train, y_train = small_data.train
    whole = np.concatenate([x_train, y_train[:, -mg.AHEAD :]], axis=1)
    assert abs(float(np.mean(whole, dtype=np.float64))) < 1e-6
    assert float(np.std(whole)) > 0.1


def test_splits_are_disjoint(small_data):
    everything = np.concatenate([split[0][..., 0] for split in small_data[:3]])
    differences = np.abs(everything[:, None] - everything[None])
    distances = differences.max(axis=-1)
    off_diagonal = distances[~np.eye(len(everything), dtype=bool)]
    assert off_diagonal.min() > 0.05
    seeds = mg.series_seeds(128, seed=0)
    assert len(np.unique(seeds)) == 128


def test_data_are_deterministic_and_depend_on_the_seed(small_data):
    again = mg.prepare_data(series=8, steps=120, seed=5)
    for (x, y), (x_again, y_again) in zip(small_data[:3], again[:3], strict=True):
        np.testing.assert_array_equal(x, x_again)
        np.testing.assert_array_equal(y, y_again)
    other = mg.prepare_data(series=8, steps=120, seed=6)
    assert np.max(np.abs(other.test[0] - small_data.test[0])) > 0.05


@pytest.mark.parametrize(
    "kwargs, name",
    [({"steps": 15}, "steps"), ({"steps": 100.5}, "steps"), ({"seed": -1}, "seed")],
)
def test_bad_data_arguments(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        mg.prepare_data(series=4, **{"steps": 50, **kwargs})


def test_nrmse():
    target = np.array([3.0, -4.0])
    assert mg.nrmse(target, target) == 0.0
    assert mg.nrmse(np.zeros(2), target) == pytest.approx(1.0)
    assert mg.nrmse(target + 1, target) == pytest.approx(1 / np.sqrt(12.5))
    with pytest.raises(ValueError, match="shape"):
        mg.nrmse(np.zeros(3), target)


def test_baseline_nrmse_is_well_above_100_percent():
    """x(t + 15) = x(t) is worse than predicting 0 (the paper: 162%)."""
    x, y = mg.prepare_data(series=4, steps=2000, seed=0).test
    assert 1.3 < mg.nrmse(x, y) < 1.9


# Models ----------------------------------------------------------------------------


def test_models_have_about_18k_parameters_each():
    lmu = mg.build_lmu_model(steps=40)
    lstm = mg.build_lstm_model(steps=40)
    assert lmu.count_params() == 18050
    assert lstm.count_params() == 18026
    for model in (lmu, lstm):
        assert abs(model.count_params() - 18000) < 0.05 * 18000
    assert abs(lmu.count_params() - lstm.count_params()) < 0.1 * lstm.count_params()


def test_models_predict_at_every_step():
    x = np.random.default_rng(0).normal(0, 0.2, (2, 40, 1)).astype("float32")
    for builder in (mg.build_lmu_model, mg.build_lstm_model):
        model = builder(steps=40)
        assert model.predict(x, verbose=0).shape == (2, 40, 1)


def test_lmu_layers():
    lmu = mg.build_lmu_model(steps=40)
    layers = [layer for layer in lmu.layers if layer.name.startswith("lmu_")]
    assert len(layers) == mg.LAYERS
    for layer in layers:
        assert layer.uses_parallel_form()
        assert (layer.cell_config["order"], layer.theta) == (mg.LMU_ORDER, mg.LMU_THETA)
        assert layer.hidden_cell.units == mg.LMU_UNITS


def test_lmu_model_step_by_step_connections_add_parameters():
    both = mg.build_lmu_model(steps=10, hidden_to_memory=True)
    neither = mg.build_lmu_model(steps=10, memory_to_memory=False)
    # 49 hidden-to-memory and 4 memory-to-memory weights per layer.
    assert both.count_params() == 18050 + mg.LAYERS * 49
    assert neither.count_params() == 18050 - mg.LAYERS * 4


# Command line -----------------------------------------------------------------------


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["mackey-glass", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: keras-lmu mackey-glass" in out
    for option in ("--epochs", "--series", "--steps", "--batch-size", "--backend", "--seed"):
        assert option in out
    assert "--out DIR" in out and "{jax,tensorflow,torch}" in out
    assert f"(default: {mg.EPOCHS})" in out
    assert "in percent" in out and "%%" not in out


def test_command_is_listed(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert re.search(r"^\s+mackey-glass\s+train an LMU and an LSTM", capsys.readouterr().out, re.M)


def test_parser_defaults():
    args = cli.build_parser().parse_args(["mackey-glass"])
    assert (args.series, args.steps, args.epochs, args.batch_size) == (
        mg.SERIES,
        mg.STEPS,
        mg.EPOCHS,
        mg.BATCH_SIZE,
    )
    assert (args.seed, args.out, args.backend, args.learning_rate) == (
        0,
        None,
        None,
        mg.LEARNING_RATE,
    )
    assert args.run is mg.run and args.needs_backend


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--series", "2"], "--series: expected an integer >= 3"),
        (["--steps", "15"], "--steps: expected an integer in [16, 1,000,000]"),
        (["--steps", "1000001"], "--steps: expected an integer in [16, 1,000,000]"),
        (["--epochs", "0"], "--epochs: expected a positive integer"),
        (["--seed", "-1"], "--seed: expected an integer in [0, 2**32 - 1]"),
        (["--learning-rate", "0"], "--learning-rate: expected a positive number"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["mackey-glass", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_unwritable_out_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = cli.build_parser().parse_args(["mackey-glass", "--out", str(blocker / "results")])
    assert mg.run(args) == 1
    captured = capsys.readouterr()
    assert "error: cannot create the output folder" in captured.err and "Epoch" not in captured.out


def test_out_that_cannot_be_written_in_fails_before_training(unwritable_folder, capsys):
    """Before, both models trained and writing the results then raised PermissionError."""
    args = cli.build_parser().parse_args(["mackey-glass", "--out", str(unwritable_folder)])
    assert mg.run(args) == 1
    captured = capsys.readouterr()
    assert "error: cannot write files in the output folder" in captured.err
    assert "Epoch" not in captured.out


def test_a_folder_in_place_of_an_output_file_fails_before_training(tmp_path, capsys):
    (tmp_path / mg.RESULTS_FILE).mkdir()
    args = cli.build_parser().parse_args(["mackey-glass", "--out", str(tmp_path)])
    assert mg.run(args) == 1
    captured = capsys.readouterr()
    assert f"error: {tmp_path / mg.RESULTS_FILE} is a folder" in captured.err
    assert "Epoch" not in captured.out


def test_command_prints_the_table(command_run):
    returncode, stdout, stderr, _ = command_run()
    assert returncode == 0, stderr[-3000:]
    assert f"Using Keras backend: {BACKEND}" in stdout
    assert "4 series of 300 steps: 1 training, 1 validation, 2 test" in stdout
    assert "Budget of each model: 1 epoch, batch 1, Adam from 0.003" in stdout
    assert stdout.count("val_loss:") == 2  # one line per epoch and model
    rows = {}
    for name, pattern in (("LSTM", "LSTM"), ("LMU", "LMU"), ("baseline", r"x\(t\+15\) = x\(t\)")):
        match = re.search(
            rf"^{pattern}\s+([0-9,]+)\s+\S+\s+\S+\s+([0-9.]+)\s+([0-9.]+)$", stdout, re.M
        )
        assert match, stdout[-3000:]
        rows[name] = match.groups()
    assert rows["LSTM"][0] == "18,026" and rows["LMU"][0] == "18,050"
    assert (rows["LSTM"][2], rows["LMU"][2], rows["baseline"][2]) == ("5.87", "4.87", "162.00")
    assert 100 < float(rows["baseline"][1]) < 250
    assert re.search(r"^Total time: [0-9.]+ s \(backend \w+\)$", stdout, re.M)


def test_command_writes_the_results(command_run):
    returncode, stdout, stderr, out = command_run()
    assert returncode == 0, stderr[-3000:]
    summary = json.loads((out / mg.RESULTS_FILE).read_text())
    assert summary["backend"] == BACKEND
    assert summary["budget"] == {
        "series": 4,
        "steps": 300,
        "train_series": 1,
        "validation_series": 1,
        "test_series": 2,
        "epochs": 1,
        "batch_size": 1,
        "optimizer": "Adam",
        "learning_rate": mg.LEARNING_RATE,
        "clipnorm": mg.CLIPNORM,
        "schedule": "cosine decay to 0",
        "seed": 3,
    }
    assert set(summary["models"]) == {"lmu", "lstm"}
    assert summary["models"]["lmu"]["parameters"] == 18050
    assert summary["models"]["lstm"]["parameters"] == 18026
    for model in summary["models"].values():
        assert model["best_epoch"] == 1
        assert model["training_time_s"] > 0
        assert 0 < model["test_nrmse_percent"] < 1000
        assert len(model["history"]["val_loss"]) == 1
    baseline = summary["baseline"]["test_nrmse_percent"]
    assert f"{baseline:.2f}" in stdout
    assert summary["paper_nrmse_percent"]["lmu"] == 4.87
    assert summary["command"].startswith("keras-lmu mackey-glass --series 4")
    if cli._is_installed("matplotlib"):
        assert (out / mg.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
