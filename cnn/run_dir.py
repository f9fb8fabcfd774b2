"""The run directory: what a run writes besides its event files, and guarding one in use."""

import datetime
import json
import os
import shutil
from typing import Any

from cnn.config import Config
from cnn.errors import UserError

FLAGS_FILE = "flags.txt"
RESULTS_FILE = "results.json"


def default_run_dir(config: Config) -> str:
  """runs/<dataset>-<model>-<YYYYmmdd-HHMMSS>."""
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  dataset = config.dataset
  if dataset.startswith("folder:"):  # folder:PATH → the folder's name
    dataset = os.path.basename(os.path.abspath(dataset[len("folder:"):]))
  return os.path.join("runs", f"{dataset}-{config.model}-{stamp}")


def check(run_dir: str, overwrite: bool) -> None:
  """Raises UserError unless `prepare(run_dir, overwrite)` may go ahead.

  A run may start in a missing or empty directory, or, with `overwrite`, in one that holds
  a run (has a flags.txt). Nothing else is ever deleted, so a mistyped --run_dir with
  --overwrite cannot wipe unrelated files.
  """
  if os.path.exists(run_dir) and not os.path.isdir(run_dir):
    raise UserError(f"--run_dir={run_dir} is a file, not a directory")
  if os.path.isdir(run_dir) and os.listdir(run_dir):
    if not os.path.exists(os.path.join(run_dir, FLAGS_FILE)):
      raise UserError(f"--run_dir={run_dir} is not empty and holds no run; choose another --run_dir")
    if not overwrite:
      raise UserError(f"--run_dir={run_dir} already holds a run; choose another --run_dir, "
                      "or pass --overwrite to delete it and start afresh")


def prepare(run_dir: str, overwrite: bool) -> None:
  """Creates `run_dir` after `check`; with `overwrite`, deletes the run it holds first."""
  check(run_dir, overwrite)
  if overwrite and os.path.isdir(run_dir) and os.listdir(run_dir):
    shutil.rmtree(run_dir)
  os.makedirs(run_dir, exist_ok=True)


def write_flags(run_dir: str, config: Config) -> None:
  """flags.txt: a flagfile that reproduces the run."""
  with open(os.path.join(run_dir, FLAGS_FILE), "w") as f:
    f.write(config.to_flagfile())


def write_results(run_dir: str, results: dict[str, Any]) -> None:
  """results.json, written atomically so a crash never leaves half a file."""
  path = os.path.join(run_dir, RESULTS_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(path + ".tmp", path)
