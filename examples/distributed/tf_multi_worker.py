"""Multi-worker training of an LMU model with ``tf.distribute.MultiWorkerMirroredStrategy``.

Each worker is a process (normally one per machine) that finds the cluster and its
own place in it in the ``TF_CONFIG`` environment variable, for example on the second
of two machines::

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 1}}' \\
        KERAS_BACKEND=tensorflow python tf_multi_worker.py --worker --out weights

(The number of workers must divide the global batch of 8; the chief saves its final
weights in the ``--out`` folder, created if missing.)

Every worker runs the same script: the model is built inside the strategy's scope
and trained by a TensorFlow loop in which each worker takes its share of every batch
(``model.fit`` fails with this strategy in Keras 3.15: see ``train_custom_loop``). Without
``--worker``, this script stands in for a cluster on one machine: it starts two
worker processes on free localhost ports, trains the same model on one device
itself, and prints the largest difference of the final weights::

    KERAS_BACKEND=tensorflow python examples/distributed/tf_multi_worker.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def train_custom_loop(model, strategy, inputs, targets, optimizer: str, shard) -> None:
    """Train ``model`` with a TensorFlow loop: each worker on its share of every batch.

    ``model.fit`` cannot be used with ``MultiWorkerMirroredStrategy`` in Keras 3.15
    (before the first step, ``fit`` reduces a batch with ``strategy.reduce("MEAN",
    ...)``, which fails: "Attempt to convert a value (PerReplica:{...}) with an
    unsupported type (<class '...PerReplica'>) to a Tensor"). Each worker's loss is
    its sum of squared errors divided by the global batch size; the Keras optimizer
    sums the workers' gradients (an all-reduce) in ``apply_gradients``, so the update
    is that of the mean squared error over the whole batch.

    Parameters
    ----------
    model : keras.Model
        Built inside ``strategy.scope()``.
    strategy : tf.distribute.Strategy
        The strategy, one replica per worker.
    inputs, targets : numpy.ndarray
        Every global batch, from ``common.make_data``.
    optimizer : {"adam", "sgd"}
        As in ``common.train``.
    shard : tuple of int
        ``(index, workers)``: this worker's place, and how many there are.
    """
    import common
    import keras
    import tensorflow as tf

    with strategy.scope():
        if optimizer == "adam":
            chosen = keras.optimizers.Adam(learning_rate=0.01)
        else:
            chosen = keras.optimizers.SGD(learning_rate=0.002)
        chosen.build(model.trainable_variables)

    def replica_step(batch_inputs, batch_targets):
        with tf.GradientTape() as tape:
            predictions = model(batch_inputs, training=True)
            loss = tf.reduce_sum((predictions - batch_targets) ** 2) / common.BATCH
        gradients = tape.gradient(loss, model.trainable_variables)
        chosen.apply_gradients(zip(gradients, model.trainable_variables, strict=True))

    @tf.function
    def step(batch_inputs, batch_targets):
        strategy.run(replica_step, args=(batch_inputs, batch_targets))

    index, workers = shard
    share = common.BATCH // workers
    for batch in range(common.TRAIN_STEPS):
        start = batch * common.BATCH + index * share
        step(
            tf.constant(inputs[start : start + share]),
            tf.constant(targets[start : start + share]),
        )


def worker_shard() -> tuple[int, int]:
    """This worker's index and the number of workers, from ``TF_CONFIG``.

    Raises
    ------
    ValueError
        When ``TF_CONFIG`` is missing or unreadable, or its workers do not split the
        global batch.
    """
    import common

    if "TF_CONFIG" not in os.environ:
        raise ValueError("--worker needs TF_CONFIG (the cluster and this worker's place in it)")
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        shard = (int(config["task"]["index"]), len(config["cluster"]["worker"]))
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"TF_CONFIG: expected {{'cluster': {{'worker': [...]}}, 'task': {{'index': N}}}}: "
            f"{error!r}"
        ) from None
    if problem := common.batch_split_problem(shard[1]):
        raise ValueError(f"TF_CONFIG: {problem}")
    return shard


def run_worker(path: str, optimizer: str, out: str, loop: str = "custom") -> None:
    """Train as one worker of the cluster in ``TF_CONFIG``; the chief (index 0) saves
    the final weights to ``out/PATH.npz`` (the folder must exist).

    ``loop="fit"`` trains with ``model.fit`` instead of :func:`train_custom_loop`: with
    two workers or more, it fails in Keras 3.15 (see :func:`train_custom_loop`).
    """
    shard = worker_shard()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import common
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    inputs, targets = common.make_data()
    with strategy.scope():
        model = common.build_model(path)
    if loop == "fit":
        with strategy.scope():
            common.train(model, inputs, targets, optimizer)
    else:
        train_custom_loop(model, strategy, inputs, targets, optimizer, shard)
    weights = common.weights_of(model)
    if shard[0] == 0:
        np.savez(os.path.join(out, f"{path}.npz"), **weights)


def compare(
    path: str, optimizer: str, workers: int = 2, timeout: float = 300, loop: str = "custom"
) -> dict:
    """Train with ``workers`` local worker processes, then on one device; compare.

    Parameters
    ----------
    path : {"parallel", "recurrent"}
        Which LMU form (see ``common.build_model``).
    optimizer : {"adam", "sgd"}
        The optimizer of both runs.
    workers : int
        Worker processes, on localhost ports.
    timeout : float
        Seconds the workers may take.
    loop : {"custom", "fit"}
        How the workers train (see :func:`run_worker`).

    Returns
    -------
    dict
        ``max_difference`` (largest absolute difference of a final weight between the
        two runs), ``max_change`` (largest change of a weight in training) and
        ``workers``.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import common

    with tempfile.TemporaryDirectory() as out:
        cluster = {"worker": [f"localhost:{port}" for port in common.free_ports(workers)]}
        commands, environments = [], []
        for index in range(workers):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            environments.append(
                {**os.environ, "TF_CONFIG": json.dumps(config), "KERAS_BACKEND": "tensorflow"}
            )
            command = [sys.executable, os.path.abspath(__file__), "--worker", "--out", out]
            commands.append(command + ["--path", path, "--optimizer", optimizer, "--loop", loop])
        common.run_local_processes(commands, environments, timeout, role="worker")
        return {**common.compare_with_one_device(path, optimizer, out), "workers": workers}


def main() -> None:
    """Command line: a worker (``--worker``), or the local two-worker comparison."""
    import common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("parallel", "recurrent"), default="parallel")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--worker", action="store_true", help="run as a worker of TF_CONFIG")
    parser.add_argument("--out", help="folder for the chief's weights (needed with --worker)")
    parser.add_argument(
        "--workers",
        type=common.integer_at_least(1),
        default=2,
        help="local workers to start, a divisor of the batch of 8",
    )
    parser.add_argument(
        "--loop", choices=("custom", "fit"), default="custom", help="fit fails in Keras 3.15"
    )
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    arguments = parser.parse_args()
    if problem := common.batch_split_problem(arguments.workers):
        parser.error(f"--workers: {problem}")
    if not arguments.worker and arguments.out is not None:
        parser.error("--out is only used with --worker")
    if arguments.worker:
        if arguments.out is None:
            parser.error("--out is required with --worker (the folder for the weights)")
        try:
            worker_shard()
        except ValueError as error:
            parser.error(str(error))
        common.make_output_folder(parser, arguments.out)
        run_worker(arguments.path, arguments.optimizer, arguments.out, arguments.loop)
        return
    result = compare(arguments.path, arguments.optimizer, arguments.workers, loop=arguments.loop)
    if arguments.json:
        print(json.dumps(result))
    else:
        print(
            f"{arguments.path} ({arguments.optimizer}, {result['workers']} workers): max "
            f"weight difference vs one device {result['max_difference']:.3g} (weights "
            f"moved up to {result['max_change']:.3g} in training)"
        )


if __name__ == "__main__":
    main()
