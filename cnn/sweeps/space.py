"""What a sweep tries: the `--grid` syntax, the trials of a grid or a random search, and checking them.

Syntax: `name=values` parts joined by `;`. Values are comma-separated, or `|`-separated when a value
holds commas itself (`conv_filters=32,64|64,128`). For a random search (`--random=N`), a value list
is drawn from uniformly, and a part may instead be a range: `uniform(A,B)`, `loguniform(A,B)` (drawn
uniformly in log space, A > 0) or `randint(A,B)` (integers, both ends included).
"""

import dataclasses
import itertools
import math
import random
import re
import typing
from typing import Iterator, Optional, Sequence

from absl import flags

from cnn import flags as cnn_flags
from cnn.config import _flag_text as flag_text  # pylint: disable=protected-access  # flags.txt's form.
from cnn.config import Config
from cnn.errors import UserError

RANGES = ("uniform", "loguniform", "randint")
# Flags a sweep sets itself: each trial's run directory is <sweep_dir>/<trial>.
_NOT_SWEEPABLE = ("run_dir", "overwrite")
_RANGE = re.compile(r"(\w+)\((.*)\)")


@dataclasses.dataclass(frozen=True)
class Axis:
  """One swept flag: a list of values (flag text), or a range `kind(low, high)` for random search."""
  name: str
  values: tuple[str, ...] = ()
  kind: Optional[str] = None  # One of RANGES for a range.
  low: float = 0.0
  high: float = 0.0


def parse_grid(text: str) -> list[Axis]:
  """The axes of `--grid` text. Raises UserError for bad syntax, unknown flags, or an empty grid."""
  axes = [_parse_axis(part.strip()) for part in text.split(";") if part.strip()]
  if not axes:
    raise UserError("--grid is empty: give at least one name=values, e.g. --grid='learning_rate=0.01,0.1'")
  names = [axis.name for axis in axes]
  for name in names:
    if names.count(name) > 1:
      raise UserError(f"--grid names {name} twice")
  return axes


def _parse_axis(part: str) -> Axis:
  name, equals, values = part.partition("=")
  name, values = name.strip().lstrip("-"), values.strip()
  if not equals or not name:
    raise UserError(f"--grid: '{part}' is not name=values")
  fields = {f.name for f in dataclasses.fields(Config)}
  if name not in fields:
    raise UserError(f"--grid: unknown flag {name} (`python -m cnn.train --helpfull` lists them)")
  if name in _NOT_SWEEPABLE:
    raise UserError(f"--grid: {name} cannot be swept (each trial runs in <sweep_dir>/<trial>)")
  match = _RANGE.fullmatch(values)
  if match and match.group(1) in RANGES:
    return _parse_range(name, match.group(1), match.group(2))
  if match:
    raise UserError(f"--grid: {name}={values}: unknown range {match.group(1)} (one of: {', '.join(RANGES)})")
  split = [v.strip() for v in values.split("|" if "|" in values else ",")]
  if not any(split):
    raise UserError(f"--grid: {name} has no values")
  return Axis(name, tuple(split))


def _parse_range(name: str, kind: str, bounds: str) -> Axis:
  try:
    low, high = (float(b) for b in bounds.split(","))
  except ValueError:
    raise UserError(f"--grid: {name}={kind}({bounds}) needs two numbers, {kind}(LOW,HIGH)") from None
  if not low < high or (kind == "loguniform" and low <= 0) or (kind == "randint" and
                                                               not (low.is_integer() and high.is_integer())):
    raise UserError(f"--grid: {name}={kind}({bounds}) needs LOW < HIGH"
                    f"{', LOW > 0' if kind == 'loguniform' else ''}{', integers' if kind == 'randint' else ''}")
  kinds = typing.get_type_hints(Config)
  if kind != "randint" and kinds[name] is int:
    raise UserError(f"--grid: {name} takes integers: use randint(LOW,HIGH)")
  return Axis(name, kind=kind, low=low, high=high)


def trial_flags(axes: Sequence[Axis], num_random: int, seed: int) -> Iterator[dict[str, str]]:
  """Each trial's swept flags (name → flag text), in order.

  A grid (`num_random` 0) is the product of the axes, the last varying fastest. A random search
  draws from `random.Random(seed)`, axis by axis, each new combination once, so that the first N
  trials of a longer search with the same seed are the N trials of the shorter one. It yields until
  the caller has its `num_random` distinct trials (values equal as flags count once: the caller
  compares them), or `_draw_budget(num_random)` draws.

  Raises:
    UserError: a range without --random, or a --random above the number of trials the grid holds.
  """
  if not num_random:
    ranges = [axis.name for axis in axes if axis.kind]
    if ranges:
      raise UserError(f"--grid: {ranges[0]} is a range: give --random=N to draw N trials from it")
    yield from (dict(zip((axis.name for axis in axes), values))
                for values in itertools.product(*(axis.values for axis in axes)))
    return
  size = distinct_trials(axes)
  if size is not None and num_random > size:
    raise UserError(f"--random={num_random}: --grid holds {size} distinct trials; ask for at most {size}"
                    + ("" if any(axis.kind for axis in axes) else " (--random=0 runs them all)"))
  rng, drawn = random.Random(seed), []
  for _ in range(draw_budget(num_random)):
    trial = {axis.name: _draw(axis, rng) for axis in axes}
    if trial not in drawn:
      drawn.append(trial)
      yield trial


def draw_budget(num_random: int) -> int:
  """How many draws a random search of `num_random` trials may take before it says the grid is too small."""
  return 1000 + 100 * num_random


def distinct_trials(axes: Sequence[Axis]) -> Optional[int]:
  """How many trials (as flag text) the axes hold; None with a continuous range (uniform, loguniform)."""
  if any(axis.kind in ("uniform", "loguniform") for axis in axes):
    return None
  return math.prod(int(axis.high - axis.low) + 1 if axis.kind else len(set(axis.values)) for axis in axes)


def _draw(axis: Axis, rng: random.Random) -> str:
  if axis.kind is None:
    return rng.choice(axis.values)
  if axis.kind == "randint":
    return str(rng.randint(int(axis.low), int(axis.high)))
  if axis.kind == "loguniform":
    return f"{math.exp(rng.uniform(math.log(axis.low), math.log(axis.high))):.4g}"
  return f"{rng.uniform(axis.low, axis.high):.4g}"  # Four significant digits: the trial's name is exact.


def config_of(base_flags: Sequence[str], overrides: dict[str, str]) -> Config:
  """The validated Config of base flags (`--name=value` lines) with `overrides`; raises UserError."""
  parsed = flags.FlagValues()
  cnn_flags.define_config_flags(parsed)
  try:
    parsed(["prog", *base_flags, *(f"--{name}={value}" for name, value in overrides.items())])
  except flags.Error as e:
    raise UserError(str(e).splitlines()[0]) from None
  return cnn_flags.config_from_flags(parsed)


def canonical(config: Config, names: Sequence[str]) -> dict[str, str]:
  """The flag text of `config`'s fields `names` as flags.txt writes them (1e-3 and 0.001 are one value)."""
  return {name: flag_text(getattr(config, name)) for name in names}
