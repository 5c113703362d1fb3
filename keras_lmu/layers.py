"""The layers, under the module path that ``keras-lmu`` code imports them from."""

from keras_lmu.cell import LMUCell
from keras_lmu.feedforward import LMUFeedforward
from keras_lmu.layer import LMU

__all__ = ["LMU", "LMUCell", "LMUFeedforward"]
