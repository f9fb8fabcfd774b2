"""One unit for every cadence and duration: steps, epochs or a fraction of the run (big_vision's `steps()`).

A duration is text: `500` (steps, a whole number), `2ep` or `2.5ep` (epochs), `0.25run` (a fraction
of the run's length, at most 1); `0` is none. It becomes a step count once the run knows its steps
per epoch and its length (`Duration.steps`). Each duration flag (`DURATION_FLAGS`) replaces per-unit
flags that stay as its aliases, so recipes and old runs' flags.txt keep their meaning: the duration
flag wins when given, else the alias says it (`--eval_every` else `--eval_every_steps` if positive,
else `--eval_every_epochs`).
"""

import dataclasses
import re
from typing import Any

from cnn.errors import UserError

# Each duration flag and its per-unit aliases, in the order they are read: (flag, unit).
DURATION_FLAGS = {
    "log_every": [("log_every_steps", "steps")],
    "checkpoint_every": [("checkpoint_every_steps", "steps")],
    "histogram_every": [("histogram_every_steps", "steps")],
    "eval_every": [("eval_every_steps", "steps"), ("eval_every_epochs", "epochs")],
    "lr_warmup": [("lr_warmup_epochs", "epochs")],
    "lr_hold": [("lr_hold_epochs", "epochs")],
    "freeze_after": [("freeze_after_epochs", "epochs")],
}
_SUFFIXES = {"": "steps", "ep": "epochs", "run": "run"}
_SYNTAX = "STEPS (500), EPOCHS with ep (2ep, 2.5ep) or a fraction of the run with run (0.25run)"


@dataclasses.dataclass(frozen=True)
class Duration:
  """A number of steps, epochs or a fraction of the run; `flag` is how it was given (for errors)."""
  value: float
  unit: str  # steps, epochs or run.
  flag: str = ""  # E.g. --lr_warmup=2ep or --lr_warmup_epochs=2.0.

  @property
  def flag_name(self) -> str:
    """`--lr_warmup` of `--lr_warmup=2ep`."""
    return self.flag.split("=")[0]

  def steps(self, steps_per_epoch: int, total_steps: int) -> int:
    """The duration in steps, rounded to the nearest step."""
    if self.unit == "epochs":
      return round(self.value * steps_per_epoch)
    if self.unit == "run":
      return round(self.value * total_steps)
    return int(self.value)

  def __str__(self) -> str:
    """The canonical text: `500`, `2.5ep`, `0.25run`; `0` for none."""
    if not self.value:
      return "0"
    number = f"{self.value:.10f}".rstrip("0").rstrip(".")  # 2.5, 0.0001: never 1e-04, which is no duration.
    return number + {"steps": "", "epochs": "ep", "run": "run"}[self.unit]


def parse(text: str, flag: str = "duration") -> Duration:
  """`text` as a Duration. Raises UserError in one line naming `flag`."""
  match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ep|run)?\s*", text)
  if not match:
    raise UserError(f"--{flag}={text} is not a duration: give {_SYNTAX}")
  value, unit = float(match.group(1)), _SUFFIXES[match.group(2) or ""]
  if unit == "steps" and not value.is_integer():
    raise UserError(f"--{flag}={text}: steps are whole numbers (for epochs write {match.group(1)}ep)")
  if unit == "run" and value > 1:
    raise UserError(f"--{flag}={text}: a fraction of the run is at most 1run")
  return Duration(value, unit, f"--{flag}={text}")


def of(config: Any, name: str) -> Duration:
  """The duration `config` gives `name` (a key of DURATION_FLAGS): its own flag, else its per-unit alias."""
  if getattr(config, name):
    return parse(getattr(config, name), name)
  aliases = DURATION_FLAGS[name]
  for alias, unit in aliases:
    value = getattr(config, alias)
    if value or alias == aliases[-1][0]:
      return Duration(float(value), unit, f"--{alias}={value}")
  raise AssertionError("unreachable: the last alias always answers")


def steps(config: Any, name: str, steps_per_epoch: int, total_steps: int, at_least_one: bool = False) -> int:
  """`name`'s duration in steps (`of`). With `at_least_one` (a cadence), a positive duration is at least
  one step and none is refused."""
  duration = of(config, name)
  count = duration.steps(steps_per_epoch, total_steps)
  if at_least_one:
    if not duration.value:
      raise UserError(f"{duration.flag}: needs a positive duration ({_SYNTAX})")
    return max(1, count)
  return count


_NEVER_NONE = ("log_every", "eval_every")  # Cadences that cannot be off.


def check(config: Any) -> None:
  """Parses every duration flag `config` gives; a bad one, or none where a cadence cannot be off, is a
  UserError naming it."""
  for name in DURATION_FLAGS:
    duration = of(config, name)
    if name in _NEVER_NONE and not duration.value:
      raise UserError(f"{duration.flag}: needs a positive duration ({_SYNTAX})")


def effective_texts(config: Any) -> dict[str, str]:
  """Each duration flag's canonical text, whichever flag gave it (compares a run with its flags.txt)."""
  return {name: str(of(config, name)) for name in DURATION_FLAGS}


def aliases() -> set[str]:
  """The per-unit flags that duration flags replace."""
  return {alias for flags in DURATION_FLAGS.values() for alias, _ in flags}


@dataclasses.dataclass(frozen=True)
class Cadence:
  """Steps between progress lines, checkpoints (0: at epoch ends only), histograms (0: none) and evaluations."""
  log_every: int
  checkpoint_every: int
  histogram_every: int
  eval_every: int


def cadence(config: Any, steps_per_epoch: int, total_steps: int) -> Cadence:
  """The run's cadences in steps: --log_every, --checkpoint_every, --histogram_every, --eval_every."""
  def of_steps(name: str, at_least_one: bool) -> int:
    return steps(config, name, steps_per_epoch, total_steps, at_least_one)

  checkpoint_every = of(config, "checkpoint_every")
  histogram_every = of(config, "histogram_every")
  return Cadence(
      log_every=of_steps("log_every", True),
      checkpoint_every=of_steps("checkpoint_every", True) if checkpoint_every.value else 0,
      histogram_every=of_steps("histogram_every", True) if histogram_every.value else 0,
      eval_every=of_steps("eval_every", True))
