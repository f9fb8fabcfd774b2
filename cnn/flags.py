"""Command-line flags generated from `Config`: one flag per field, same name, type and help."""

import dataclasses
import typing

from absl import flags

from cnn.config import Config
from cnn.errors import UserError

FLAGS = flags.FLAGS


def define_config_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines one absl flag per `Config` field (tuples become comma-separated lists).

  Idempotent: entry points that share a process (tests import several) may each call it.
  """
  hints = typing.get_type_hints(Config)
  for field in dataclasses.fields(Config):
    kind, name, default, help_text = hints[field.name], field.name, field.default, field.metadata["help"]
    if name in flag_values:
      continue
    if kind is bool:
      flags.DEFINE_boolean(name, default, help_text, flag_values=flag_values)
    elif kind is int:
      flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
    elif kind is float:
      flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
    elif kind is str:
      flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
    else:  # tuple[int, ...] or tuple[float, ...]
      flags.DEFINE_list(name, [str(v) for v in default], help_text, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> Config:
  """The validated `Config` that the parsed flags describe. Raises UserError."""
  values = {}
  for field in dataclasses.fields(Config):
    value = flag_values[field.name].value
    if isinstance(field.default, tuple):
      kind = typing.get_args(typing.get_type_hints(Config)[field.name])[0]  # int or float
      try:
        value = tuple(kind(v) for v in value)
      except ValueError:
        raise UserError(f"--{field.name}={','.join(value)}: expected comma-separated "
                        f"{'integers' if kind is int else 'numbers'}") from None
    values[field.name] = value
  return Config(**values).validate()
