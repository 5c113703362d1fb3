"""Tests of the ``keras-lmu`` command (keras_lmu.cli and ``python -m keras_lmu``)."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_lmu import cli, command_backend, datasets, legendre

ROOT = Path(__file__).resolve().parents[1]

BACKEND = keras.backend.backend()
OTHER_BACKEND = next(name for name in cli.BACKENDS if name != BACKEND)
#: Backend for runs whose output does not depend on it (help): the quickest to import.
QUICK_BACKEND = "jax" if cli._is_installed("jax") else BACKEND
TIMEOUT_S = 300
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
            ["demo", "--backend", BACKEND, "--epochs", "1", "--out", str(folder / "no_data_out")],
            {**env, "KERAS_BACKEND": start_backend, "KERAS_LMU_DATA": str(empty_data_dir)},
        ),
        # Started on another backend than the suite's: plot-basis must not re-execute.
        "plot_basis": _start(
            folder,
            "plot_basis",
            ["plot-basis", "--order", "5", "--theta", "40", "--out", str(folder / "basis.png")],
            {**env, "KERAS_BACKEND": start_backend},
        ),
        # A name Keras cannot load: the command must still start and say so.
        "unknown_backend": _start(
            folder,
            "unknown_backend",
            ["psmnist", "evaluate", str(folder / "missing.keras")],
            {**env, "KERAS_BACKEND": "Jax"},
        ),
    }
    if os.environ.get("KERAS_LMU_DATA"):
        started["tiny_demo"] = _start(
            folder,
            "tiny_demo",
            ["demo", "--epochs", "1", "--train-size", "500", "--batch-size", "25"]
            + ["--out", str(folder / "tiny_demo_out")],
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
    assert (args.backend, args.model, args.out) == (None, None, cli.DEMO_OUT)
    assert args.needs_backend
    args = cli.build_parser().parse_args(
        ["demo", "--epochs", "2", "--backend", "torch", "--batch-size", "7", "--train-size", "9"]
        + ["--model", "m.keras", "--out", "figures"]
    )
    assert (args.epochs, args.backend, args.batch_size, args.train_size) == (2, "torch", 7, 9)
    assert (args.model, args.out) == ("m.keras", "figures")
    args = cli.build_parser().parse_args(
        ["plot-basis", "--order", "3", "--theta", "12.5", "--out", "b.svg"]
    )
    assert (args.order, args.theta, args.out) == (3, 12.5, "b.svg")
    assert not args.needs_backend


def test_default_model_is_the_shipped_one():
    assert cli.default_model_path() == ROOT / "models" / "psmnist.keras"
    assert cli.default_model_path().is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required: COMMAND"),
        (["train"], "invalid choice: 'train'"),
        (["demo", "--epochs", "0"], "--epochs: expected a positive integer"),
        (["demo", "--batch-size", "many"], "--batch-size: expected a positive integer"),
        (["demo", "--train-size", "-5"], "--train-size: expected a positive integer"),
        (["demo", "--train-size", "50001"], "--train-size: expected a positive integer up to"),
        (["psmnist", "train", "--train-size", "60000"], "up to 50000, got '60000'"),
        (["demo", "--backend", "numpy"], "--backend: invalid choice: 'numpy'"),
        (["plot-basis", "--order", "0", "--theta", "5", "--out", "b.png"], "--order: expected"),
        (["plot-basis", "--order", "2.5", "--theta", "5", "--out", "b.png"], "--order: expected"),
        (["plot-basis", "--order", "3", "--theta", "0", "--out", "b.png"], "--theta: expected"),
        (["plot-basis", "--order", "3", "--theta", "-2", "--out", "b.png"], "--theta: expected"),
        (["plot-basis", "--order", "3", "--theta", "nan", "--out", "b.png"], "--theta: expected"),
        (["plot-basis", "--order", "3", "--theta", "1e10", "--out", "b.png"], "up to 1,000,000"),
        (["plot-basis", "--order", "1025", "--theta", "5", "--out", "b.png"], "up to 1024, got"),
        (["plot-basis", "--order", "3", "--theta", "5"], "arguments are required: --out"),
        (["plot-basis", "--out", "b.png"], "arguments are required: --order, --theta"),
        # Path("") is the current folder, where these wrote their files
        (["psmnist", "train", "--out", ""], "--out: expected a path, got an empty string"),
        (["mackey-glass", "--out", ""], "--out: expected a path, got an empty string"),
        (["demo", "--out", ""], "--out: expected a path, got an empty string"),
        (["nengo-demo", "--out", ""], "--out: expected a path, got an empty string"),
        (["psmnist", "evaluate", ""], "MODEL: expected a path, got an empty string"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_plot_basis_reports_a_folder_it_cannot_write_in(unwritable_folder, capsys):
    out = unwritable_folder / "basis.png"
    assert cli.main(["plot-basis", "--order", "3", "--theta", "5", "--out", str(out)]) == 1
    assert f"error: cannot write {out}: cannot write files in the folder {unwritable_folder} (" in (
        capsys.readouterr().err
    )


def test_plot_basis_names_a_theta_too_small_for_its_order(tmp_path, capsys):
    """A window whose matrix exponential overflows is a usage error, not a traceback."""
    out = tmp_path / "b.png"
    argv = ["plot-basis", "--order", "4", "--theta", "1e-40", "--out", str(out)]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "--theta" in error and "too small" in error and "order-4" in error
    assert not out.exists()


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


def test_unsupported_keras_backend(fake_exec, demo_calls, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "numpy")
    assert cli.main(["demo"]) == 1
    assert "KERAS_BACKEND='numpy': the keras-lmu commands run on jax" in capsys.readouterr().err
    assert demo_calls == []


@pytest.mark.parametrize(
    "orig_argv, expected",
    [
        (["python", "-m", "keras_lmu", "demo"], True),
        (["python", "-X", "dev", "-m", "keras_lmu"], True),
        (["python", "-mkeras_lmu"], True),
        (["python", "/venv/bin/keras-lmu", "demo"], True),
        (["python", "-I", "C:/venv/Scripts/keras-lmu.exe"], True),
        # Joined short options, options with values, the package's __main__ (these
        # were taken for other programs, which leaves the backend to keras.json).
        (["python", "-Im", "keras_lmu"], True),
        (["python", "-bbImkeras_lmu"], True),
        (["python", "-Xdev", "-Wdefault", "-m", "keras_lmu"], True),
        (["python", "--check-hash-based-pycs", "always", "-m", "keras_lmu"], True),
        (["python", "-m", "keras_lmu.__main__", "demo"], True),
        (["python", "-Wignore::DeprecationWarning", "/venv/bin/keras-lmu"], True),
        (["python", "-Ic", "import keras_lmu"], False),
        (["python", "-m", "keras_lmu_other"], False),
        (["python", "-", "-m", "keras_lmu"], False),
        (["python", "-m", "pytest", "-m", "keras_lmu"], False),
        (["python", "-c", "import keras_lmu"], False),
        (["python", "train.py", "-m", "keras_lmu"], False),
        (["python"], False),
    ],
)
def test_runs_as_command(orig_argv, expected):
    assert command_backend.runs_as_command(orig_argv) is expected


def test_command_backend_order():
    installed = {"tensorflow", "torch"}.__contains__
    assert command_backend.command_backend(["demo"], {}, installed) == "tensorflow"
    assert command_backend.command_backend(["demo"], {"KERAS_BACKEND": "torch"}, installed) == (
        "torch"
    )
    for argv in (["demo", "--backend", "jax"], ["psmnist", "train", "--backend=jax"]):
        assert command_backend.command_backend(argv, {"KERAS_BACKEND": "torch"}, installed) == (
            "jax"
        )
    assert command_backend.command_backend([], {}, lambda name: False) is None


@pytest.mark.skipif(BACKEND != "jax", reason="runs JAX in subprocesses: once, in the JAX run")
def _environment_hiding(tmp_path: Path, modules: tuple[str, ...]) -> dict[str, str]:
    """Environment of a Python process in which ``modules`` cannot be imported (as if not
    installed; a ``sitecustomize`` hides them), without KERAS_BACKEND or a keras.json."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class HideBackends:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {modules!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, HideBackends())\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    env["KERAS_HOME"] = str(tmp_path / "keras-home")  # no keras.json naming a backend
    return env


