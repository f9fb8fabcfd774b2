"""TensorBoard summaries: one writer for <run_dir>/train and one for <run_dir>/eval."""

import os
from typing import Optional

import tensorflow as tf


class Writers:
  """The run's summary writers. Scalars are written from Python, outside any tf.function.

  Args:
    run_dir: the run directory; None for writers that discard everything (a non-chief worker).
  """

  def __init__(self, run_dir: Optional[str]):
    if run_dir is None:
      self.train = self.eval = tf.summary.create_noop_writer()
    else:
      self.train = tf.summary.create_file_writer(os.path.join(run_dir, "train"))
      self.eval = tf.summary.create_file_writer(os.path.join(run_dir, "eval"))

  @staticmethod
  def scalars(writer: tf.summary.SummaryWriter, values: dict[str, float], step: int) -> None:
    with writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)

  def flush(self) -> None:
    self.train.flush()
    self.eval.flush()

  def close(self) -> None:
    self.train.close()
    self.eval.close()
