"""The model registry: a model registers its builder by name where it is defined."""

import contextlib
from typing import Callable, Iterator

import tensorflow as tf

from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.errors import UserError

ModelBuilder = Callable[[Config, DatasetInfo], tf.keras.Model]
FamilyBuilder = Callable[[str, Config, DatasetInfo], tf.keras.Model]  # (name after the prefix, ...)
_BUILDERS: dict[str, ModelBuilder] = {}
_FAMILIES: dict[str, FamilyBuilder] = {}


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
  """Decorator: `@register("my_net")` on a function `(config, info) -> tf.keras.Model`."""

  def decorator(builder: ModelBuilder) -> ModelBuilder:
    if name in _BUILDERS:
      raise ValueError(f"model '{name}' is registered twice")
    _BUILDERS[name] = builder
    return builder

  return decorator


def register_family(prefix: str, builder: FamilyBuilder) -> None:
  """Registers `builder` for every `--model=<prefix><name>` (e.g. "keras:"); it raises UserError for bad names."""
  if prefix in _FAMILIES:
    raise ValueError(f"model family '{prefix}' is registered twice")
  _FAMILIES[prefix] = builder


def names() -> list[str]:
  """Registered model names, sorted."""
  return sorted(_BUILDERS)


def build_model(config: Config, info: DatasetInfo) -> tf.keras.Model:
  """Builds the model `config.model` for the dataset `info` describes. Raises UserError."""
  for prefix, family in _FAMILIES.items():
    if config.model.startswith(prefix):
      return family(config.model[len(prefix):], config, info)
  if config.model not in _BUILDERS:
    families = "".join(f", or {prefix}<name>" for prefix in sorted(_FAMILIES))
    raise UserError(f"unknown --model={config.model}; registered models: {', '.join(names())}{families}")
  return _BUILDERS[config.model](config, info)


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
  """Layers built inside take the Keras mixed-precision policy `precision`; the global policy (process
  state, read by every layer built afterwards) is restored on the way out, as it was found."""
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(precision)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)
