"""The model registry: a model registers its builder by name where it is defined."""

from typing import Callable

import tensorflow as tf

from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.errors import UserError

ModelBuilder = Callable[[Config, DatasetInfo], tf.keras.Model]
_BUILDERS: dict[str, ModelBuilder] = {}


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
  """Decorator: `@register("my_net")` on a function `(config, info) -> tf.keras.Model`."""

  def decorator(builder: ModelBuilder) -> ModelBuilder:
    if name in _BUILDERS:
      raise ValueError(f"model '{name}' is registered twice")
    _BUILDERS[name] = builder
    return builder

  return decorator


def names() -> list[str]:
  """Registered model names, sorted."""
  return sorted(_BUILDERS)


def build_model(config: Config, info: DatasetInfo) -> tf.keras.Model:
  """Builds the model `config.model` for the dataset `info` describes. Raises UserError."""
  if config.model not in _BUILDERS:
    raise UserError(f"unknown --model={config.model}; registered models: {', '.join(names())}")
  return _BUILDERS[config.model](config, info)
