"""An LMU model trained by ``torch.nn.parallel.DistributedDataParallel`` on PyTorch.

On the PyTorch backend a Keras model is a ``torch.nn.Module`` whose weights are
``torch.nn.Parameter`` objects, so a plain PyTorch training loop can train it, and
``DistributedDataParallel`` (DDP) can wrap it. Each of ``--processes`` processes
(default 2, "gloo" backend, on this machine) trains on its share of every global
batch; DDP averages the gradients, so with a loss averaged over each process's
share the update equals that of one process on the whole batch. The script trains
the same model both ways and prints the largest difference of the final weights::

    KERAS_BACKEND=torch python examples/distributed/torch_ddp.py --path both

Across machines, start the same function under ``torchrun`` (which sets ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``) and call
``torch.distributed.init_process_group("nccl")`` (GPUs) or ``("gloo")`` instead of
the local ``init_method`` used here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def train_torch(model, inputs: np.ndarray, targets: np.ndarray, optimizer: str, shard=None):
    """Train ``model`` (or a DDP wrapper of it) with a plain PyTorch loop.

    Parameters
    ----------
    model : torch.nn.Module
        A Keras model on the PyTorch backend, or ``DistributedDataParallel(model)``.
    inputs, targets : numpy.ndarray
        Every global batch, from ``common.make_data``.
    optimizer : {"adam", "sgd"}
        ``torch.optim.Adam(lr=0.01)`` or ``torch.optim.SGD(lr=0.002)``, as in
        ``common.train``.
    shard : tuple of int or None
        ``(rank, world_size)``: train on this process's contiguous share of each
        global batch; None: on the whole batch.
    """
    import common
    import torch

    if optimizer == "adam":
        chosen = torch.optim.Adam(model.parameters(), lr=0.01)
    elif optimizer == "sgd":
        chosen = torch.optim.SGD(model.parameters(), lr=0.002)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', not {optimizer!r}")
    device = next(model.parameters()).device
    for step in range(common.TRAIN_STEPS):
        batch = slice(step * common.BATCH, (step + 1) * common.BATCH)
        batch_inputs, batch_targets = inputs[batch], targets[batch]
        if shard is not None:
            rank, world_size = shard
            share = common.BATCH // world_size
            batch_inputs = batch_inputs[rank * share : (rank + 1) * share]
            batch_targets = batch_targets[rank * share : (rank + 1) * share]
        chosen.zero_grad()
        predictions = model(torch.as_tensor(batch_inputs, device=device))
        loss = torch.mean((predictions - torch.as_tensor(batch_targets, device=device)) ** 2)
        loss.backward()
        chosen.step()


def _worker(
    rank: int, world_size: int, address: str, paths: list[str], optimizer: str, folder: str
):
    """One DDP process: for each path, train on its share of each batch; rank 0 saves
    the final weights to ``folder/PATH.npz``."""
    import common
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=world_size)
    try:
        inputs, targets = common.make_data()
        for path in paths:
            model = common.build_model(path)
            parallel = torch.nn.parallel.DistributedDataParallel(model)
            train_torch(parallel, inputs, targets, optimizer, shard=(rank, world_size))
            if rank == 0:
                np.savez(os.path.join(folder, f"{path}.npz"), **common.weights_of(model))
        # Every rank done before the group is torn down (once, on a busy 2-core host, a
        # DDP process aborted with 'terminate called without an active exception'; the
        # cause was not found, and this is the usual guard).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def compare(paths: list[str], optimizer: str, processes: int = 2) -> list[dict]:
    """Train in one process on whole batches, then with DDP; return the comparisons.

    Parameters
    ----------
    paths : list of {"parallel", "recurrent"}
        Which LMU forms (see ``common.build_model``); the DDP processes are started
        once and train every one in turn.
    optimizer : {"adam", "sgd"}
        The optimizer of both runs.
    processes : int
        DDP processes; ``common.BATCH`` must be a multiple of it.

    Returns
    -------
    list of dict
        Per path: ``max_difference`` (largest absolute difference of a final weight
        between the two runs), ``max_change`` (largest change of a weight in
        training) and ``processes``.
    """
    import common
    import keras
    import torch.multiprocessing

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"needs KERAS_BACKEND=torch, not {keras.backend.backend()}")
    if problem := common.batch_split_problem(processes):
        raise ValueError(problem)
    inputs, targets = common.make_data()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        address = f"tcp://127.0.0.1:{common.free_ports(1)[0]}"
        torch.multiprocessing.spawn(
            _worker, args=(processes, address, list(paths), optimizer, folder), nprocs=processes
        )
        for path in paths:
            single = common.build_model(path)
            initial = common.weights_of(single)
            train_torch(single, inputs, targets, optimizer)
            single_weights = common.weights_of(single)
            with np.load(os.path.join(folder, f"{path}.npz")) as saved:
                distributed_weights = dict(saved)
            one_device = (initial, single_weights)
            results.append(
                {
                    **common.comparison(path, optimizer, one_device, distributed_weights),
                    "processes": processes,
                }
            )
    return results


def main() -> None:
    """Command line: print the comparison for each path asked for."""
    import common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("parallel", "recurrent", "both"), default="both")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument(
        "--processes",
        type=common.integer_at_least(1),
        default=2,
        help="DDP processes, a divisor of the batch of 8",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line per path")
    arguments = parser.parse_args()
    if problem := common.batch_split_problem(arguments.processes):
        parser.error(f"--processes: {problem}")
    paths = ("parallel", "recurrent") if arguments.path == "both" else (arguments.path,)
    for result in compare(paths, arguments.optimizer, arguments.processes):
        path = result["path"]
        if arguments.json:
            print(json.dumps(result))
        else:
            print(
                f"{path} ({arguments.optimizer}, {result['processes']} processes): max "
                f"weight difference vs one process {result['max_difference']:.3g} "
                f"(weights moved up to {result['max_change']:.3g} in training)"
            )


if __name__ == "__main__":
    main()
