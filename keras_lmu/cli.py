"""The ``keras-lmu`` command (also ``python -m keras_lmu``).

Subcommands:

``demo``
    Print the test accuracy of the shipped model ``models/psmnist.keras`` on
    permuted sequential MNIST (psMNIST), train a parallel LMU on psMNIST for
    about a minute and print its test accuracy, and draw its training curves
    and its memory's Legendre basis and impulse response.

``plot-basis``
    Draw the shifted Legendre basis and the impulse response of an LMU memory
    of a given order and window (needs matplotlib; no Keras backend).

``psmnist train`` / ``psmnist evaluate``
    Train the parallel or the 2019 paper's LMU (or an LSTM) on psMNIST, choosing the best
    epoch on the validation split, and save the model, its training curves and
    its metrics; print the test accuracy of a saved model (see
    :mod:`keras_lmu.psmnist`).

``nengo-demo``
    Run a Legendre memory in Nengo with rate and with spiking neurons and learn
    online, with PES, to output its input delayed by half the window; print the
    errors before and after learning and draw them (see :mod:`keras_lmu.nengo`).

``mackey-glass``
    Train an LMU and an LSTM of about 18,000 parameters each to predict
    Mackey-Glass series 15 steps ahead and print both test errors (NRMSE) and
    that of ``x(t + 15) = x(t)`` (see :mod:`keras_lmu.mackey_glass`).

Keras picks its backend when it is first imported, and importing ``keras_lmu``
imports Keras: run as a command, ``keras_lmu`` first sets ``KERAS_BACKEND`` to the
backend the command wants (:mod:`keras_lmu.command_backend`). Commands that run a
model check that it is the one loaded; if it is not (``main`` called from a program
that had loaded another), the command runs itself again in a fresh interpreter with
``KERAS_BACKEND`` set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from keras_lmu import command_backend
from keras_lmu.validation import command_line_number

if TYPE_CHECKING:
    import keras
    import numpy as np

#: Backends the commands can run on, in order of preference.
BACKENDS = command_backend.BACKENDS

#: Defaults of ``keras-lmu demo``: about a minute of training on a 2-core CPU.
DEMO_EPOCHS = 25
DEMO_TRAIN_SIZE = 50000
#: Most training images ``--train-size`` takes: MNIST's 60,000 less the 10,000 that
#: :func:`keras_lmu.datasets.load_psmnist` keeps for validation.
MAX_TRAIN_SIZE = 50000
DEMO_BATCH_SIZE = 32
DEMO_LEARNING_RATE = 1e-3
#: Images per batch when validating and testing (no gradients: larger batches are faster).
EVALUATION_BATCH_SIZE = 1000
#: Where ``keras-lmu demo`` writes its figures, and their names.
DEMO_OUT = "demo_output"
DEMO_CURVES_FILE = "psmnist_curves.png"
BASIS_FILE = "legendre_basis.png"
#: Order of the demo model's memory (its window is the sequence length, 784).
DEMO_ORDER = 256
#: The model trained by ``keras-lmu psmnist train`` that the repository ships.
SHIPPED_MODEL = Path("models") / "psmnist.keras"
#: Largest window ``keras-lmu plot-basis`` draws, in steps.
MAX_PLOT_THETA = 1e9
#: Highest order ``keras-lmu plot-basis`` draws: its figure took about 12 s at order
#: 1,024 and a minute at 2,048 (the impulse response, step by step, and the heatmaps),
#: whose rows are then finer than the figure's pixels.
MAX_PLOT_ORDER = 1024
#: How to install matplotlib, which the figures need.
PLOTS_INSTALL_HINT = (
    "install it with: pip install 'keras-lmu3[plots]' "
    "(in a checkout of the repository: pip install -e '.[plots]')"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``keras-lmu`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (0 on success).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.needs_backend:
        status = _ensure_backend(args.backend, argv)
        if status:
            return status
    return args.run(args)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``keras-lmu`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="keras-lmu",
        description="Legendre Memory Units as Keras 3 layers, on JAX, TensorFlow and PyTorch.",
    )
    subcommands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subcommands.required = True
    _add_demo_command(subcommands)
    _add_plot_basis_command(subcommands)
    _add_mackey_glass_command(subcommands)
    _add_nengo_demo_command(subcommands)
    _add_psmnist_commands(subcommands)
    return parser


def _add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="Keras backend (default: $KERAS_BACKEND if set, else the first installed of "
        + ", ".join(BACKENDS)
        + ")",
    )


def _add_psmnist_commands(subcommands) -> None:
    """Add ``keras-lmu psmnist train`` and ``keras-lmu psmnist evaluate``."""
    from keras_lmu import psmnist

    data_note = (
        "MNIST is read from $KERAS_LMU_DATA/mnist.npz when that variable is set, else "
        "downloaded by keras.datasets.mnist."
    )
    group = subcommands.add_parser(
        "psmnist",
        help="train and evaluate LMUs on permuted sequential MNIST",
        description="Permuted sequential MNIST (psMNIST) experiments. " + data_note,
    )
    commands = group.add_subparsers(title="commands", dest="psmnist_command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train",
        help="train a model, keep its best epoch on validation, print its test accuracy",
        description=(
            "Train an LMU on psMNIST: the first 50000 training images are trained on "
            "and the last 10000 validate the model after every epoch. The weights of "
            "the epoch with the best validation accuracy are kept, scored once on the "
            "10000 test images, and saved with the training curves and the metrics: "
            f"OUT/{psmnist.MODEL_FILE}, OUT/{psmnist.CURVES_FILE} and "
            f"OUT/{psmnist.METRICS_FILE}. " + data_note
        ),
    )
    train.add_argument(
        "--model",
        choices=psmnist.MODELS,
        default="parallel",
        help="'parallel': LMU memory computed in parallel, Dense hidden layer (fast); "
        "'paper': the recurrent model of the 2019 LMU paper, SimpleRNNCell(212) "
        "hidden layer, run step by step (slow); 'lstm': the baseline, "
        f"LSTM({psmnist.LSTM_UNITS}), as many parameters as 'paper' (slow) "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"passes over the training images (default: {psmnist.PARALLEL_EPOCHS} "
        f"for parallel, {psmnist.PAPER_EPOCHS} for paper and lstm)",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"sequences per batch (default: {psmnist.PARALLEL_BATCH_SIZE} for parallel, "
        f"{psmnist.PAPER_BATCH_SIZE} for paper and lstm)",
    )
    _add_backend_argument(train)
    train.add_argument(
        "--out",
        type=_path,
        default="psmnist_run",
        help="folder for the model, curves and metrics (default: %(default)s)",
    )
    train.add_argument("--seed", type=_seed, default=0, help="random seed (default: %(default)s)")
    train.add_argument(
        "--train-size",
        type=_train_size,
        default=MAX_TRAIN_SIZE,
        help=f"how many training images to train on, at most {MAX_TRAIN_SIZE} "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=None,
        help=f"initial learning rate of Adam (default: {psmnist.PARALLEL_LEARNING_RATE})",
    )
    train.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default=None,
        help="learning rate along the training: 'cosine' decays it to 0 along a cosine "
        "over all the steps, 'constant' keeps it (default: cosine for parallel, "
        "constant for paper and lstm)",
    )
    train.add_argument(
        "--clipnorm",
        type=_positive_float,
        default=None,
        help="clip the global norm of the gradients to this value (default: no clipping)",
    )
    train.add_argument(
        "--order",
        type=command_line_number(
            int,
            lambda value: 0 < value <= psmnist.STEPS,
            f"a positive integer up to {psmnist.STEPS}",
        ),
        default=None,
        help=f"parallel model: order of the memory, at most {psmnist.STEPS}, the steps of "
        f"its window (default: {psmnist.PARALLEL_ORDER})",
    )
    train.add_argument(
        "--units",
        type=_positive_int,
        nargs="+",
        default=None,
        help="parallel model: sizes of the Dense hidden layers (default: "
        + " ".join(str(size) for size in psmnist.PARALLEL_UNITS)
        + ")",
    )
    train.add_argument(
        "--activation",
        default=None,
        help="parallel model: activation of the hidden layers "
        f"(default: {psmnist.PARALLEL_ACTIVATION})",
    )
    train.add_argument(
        "--dropout",
        type=_rate,
        nargs="+",
        default=None,
        help="parallel model: dropout rate after each hidden layer, one for all or one per "
        "layer (default: "
        + " ".join(f"{rate:g}" for rate in psmnist.PARALLEL_DROPOUT)
        + ", for the default two layers)",
    )
    train.add_argument(
        "--memory-dropout",
        type=_rate,
        default=None,
        help="parallel model: dropout rate on the LMU memory "
        f"(default: {psmnist.PARALLEL_MEMORY_DROPOUT})",
    )
    train.add_argument(
        "--ema",
        type=_rate,
        default=None,
        help="parallel model: momentum of the moving average of the weights that is "
        f"validated and kept; 0 for none (default: {psmnist.PARALLEL_EMA_MOMENTUM})",
    )
    train.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=None,
        help="parallel model: decoupled weight decay of AdamW; 0 for plain Adam "
        f"(default: {psmnist.PARALLEL_WEIGHT_DECAY})",
    )
    train.add_argument(
        "--eval-size",
        type=_positive_int,
        default=None,
        help="validate and test on only the first N images of each split "
        "(for quick checks; default: all 10000)",
    )
    train.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras fit verbosity: 1 a progress bar, 2 one line per epoch (default: %(default)s)",
    )
    train.set_defaults(run=psmnist.train, needs_backend=True)

    evaluate = commands.add_parser(
        "evaluate",
        help="print the test accuracy of a saved model",
        description="Load a .keras model saved by 'keras-lmu psmnist train' and print "
        "its accuracy on the 10000 psMNIST test images. " + data_note,
    )
    evaluate.add_argument("model_path", type=_path, metavar="MODEL", help="the .keras file")
    _add_backend_argument(evaluate)
    evaluate.add_argument(
        "--eval-size",
        type=_positive_int,
        default=None,
        help="test on only the first N test images (default: all 10000)",
    )
    evaluate.set_defaults(run=psmnist.evaluate, needs_backend=True)


def _add_demo_command(subcommands) -> None:
    """Add ``keras-lmu demo`` to the subcommands."""
    demo = subcommands.add_parser(
        "demo",
        help="score the shipped psMNIST model, train an LMU on psMNIST, draw figures",
        description=(
            "Three steps on permuted sequential MNIST (psMNIST). (1) Print the "
            "accuracy on the 10000 test images of the shipped model "
            f"{SHIPPED_MODEL} (a parallel LMU of order 512 trained by 'keras-lmu "
            "psmnist train'; a few seconds); a missing model file is reported and "
            "skipped. "
            "(2) Train a parallel LMU (order 256, theta 784, Dense(212, relu) hidden "
            "layer) with Adam (learning rate 1e-3 with cosine decay), validate on "
            "the last 10000 training images and print the accuracy on the 10000 "
            "test images; the defaults take about a minute on a 2-core CPU. (3) "
            f"Write its training curves (DIR/{DEMO_CURVES_FILE}) and the Legendre "
            f"basis and impulse response of its memory (DIR/{BASIS_FILE}, as "
            "'keras-lmu plot-basis' draws them); the figures need matplotlib. MNIST "
            "is read from $KERAS_LMU_DATA/mnist.npz when that variable is set, else "
            "downloaded by keras.datasets.mnist."
        ),
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=DEMO_EPOCHS,
        help="passes over the training images (default: %(default)s)",
    )
    demo.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="Keras backend (default: $KERAS_BACKEND if set, else the first installed of "
        + ", ".join(BACKENDS)
        + ")",
    )
    demo.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEMO_BATCH_SIZE,
        help="images per batch (default: %(default)s)",
    )
    demo.add_argument(
        "--train-size",
        type=_train_size,
        default=DEMO_TRAIN_SIZE,
        help=f"how many training images to train on, at most {MAX_TRAIN_SIZE} "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed of the initial weights and the shuffling (default: %(default)s)",
    )
    demo.add_argument(
        "--model",
        type=_path,
        default=None,
        metavar="PATH",
        help=f"the saved model to score first (default: {SHIPPED_MODEL} of the "
        "repository holding this package, else of the current folder)",
    )
    demo.add_argument(
        "--out",
        type=_path,
        default=DEMO_OUT,
        metavar="DIR",
        help="folder for the figures (default: %(default)s)",
    )
    demo.set_defaults(run=run_demo, needs_backend=True)


def _add_plot_basis_command(subcommands) -> None:
    """Add ``keras-lmu plot-basis`` to the subcommands."""
    command = subcommands.add_parser(
        "plot-basis",
        help="draw the Legendre basis and the impulse response of an LMU memory",
        description=(
            "Draw two panels: (a) the shifted Legendre polynomials "
            "P_i(2 tau/theta - 1), i < ORDER, over the window 0 <= tau <= theta; "
            "(b) the impulse response H[k] = A_bar^k B_bar of the memory discretized "
            "by zero-order hold, for k from 0 to 1.5 theta steps: it spans the "
            "window and decays after theta. Up to order 10 each is drawn as one "
            "curve per dimension, above it as a heatmap. The format follows the "
            "extension of FILE (PNG when it has none; any that matplotlib writes, "
            "e.g. .svg or .pdf). Needs matplotlib but no Keras backend."
        ),
    )
    command.add_argument(
        "--order",
        type=_plot_order,
        required=True,
        help=(
            "order of the memory: the number of Legendre polynomials (a positive integer "
            f"up to {MAX_PLOT_ORDER})"
        ),
    )
    command.add_argument(
        "--theta",
        type=_window_length,
        required=True,
        help=f"length of the window, in steps (a positive number up to {MAX_PLOT_THETA:,.0f})",
    )
    command.add_argument(
        "--out", type=_path, required=True, metavar="FILE", help="the figure's file, e.g. basis.png"
    )
    command.set_defaults(run=run_plot_basis, needs_backend=False)


def _add_mackey_glass_command(subcommands) -> None:
    """Add ``keras-lmu mackey-glass`` to the subcommands."""
    from keras_lmu import mackey_glass as mg

    command = subcommands.add_parser(
        "mackey-glass",
        help="train an LMU and an LSTM to predict Mackey-Glass series; print both errors",
        description=(
            f"Predict x(t+{mg.AHEAD}) from x(s), s <= t, on chaotic Mackey-Glass series "
            f"(tau {mg.TAU}, {mg.SUBSTEPS} integration sub-steps per sample, "
            f"{mg.WASHOUT}-sample washout, squashed by tanh(x - 1) and centred), as in "
            "the 2019 LMU paper: half the series train (half of those validate), half "
            f"test. Trains {mg.DESCRIPTIONS['lstm']} and {mg.DESCRIPTIONS['lmu']}, both "
            "about 18,000 parameters, with the same budget: Adam with its learning rate "
            f"decayed to 0 along a cosine, gradients clipped to norm {mg.CLIPNORM:g}, "
            "mean squared error at every step; each keeps its epoch with the lowest "
            "validation loss. Prints the parameter counts, training times and test "
            "NRMSE (RMSE / RMS of the target, in percent) of both models and of "
            f"x(t+{mg.AHEAD}) = x(t). The paper's budget is --series "
            f"{mg.PAPER_SERIES} --steps {mg.PAPER_STEPS} --epochs {mg.PAPER_EPOCHS} "
            f"--batch-size {mg.PAPER_BATCH_SIZE}; the defaults are a smaller budget "
            "that runs in about 5 minutes on a 2-core CPU (JAX)."
        ),
    )
    command.add_argument(
        "--epochs",
        type=_positive_int,
        default=mg.EPOCHS,
        help="passes over the training series (default: %(default)s)",
    )
    command.add_argument(
        "--series",
        type=_integer_at_least(3),
        default=mg.SERIES,
        help="number of series, at least 3 (default: %(default)s)",
    )
    command.add_argument(
        "--steps",
        type=command_line_number(
            int,
            lambda value: mg.AHEAD < value <= mg.MAX_STEPS,
            f"an integer in [{mg.AHEAD + 1}, {mg.MAX_STEPS:,}]",
        ),
        default=mg.STEPS,
        help=f"samples per series, more than {mg.AHEAD}, at most {mg.MAX_STEPS:,} "
        "(default: %(default)s)",
    )
    command.add_argument(
        "--batch-size",
        type=_positive_int,
        default=mg.BATCH_SIZE,
        help="series per batch (default: %(default)s)",
    )
    command.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=mg.LEARNING_RATE,
        help="initial learning rate of Adam (default: %(default)s)",
    )
    _add_backend_argument(command)
    command.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed of the series, the initial weights and the shuffling (default: %(default)s)",
    )
    command.add_argument(
        "--out",
        type=_path,
        default=None,
        metavar="DIR",
        help=f"folder to write the results to: {mg.RESULTS_FILE}, and {mg.PLOT_FILE} "
        "(the first test series and both predictions) when matplotlib is installed "
        "(default: write nothing)",
    )
    command.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=2,
        help="Keras fit verbosity: 1 a progress bar, 2 one line per epoch (default: %(default)s)",
    )
    command.set_defaults(run=mg.run, needs_backend=True)


#: Where ``keras-lmu nengo-demo`` writes its figure.
NENGO_DEMO_OUT = "nengo_delay.png"
#: How to install Nengo, which ``keras-lmu nengo-demo`` needs.
NENGO_INSTALL_HINT = 'pip install "keras-lmu3[nengo]"'


def _add_nengo_demo_command(subcommands) -> None:
    """Add ``keras-lmu nengo-demo`` to the subcommands."""
    command = subcommands.add_parser(
        "nengo-demo",
        help="learn a delay online with PES on a Legendre memory in Nengo (rate and spiking)",
        description=(
            "Drive a neural Legendre memory in Nengo (order 6, theta 0.5 s, 100 neurons "
            "per dimension, lowpass synapse 0.1 s; recurrent transform tau A/theta + I, "
            "input transform tau B/theta) with band-limited white noise (up to 2 Hz, RMS "
            "0.3) and learn online, with PES (learning rate 1e-4), a readout that outputs "
            "the input delayed by theta/2, starting from zero decoders. Runs it twice, "
            "with LIFRate (rate) and LIF (spiking) neurons, for 20 simulated seconds "
            "each, prints the normalized RMS error (RMSE / RMS of the target) over the "
            "first and the last 2 seconds, and writes the target and the learned output "
            "over the first and last 3 seconds to FILE. About 20 seconds on a 2-core "
            "CPU. Needs Nengo and matplotlib (" + NENGO_INSTALL_HINT + "); no Keras "
            "backend runs."
        ),
    )
    command.add_argument(
        "--out",
        type=_path,
        default=NENGO_DEMO_OUT,
        metavar="FILE",
        help="the figure's file (default: %(default)s)",
    )
    command.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed of the input signal and of the neurons (default: %(default)s)",
    )
    command.set_defaults(run=run_nengo_demo, needs_backend=False)


def run_nengo_demo(args: argparse.Namespace) -> int:
    """Run ``keras-lmu nengo-demo``; return the exit status."""
    if not _is_installed("nengo"):
        print(f"error: nengo-demo needs Nengo: {NENGO_INSTALL_HINT}", file=sys.stderr)
        return 1
    plots, path = _plots_and_figure_path("nengo-demo", args.out)
    if plots is None:
        return 1
    import nengo

    from keras_lmu import nengo as lmu_nengo

    start = time.perf_counter()
    results = []
    for label, neuron_type in (("rate (LIFRate)", nengo.LIFRate()), ("spiking (LIF)", nengo.LIF())):
        result = lmu_nengo.delay_task(neuron_type, seed=args.seed, label=label)
        results.append(result)
        print(
            f"{label}: normalized RMS error of the delayed input, first 2 s "
            f"{result.error_before:.3f}, last 2 s {result.error_after:.3f} "
            f"({result.improvement:.1f}x lower; {result.seconds:.1f} s)",
            flush=True,
        )
    try:
        lmu_nengo.plot_delay_task(results, path)
    except OSError as error:
        print(f"error: cannot write {path}: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {_shown(path)} ({time.perf_counter() - start:.1f} s in all)")
    return 0


def _integer_at_least(minimum: int):
    """argparse type: an integer >= ``minimum``."""
    return command_line_number(int, lambda value: value >= minimum, f"an integer >= {minimum}")


#: argparse types of the numeric options.
_non_negative_int = _integer_at_least(0)
_seed = command_line_number(int, lambda value: 0 <= value < 2**32, "an integer in [0, 2**32 - 1]")
_positive_int = command_line_number(int, lambda value: value > 0, "a positive integer")
_positive_float = command_line_number(
    float, lambda value: 0 < value < float("inf"), "a positive number"
)
_non_negative_float = command_line_number(
    float, lambda value: 0 <= value < float("inf"), "a number >= 0"
)
_rate = command_line_number(float, lambda value: 0 <= value < 1, "a number in [0, 1)")


def _path(text: str) -> str:
    """An argparse type: a path, not empty (``Path("")`` is the current folder)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


#: ``--train-size`` up to :data:`MAX_TRAIN_SIZE`; ``plot-basis --theta`` and
#: ``--order`` up to :data:`MAX_PLOT_THETA` and :data:`MAX_PLOT_ORDER`.
_train_size = command_line_number(
    int, lambda value: 0 < value <= MAX_TRAIN_SIZE, f"a positive integer up to {MAX_TRAIN_SIZE}"
)
_window_length = command_line_number(
    float,
    lambda value: 0 < value <= MAX_PLOT_THETA,
    f"a positive number up to {MAX_PLOT_THETA:,.0f}",
)
_plot_order = command_line_number(
    int, lambda value: 0 < value <= MAX_PLOT_ORDER, f"a positive integer up to {MAX_PLOT_ORDER}"
)


def _ensure_backend(requested: str | None, argv: list[str]) -> int:
    """Make sure Keras runs on the wanted backend, re-executing the command if needed.

    The wanted backend is ``requested`` (``--backend``), else ``$KERAS_BACKEND``,
    else the first installed of :data:`BACKENDS`. Returns 0 when it is the one
    Keras loaded; does not return when the command is run again with
    ``KERAS_BACKEND`` set to it; returns 1 (after printing why) when it cannot
    be used.
    """
    environ = command_backend.command_environ()
    wanted = requested or command_backend.command_backend([], environ, _is_installed)
    if wanted is None:
        print(
            "error: no Keras backend is installed; install one of: " + ", ".join(BACKENDS),
            file=sys.stderr,
        )
        return 1
    if wanted not in BACKENDS:
        print(
            f"error: KERAS_BACKEND={wanted!r}: the keras-lmu commands run on "
            + ", ".join(BACKENDS),
            file=sys.stderr,
        )
        return 1
    if not _is_installed(wanted):
        print(f"error: the backend {wanted!r} is not installed", file=sys.stderr)
        return 1
    import keras

    loaded = keras.backend.backend()
    if loaded == wanted:
        print(f"Using Keras backend: {loaded}", flush=True)
        return 0
    if os.environ.get("KERAS_BACKEND") == wanted:
        # Already re-executed with KERAS_BACKEND set, yet Keras loaded another one.
        print(
            f"error: KERAS_BACKEND={wanted} is set but Keras loaded the {loaded!r} backend",
            file=sys.stderr,
        )
        return 1
    os.environ["KERAS_BACKEND"] = wanted
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "keras_lmu", *argv])
    return 1  # not reached


