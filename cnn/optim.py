"""Optimizers by name."""

import tensorflow as tf

from cnn.config import Config
from cnn.errors import UserError

OPTIMIZERS = ("adam", "sgd")


def build_optimizer(config: Config) -> tf.keras.optimizers.Optimizer:
  """The optimizer `config.optimizer` names, with its learning rate and momentum settings."""
  if config.optimizer == "adam":
    return tf.keras.optimizers.Adam(config.learning_rate)
  if config.optimizer == "sgd":
    return tf.keras.optimizers.SGD(config.learning_rate, momentum=config.momentum, nesterov=config.nesterov)
  raise UserError(f"unknown --optimizer={config.optimizer}; choose one of: {', '.join(OPTIMIZERS)}")
