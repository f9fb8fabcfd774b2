"""Command-line flags generated from `Config`: one flag per field, same name, type and help.

Each flag is registered under its `Config` section's title as its absl module name ("Data",
"Model", ...), so `--helpfull` groups them by section and `config_help` renders them in the
order of `Config`. `--help` states each flag's choices or range, but the checks stay in
`Config.validate`, so that a bad value gets the same one-line error from the command line and
from a notebook.
"""

import dataclasses
import typing
from typing import Any

from absl import flags

from cnn.config import Config
from cnn.errors import UserError

FLAGS = flags.FLAGS


class _ChoiceFlag(flags.EnumFlag):
  """An enum flag (`--help` shows `<a|b|c>`) that leaves the check of its value to `Config.validate`."""

  def _parse(self, argument: str) -> str:
    return argument


# Config's bounds: (operator, interval bracket).
_BOUNDS = {"minimum": (">=", "["), "above": (">", "("), "maximum": ("<=", "]"), "below": ("<", ")")}


def _range_text(metadata: dict[str, Any]) -> str:
  """' >= 1', ' in [0.0, 1.0)', ... from a field's bounds; '' without any."""
  bounds = [key for key in _BOUNDS if key in metadata]  # A lower bound first, if any.
  if len(bounds) == 2:
    low, high = bounds
    return f" in {_BOUNDS[low][1]}{metadata[low]}, {metadata[high]}{_BOUNDS[high][1]}"
  return "".join(f" {_BOUNDS[key][0]} {metadata[key]}" for key in bounds)


class _Described:
  """A parser mixin: `--help` says `syntactic_help` (the range), which the parser does not check.

  absl's bounded parsers would reject a value out of range with their own message before
  `Config.validate` could give its one. (absl caches parsers by their arguments, so each text
  gets its own instance.)
  """

  def __init__(self, syntactic_help: str):
    super().__init__()
    self.syntactic_help = syntactic_help


class _Integer(_Described, flags.IntegerParser):
  pass


class _Float(_Described, flags.FloatParser):
  pass


class _List(_Described, flags.ListParser):
  pass


def _parser(kind: type, metadata: dict[str, Any]) -> flags.ArgumentParser:
  """An absl parser for an int, float or tuple field whose `--help` line states the field's range."""
  bounds = _range_text(metadata)
  if kind is int:
    return _Integer(f"an integer{bounds}")
  if kind is float:
    return _Float(f"a number{bounds}")
  values = "integers" if typing.get_args(kind)[0] is int else "numbers"  # tuple[int, ...] or tuple[float, ...]
  return _List(f"comma-separated {values}{', each' + bounds if bounds else ''}")


def define_config_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines one absl flag per `Config` field (tuples become comma-separated lists).

  Idempotent: entry points that share a process (tests import several) may each call it.
  """
  hints = typing.get_type_hints(Config)
  for field in dataclasses.fields(Config):
    kind, name, default, meta = hints[field.name], field.name, field.default, field.metadata
    section = meta["section"]
    if name in flag_values:
      continue
    if kind is bool:
      flags.DEFINE_boolean(name, default, meta["help"], flag_values=flag_values, module_name=section)
    elif "choices" in meta:
      flags.DEFINE_flag(_ChoiceFlag(name, default, meta["help"], meta["choices"]), flag_values, section)
    elif kind is str:
      flags.DEFINE_string(name, default, meta["help"], flag_values=flag_values, module_name=section)
    elif kind in (int, float):
      flags.DEFINE(_parser(kind, meta), name, default, meta["help"], flag_values, module_name=section)
    else:
      flags.DEFINE(_parser(kind, meta), name, [str(v) for v in default], meta["help"], flag_values,
                   flags.CsvListSerializer(","), module_name=section)


def config_help(flag_values: flags.FlagValues = FLAGS) -> str:
  """The `--help` text of the `Config` flags: a heading per section, in the order of `Config`."""
  sections = dict.fromkeys(field.metadata["section"] for field in dataclasses.fields(Config))
  return "\n".join(text for text in map(flag_values.module_help, sections) if text)


def config_from_flagfile(path: str) -> Config:
  """The `Config` a flagfile describes (a recipe in experiments/, a run's flags.txt), the other flags
  at their defaults. Raises flags.Error or UserError."""
  parsed = flags.FlagValues()
  define_config_flags(parsed)
  parsed(["prog", f"--flagfile={path}"])
  return config_from_flags(parsed)


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
