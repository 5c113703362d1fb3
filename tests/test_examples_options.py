"""The example scripts refuse bad options with an error that names them, before training.

The distributed examples run in a fresh Python process (``--help``-level: argparse
stops them before JAX, TensorFlow or PyTorch is imported); the psMNIST validation runs
and the figure script run in this process, with the data loading replaced by a
failure, so that an option that got through would show at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DISTRIBUTED = ROOT / "examples" / "distributed"
#: Seconds an example may take to refuse its options (it stops before training).
TIMEOUT = 60


def load(path: pathlib.Path):
    """Import the script at ``path`` as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refused(script: str, *arguments: str, env: dict | None = None) -> str:
    """Run ``examples/distributed/SCRIPT ARGUMENTS``; it must stop with a usage error
    (exit status 2, no traceback). Returns its standard error."""
    result = subprocess.run(
        [sys.executable, str(DISTRIBUTED / script), *arguments],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.stderr


@pytest.mark.parametrize(
    "script, option",
    [
        ("jax_multi_process.py", "--processes"),
        ("tf_multi_worker.py", "--workers"),
        ("jax_data_parallel.py", "--devices"),
        ("tf_mirrored.py", "--replicas"),
        ("torch_ddp.py", "--processes"),
    ],
)
def test_distributed_counts_must_split_the_batch(script, option):
    stderr = refused(script, option, "3")
    assert f"{option}: the batch of 8 does not split into 3 (give 1, 2, 4 or 8)" in stderr


@pytest.mark.parametrize(
    "script, option, value, minimum",
    [
        ("torch_ddp.py", "--processes", "0", 1),
        ("jax_multi_process.py", "--processes", "0", 1),
        ("tf_multi_worker.py", "--workers", "0", 1),
        ("jax_data_parallel.py", "--devices", "-1", 0),
        ("tf_mirrored.py", "--replicas", "-1", 0),
        ("jax_model_parallel.py", "--mesh", "0", 1),
        ("jax_multi_process.py", "--process", "-1", 0),
    ],
)
def test_distributed_counts_must_be_large_enough(script, option, value, minimum):
    arguments = [option, value, "2"] if option == "--mesh" else [option, value]
    stderr = refused(script, *arguments)
    assert f"{option}: expected an integer of {minimum} or more, got '{value}'" in stderr


@pytest.mark.parametrize(
    "mesh, path, message",
    [
        ("1 3", "parallel", "--mesh: MODEL 3 does not divide 2"),
        ("1 3", "both", "--mesh: MODEL 3 does not divide 2"),
        ("1 16", "recurrent", "--mesh: MODEL 16 does not divide 8"),
        ("3 1", "recurrent", "--mesh: BATCH: the batch of 8 does not split into 3"),
    ],
)
def test_model_parallel_mesh_must_divide_what_it_splits(mesh, path, message):
    stderr = refused("jax_model_parallel.py", "--mesh", *mesh.split(), "--path", path)
    assert message in stderr


def test_one_process_index_must_be_below_the_count():
    stderr = refused("jax_multi_process.py", "--process", "2", "--processes", "2", "--out", "w")
    assert "--process: expected an index below --processes (2), got 2" in stderr


#: A one-host "cluster" for tf_multi_worker.py --worker.
TF_CONFIG = {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}
#: One process or worker of a real cluster, as docs/distributed.md runs them.
HOST_RUNS = [
    ("jax_multi_process.py", ["--process", "0", "--processes", "1"], "--process", {}),
    ("tf_multi_worker.py", ["--worker"], "--worker", {"TF_CONFIG": json.dumps(TF_CONFIG)}),
]


@pytest.mark.parametrize("script, arguments, option, env", HOST_RUNS)
def test_host_runs_need_an_output_folder(script, arguments, option, env):
    stderr = refused(script, *arguments, env=env)
    assert f"--out is required with {option}" in stderr


@pytest.mark.parametrize("script, arguments, option, env", HOST_RUNS)
def test_host_runs_refuse_a_file_as_output_folder(script, arguments, option, env, tmp_path):
    file = tmp_path / "weights"
    file.write_text("")
    stderr = refused(script, *arguments, "--out", str(file), env=env)
    assert f"--out '{file}' is a file; give a folder" in stderr


@pytest.mark.parametrize(
    "script, option", [("jax_multi_process.py", "--process"), ("tf_multi_worker.py", "--worker")]
)
def test_output_folder_only_with_a_host_run(script, option, tmp_path):
    stderr = refused(script, "--out", str(tmp_path))
    assert f"--out is only used with {option}" in stderr


def test_worker_needs_its_cluster():
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, str(DISTRIBUTED / "tf_multi_worker.py"), "--worker", "--out", "w"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2 and "--worker needs TF_CONFIG" in result.stderr


def test_worker_count_of_the_cluster_must_split_the_batch():
    config = {**TF_CONFIG, "cluster": {"worker": ["localhost:1", "localhost:2", "localhost:3"]}}
    stderr = refused(
        "tf_multi_worker.py", "--worker", "--out", "w", env={"TF_CONFIG": json.dumps(config)}
    )
    assert "TF_CONFIG: the batch of 8 does not split into 3 (give 1, 2, 4 or 8)" in stderr


def test_make_output_folder_creates_it_with_its_parents(tmp_path):
    sys.path.insert(0, str(DISTRIBUTED))
    try:
        common = load(DISTRIBUTED / "common.py")
    finally:
        sys.path.remove(str(DISTRIBUTED))
    out = tmp_path / "runs" / "weights"
    common.make_output_folder(argparse.ArgumentParser(), str(out))
    assert out.is_dir()
    common.make_output_folder(argparse.ArgumentParser(), str(out))  # already there: fine
    assert common.divisors(8) == "1, 2, 4 or 8"


# --- examples/psmnist_validation_runs.py


@pytest.fixture
def validation_runs(monkeypatch, tmp_path):
    """``main(argv)`` of the example, whose data loading fails: "reached training"."""
    import keras_lmu.datasets

    def refuse():
        raise AssertionError("reached training")

    monkeypatch.setattr(keras_lmu.datasets, "load_psmnist", refuse)
    example = load(ROOT / "examples" / "psmnist_validation_runs.py")
    return lambda *argv: example.main(["--out", str(tmp_path / "runs"), *argv])


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--epochs", "0", "an integer of 1 or more"),
        ("--epochs", "-1", "an integer of 1 or more"),
        ("--batch-size", "0", "an integer of 1 or more"),
        ("--train-size", "0", "an integer of 1 or more"),
        ("--validation-size", "-3", "an integer of 1 or more"),
        ("--seed", "-1", "an integer from 0 to 2**32 - 1"),
        ("--seed", str(2**32), "an integer from 0 to 2**32 - 1"),
        ("--learning-rate", "0", "a positive number"),
        ("--learning-rate", "nan", "a positive number"),
        ("--clipnorm", "-1", "a positive number"),
        ("--deadline", "-1", "a number of 0 or more"),
        ("--deadline", "inf", "a number of 0 or more"),
    ],
)
def test_validation_runs_refuse_bad_numbers(validation_runs, capsys, option, value, expected):
    with pytest.raises(SystemExit) as stop:
        validation_runs(option, value)
    assert stop.value.code == 2
    assert f"argument {option}: expected {expected}, got '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [("--deadline", "0"), ("--seed", "0"), ("--seed", str(2**32 - 1)), ("--epochs", "1")]
)
def test_validation_runs_accept_the_edges(validation_runs, argv):
    # "--deadline 0" stops after the first epoch (tests/test_psmnist.py runs it).
    with pytest.raises(AssertionError, match="reached training"):
        validation_runs(*argv)


def test_validation_runs_refuse_a_file_as_output_folder(validation_runs, capsys, tmp_path):
    file = tmp_path / "runs.txt"
    file.write_text("")
    with pytest.raises(SystemExit) as stop:
        validation_runs("--out", str(file))
    assert stop.value.code == 2
    assert f"--out '{file}' is a file; give a folder" in capsys.readouterr().err


def test_stacked_model_takes_every_seed():
    example = load(ROOT / "examples" / "psmnist_validation_runs.py")
    model = example.build_stacked_model(1e-3, None, 2**32 - 1)
    assert model.count_params() == 138_411


# --- docs/make_figures.py


def test_figure_script_refuses_a_file_as_output_folder(monkeypatch, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    file = tmp_path / "figures"
    file.write_text("")
    module = load(ROOT / "docs" / "make_figures.py")
    monkeypatch.setattr(sys, "argv", ["make_figures.py", "--out", str(file)])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 2
    assert f"--out '{file}' is a file; give a folder" in capsys.readouterr().err
