"""Tests of the ``keras-lmu`` command (keras_lmu.cli and ``python -m keras_lmu``)."""

import importlib.metadata
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_lmu import cli, datasets

BACKEND = keras.backend.backend()
OTHER_BACKEND = next(name for name in cli.BACKENDS if name != BACKEND)
#: Backend for runs whose output does not depend on it (help): the quickest to import.
QUICK_BACKEND = "jax" if cli._is_installed("jax") else BACKEND
TIMEOUT_S = 300


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides the per-test ``keras.utils.clear_session()`` of conftest.py.

    These tests need no fresh Keras state (the few models built here are throwaway), and
    clearing it costs a garbage collection per test (about 0.2 s on TensorFlow
    and PyTorch).
    """
    yield


@dataclass
class Run:
    """A ``python -m keras_lmu`` process started in the background."""

    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path

    def result(self) -> tuple[int, str, str]:
        """Wait for the process; return its exit status, stdout and stderr."""
        returncode = self.process.wait(timeout=TIMEOUT_S)
        return returncode, self.stdout_path.read_text(), self.stderr_path.read_text()


def _start(folder: Path, name: str, args: list[str], env: dict[str, str]) -> Run:
    stdout_path, stderr_path = folder / f"{name}.out", folder / f"{name}.err"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "keras_lmu", *args], stdout=stdout, stderr=stderr, env=env
        )
    return Run(process, stdout_path, stderr_path)


@pytest.fixture(scope="module", autouse=True)
def runs(tmp_path_factory):
    """Start every command-line run with the first test of this file.

    Each run pays for importing Keras; they go on in the background while the
    in-process tests run, and the tests at the end of the file wait for them.
    """
    folder = tmp_path_factory.mktemp("cli_runs")
    empty_data_dir = folder / "no_data"
    empty_data_dir.mkdir()
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    quick_env = {**env, "KERAS_BACKEND": QUICK_BACKEND}
    # Starts on another backend, so ``--backend`` makes the command re-execute itself.
    start_backend = QUICK_BACKEND if QUICK_BACKEND != BACKEND else OTHER_BACKEND
    started = {
        "help": _start(folder, "help", ["--help"], quick_env),
        "demo_help": _start(folder, "demo_help", ["demo", "--help"], quick_env),
        "no_data": _start(
            folder,
            "no_data",
            ["demo", "--backend", BACKEND, "--epochs", "1"],
            {**env, "KERAS_BACKEND": start_backend, "KERAS_LMU_DATA": str(empty_data_dir)},
        ),
    }
    if os.environ.get("KERAS_LMU_DATA"):
        started["tiny_demo"] = _start(
            folder,
            "tiny_demo",
            ["demo", "--epochs", "1", "--train-size", "500", "--batch-size", "25"],
            env,
        )
    yield started
    for run in started.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


# In-process checks (they run while the background runs go on) ----------------------


def test_console_script_is_declared():
    (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name="keras-lmu")
    assert entry_point.value == "keras_lmu.cli:main"
    assert entry_point.load() is cli.main


def test_parser_defaults():
    args = cli.build_parser().parse_args(["demo"])
    assert args.command == "demo"
    assert (args.epochs, args.batch_size, args.train_size) == (
        cli.DEMO_EPOCHS,
        cli.DEMO_BATCH_SIZE,
        cli.DEMO_TRAIN_SIZE,
    )
    assert args.backend is None
    args = cli.build_parser().parse_args(
        ["demo", "--epochs", "2", "--backend", "torch", "--batch-size", "7", "--train-size", "9"]
    )
    assert (args.epochs, args.backend, args.batch_size, args.train_size) == (2, "torch", 7, 9)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required: COMMAND"),
        (["train"], "invalid choice: 'train'"),
        (["demo", "--epochs", "0"], "--epochs: expected a positive integer"),
        (["demo", "--batch-size", "many"], "--batch-size: expected a positive integer"),
        (["demo", "--train-size", "-5"], "--train-size: expected a positive integer"),
        (["demo", "--backend", "numpy"], "--backend: invalid choice: 'numpy'"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


class _Exec(Exception):
    """Raised by the fake ``os.execv``, holding what would have been executed."""


@pytest.fixture
def fake_exec(monkeypatch):
    """Record ``os.execv`` calls instead of replacing the test process."""

    def execv(path, args):
        raise _Exec(path, list(args), os.environ.get("KERAS_BACKEND"))

    monkeypatch.setattr(cli.os, "execv", execv)
    # main() sets os.environ["KERAS_BACKEND"] before re-executing: restore it afterwards.
    monkeypatch.setenv("KERAS_BACKEND", BACKEND)


@pytest.fixture
def demo_calls(monkeypatch):
    """Replace the demo itself by a stub; returns the list of its calls."""
    calls = []
    monkeypatch.setattr(cli, "run_demo", lambda args: calls.append(args) or 0)
    return calls


def test_other_backend_reexecutes_with_it(fake_exec, demo_calls):
    argv = ["demo", "--backend", OTHER_BACKEND, "--epochs", "1"]
    with pytest.raises(_Exec) as info:
        cli.main(argv)
    path, args, backend_in_env = info.value.args
    assert path == sys.executable
    assert args == [sys.executable, "-m", "keras_lmu", *argv]
    assert backend_in_env == OTHER_BACKEND
    assert demo_calls == []


def test_loaded_backend_runs_in_process(fake_exec, demo_calls, capsys):
    assert cli.main(["demo", "--backend", BACKEND, "--epochs", "3"]) == 0
    assert len(demo_calls) == 1 and demo_calls[0].epochs == 3
    assert f"Using Keras backend: {BACKEND}" in capsys.readouterr().out


def test_without_keras_backend_prefers_jax(fake_exec, demo_calls, monkeypatch, capsys):
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setattr(cli, "_is_installed", lambda name: True)
    if BACKEND == "jax":
        assert cli.main(["demo"]) == 0
        assert "Using Keras backend: jax" in capsys.readouterr().out
    else:
        with pytest.raises(_Exec) as info:
            cli.main(["demo"])
        assert info.value.args[2] == "jax"


def test_without_keras_backend_takes_first_installed(fake_exec, demo_calls, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setattr(cli, "_is_installed", lambda name: name == "torch")
    if BACKEND == "torch":
        assert cli.main(["demo"]) == 0
    else:
        with pytest.raises(_Exec) as info:
            cli.main(["demo"])
        assert info.value.args[1] == [sys.executable, "-m", "keras_lmu", "demo"]
        assert info.value.args[2] == "torch"


def test_no_backend_installed(fake_exec, demo_calls, monkeypatch, capsys):
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setattr(cli, "_is_installed", lambda name: False)
    assert cli.main(["demo"]) == 1
    assert "no Keras backend is installed" in capsys.readouterr().err
    assert demo_calls == []


def test_requested_backend_not_installed(fake_exec, demo_calls, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_is_installed", lambda name: name != OTHER_BACKEND)
    assert cli.main(["demo", "--backend", OTHER_BACKEND]) == 1
    assert f"the backend '{OTHER_BACKEND}' is not installed" in capsys.readouterr().err
    assert demo_calls == []


def test_no_endless_reexecution(fake_exec, demo_calls, monkeypatch, capsys):
    """KERAS_BACKEND already names the wanted backend, yet Keras loaded another one."""
    monkeypatch.setenv("KERAS_BACKEND", OTHER_BACKEND)
    monkeypatch.setattr(cli, "_is_installed", lambda name: True)
    assert cli.main(["demo"]) == 1
    assert "but Keras loaded" in capsys.readouterr().err
    assert demo_calls == []


def _tiny_psmnist(steps=16):
    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, 10, n)
        # Labels are readable from the sequences, so a little training helps.
        x = rng.normal(0, 0.1, (n, steps, 1)).astype(np.float32) + labels[:, None, None] / 10
        return x.astype(np.float32), labels

    return split(64), split(32), split(32)


def test_run_demo_trains_and_prints_test_accuracy(monkeypatch, capsys):
    monkeypatch.setattr(datasets, "load_psmnist", lambda: _tiny_psmnist())
    args = cli.build_parser().parse_args(
        ["demo", "--epochs", "2", "--train-size", "48", "--batch-size", "16"]
    )
    assert cli.run_demo(args) == 0
    out = capsys.readouterr().out
    assert "psMNIST: 48 training, 32 validation and 32 test sequences of 16 steps" in out
    assert "Epoch 2/2" in out and "val_accuracy" in out
    accuracy = float(re.search(r"Test accuracy: ([0-9.]+)", out).group(1))
    assert 0.0 <= accuracy <= 1.0


def test_run_demo_rejects_too_large_train_size(monkeypatch, capsys):
    monkeypatch.setattr(datasets, "load_psmnist", lambda: _tiny_psmnist())
    args = cli.build_parser().parse_args(["demo", "--train-size", "65"])
    assert cli.run_demo(args) == 1
    assert "--train-size must be at most 64, got 65" in capsys.readouterr().err


def test_run_demo_reports_missing_data(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KERAS_LMU_DATA", str(tmp_path))
    assert cli.run_demo(cli.build_parser().parse_args(["demo"])) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path / "mnist.npz") in err


def test_demo_model_shapes():
    model = cli.build_demo_model(steps=30, training_steps=10)
    assert model.input_shape == (None, 30, 1)
    assert model.output_shape == (None, 10)
    lmu = model.layers[1]
    assert (lmu.cell_config["order"], lmu.theta) == (256, 30)
    assert lmu.uses_parallel_form()


# Command-line runs, waited for last ------------------------------------------------


def test_help_lists_the_subcommands(runs):
    returncode, stdout, stderr = runs["help"].result()
    assert returncode == 0, stderr
    assert "usage: keras-lmu" in stdout
    assert re.search(r"^\s+demo\s+train an LMU on psMNIST", stdout, re.MULTILINE)


def test_demo_help_lists_the_options(runs):
    returncode, stdout, stderr = runs["demo_help"].result()
    assert returncode == 0, stderr
    assert "usage: keras-lmu demo" in stdout
    for option in ("--epochs", "--backend", "--batch-size", "--train-size"):
        assert option in stdout
    assert "{jax,tensorflow,torch}" in stdout
    assert f"(default: {cli.DEMO_EPOCHS})" in stdout


def test_demo_without_data_explains_and_exits_1(runs):
    """Started on another backend: the command re-executes itself on ``--backend``."""
    returncode, stdout, stderr = runs["no_data"].result()
    assert returncode == 1
    assert f"Using Keras backend: {BACKEND}" in stdout
    assert "error:" in stderr and "KERAS_LMU_DATA" in stderr and "mnist.npz" in stderr
    assert "Traceback" not in stderr


def test_tiny_demo_prints_test_accuracy(runs):
    if "tiny_demo" not in runs:
        pytest.skip("KERAS_LMU_DATA is not set: no real MNIST for the demo")
    returncode, stdout, stderr = runs["tiny_demo"].result()
    assert returncode == 0, stderr[-3000:]
    assert f"Using Keras backend: {BACKEND}" in stdout
    assert "psMNIST: 500 training, 10000 validation and 10000 test sequences of 784 steps" in stdout
    assert "val_accuracy" in stdout
    match = re.search(r"^Test accuracy: ([0-9.]+)$", stdout, re.MULTILINE)
    assert match, stdout[-2000:]
    accuracy = float(match.group(1))
    assert 0.2 < accuracy <= 1.0  # 20 steps of training: well above chance (0.1)
