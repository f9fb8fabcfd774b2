"""A whole sweep: plan and check every trial, store the definition, then run, print or write a Slurm script."""

import os
import shlex
import sys
from typing import Callable, Sequence

from cnn.config import Config
from cnn.errors import UserError
from cnn.sweeps import runner
from cnn.sweeps import slots as slots_lib
from cnn.sweeps import slurm
from cnn.sweeps import space
from cnn.sweeps import store
from cnn.sweeps import table as table_lib

# Set per trial by the sweep, so not part of the base flags.
_PER_TRIAL = ("--run_dir=", "--overwrite", "--nooverwrite")


def plan(base: Config, grid: str, num_random: int, seed: int,
         sweep_dir: str) -> tuple[list[str], list[store.Trial], list[str]]:
  """Checks the sweep without writing anything.

  Returns:
    The base flags (flagfile lines), the trials (named as `sweep_dir` has them, new ones after) and
    the swept flag names.

  Raises:
    UserError: for a bad --grid, a trial whose flags fail validation (naming it), or a sweep
      directory that holds something else or another sweep.
  """
  axes = space.parse_grid(grid)
  swept = [axis.name for axis in axes]
  base_flags = [line for line in base.to_flagfile().splitlines() if not line.startswith(_PER_TRIAL)]
  trials_flags = []
  for i, flags in enumerate(space.trial_flags(axes, num_random, seed)):
    try:
      config = space.config_of(base_flags, flags)
    except UserError as e:
      values = ", ".join(f"{name}={value}" for name, value in flags.items())
      raise UserError(f"trial {i} ({values}): {e}") from None
    canonical = space.canonical(config, swept)
    if canonical not in trials_flags:  # E.g. 1e-3 and 0.001.
      trials_flags.append(canonical)
    if len(trials_flags) == num_random:
      break
  if len(trials_flags) < num_random:  # Values equal as flags made the grid smaller than it reads.
    raise UserError(f"--random={num_random}: only {len(trials_flags)} distinct trials in "
                    f"{space.draw_budget(num_random)} draws (values equal as flags, such as 1e-3 and 0.001, "
                    "count once); ask for fewer")
  return base_flags, store.name_trials(sweep_dir, base_flags, trials_flags, swept), swept


def run_sweep(base: Config, grid: str, num_random: int, seed: int, sweep_dir: str, parallel: int,
              metric: str, print_commands: bool = False, slurm_script: str = "",
              echo: Callable[[str], None] = print) -> None:
  """Runs the sweep: skips finished trials, resumes interrupted ones, starts the rest, K at a time.

  With `print_commands` or `slurm_script`, stores the definition and prints the trials' commands or
  writes a Slurm job-array script instead of running anything.

  Raises:
    UserError: bad input (see `plan`), or trials that failed (after the table is written).
    Interrupted: on SIGTERM/SIGINT, once the running trials have saved and stopped.
  """
  if parallel < 1:
    raise UserError(f"--parallel={parallel} must be at least 1")
  if num_random < 0:
    raise UserError(f"--random={num_random} must be at least 0 (0: the whole grid)")
  base_flags, trials, swept = plan(base, grid, num_random, seed, sweep_dir)
  with store.locked(sweep_dir):
    store.write(sweep_dir, base_flags, trials, grid=grid, random=num_random, seed=seed)
    if print_commands:
      for trial in trials:
        echo(shlex.join(runner.command(sweep_dir, trial)))
      return
    if slurm_script:
      slurm.write(slurm_script, slurm.script(sweep_dir, trials, parallel, os.getcwd(), sys.executable))
      echo(f"wrote {slurm_script} ({len(trials)} trials, {parallel} at a time): sbatch {shlex.quote(slurm_script)}")
      return
    slots, note = slots_lib.make_slots(parallel)
    if note:
      echo(note)
    failures = _run(sweep_dir, trials, slots, echo)
    _results(sweep_dir, trials, swept, failures, metric, echo)
  if failures:
    listed = "; ".join(f"{name} ({what})" for name, what in failures.items())
    raise UserError(f"{len(failures)} of {len(trials)} trials failed: {listed}. Their logs are in "
                    f"{os.path.join(sweep_dir, store.LOGS_DIR)}; re-run the same command to retry them")


def _run(sweep_dir: str, trials: Sequence[store.Trial], slots: Sequence[slots_lib.Slot],
         echo: Callable[[str], None]) -> dict[str, str]:
  todo = [t for t in trials if store.results(sweep_dir, t) is None]
  started = [t for t in todo if store.started(sweep_dir, t)]
  trials_text = f"{len(trials)} trial{'' if len(trials) == 1 else 's'}"
  echo(f"sweep {sweep_dir}: {trials_text}: {len(trials) - len(todo)} finished (skipped), "
       f"{len(started)} to resume, {len(todo) - len(started)} to start; {len(slots)} at a time")
  return runner.run_trials(sweep_dir, todo, slots, echo)


def _results(sweep_dir: str, trials: Sequence[store.Trial], swept: Sequence[str], failures: dict[str, str],
             metric: str, echo: Callable[[str], None]) -> None:
  rows = table_lib.rows(sweep_dir, trials, failures)
  table_lib.write(sweep_dir, rows, metric)  # Unsorted first: an unknown --metric loses nothing.
  rows = table_lib.sort(rows, metric)
  table_lib.write(sweep_dir, rows, metric)
  order = "lowest" if table_lib.lower_is_better(metric) else "highest"
  echo(f"\nResults by {metric} ({order} first); all columns in "
       f"{os.path.join(sweep_dir, table_lib.CSV_FILE)} and {table_lib.JSON_FILE}:\n"
       f"{table_lib.format_table(rows, swept, metric)}")