def _is_installed(module_name: str) -> bool:
    """Whether a top-level module can be imported (without importing it)."""
    return command_backend.is_installed(module_name)


def _load_plots():
    """Import :mod:`keras_lmu.plots`: ``(module, None)``, or ``(None, why not)``."""
    if not _is_installed("matplotlib"):
        return None, "matplotlib is not installed"
    try:
        from keras_lmu import plots
    except ImportError as error:
        return None, f"matplotlib cannot be imported ({error})"
    return plots, None


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it, else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _plots_and_figure_path(command: str, out: str):
    """``(keras_lmu.plots, Path(out))`` for a command that draws one figure to ``out``;
    ``(None, None)``, after printing why, when matplotlib is missing or the figure
    cannot be written there."""
    plots, problem = _load_plots()
    if plots is None:
        print(f"error: {problem}; {command} needs it: {PLOTS_INSTALL_HINT}", file=sys.stderr)
        return None, None
    path = Path(out)
    problem = _figure_file_problem(path, plots)
    if problem:
        print(f"error: cannot write {path}: {problem}", file=sys.stderr)
        return None, None
    return plots, path


def _figure_file_problem(path: Path, plots) -> str | None:
    """Why a figure cannot be written at ``path`` (an extension matplotlib does not
    write, a folder that cannot be made or written in), or None; makes the folder."""
    from keras_lmu.training import folder_write_problem

    extension = path.suffix.lstrip(".").lower()
    formats = plots.supported_formats()
    if extension and extension not in formats:
        why = f"matplotlib writes no .{extension} files"
        if extension == "pgf":  # (left out by supported_formats)
            why = "matplotlib writes .pgf files with a TeX program that is not installed here"
        return f"{why}; give FILE one of the extensions " + ", ".join(
            "." + name for name in formats
        )
    if path.is_dir():
        return "it is a folder; give a file name"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create the folder {path.parent} ({error.strerror or error})"
    problem = folder_write_problem(path.parent)
    if problem is not None:
        return f"cannot write files in the folder {path.parent} ({problem})"
    return None


