"""Activation functions by the name --activation gives."""

from typing import Callable

import tensorflow as tf

from cnn.errors import UserError


def get(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
  """Keras's activation `name` (relu, gelu, silu, mish, ...), built on keras.ops so that it also runs on
  the symbolic tensors of the layer table. Raises UserError for an unknown name."""
  try:
    return tf.keras.activations.get(name)
  except ValueError:
    raise UserError(f"unknown --activation={name}; e.g. relu, gelu, silu, mish, elu, tanh, sigmoid, linear") from None
