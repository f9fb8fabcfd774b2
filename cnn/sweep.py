"""Runs a sweep of training runs: `python -m cnn.sweep --flagfile=experiments/cifar10_tutorial.cfg
--sweep_dir=runs/lr-wd --grid='learning_rate=3e-4,1e-3;weight_decay=0,1e-4' [--random=N] [--parallel=K]`.

Every training flag sets every trial (as for `cnn.train`); `--grid` names the swept ones. Each trial is
an ordinary `python -m cnn.train` run in <sweep_dir>/<trial>. The logic is in `cnn/sweeps/`.
"""

from typing import Sequence

from absl import flags as absl_flags

from cnn import cli
from cnn import flags
from cnn.errors import UserError
from cnn.sweeps import driver

flags.define_config_flags()
_FLAGS = absl_flags.FLAGS
cli.define_flag(absl_flags.DEFINE_string, "sweep_dir", "", "Directory of the sweep: one run directory per "
                "trial, the definition (sweep.json), the results table (results.csv, results.json).")
cli.define_flag(absl_flags.DEFINE_string, "grid", "", "The swept flags: name=v1,v2;name2=... (`|` separates "
                "values that hold commas, e.g. conv_filters=32,64|64,128). With --random, a flag may also be "
                "a range: uniform(A,B), loguniform(A,B) or randint(A,B).")
cli.define_flag(absl_flags.DEFINE_integer, "random", 0, "Random search: draw this many trials from --grid "
                "with --seed (0: every combination of the grid).")
cli.define_flag(absl_flags.DEFINE_integer, "parallel", 1, "Trials run at once, each on its share of the "
                "machine (clamped to the CPU cores, or the GPUs).")
cli.define_flag(absl_flags.DEFINE_string, "metric", "eval_accuracy", "results.json entry to sort the table "
                "by (costs: losses, seconds, memory, retraces, steps to the target: lowest first; others "
                "highest first).")
cli.define_flag(absl_flags.DEFINE_boolean, "print_commands", False, "Print each trial's command instead "
                "of running them.")
cli.define_flag(absl_flags.DEFINE_string, "slurm_script", "", "Write a Slurm job-array script to this path "
                "(one array task per trial, --parallel at a time) instead of running the trials.")


def main(argv: Sequence[str]) -> None:
  del argv  # Unused: cli.run rejects positional arguments.
  for name in ("run_dir", "overwrite"):
    if _FLAGS[name].present:
      raise UserError(f"--{name} has no meaning in a sweep: each trial runs in <sweep_dir>/<trial>")
  driver.run_sweep(flags.config_from_flags(), grid=cli.required("grid"), num_random=_FLAGS.random,
                   seed=_FLAGS.seed, sweep_dir=cli.required("sweep_dir"), parallel=_FLAGS.parallel,
                   metric=_FLAGS.metric, print_commands=_FLAGS.print_commands,
                   slurm_script=_FLAGS.slurm_script)


if __name__ == "__main__":
  cli.run(main)
