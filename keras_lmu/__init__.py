"""Legendre Memory Units as Keras 3 layers, on JAX, TensorFlow and PyTorch."""

from keras_lmu import legendre
from keras_lmu.cell import LMUCell
from keras_lmu.feedforward import LMUFeedforward
from keras_lmu.layer import LMU

__version__ = "1.0.0.dev0"
__all__ = ["LMU", "LMUCell", "LMUFeedforward", "legendre", "__version__"]
