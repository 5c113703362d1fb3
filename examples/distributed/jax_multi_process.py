"""Data-parallel training of an LMU model over several JAX processes (several hosts).

Each process (normally one per machine) calls ``keras.distribution.initialize``
with the coordinator's address, the number of processes and its own index, then
trains under ``keras.distribution.DataParallel`` over the devices of every process,
feeding ``model.fit`` its own share of every global batch. On two machines::

    # on host0 (the coordinator) and host1, with INDEX 0 and 1:
    KERAS_BACKEND=jax python jax_multi_process.py --process INDEX --processes 2 \\
        --coordinator host0:12345 --out weights

(``--processes`` must divide the global batch of 8; process 0 saves its final
weights in the ``--out`` folder, created if missing.)

(``keras.distribution.initialize`` calls ``jax.distributed.initialize``; on a
cluster that JAX recognises, such as Slurm or Cloud TPU, it needs no arguments.)
Without ``--process``, this script stands in for two hosts on one machine: it starts
two processes with one CPU device each on a free localhost port, trains the same
model on one device itself, and prints the largest difference of the final
weights::

    KERAS_BACKEND=jax python examples/distributed/jax_multi_process.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def run_process(
    index: int, processes: int, coordinator: str, path: str, optimizer: str, out: str
) -> None:
    """Train as process ``index`` of ``processes``; process 0 saves the final weights
    to ``out/PATH.npz`` (the folder must exist)."""
    import common

    if problem := common.batch_split_problem(processes):
        raise ValueError(problem)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax

    # CPU devices of different processes reach each other through gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras
    import numpy as np

    keras.distribution.initialize(
        job_addresses=coordinator, num_processes=processes, process_id=index
    )
    # The data is given to fit already split: each process passes its own share.
    distribution = keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    inputs, targets = common.make_data()
    # This process's share of every global batch, in order: fit's batches of
    # BATCH / processes rows, taken together across processes, are the global ones.
    share = common.BATCH // processes
    rows = np.concatenate(
        [
            np.arange(start + index * share, start + (index + 1) * share)
            for start in range(0, len(inputs), common.BATCH)
        ]
    )
    with distribution.scope():
        model = common.build_model(path)
        chosen = (
            keras.optimizers.Adam(learning_rate=0.01)
            if optimizer == "adam"
            else keras.optimizers.SGD(learning_rate=0.002)
        )
        model.compile(optimizer=chosen, loss="mse")
        model.fit(inputs[rows], targets[rows], batch_size=share, epochs=1, shuffle=False, verbose=0)
    weights = common.weights_of(model)
    if index == 0:
        np.savez(os.path.join(out, f"{path}.npz"), **weights)
    jax.distributed.shutdown()


def compare(path: str, optimizer: str, processes: int = 2, timeout: float = 300) -> dict:
    """Train with ``processes`` local JAX processes, then on one device; compare.

    Parameters
    ----------
    path : {"parallel", "recurrent"}
        Which LMU form (see ``common.build_model``).
    optimizer : {"adam", "sgd"}
        The optimizer of both runs.
    processes : int
        JAX processes, one CPU device each.
    timeout : float
        Seconds the processes may take.

    Returns
    -------
    dict
        ``max_difference`` (largest absolute difference of a final weight between the
        two runs), ``max_change`` (largest change of a weight in training) and
        ``processes``.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import common

    with tempfile.TemporaryDirectory() as out:
        coordinator = f"localhost:{common.free_ports(1)[0]}"
        environment = {**os.environ, "KERAS_BACKEND": "jax"}
        environment.pop("XLA_FLAGS", None)
        commands = []
        for index in range(processes):
            command = [sys.executable, os.path.abspath(__file__), "--process", str(index)]
            command += ["--processes", str(processes), "--coordinator", coordinator]
            commands.append(command + ["--path", path, "--optimizer", optimizer, "--out", out])
        common.run_local_processes(commands, [environment] * processes, timeout)
        return {**common.compare_with_one_device(path, optimizer, out), "processes": processes}


def main() -> None:
    """Command line: one process (``--process``), or the local comparison."""
    import common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("parallel", "recurrent"), default="parallel")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument(
        "--process", type=common.integer_at_least(0), help="this process's index (0 coordinates)"
    )
    parser.add_argument(
        "--processes",
        type=common.integer_at_least(1),
        default=2,
        help="a divisor of the batch of 8",
    )
    parser.add_argument("--coordinator", help="host:port of process 0 (with --process)")
    parser.add_argument("--out", help="folder for process 0's weights (needed with --process)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    arguments = parser.parse_args()
    if problem := common.batch_split_problem(arguments.processes):
        parser.error(f"--processes: {problem}")
    if arguments.process is None:
        for option in ("coordinator", "out"):
            if getattr(arguments, option) is not None:
                parser.error(f"--{option} is only used with --process")
    else:
        if arguments.process >= arguments.processes:
            parser.error(
                f"--process: expected an index below --processes ({arguments.processes}), "
                f"got {arguments.process}"
            )
        if arguments.out is None:
            parser.error("--out is required with --process (the folder for the weights)")
        common.make_output_folder(parser, arguments.out)
        run_process(
            arguments.process,
            arguments.processes,
            arguments.coordinator,
            arguments.path,
            arguments.optimizer,
            arguments.out,
        )
        return
    result = compare(arguments.path, arguments.optimizer, arguments.processes)
    if arguments.json:
        print(json.dumps(result))
    else:
        print(
            f"{arguments.path} ({arguments.optimizer}, {result['processes']} processes): max "
            f"weight difference vs one device {result['max_difference']:.3g} (weights "
            f"moved up to {result['max_change']:.3g} in training)"
        )


if __name__ == "__main__":
    main()