def run_plot_basis(args: argparse.Namespace) -> int:
    """Draw the figure of ``keras-lmu plot-basis``; return the exit status."""
    from keras_lmu import legendre

    try:  # a window too short for the order: its matrix exponential overflows
        system = legendre.discrete_system(args.order, args.theta)
    except ValueError as error:
        print(f"error: argument --theta: {error}", file=sys.stderr)
        return 2
    plots, path = _plots_and_figure_path("plot-basis", args.out)
    if plots is None:
        return 1
    try:
        plots.make_basis_figure(path, args.order, args.theta, system=system)
    except OSError as error:
        print(f"error: cannot write {path}: {error}", file=sys.stderr)
        return 1
    print(
        f"Wrote {path}: Legendre basis and impulse response, order {args.order}, "
        f"theta {args.theta:g}"
    )
    return 0


def default_model_path() -> Path:
    """The shipped model :data:`SHIPPED_MODEL` for ``keras-lmu demo``.

    It is looked for in the repository that holds this package (an editable
    install or a checkout), then in the current folder; when neither has it,
    the repository's path is returned (and reported missing).
    """
    candidates = [Path(__file__).resolve().parents[1] / SHIPPED_MODEL, Path.cwd() / SHIPPED_MODEL]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


def score_saved_model(path: Path, x_test: np.ndarray, y_test: np.ndarray) -> float | None:
    """Print and return the test accuracy of the model saved at ``path``.

    A missing or unreadable file, or a model for other sequences, is reported
    (a warning on stderr) and None returned: the demo goes on without it.
    """
    from keras_lmu.psmnist import accuracy, load_classifier

    shown = _shown(path)
    if not path.is_file():
        print(
            f"warning: no model file {shown}: skipping its evaluation", file=sys.stderr, flush=True
        )
        return None
    start = time.perf_counter()
    try:
        model = load_classifier(path, x_test.shape[1:])
    except ValueError as error:  # whatever is wrong with the file, the demo goes on
        print(f"warning: {error}: skipping its evaluation", file=sys.stderr, flush=True)
        return None
    test_accuracy = accuracy(model, x_test, y_test)
    print(
        f"Saved model {shown}: test accuracy {test_accuracy:.4f} "
        f"({len(x_test)} test sequences, {time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    return test_accuracy


def run_demo(args: argparse.Namespace) -> int:
    """Score the shipped model, train and score the demo model, draw the figures.

    Returns the exit status.
    """
    import keras

    from keras_lmu.psmnist import load_splits
    from keras_lmu.training import make_output_folder

    splits = load_splits(args.train_size)
    if splits is None:
        return 1
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits
    out = Path(args.out)
    if not make_output_folder(out, (DEMO_CURVES_FILE, BASIS_FILE)):
        return 1
    plots, problem = _load_plots()
    if plots is None:
        print(
            f"warning: {problem}: the demo will draw no figures; {PLOTS_INSTALL_HINT}",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"psMNIST: {len(x_train)} training, {len(x_val)} validation and "
        f"{len(x_test)} test sequences of {x_train.shape[1]} steps",
        flush=True,
    )
    score_saved_model(Path(args.model) if args.model else default_model_path(), x_test, y_test)
    batches_per_epoch = -(-len(x_train) // args.batch_size)
    keras.utils.set_random_seed(args.seed)
    model = build_demo_model(x_train.shape[1], training_steps=args.epochs * batches_per_epoch)
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_val, y_val),
        validation_batch_size=EVALUATION_BATCH_SIZE,
        verbose=1,
    )
    print(f"Trained in {time.perf_counter() - start:.1f} s", flush=True)
    _, test_accuracy = model.evaluate(x_test, y_test, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
    print(f"Test accuracy: {test_accuracy:.4f}", flush=True)
    if plots is None:
        return 0
    return _write_demo_figures(plots, history.history, out, steps=x_train.shape[1])


def _write_demo_figures(plots, curves: dict, out: Path, steps: int) -> int:
    """Write the demo's training curves and its memory's basis figure; return the exit status."""
    from keras_lmu.psmnist import plot_curves

    curves_path, basis_path = out / DEMO_CURVES_FILE, out / BASIS_FILE
    try:
        # No epoch is marked: the demo keeps the last epoch's weights.
        plot_curves(curves, None, curves_path, title="psMNIST, demo LMU")
        plots.make_basis_figure(basis_path, DEMO_ORDER, steps)
    except OSError as error:
        print(f"error: cannot write the figures: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {_shown(curves_path)} and {_shown(basis_path)}")
    return 0


def build_demo_model(steps: int = 784, training_steps: int | None = None) -> keras.Model:
    """Return the compiled demo model: a parallel LMU and a linear classifier.

    The LMU (order 256, window ``theta = steps``) feeds a ``Dense(212, relu)``
    hidden layer; a ``Dense(10)`` layer gives the class logits. Adam minimises
    the sparse categorical cross-entropy.

    Parameters
    ----------
    steps : int
        Length of the input sequences (784 for psMNIST); also the LMU's window.
    training_steps : int, optional
        Number of optimizer steps the model will be trained for: the learning
        rate then decays from 1e-3 to 0 along a cosine over them (which keeps
        long runs from overfitting). None keeps it at 1e-3.
    """
    import keras

    import keras_lmu

    inputs = keras.Input((steps, 1))
    features = keras_lmu.LMU(
        memory_d=1,
        order=DEMO_ORDER,
        theta=steps,
        hidden_cell=keras.layers.Dense(212, activation="relu"),
        return_sequences=False,
    )(inputs)
    outputs = keras.layers.Dense(10)(features)
    model = keras.Model(inputs, outputs)
    learning_rate = DEMO_LEARNING_RATE
    if training_steps is not None:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, training_steps)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
