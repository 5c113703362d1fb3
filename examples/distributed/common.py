"""What every distributed example shares: a tiny LMU model, fixed data, a comparison.

Each example trains the same model twice from the same initial weights on the same
batches, once on one device and once distributed, and prints the largest absolute
difference between the two sets of final weights. Only the model, data and
comparison live here; each example imports Keras itself, after setting up its
devices.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess

import numpy as np

#: Sequence length, input features, LMU order, hidden units and global batch size.
STEPS, FEATURES, ORDER, UNITS, BATCH = 16, 3, 8, 8, 8
#: Number of training batches (steps of the optimizer) in every run.
TRAIN_STEPS = 4
#: The two LMU forms, both with a trainable theta: memory in parallel (Dense hidden
#: component), or step by step (SimpleRNNCell feeding back into the memory).
PATHS = ("parallel", "recurrent")


def integer_at_least(minimum: int):
    """An argparse type: an integer of ``minimum`` or more, else an error quoting the
    text ("expected an integer of 1 or more, got '0'"). (Keras is not imported here:
    the scripts set up their devices first.)"""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer of {minimum} or more, got {text!r}"
            )
        return value

    return parse


def divisors(size: int) -> str:
    """The divisors of ``size``, as text: "1, 2, 4 or 8"."""
    found = [str(divisor) for divisor in range(1, size + 1) if size % divisor == 0]
    return found[0] if len(found) == 1 else f"{', '.join(found[:-1])} or {found[-1]}"


def batch_split_problem(count: int) -> str | None:
    """Why every global batch of ``BATCH`` cannot be split into ``count`` equal shares.

    Returns
    -------
    str or None
        "the batch of 8 does not split into 3 (give 1, 2, 4 or 8)", or None when it
        splits.
    """
    if count >= 1 and BATCH % count == 0:
        return None
    return f"the batch of {BATCH} does not split into {count} (give {divisors(BATCH)})"


def make_output_folder(parser: argparse.ArgumentParser, out: str) -> None:
    """Create the folder that ``--out`` names (and its parents) if it is missing.

    Stops with ``parser.error`` naming ``--out`` when ``out`` is a file or cannot be
    created, so that a run never trains and then fails to save.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        parser.error(f"--out {out!r} is a file; give a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        parser.error(f"--out: cannot create the folder {out!r}: {error}")


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed regression data: ``TRAIN_STEPS`` global batches of ``BATCH`` sequences.

    Parameters
    ----------
    seed : int
        Seed of the NumPy generator.

    Returns
    -------
    inputs : numpy.ndarray
        float32, shape ``(TRAIN_STEPS * BATCH, STEPS, FEATURES)``.
    targets : numpy.ndarray
        float32, shape ``(TRAIN_STEPS * BATCH, 1)``.
    """
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((TRAIN_STEPS * BATCH, STEPS, FEATURES)).astype("float32")
    targets = rng.standard_normal((TRAIN_STEPS * BATCH, 1)).astype("float32")
    return inputs, targets


def build_model(path: str, seed: int = 0):
    """A float32 LMU regression model; the same seed gives the same initial weights.

    Parameters
    ----------
    path : {"parallel", "recurrent"}
        ``"parallel"``: ``LMU(hidden_cell=Dense, trainable_theta=True)``, whose
        memory is computed in parallel. ``"recurrent"``: ``LMU(hidden_cell=SimpleRNNCell,
        hidden_to_memory=True, trainable_theta=True)``, computed step by step.
    seed : int
        Seed of the initial weights.

    Returns
    -------
    keras.Model
        Inputs ``(STEPS, FEATURES)``, output ``(1,)``; the LMU layer is named "lmu"
        and its hidden ``Dense`` (parallel path) "hidden".
    """
    import keras

    import keras_lmu

    keras.utils.set_random_seed(seed)
    if path == "parallel":
        hidden = keras.layers.Dense(UNITS, activation="tanh", name="hidden", dtype="float32")
        lmu = keras_lmu.LMU(
            memory_d=2,
            order=ORDER,
            theta=12.0,
            hidden_cell=hidden,
            trainable_theta=True,
            name="lmu",
            dtype="float32",
        )
    elif path == "recurrent":
        hidden = keras.layers.SimpleRNNCell(UNITS, name="hidden", dtype="float32")
        lmu = keras_lmu.LMU(
            memory_d=1,
            order=ORDER,
            theta=12.0,
            hidden_cell=hidden,
            hidden_to_memory=True,
            trainable_theta=True,
            name="lmu",
            dtype="float32",
        )
    else:
        raise ValueError(f"path must be one of {PATHS}, not {path!r}")
    inputs = keras.Input((STEPS, FEATURES), batch_size=None, dtype="float32")
    outputs = keras.layers.Dense(1, name="head", dtype="float32")(lmu(inputs))
    model = keras.Model(inputs, outputs)
    assert lmu.uses_parallel_form() is (path == "parallel")
    return model


def weights_of(model) -> dict[str, np.ndarray]:
    """Every weight of ``model`` as float64 NumPy arrays, keyed by its path.

    The suffix that Keras adds to the name of an automatically named layer built a
    second time in the same process ("lmu_feedforward_1") is dropped, so that the
    weights of two builds of the same model have the same keys.
    """
    import keras

    return {
        re.sub(r"_\d+(?=/)", "", weight.path): np.asarray(
            keras.ops.convert_to_numpy(weight), dtype=np.float64
        )
        for weight in model.weights
    }


def max_difference(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> float:
    """Largest absolute difference between two sets of weights with the same paths."""
    if sorted(first) != sorted(second):
        raise ValueError(f"different weights: {sorted(first)} and {sorted(second)}")
    return max(float(np.max(np.abs(first[name] - second[name]))) for name in first)


def max_change(initial: dict[str, np.ndarray], final: dict[str, np.ndarray]) -> float:
    """Largest absolute change of a weight in training: shows that training did move them."""
    return max_difference(initial, final)


def train(model, inputs: np.ndarray, targets: np.ndarray, optimizer: str = "adam") -> None:
    """Train ``model`` for one epoch of ``TRAIN_STEPS`` batches, in order, with MSE.

    Parameters
    ----------
    model : keras.Model
        Built by :func:`build_model` (inside a distribution's or strategy's scope
        for a distributed run).
    inputs, targets : numpy.ndarray
        From :func:`make_data`.
    optimizer : {"adam", "sgd"}
        Adam with learning rate 0.01, or SGD with learning rate 0.002 (larger steps
        push theta_inv, whose gradient is large, below zero).
    """
    import keras

    if optimizer == "adam":
        chosen = keras.optimizers.Adam(learning_rate=0.01)
    elif optimizer == "sgd":
        chosen = keras.optimizers.SGD(learning_rate=0.002)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', not {optimizer!r}")
    model.compile(optimizer=chosen, loss="mse")
    model.fit(inputs, targets, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on localhost right now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def run_local_processes(
    commands: list[list[str]], environments: list[dict], timeout: float, role: str = "process"
) -> None:
    """Start one process per command (with its environment) and wait for all of them.

    Raises
    ------
    RuntimeError
        When a process fails: its exit status and the end of its output.
    """
    started = [
        subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for command, environment in zip(commands, environments, strict=True)
    ]
    logs = []
    try:
        for process in started:
            logs.append(process.communicate(timeout=timeout)[0].decode(errors="replace"))
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
    for process, log in zip(started, logs, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"a {role} failed ({process.returncode}):\n{log[-4000:]}")


def train_on_one_device(path: str, optimizer: str) -> tuple[dict, dict]:
    """The initial and final weights of ``path``'s model trained on one device."""
    inputs, targets = make_data()
    model = build_model(path)
    initial = weights_of(model)
    train(model, inputs, targets, optimizer)
    return initial, weights_of(model)


def comparison(path: str, optimizer: str, one_device: tuple[dict, dict], distributed: dict) -> dict:
    """Compare the final weights of a distributed run with those of one device.

    Parameters
    ----------
    path, optimizer : str
        The run's model and optimizer.
    one_device : tuple of dict
        Initial and final weights on one device (:func:`train_on_one_device`).
    distributed : dict
        Final weights of the distributed run (:func:`weights_of`).

    Returns
    -------
    dict
        ``path``, ``optimizer``, ``max_difference`` (largest absolute difference of a
        final weight between the two runs) and ``max_change`` (largest change of a
        weight in training).
    """
    initial, final = one_device
    return {
        "path": path,
        "optimizer": optimizer,
        "max_change": max_change(initial, final),
        "max_difference": max_difference(final, distributed),
    }


def compare_with_one_device(path: str, optimizer: str, out: str) -> dict:
    """Train ``path``'s model on one device; compare with the weights saved in ``out``.

    The distributed run saved its final weights to ``out/<path>.npz``; returns
    :func:`comparison`'s dict.
    """
    with np.load(os.path.join(out, f"{path}.npz")) as saved:
        distributed = dict(saved)
    return comparison(path, optimizer, train_on_one_device(path, optimizer), distributed)
