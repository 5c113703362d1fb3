"""Data-parallel training of an LMU model on JAX with ``keras.distribution.DataParallel``.

Trains the same model from the same initial weights on the same batches twice: on
one device, then with every batch split across all devices (the weights replicated
on each), and prints the largest difference between the two sets of final weights.
Without accelerators, ``--devices N`` (default 2; N must divide the batch of 8)
simulates N CPU devices by setting
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX is imported::

    python examples/distributed/jax_data_parallel.py --path parallel --optimizer adam
    python examples/distributed/jax_data_parallel.py --path recurrent --optimizer sgd

On a machine with several GPUs or TPUs, pass ``--devices 0`` to use the real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def use_host_devices(count: int) -> None:
    """Select the JAX backend, and simulate ``count`` CPU devices if ``count`` > 0.

    Must run before JAX or Keras is imported: XLA reads the flag once.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    if count > 0:
        flags = os.environ.get("XLA_FLAGS", "")
        flag = f"--xla_force_host_platform_device_count={count}"
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def compare(path: str, optimizer: str) -> dict:
    """Train on one device, then data parallel on every device; return the comparison.

    Parameters
    ----------
    path : {"parallel", "recurrent"}
        Which LMU form (see ``common.build_model``).
    optimizer : {"adam", "sgd"}
        The optimizer of both runs.

    Returns
    -------
    dict
        ``max_difference`` (largest absolute difference of a final weight between the
        two runs), ``max_change`` (largest change of a weight in training),
        ``devices`` and ``replicated_on`` (devices holding each weight).
    """
    import common
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"needs KERAS_BACKEND=jax, not {keras.backend.backend()}")
    devices = jax.devices()
    if problem := common.batch_split_problem(len(devices)):
        raise ValueError(f"{len(devices)} devices: {problem}")
    inputs, targets = common.make_data()
    one_device = common.train_on_one_device(path, optimizer)

    distribution = keras.distribution.DataParallel(devices=devices)
    with distribution.scope():
        distributed = common.build_model(path)
        common.train(distributed, inputs, targets, optimizer)
    replicated_on = min(len(weight.value.sharding.device_set) for weight in distributed.weights)
    return {
        **common.comparison(path, optimizer, one_device, common.weights_of(distributed)),
        "devices": len(devices),
        "replicated_on": replicated_on,
    }


def main() -> None:
    """Command line: print the comparison for each path asked for."""
    import common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("parallel", "recurrent", "both"), default="both")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument(
        "--devices",
        type=common.integer_at_least(0),
        default=2,
        help="simulated CPU devices, a divisor of the batch of 8; 0: the real ones",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line per path")
    arguments = parser.parse_args()
    if arguments.devices > 0 and (problem := common.batch_split_problem(arguments.devices)):
        parser.error(f"--devices: {problem}")
    use_host_devices(arguments.devices)
    paths = ("parallel", "recurrent") if arguments.path == "both" else (arguments.path,)
    for path in paths:
        result = compare(path, arguments.optimizer)
        if arguments.json:
            print(json.dumps(result))
        else:
            print(
                f"{path} ({arguments.optimizer}, {result['devices']} devices): max weight "
                f"difference vs one device {result['max_difference']:.3g} (weights moved "
                f"up to {result['max_change']:.3g} in training)"
            )


if __name__ == "__main__":
    main()
