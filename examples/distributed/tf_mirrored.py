"""Data-parallel training of an LMU model with ``tf.distribute.MirroredStrategy``.

The model is built and compiled inside the strategy's scope, and ``model.fit`` splits
each global batch across the replicas; Keras sums the replicas' gradients of losses
already divided by the global batch size, so the update equals one device's. The
script trains the same model from the same initial weights on one device and
mirrored, and prints the largest difference between the two sets of final weights.
Without GPUs, ``--replicas N`` (default 2; N must divide the batch of 8) splits the CPU
into N logical devices::

    KERAS_BACKEND=tensorflow python examples/distributed/tf_mirrored.py --path both

On a machine with several GPUs, pass ``--replicas 0`` to mirror over all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def logical_cpus(count: int) -> list[str]:
    """Split the CPU into ``count`` logical devices; return their names.

    Must run before TensorFlow has initialized its devices (before any tensor is
    created).
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def compare(path: str, optimizer: str, strategy) -> dict:
    """Train on one device, then with ``strategy``; return the comparison.

    Parameters
    ----------
    path : {"parallel", "recurrent"}
        Which LMU form (see ``common.build_model``).
    optimizer : {"adam", "sgd"}
        The optimizer of both runs.
    strategy : tf.distribute.Strategy
        A ``MirroredStrategy``. Make one per process and reuse it: the collective
        operations of a second ``MirroredStrategy`` in the same process can take the
        instance keys of the first one's and fail ("Shape mismatch in the collective
        instance 100 ... expected shape [157] but another member in the group
        expected shape [152]").

    Returns
    -------
    dict
        ``max_difference`` (largest absolute difference of a final weight between the
        two runs), ``max_change`` (largest change of a weight in training) and
        ``replicas``.
    """
    import common
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"needs KERAS_BACKEND=tensorflow, not {keras.backend.backend()}")
    if problem := common.batch_split_problem(strategy.num_replicas_in_sync):
        raise ValueError(f"{strategy.num_replicas_in_sync} replicas: {problem}")
    inputs, targets = common.make_data()
    one_device = common.train_on_one_device(path, optimizer)

    with strategy.scope():
        mirrored = common.build_model(path)
        common.train(mirrored, inputs, targets, optimizer)
    return {
        **common.comparison(path, optimizer, one_device, common.weights_of(mirrored)),
        "replicas": strategy.num_replicas_in_sync,
    }


def main() -> None:
    """Command line: print the comparison for each path asked for."""
    import common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("parallel", "recurrent", "both"), default="both")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument(
        "--replicas",
        type=common.integer_at_least(0),
        default=2,
        help="logical CPUs, a divisor of the batch of 8; 0: the real devices",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line per path")
    arguments = parser.parse_args()
    if arguments.replicas > 0 and (problem := common.batch_split_problem(arguments.replicas)):
        parser.error(f"--replicas: {problem}")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    devices = logical_cpus(arguments.replicas) if arguments.replicas > 0 else None
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(devices)
    paths = ("parallel", "recurrent") if arguments.path == "both" else (arguments.path,)
    for path in paths:
        result = compare(path, arguments.optimizer, strategy)
        if arguments.json:
            print(json.dumps(result))
        else:
            print(
                f"{path} ({arguments.optimizer}, {result['replicas']} replicas): max weight "
                f"difference vs one device {result['max_difference']:.3g} (weights moved "
                f"up to {result['max_change']:.3g} in training)"
            )


if __name__ == "__main__":
    main()