def test_command_runs_where_keras_default_backend_is_missing(tmp_path):
    """Where TensorFlow, Keras's default backend, is not installed (here: hidden from
    imports) and KERAS_BACKEND is unset, ``python -m keras_lmu`` and the ``keras-lmu``
    script choose JAX before Keras loads, rather than failing as ``import keras``
    does."""
    env = _environment_hiding(tmp_path, ("tensorflow", "torch"))
    missing = tmp_path / "missing.keras"
    plain = subprocess.run(
        [sys.executable, "-c", "import keras"], capture_output=True, text=True, env=env
    )
    assert plain.returncode != 0 and "tensorflow" in plain.stderr  # Keras's own default
    commands = [[sys.executable, "-m", "keras_lmu"]]
    script = Path(sys.executable).with_name("keras-lmu")
    if script.exists():
        commands.append([str(script)])
    for command in commands:
        done = subprocess.run(
            [*command, "psmnist", "evaluate", str(missing)],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT_S,
        )
        assert done.returncode == 1, done.stderr[-2000:]
        assert "Using Keras backend: jax" in done.stdout
        assert done.stderr.strip().endswith(f"error: no model file {missing}"), done.stderr


def test_commands_without_any_backend(tmp_path):
    """With no backend installed (here: all three hidden), Keras cannot be imported: the
    help and plot-basis, which need no backend, run, and the others say what to install
    (every command failed with Keras's import error, ModuleNotFoundError 'tensorflow')."""
    env = _environment_hiding(tmp_path, ("jax", "jaxlib", "tensorflow", "torch"))
    plain = subprocess.run(
        [sys.executable, "-c", "import keras"], capture_output=True, text=True, env=env
    )
    assert plain.returncode != 0 and "No module named" in plain.stderr

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "keras_lmu", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT_S,
        )

    done = run("--help")
    assert done.returncode == 0 and "plot-basis" in done.stdout, done.stderr[-2000:]
    figure = tmp_path / "basis.png"
    done = run("plot-basis", "--order", "3", "--theta", "5", "--out", str(figure))
    assert done.returncode == 0, done.stderr[-2000:]
    assert figure.read_bytes().startswith(PNG_SIGNATURE)
    done = run("psmnist", "evaluate", str(tmp_path / "missing.keras"))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: no Keras backend is installed; install one of: jax, tensorflow, torch"
    )


