"""The run directory: what a run writes besides its event files, and guarding one in use."""

import datetime
import itertools
import json
import os
import shutil
from typing import Any, Optional

from absl import flags

from cnn import durations
from cnn import flags as cnn_flags
from cnn.config import Config
from cnn.errors import UserError

FLAGS_FILE = "flags.txt"
RESULTS_FILE = "results.json"


def default_run_dir(config: Config) -> str:
  """Creates and returns a new runs/<dataset>-<model>-<YYYYmmdd-HHMMSS>.

  Runs started in the same second (a shell loop over seeds) get `-2`, `-3`, …: the directory is
  claimed by creating it, so two processes never share one.
  """
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  dataset = config.dataset
  if dataset.startswith("folder:"):  # folder:PATH → the folder's name
    dataset = os.path.basename(os.path.abspath(dataset[len("folder:"):]))
  base = os.path.join("runs", f"{dataset}-{config.model}-{stamp}")
  for n in itertools.count(1):
    path = base if n == 1 else f"{base}-{n}"
    try:
      os.makedirs(path)  # Atomic: fails if another run has it.
      return path
    except FileExistsError:
      continue


def check(run_dir: str, config: Config) -> bool:
  """Raises UserError unless a run may start or resume in `run_dir`; returns whether it resumes.

  A run starts in a missing or empty directory, or, with `config.overwrite`, in one that holds a
  run (has a flags.txt). Without `--overwrite`, a directory that holds a run resumes it if its
  flags.txt matches `config` in every field that changes the run (`config.RESUMABLE_FIELDS` may
  differ); otherwise the differing flags are named. Nothing else is ever deleted, so a mistyped
  --run_dir with --overwrite cannot wipe unrelated files.
  """
  if os.path.exists(run_dir) and not os.path.isdir(run_dir):
    raise UserError(f"--run_dir={run_dir} is a file, not a directory")
  if not (os.path.isdir(run_dir) and os.listdir(run_dir)):
    return False
  if not os.path.exists(os.path.join(run_dir, FLAGS_FILE)):
    raise UserError(f"--run_dir={run_dir} is not empty and holds no run; choose another --run_dir")
  if config.overwrite:
    return False
  differences = config.differences(read_config(run_dir))
  if differences:
    raise UserError(f"--run_dir={run_dir} holds a run with other settings: {', '.join(differences)}; "
                    f"resume it with --flagfile={os.path.join(run_dir, FLAGS_FILE)}, choose another "
                    "--run_dir, or pass --overwrite to delete it and start afresh")
  return True


def read_config(run_dir: str) -> Config:
  """The `Config` of the run in `run_dir`, from its flags.txt. Raises UserError."""
  path = os.path.join(run_dir, FLAGS_FILE)
  if not os.path.isfile(path):
    what = "does not exist" if not os.path.exists(run_dir) else f"holds no run (no {FLAGS_FILE})"
    raise UserError(f"--run_dir={run_dir} {what}")
  try:
    return cnn_flags.config_from_flagfile(path)
  except (flags.Error, UserError) as e:
    raise UserError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


def prepare(run_dir: str, overwrite: bool) -> None:
  """Creates `run_dir` after `check`; with `overwrite`, deletes the run it holds first (checkpoints too)."""
  if overwrite and os.path.isfile(os.path.join(run_dir, FLAGS_FILE)):  # Only ever a run.
    shutil.rmtree(run_dir)
  os.makedirs(run_dir, exist_ok=True)


def finished_results(run_dir: str, config: Config) -> Optional[dict[str, Any]]:
  """The results.json of the run in `run_dir` if it has trained `config`'s length already, else None."""
  path = os.path.join(run_dir, RESULTS_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    results = json.load(f)  # Written atomically: never half a file.
  steps_per_epoch = round(results["steps"] / results["epochs"])  # results.json has epochs = steps / that.
  return results if results["steps"] >= length_in_steps(config, steps_per_epoch) else None


def length_in_steps(config: Config, steps_per_epoch: int) -> int:
  """The run's length: --train_steps, or --epochs of `steps_per_epoch`."""
  return config.train_steps or config.epochs * steps_per_epoch


def length_dependencies(config: Config) -> list[str]:
  """The settings whose effect is spread over the run's length (they fix it at the start)."""
  dependencies = []
  if config.lr_schedule in ("cosine", "linear"):
    dependencies.append(f"--lr_schedule={config.lr_schedule} decays over it")
  if config.lookahead_every:
    dependencies.append("--lookahead_every ramps its decay over it and ends with the slow weights")
  for name in ("lr_warmup", "lr_hold", "freeze_after"):  # A fraction of the run (0.1run) is a share of it.
    duration = durations.of(config, name)
    if duration.unit == "run" and duration.value:
      dependencies.append(f"{duration.flag} is a fraction of it")
  return dependencies


def check_length(run_dir: str, config: Config, steps_per_epoch: int) -> None:
  """Raises UserError if resuming the run in `run_dir` changes its length while its schedule depends on it."""
  before = length_in_steps(read_config(run_dir), steps_per_epoch)
  now = length_in_steps(config, steps_per_epoch)
  dependencies = length_dependencies(config)
  if now != before and dependencies:
    raise UserError(f"--run_dir={run_dir} is a run of {before} steps and cannot be resumed as one of {now}: "
                    f"{'; '.join(dependencies)}; resume it with its own --train_steps/--epochs, or start "
                    "afresh (another --run_dir, or --overwrite)")


def write_flags(run_dir: str, config: Config) -> None:
  """flags.txt: a flagfile that reproduces the run (written atomically, as on resume it replaces one)."""
  _write_atomically(os.path.join(run_dir, FLAGS_FILE), config.to_flagfile())


def write_results(run_dir: str, results: dict[str, Any]) -> None:
  """results.json, written atomically so a crash never leaves half a file."""
  _write_atomically(os.path.join(run_dir, RESULTS_FILE), json.dumps(results, indent=2, sort_keys=True) + "\n")


def _write_atomically(path: str, text: str) -> None:
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
