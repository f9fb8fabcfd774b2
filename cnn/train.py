"""Trains a classifier: `python -m cnn.train --flagfile=experiments/cifar10_tutorial.cfg`.

The entry point only defines flags and calls the library; the training logic is in
`cnn/training/run.py`, and every flag is a field of `cnn.config.Config`.
"""

from typing import Sequence

from cnn import cli
from cnn import flags
from cnn.training import run

flags.define_config_flags()


def main(argv: Sequence[str]) -> None:
  del argv  # Unused: cli.run rejects positional arguments.
  run.train_and_evaluate(flags.config_from_flags())


if __name__ == "__main__":
  cli.run(main)