def _tiny_psmnist(steps=16):
    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, 10, n)
        # Labels are readable from the sequences, so a little training helps.
        x = rng.normal(0, 0.1, (n, steps, 1)).astype(np.float32) + labels[:, None, None] / 10
        return x.astype(np.float32), labels

    return split(64), split(32), split(32)


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    """A saved (untrained) demo model for the 16-step sequences of ``_tiny_psmnist``."""
    from keras_lmu.psmnist import save_for_inference

    path = tmp_path_factory.mktemp("tiny_model") / "tiny.keras"
    save_for_inference(cli.build_demo_model(steps=16), path)
    return path


def test_run_demo_scores_model_trains_and_draws(monkeypatch, tmp_path, tiny_model_path, capsys):
    monkeypatch.setattr(datasets, "load_psmnist", lambda: _tiny_psmnist())
    out_dir = tmp_path / "figures"
    args = cli.build_parser().parse_args(
        ["demo", "--epochs", "2", "--train-size", "48", "--batch-size", "16"]
        + ["--model", str(tiny_model_path), "--out", str(out_dir)]
    )
    assert cli.run_demo(args) == 0
    out = capsys.readouterr().out
    assert "psMNIST: 48 training, 32 validation and 32 test sequences of 16 steps" in out
    saved = re.search(r"^Saved model (.+): test accuracy ([0-9.]+) \(32 test sequences", out, re.M)
    assert saved, out
    assert saved.group(1) == str(tiny_model_path) and 0.0 <= float(saved.group(2)) <= 1.0
    assert "Epoch 2/2" in out and "val_accuracy" in out
    # The saved model is scored before the training starts.
    assert out.index("Saved model") < out.index("Epoch 1/2")
    accuracy = float(re.search(r"^Test accuracy: ([0-9.]+)$", out, re.M).group(1))
    assert 0.0 <= accuracy <= 1.0
    curves, basis = out_dir / cli.DEMO_CURVES_FILE, out_dir / cli.BASIS_FILE
    assert f"Wrote {curves} and {basis}" in out
    for path in (curves, basis):
        assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_run_demo_goes_on_without_model_or_matplotlib(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(datasets, "load_psmnist", lambda: _tiny_psmnist())
    monkeypatch.setattr(cli, "_is_installed", lambda name: name != "matplotlib")
    missing = tmp_path / "missing.keras"
    args = cli.build_parser().parse_args(
        ["demo", "--epochs", "1", "--train-size", "16", "--batch-size", "16"]
        + ["--model", str(missing), "--out", str(tmp_path / "figures")]
    )
    assert cli.run_demo(args) == 0
    captured = capsys.readouterr()
    assert f"warning: no model file {missing}: skipping its evaluation" in captured.err
    assert "matplotlib is not installed: the demo will draw no figures" in captured.err
    assert "pip install 'keras-lmu3[plots]'" in captured.err
    assert re.search(r"^Test accuracy: ([0-9.]+)$", captured.out, re.M)
    assert "Saved model" not in captured.out and "Wrote" not in captured.out
    assert list((tmp_path / "figures").iterdir()) == []


def test_score_saved_model_skips_a_model_for_other_sequences(tiny_model_path, capsys):
    x, y = _tiny_psmnist(steps=20)[2]
    assert cli.score_saved_model(tiny_model_path, x, y) is None
    assert "takes inputs of shape (16, 1), not psMNIST's (20, 1): skipping" in (
        capsys.readouterr().err
    )


def test_score_saved_model_skips_an_unreadable_file(tmp_path, capsys):
    path = tmp_path / "broken.keras"
    path.write_text("not a model")
    x, y = _tiny_psmnist()[2]
    assert cli.score_saved_model(path, x, y) is None
    err = capsys.readouterr().err
    assert err.startswith(f"warning: cannot load {path} (") and "skipping" in err


def test_run_demo_stops_early_when_the_output_folder_cannot_be_made(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(datasets, "load_psmnist", lambda: _tiny_psmnist())
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = cli.build_parser().parse_args(["demo", "--train-size", "16", "--out", str(blocker)])
    assert cli.run_demo(args) == 1
    captured = capsys.readouterr()
    assert f"error: cannot create the output folder {blocker}" in captured.err
    assert "Epoch" not in captured.out


def test_run_demo_refuses_a_folder_in_place_of_its_figure(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(datasets, "load_psmnist", lambda: _tiny_psmnist())
    (tmp_path / cli.DEMO_CURVES_FILE).mkdir()
    args = cli.build_parser().parse_args(["demo", "--train-size", "16", "--out", str(tmp_path)])
    assert cli.run_demo(args) == 1
    captured = capsys.readouterr()
    assert f"error: {tmp_path / cli.DEMO_CURVES_FILE} is a folder" in captured.err
    assert "Epoch" not in captured.out


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


def test_plot_basis_needs_no_backend(monkeypatch, tmp_path, capsys):
    def no_backend(*args):
        raise AssertionError("plot-basis must not pick a Keras backend")

    monkeypatch.setattr(cli, "_ensure_backend", no_backend)
    discretized = []
    discrete_system = legendre.discrete_system

    def counted_discrete_system(*args):
        discretized.append(args)
        return discrete_system(*args)

    monkeypatch.setattr(legendre, "discrete_system", counted_discrete_system)
    path = tmp_path / "new" / "folder" / "basis"  # no extension: PNG, at exactly this path
    assert cli.main(["plot-basis", "--order", "12", "--theta", "7.5", "--out", str(path)]) == 0
    assert discretized == [(12, 7.5)]  # once, to check --theta and to draw
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert f"Wrote {path}: Legendre basis and impulse response, order 12, theta 7.5" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "name, message",
    [
        ("basis.xyz", "matplotlib writes no .xyz files; give FILE one of the extensions"),
        pytest.param(
            "basis.pgf",
            "matplotlib writes .pgf files with a TeX program that is not installed here",
            marks=pytest.mark.skipif(
                shutil.which("xelatex") is not None, reason="a TeX program is installed"
            ),
        ),
        ("a_file/basis.png", "cannot create the folder"),
        ("a_folder", "cannot write"),
    ],
)
def test_plot_basis_unwritable_path_exits_1(name, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder").mkdir()
    path = tmp_path / name
    assert cli.main(["plot-basis", "--order", "2", "--theta", "4", "--out", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {path}: ") and message in err
    assert "Traceback" not in err


def test_plot_basis_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_is_installed", lambda name: name != "matplotlib")
    path = tmp_path / "basis.png"
    assert cli.main(["plot-basis", "--order", "2", "--theta", "4", "--out", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: matplotlib is not installed")
    assert "pip install 'keras-lmu3[plots]'" in err
    assert not path.exists()


@pytest.mark.parametrize("theta", [0.5, 30.0, 1332.7, 1e7])
def test_sampled_impulse_response_spans_one_and_a_half_windows(theta):
    from keras_lmu import plots

    A_bar, B_bar = legendre.discrete_system(3, theta)
    steps, response = plots.sampled_impulse_response(A_bar, B_bar, theta)
    stride = steps[1] - steps[0]
    assert 2 <= len(steps) <= plots.MAX_RESPONSE_POINTS
    assert steps[-1] <= max(1.0, 1.5 * theta) < steps[-1] + stride
    reference = legendre.impulse_response(A_bar, B_bar, min(int(steps[-1]) + 1, 3000))
    shared = steps[steps < len(reference)].astype(int)
    np.testing.assert_allclose(response[: len(shared)], reference[shared], rtol=1e-9, atol=1e-15)


# Command-line runs, waited for last ------------------------------------------------


def test_help_lists_the_subcommands(runs):
    returncode, stdout, stderr = runs["help"].result()
    assert returncode == 0, stderr
    assert "usage: keras-lmu" in stdout
    assert re.search(r"^\s+demo\s+score the shipped psMNIST model", stdout, re.MULTILINE)
    assert re.search(r"^\s+plot-basis\s+draw the Legendre basis", stdout, re.MULTILINE)


def test_demo_help_lists_the_options(runs):
    returncode, stdout, stderr = runs["demo_help"].result()
    assert returncode == 0, stderr
    assert "usage: keras-lmu demo" in stdout
    for option in ("--epochs", "--backend", "--batch-size", "--train-size", "--model", "--out"):
        assert option in stdout
    assert "{jax,tensorflow,torch}" in stdout
    assert f"(default: {cli.DEMO_EPOCHS})" in stdout
    assert f"(default: {cli.DEMO_OUT})" in stdout


def test_demo_without_data_explains_and_exits_1(runs):
    """Started on another backend: the command re-executes itself on ``--backend``."""
    returncode, stdout, stderr = runs["no_data"].result()
    assert returncode == 1
    assert f"Using Keras backend: {BACKEND}" in stdout
    assert "error:" in stderr and "KERAS_LMU_DATA" in stderr and "mnist.npz" in stderr
    assert "Traceback" not in stderr
    assert not (runs["no_data"].stdout_path.parent / "no_data_out").exists()


def test_unknown_keras_backend_is_reported_not_a_traceback(runs):
    """Keras fails on import with a backend it does not know; the command replaces it
    before Keras loads and reports the one it was given."""
    returncode, _, stderr = runs["unknown_backend"].result()
    assert returncode == 1
    assert "error: KERAS_BACKEND='Jax': the keras-lmu commands run on jax" in stderr
    assert "Traceback" not in stderr


def test_plot_basis_writes_a_png_without_picking_a_backend(runs):
    """Started on another backend than the suite's, it must not re-execute itself."""
    returncode, stdout, stderr = runs["plot_basis"].result()
    assert returncode == 0, stderr[-3000:]
    path = runs["plot_basis"].stdout_path.parent / "basis.png"
    assert stdout.splitlines()[-1] == (
        f"Wrote {path}: Legendre basis and impulse response, order 5, theta 40"
    )
    assert "Using Keras backend" not in stdout
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000


def test_tiny_demo_prints_test_accuracy(runs):
    if "tiny_demo" not in runs:
        pytest.skip("KERAS_LMU_DATA is not set: no real MNIST for the demo")
    returncode, stdout, stderr = runs["tiny_demo"].result()
    assert returncode == 0, stderr[-3000:]
    assert f"Using Keras backend: {BACKEND}" in stdout
    assert "psMNIST: 500 training, 10000 validation and 10000 test sequences of 784 steps" in stdout
    # The shipped model scores what its metrics file says.
    saved = re.search(
        r"^Saved model (\S+): test accuracy ([0-9.]+) \(10000 test sequences", stdout, re.MULTILINE
    )
    assert saved, stdout[-2000:]
    assert saved.group(1).endswith("models/psmnist.keras")
    shipped = json.loads((ROOT / "models" / "psmnist_metrics.json").read_text())
    assert abs(float(saved.group(2)) - shipped["test_accuracy"]) <= 0.002
    assert "val_accuracy" in stdout
    match = re.search(r"^Test accuracy: ([0-9.]+)$", stdout, re.MULTILINE)
    assert match, stdout[-2000:]
    accuracy = float(match.group(1))
    assert 0.2 < accuracy <= 1.0  # 20 steps of training: well above chance (0.1)
    out_dir = runs["tiny_demo"].stdout_path.parent / "tiny_demo_out"
    curves, basis = out_dir / cli.DEMO_CURVES_FILE, out_dir / cli.BASIS_FILE
    assert stdout.splitlines()[-1] == f"Wrote {curves} and {basis}"
    for path in (curves, basis):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
