"""Distributed training of LMU models gives the weights of one device's training.

Each test runs an example of ``examples/distributed/`` in a fresh Python process (the
devices must be set up before JAX or TensorFlow starts: simulated CPU devices, logical
CPUs, or DDP processes), which trains tiny models (order 8, 16 steps, 4 batches of 8)
once on one device and once distributed, and prints the largest difference of their
final weights as JSON. docs/distributed.md has the commands and results.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import keras
import pytest

BACKEND = keras.backend.backend()
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples" / "distributed"
#: Largest absolute difference allowed between a final weight trained on one device and
#: distributed: float32 sums taken in another order, over 4 optimizer steps.
TOLERANCE = 2e-5
#: Smallest largest change of a weight in training: the runs did train.
MIN_CHANGE = 1e-3


def only_on(backend: str):
    """Skip the test on every backend but ``backend``."""
    return pytest.mark.skipif(
        BACKEND != backend, reason=f"{backend}'s own distribution API (KERAS_BACKEND={backend})"
    )


def run_example(script: str, *arguments: str, timeout: int = 240) -> list[dict]:
    """Run ``examples/distributed/SCRIPT --json ARGUMENTS``; return its JSON lines."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--json", *arguments],
        env={**os.environ, "KERAS_BACKEND": BACKEND},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return [json.loads(line) for line in lines]


def assert_same_training(results: list[dict], paths=("parallel", "recurrent")) -> None:
    """Every path ran, trained, and ended with the single device's weights."""
    assert [result["path"] for result in results] == list(paths)
    for result in results:
        assert result["max_change"] > MIN_CHANGE, result
        assert result["max_difference"] <= TOLERANCE, result


@only_on("jax")
def test_jax_data_parallel():
    """keras.distribution.DataParallel on 2 simulated CPU devices, Adam."""
    results = run_example("jax_data_parallel.py", "--devices", "2", "--optimizer", "adam")
    assert_same_training(results)
    assert all(result["devices"] == 2 and result["replicated_on"] == 2 for result in results)


@only_on("jax")
def test_jax_model_parallel():
    """keras.distribution.ModelParallel: LMU and hidden kernels split over 2 devices, SGD."""
    results = run_example("jax_model_parallel.py", "--mesh", "1", "2", "--optimizer", "sgd")
    assert_same_training(results)
    parallel, recurrent = results
    assert sorted(name.split("/")[-1] for name in parallel["sharded"]) == [
        "bias",
        "kernel",
        "kernel",
    ]
    assert sorted(name.split("/")[-1] for name in recurrent["sharded"]) == [
        "bias",
        "kernel",
        "recurrent_kernel",
    ]


@only_on("jax")
def test_jax_two_processes():
    """keras.distribution.initialize: 2 local JAX processes, one CPU device each, as
    two hosts would run; DataParallel over both, each feeding its share of a batch."""
    (result,) = run_example("jax_multi_process.py", "--path", "parallel", "--optimizer", "adam")
    assert_same_training([result], paths=("parallel",))
    assert result["processes"] == 2


@only_on("tensorflow")
def test_tf_multi_worker_two_processes():
    """MultiWorkerMirroredStrategy: 2 local workers from TF_CONFIG on localhost ports,
    custom training loop (model.fit fails with this strategy in Keras 3.15)."""
    (result,) = run_example(
        "tf_multi_worker.py", "--path", "recurrent", "--optimizer", "sgd", "--loop", "custom"
    )
    assert_same_training([result], paths=("recurrent",))
    assert result["workers"] == 2


@only_on("tensorflow")
def test_tf_mirrored_strategy():
    """tf.distribute.MirroredStrategy over 2 logical CPU devices, Adam."""
    results = run_example("tf_mirrored.py", "--replicas", "2", "--optimizer", "adam")
    assert_same_training(results)
    assert all(result["replicas"] == 2 for result in results)


@only_on("torch")
def test_torch_distributed_data_parallel():
    """torch DistributedDataParallel, gloo, 2 local processes, plain PyTorch loop, Adam."""
    results = run_example("torch_ddp.py", "--processes", "2", "--optimizer", "adam")
    assert_same_training(results)
    assert all(result["processes"] == 2 for result in results)


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_as_one_host(script: str, *arguments: str, env: dict | None = None) -> None:
    """Run ``examples/distributed/SCRIPT ARGUMENTS`` as the one host of a cluster."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments],
        env={**os.environ, "KERAS_BACKEND": BACKEND, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]


@only_on("jax")
def test_jax_host_command_creates_its_output_folder(tmp_path):
    """docs/distributed.md's command for one of several hosts, in a cluster of one:
    process 0 saves its weights in the --out folder, which did not exist."""
    out = tmp_path / "runs" / "weights"
    arguments = ["--process", "0", "--processes", "1", "--coordinator", f"localhost:{free_port()}"]
    run_as_one_host("jax_multi_process.py", *arguments, "--out", str(out))
    assert (out / "parallel.npz").is_file()


@only_on("tensorflow")
def test_tf_worker_command_creates_its_output_folder(tmp_path):
    """docs/distributed.md's command for one worker of TF_CONFIG, in a cluster of one:
    the chief saves its weights in the --out folder, which did not exist."""
    out = tmp_path / "runs" / "weights"
    config = {
        "cluster": {"worker": [f"localhost:{free_port()}"]},
        "task": {"type": "worker", "index": 0},
    }
    env = {"TF_CONFIG": json.dumps(config)}
    run_as_one_host("tf_multi_worker.py", "--worker", "--out", str(out), env=env)
    assert (out / "parallel.npz").is_file()
