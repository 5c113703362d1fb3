"""Legendre Memory Units as Keras 3 layers, on JAX, TensorFlow and PyTorch."""

from keras_lmu import command_backend

# Before Keras is first imported (below): the backend of the ``keras-lmu`` command.
command_backend.set_for_command()

from keras_lmu import legendre  # noqa: E402
from keras_lmu.cell import LMUCell  # noqa: E402
from keras_lmu.feedforward import LMUFeedforward  # noqa: E402
from keras_lmu.layer import LMU  # noqa: E402
from keras_lmu.validation import UnstableDiscretizationWarning  # noqa: E402

__version__ = "1.0.0.dev0"
__all__ = [
    "LMU",
    "LMUCell",
    "LMUFeedforward",
    "UnstableDiscretizationWarning",
    "legendre",
    "__version__",
]
