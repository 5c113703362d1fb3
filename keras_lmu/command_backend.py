"""The Keras backend of the ``keras-lmu`` command, chosen before Keras is imported.

Keras picks its backend once, when it is first imported: ``$KERAS_BACKEND``, else the
one in ``~/.keras/keras.json``, else TensorFlow. Importing ``keras_lmu`` imports Keras,
so ``python -m keras_lmu`` and the ``keras-lmu`` script (whose first import is
``keras_lmu``) would load TensorFlow, or fail where only JAX or PyTorch is installed,
before the command could choose. :func:`set_for_command`, called by
``keras_lmu/__init__.py`` before it imports Keras, sets ``KERAS_BACKEND`` for the
command: its ``--backend``, else ``$KERAS_BACKEND``, else the first installed of
:data:`BACKENDS`. Programs that import ``keras_lmu`` are left to Keras's own choice.

Only the standard library is imported here.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

#: Backends the commands run on, in order of preference.
BACKENDS = ("jax", "tensorflow", "torch")

#: The name of the installed script (``[project.scripts]`` in pyproject.toml).
SCRIPT_NAME = "keras-lmu"


def is_installed(module_name: str) -> bool:
    """Whether a top-level module can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a broken module
        return False


def first_installed(installed: Callable[[str], bool] = is_installed) -> str | None:
    """The first backend of :data:`BACKENDS` that ``installed`` finds, or None."""
    return next((name for name in BACKENDS if installed(name)), None)


def requested_backend(argv: Sequence[str]) -> str | None:
    """The value of the last ``--backend NAME`` or ``--backend=NAME`` in ``argv``."""
    requested = None
    for index, argument in enumerate(argv):
        if argument == "--backend" and index + 1 < len(argv):
            requested = argv[index + 1]
        elif argument.startswith("--backend="):
            requested = argument.split("=", 1)[1]
    return requested


#: Module names that run the command with ``python -m``.
COMMAND_MODULES = ("keras_lmu", "keras_lmu.__main__")
#: Long options of the interpreter that take a value.
INTERPRETER_LONG_OPTIONS_WITH_VALUE = ("--check-hash-based-pycs",)


def runs_as_command(orig_argv: Sequence[str] | None = None) -> bool:
    """Whether this interpreter runs the command: ``python [options] -m keras_lmu ...``,
    or the ``keras-lmu`` script (``orig_argv``: the interpreter's own command line,
    default ``sys.orig_argv``).

    The interpreter's options are read as it reads them: short ones may be joined
    (``-Im keras_lmu``, ``-mkeras_lmu``), and ``-X``, ``-W`` and
    ``--check-hash-based-pycs`` take a value.
    """
    arguments = iter(list(sys.orig_argv if orig_argv is None else orig_argv)[1:])
    for argument in arguments:
        if argument == "-" or argument == "--":
            return False
        if argument.startswith("--"):
            if argument in INTERPRETER_LONG_OPTIONS_WITH_VALUE:
                next(arguments, None)
            continue
        if not argument.startswith("-"):  # the script
            return Path(argument).name.removesuffix(".exe") in (SCRIPT_NAME, f"{SCRIPT_NAME}.py")
        for index, option in enumerate(argument[1:], start=2):
            if option == "c":
                return False
            if option in "mXW":  # the rest of the argument, or the next one, is its value
                value = argument[index:] or next(arguments, None)
                if option == "m":
                    return value in COMMAND_MODULES
                break
    return False


def command_backend(
    argv: Sequence[str], environ: dict, installed: Callable[[str], bool] = is_installed
) -> str | None:
    """The backend the command wants: ``--backend`` in ``argv``, else
    ``$KERAS_BACKEND``, else the first installed of :data:`BACKENDS` (None if none)."""
    return requested_backend(argv) or environ.get("KERAS_BACKEND") or first_installed(installed)


#: ``$KERAS_BACKEND`` as the command found it, where :func:`set_for_command` replaced it.
_replaced_environment: dict[str, str] = {}


def command_environ() -> dict:
    """``os.environ`` with ``KERAS_BACKEND`` as the command was started with, before
    :func:`set_for_command` replaced a backend that Keras cannot load."""
    return {**os.environ, **_replaced_environment}


def set_for_command() -> bool:
    """When this interpreter runs the ``keras-lmu`` command and has not imported Keras
    yet, set ``KERAS_BACKEND`` to the backend the command wants, if it is installed.

    Where it is not, Keras must still load an installed one for the command to report
    the error, not fail on import: ``KERAS_BACKEND`` is then the first installed, and
    :func:`command_environ` keeps the value it replaced.

    Returns
    -------
    bool
        False when the command runs where none of :data:`BACKENDS` is installed, so
        that Keras cannot be imported (``keras_lmu`` then leaves out its layers, and the
        commands that need no backend still run); True otherwise.
    """
    if "keras" in sys.modules or not runs_as_command():
        return True
    wanted = command_backend(sys.argv[1:], os.environ)
    if wanted not in BACKENDS or not is_installed(wanted):
        if "KERAS_BACKEND" in os.environ:
            _replaced_environment["KERAS_BACKEND"] = os.environ["KERAS_BACKEND"]
        wanted = first_installed()
    if wanted is None:
        return False
    os.environ["KERAS_BACKEND"] = wanted
    return True
