"""Optimizers by name."""

import tensorflow as tf

from cnn.config import Config
from cnn.errors import UserError

OPTIMIZERS = ("adam", "sgd")


def build_optimizer(config: Config) -> tf.keras.optimizers.Optimizer:
  """The optimizer `config.optimizer` names, with its learning rate and momentum settings.

  Under --precision=mixed_float16 it is wrapped in a `LossScaleOptimizer` (dynamic loss scaling:
  float16 gradients would underflow otherwise); the wrapper is the optimizer the run holds, so its
  loss scale is saved with it.
  """
  if config.optimizer == "adam":
    optimizer = tf.keras.optimizers.Adam(config.learning_rate)
  elif config.optimizer == "sgd":
    optimizer = tf.keras.optimizers.SGD(config.learning_rate, momentum=config.momentum,
                                        nesterov=config.nesterov)
  else:
    raise UserError(f"unknown --optimizer={config.optimizer}; choose one of: {', '.join(OPTIMIZERS)}")
  if config.precision == "mixed_float16":
    optimizer = tf.keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer
