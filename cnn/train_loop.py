"""The train loop's owner (Orbit's trainer): what one call of the compiled loop does.

`TrainLoop.train(num_steps)` runs the next `num_steps` steps over its iterator in one call of the
compiled loop (cnn/steps.py) and returns the last step's outputs; with `histograms=True` the same
compiled loop also writes weight and gradient histograms. When to call it, and with how many
steps, is the controller's business (cnn/controller.py).
"""

from typing import Iterator

import tensorflow as tf

from cnn import steps


class TrainLoop:
  """The compiled train loop over an iterator, its metrics and the writer its histograms go to.

  Args:
    loop: the compiled loop (`steps.make_train_loop`).
    iterator: the distributed training batches, positioned at `step`.
    metrics: the running train metrics the loop updates.
    writer: the default writer while the loop runs (its histograms, when asked for).
    step: the number of steps already taken (a resumed run's restored step).
  """

  def __init__(self, loop: steps.TrainLoop, iterator: Iterator, metrics: steps.Metrics,
               writer: tf.summary.SummaryWriter, step: int = 0):
    self.loop, self.iterator, self.metrics, self.writer = loop, iterator, metrics, writer
    self.step = step

  def train(self, num_steps: int, histograms: bool = False) -> dict[str, tf.Tensor]:
    """Runs steps step+1 … step+num_steps; returns the last one's `loss` and `gradient_norm`."""
    with self.writer.as_default():  # Where the first call traces the histograms to (a no-op writer: nowhere).
      outputs = self.loop(self.iterator, num_steps, self.step, histograms)
    self.step += num_steps
    return outputs

