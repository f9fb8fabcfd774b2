"""A Slurm job-array script for a sweep: array task i runs trial i, skipping it if it has finished.

Submitted with `sbatch <script>`; resubmitting it resumes the sweep as re-running `cnn.sweep` does
(finished trials exit at once, interrupted ones resume from their checkpoints).
"""

import os
import shlex
from typing import Sequence

from cnn import run_dir as run_dir_lib
from cnn.sweeps import runner
from cnn.sweeps import store


def script(sweep_dir: str, trials: Sequence[store.Trial], parallel: int, workdir: str, python: str) -> str:
  """The job-array script's text (bash): `parallel` array tasks at a time, one trial each."""
  name = os.path.basename(os.path.normpath(sweep_dir)) or "sweep"
  logs = os.path.join(os.path.abspath(sweep_dir), store.LOGS_DIR)
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={shlex.quote(name)}",
      f"#SBATCH --array=0-{len(trials) - 1}%{parallel}",
      f"#SBATCH --output={logs}/slurm-%A_%a.log",
      "#SBATCH --ntasks=1",
      "# Add your cluster's resources, e.g.: #SBATCH --gres=gpu:1 --cpus-per-task=8 --time=04:00:00",
      f"# Written by cnn.sweep for {len(trials)} trials; `sbatch` this file, again to resume.",
      "set -euo pipefail",
      f"cd {shlex.quote(workdir)}",
      f"PYTHON=${{PYTHON:-{shlex.quote(python)}}}",
      'case "$SLURM_ARRAY_TASK_ID" in',
  ]
  for i, trial in enumerate(trials):
    run_dir = store.run_dir(sweep_dir, trial)
    results = shlex.quote(os.path.join(run_dir, run_dir_lib.RESULTS_FILE))
    argv = shlex.join(runner.command(sweep_dir, trial, python="PYTHON")[1:])
    lines += [f"  {i})  # {trial.name}",
              f'    [ -f {results} ] && {{ echo "finished already: {trial.name}"; exit 0; }}',
              f'    exec "$PYTHON" {argv} ;;']
  lines += ['  *) echo "no trial $SLURM_ARRAY_TASK_ID in this sweep" >&2; exit 2 ;;', "esac", ""]
  return "\n".join(lines)


def write(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)
  os.chmod(path, 0o755)
