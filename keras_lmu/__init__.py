"""Legendre Memory Units as Keras 3 layers, on JAX, TensorFlow and PyTorch."""

from keras_lmu import command_backend

# Before Keras is first imported (below): the backend of the ``keras-lmu`` command.
_KERAS_CAN_LOAD = command_backend.set_for_command()

from keras_lmu import legendre  # noqa: E402  (NumPy and SciPy only)
from keras_lmu.validation import UnstableDiscretizationWarning  # noqa: E402

if _KERAS_CAN_LOAD:
    from keras_lmu.cell import LMUCell
    from keras_lmu.feedforward import LMUFeedforward
    from keras_lmu.layer import LMU
else:  # the keras-lmu command where no backend is installed: Keras cannot be imported

    def __getattr__(name: str):
        if name in ("LMU", "LMUCell", "LMUFeedforward"):
            raise ImportError(
                f"keras_lmu.{name} needs a Keras backend and none is installed; install one "
                "of: " + ", ".join(command_backend.BACKENDS)
            )
        raise AttributeError(f"module 'keras_lmu' has no attribute {name!r}")


__version__ = "1.0.0.dev0"
__all__ = [
    "LMU",
    "LMUCell",
    "LMUFeedforward",
    "UnstableDiscretizationWarning",
    "legendre",
    "__version__",
]
