"""Model-parallel training of an LMU model on JAX with ``keras.distribution.ModelParallel``.

The LMU's kernels and its hidden component are sharded along their units over a
"model" axis of the device mesh (a ``LayoutMap`` of regular expressions on the
weights' paths); the batch is split over a "batch" axis. The same model is trained
from the same initial weights on one device, and the script prints the largest
difference between the two sets of final weights::

    python examples/distributed/jax_model_parallel.py --path parallel
    python examples/distributed/jax_model_parallel.py --path recurrent --mesh 2 2

``--mesh BATCH MODEL`` (default ``1 2``) is the shape of the device mesh; without
accelerators, as many CPU devices are simulated (``XLA_FLAGS``). BATCH must divide the
batch of 8 and MODEL the weights' dimensions split over it (see ``SHARDED_SIZE``).

The weights' paths, from ``[weight.path for weight in model.weights]``::

    parallel:  lmu/lmu_feedforward/kernel (3, 2)      lmu/lmu_feedforward/theta_inv ()
               lmu/lmu_feedforward/hidden/kernel (16, 8)
               lmu/lmu_feedforward/hidden/bias (8,)   head/kernel (8, 1)   head/bias (1,)
    recurrent: lmu/_lmurnn/lmu_cell/kernel (11, 1)    lmu/_lmurnn/lmu_cell/theta_inv ()
               lmu/_lmurnn/lmu_cell/hidden/kernel (8, 8)
               lmu/_lmurnn/lmu_cell/hidden/recurrent_kernel (8, 8)
               lmu/_lmurnn/lmu_cell/hidden/bias (8,)  head/kernel (8, 1)   head/bias (1,)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: Regular expression on a weight's path -> how its axes are sharded over the mesh.
#: The LMU's input kernel (input_d, memory_d) is sharded along memory_d where the
#: model has more than one memory (memory_d=1 in the recurrent path's kernel cannot
#: be split; it stays replicated), the hidden component along its units.
#: Keras matches the whole path (``re.fullmatch``), hence the leading ".*/".
LAYOUT = {
    r".*/lmu_feedforward(_\d+)?/kernel": (None, "model"),
    r".*/hidden/kernel": (None, "model"),
    r".*/hidden/recurrent_kernel": (None, "model"),
    r".*/hidden/bias": ("model",),
}
#: The size of the smallest weight dimension that LAYOUT splits over the "model" axis,
#: which the axis's devices must divide: the parallel path's LMU kernel (3, 2) along
#: memory_d, the recurrent path's hidden weights along their 8 units.
SHARDED_SIZE = {"parallel": 2, "recurrent": 8}


def use_host_devices(count: int) -> None:
    """Select the JAX backend, and simulate ``count`` CPU devices if ``count`` > 0.

    Must run before JAX or Keras is imported: XLA reads the flag once.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    if count > 0:
        flags = os.environ.get("XLA_FLAGS", "")
        flag = f"--xla_force_host_platform_device_count={count}"
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def compare(path: str, optimizer: str, mesh_shape: tuple[int, int] = (1, 2)) -> dict:
    """Train on one device, then model parallel over a device mesh; return the comparison.

    Parameters
    ----------
    path : {"parallel", "recurrent"}
        Which LMU form (see ``common.build_model``).
    optimizer : {"adam", "sgd"}
        The optimizer of both runs.
    mesh_shape : tuple of int
        Devices along the "batch" and the "model" axes.

    Returns
    -------
    dict
        ``max_difference`` (largest absolute difference of a final weight between the
        two runs), ``max_change`` (largest change of a weight in training) and
        ``sharded`` (path of each weight split over the "model" axis -> its
        partition spec).
    """
    import common
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"needs KERAS_BACKEND=jax, not {keras.backend.backend()}")
    inputs, targets = common.make_data()
    one_device = common.train_on_one_device(path, optimizer)

    devices = jax.devices()[: mesh_shape[0] * mesh_shape[1]]
    mesh = keras.distribution.DeviceMesh(
        shape=mesh_shape, axis_names=("batch", "model"), devices=devices
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes in LAYOUT.items():
        layout_map[pattern] = axes
    distribution = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    with distribution.scope():
        distributed = common.build_model(path)
        common.train(distributed, inputs, targets, optimizer)
    sharded = {
        weight.path: str(weight.value.sharding.spec)
        for weight in distributed.weights
        if "model" in str(weight.value.sharding.spec)
    }
    return {
        **common.comparison(path, optimizer, one_device, common.weights_of(distributed)),
        "mesh": list(mesh_shape),
        "sharded": sharded,
    }


def main() -> None:
    """Command line: print the comparison for each path asked for."""
    import common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("parallel", "recurrent", "both"), default="both")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument(
        "--mesh",
        type=common.integer_at_least(1),
        nargs=2,
        default=(1, 2),
        metavar=("BATCH", "MODEL"),
        help="BATCH divides the batch of 8; MODEL divides 2 (parallel path) or 8 (recurrent)",
    )
    parser.add_argument("--real-devices", action="store_true", help="do not simulate devices")
    parser.add_argument("--json", action="store_true", help="print one JSON line per path")
    arguments = parser.parse_args()
    mesh_shape = tuple(arguments.mesh)
    paths = ("parallel", "recurrent") if arguments.path == "both" else (arguments.path,)
    if problem := common.batch_split_problem(mesh_shape[0]):
        parser.error(f"--mesh: BATCH: {problem}")
    for path in paths:
        if SHARDED_SIZE[path] % mesh_shape[1]:
            parser.error(
                f"--mesh: MODEL {mesh_shape[1]} does not divide {SHARDED_SIZE[path]}, the "
                f"size of the {path} path's weights split over the model axis (give "
                f"{common.divisors(SHARDED_SIZE[path])})"
            )
    use_host_devices(0 if arguments.real_devices else mesh_shape[0] * mesh_shape[1])
    for path in paths:
        result = compare(path, arguments.optimizer, mesh_shape)
        if arguments.json:
            print(json.dumps(result))
        else:
            print(
                f"{path} ({arguments.optimizer}, mesh {mesh_shape}): max weight difference "
                f"vs one device {result['max_difference']:.3g} (weights moved up to "
                f"{result['max_change']:.3g}); sharded: {result['sharded']}"
            )


if __name__ == "__main__":
    main()
