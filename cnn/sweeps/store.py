"""The sweep directory: the stored definition, refusing a changed one, and which trials have finished.

<sweep_dir>/sweep.json holds the definition (the base flags, the --grid text, --random, --seed and
every trial's name and swept flags), base_flags.txt the flags every trial starts from, and each trial
is an ordinary run directory <sweep_dir>/<trial>, with its log in <sweep_dir>/logs/<trial>.log.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import re
from typing import Any, Iterator, Optional, Sequence

from cnn import run_dir as run_dir_lib
from cnn.config import RESUMABLE_FIELDS
from cnn.errors import UserError
from cnn.sweeps import space

DEFINITION_FILE = "sweep.json"
BASE_FLAGS_FILE = "base_flags.txt"
LOGS_DIR = "logs"
_LOCK_FILE = ".lock"
# Base flags a re-run may change: those a resumed run may change, but not its length (finished
# trials would keep the old one).
_CHANGEABLE = RESUMABLE_FIELDS - {"epochs", "train_steps"}


@dataclasses.dataclass(frozen=True)
class Trial:
  """One trial: its name (its run directory's) and its swept flags (name → flag text)."""
  name: str
  flags: dict[str, str]


def trial_name(index: int, flags: dict[str, str]) -> str:
  """`003-learning_rate=0.1,weight_decay=0.0001`: the number keeps names unique, the values say what it is."""
  text = re.sub(r"[^\w.=,+-]", "_", ",".join(f"{name}={value}" for name, value in flags.items()))
  return f"{index:03d}-{text[:120]}"


def run_dir(sweep_dir: str, trial: Trial) -> str:
  return os.path.join(sweep_dir, trial.name)


def log_path(sweep_dir: str, trial: Trial) -> str:
  return os.path.join(sweep_dir, LOGS_DIR, f"{trial.name}.log")


def started(sweep_dir: str, trial: Trial) -> bool:
  """Whether the trial's run has started (its flags.txt is written): running it again resumes it."""
  return os.path.isfile(os.path.join(run_dir(sweep_dir, trial), run_dir_lib.FLAGS_FILE))


def results(sweep_dir: str, trial: Trial) -> Optional[dict[str, Any]]:
  """The trial's results.json if it has finished (the file is written atomically, last), else None."""
  try:
    with open(os.path.join(run_dir(sweep_dir, trial), run_dir_lib.RESULTS_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def load(sweep_dir: str) -> Optional[dict[str, Any]]:
  """The stored definition; None for a missing or empty directory. Raises UserError for anything else."""
  if os.path.exists(sweep_dir) and not os.path.isdir(sweep_dir):
    raise UserError(f"--sweep_dir={sweep_dir} is a file, not a directory")
  if not (os.path.isdir(sweep_dir) and set(os.listdir(sweep_dir)) - {_LOCK_FILE}):
    return None
  path = os.path.join(sweep_dir, DEFINITION_FILE)
  if not os.path.isfile(path):
    raise UserError(f"--sweep_dir={sweep_dir} is not empty and holds no sweep (no {DEFINITION_FILE}); "
                    "choose another --sweep_dir")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {path}: {e}") from None


def name_trials(sweep_dir: str, base_flags: Sequence[str], trials_flags: Sequence[dict[str, str]],
                swept: Sequence[str]) -> list[Trial]:
  """The trials with their names: those of the stored sweep keep theirs, new ones are numbered after.

  Raises:
    UserError: if `sweep_dir` holds another sweep: other base flags (except those `_CHANGEABLE`
      or swept), or trials this definition lacks. A sweep may only add trials.
  """
  stored = load(sweep_dir)
  if stored is None:
    return [Trial(trial_name(i, flags), flags) for i, flags in enumerate(trials_flags)]
  refuse = f"--sweep_dir={sweep_dir} holds another sweep"
  advice = "a re-run may only add trials; choose another --sweep_dir"
  old_base = space.config_of(stored["base_flags"], {})
  new_base = space.config_of(base_flags, {})
  differences = [f"--{name}={getattr(new_base, name)} (it has {getattr(old_base, name)})"
                 for name in vars(new_base) if name not in _CHANGEABLE and name not in swept
                 and getattr(new_base, name) != getattr(old_base, name)]
  if differences:
    raise UserError(f"{refuse}, with other flags: {', '.join(differences)}; {advice}")
  old = [Trial(t["name"], t["flags"]) for t in stored["trials"]]
  missing = [t.name for t in old if t.flags not in trials_flags]
  if missing:
    raise UserError(f"{refuse}: {len(missing)} of its trials are not in this one ({', '.join(missing[:3])}"
                    f"{', ...' if len(missing) > 3 else ''}); {advice}")
  added = [flags for flags in trials_flags if flags not in [t.flags for t in old]]
  return old + [Trial(trial_name(len(old) + i, flags), flags) for i, flags in enumerate(added)]


def write(sweep_dir: str, base_flags: Sequence[str], trials: Sequence[Trial], **definition: Any) -> None:
  """Writes sweep.json (first, atomically: it marks the directory as a sweep's), base_flags.txt and logs/."""
  os.makedirs(sweep_dir, exist_ok=True)
  path = os.path.join(sweep_dir, DEFINITION_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump({**definition, "base_flags": list(base_flags),
               "trials": [{"name": t.name, "flags": t.flags} for t in trials]}, f, indent=2)
    f.write("\n")
  os.replace(path + ".tmp", path)
  with open(os.path.join(sweep_dir, BASE_FLAGS_FILE), "w") as f:
    f.write("\n".join(base_flags) + "\n")
  os.makedirs(os.path.join(sweep_dir, LOGS_DIR), exist_ok=True)


@contextlib.contextmanager
def locked(sweep_dir: str) -> Iterator[None]:
  """Holds `sweep_dir` for this process; raises UserError if another sweep process holds it.

  An OS lock (flock): it goes when its process dies, even by SIGKILL.
  """
  os.makedirs(sweep_dir, exist_ok=True)
  with open(os.path.join(sweep_dir, _LOCK_FILE), "w") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      raise UserError(f"another sweep is running in --sweep_dir={sweep_dir}; wait for it or stop it") from None
    yield
