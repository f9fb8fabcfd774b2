"""The train loop's owner (Orbit's trainer): what one call of the compiled loop does.

`TrainLoop.train(num_steps)` runs the next `num_steps` steps over its iterator in one call of the
compiled loop (cnn/steps.py) and returns the last step's outputs; with `histograms=True` the loop
also keeps the applied gradients, and the weight and gradient histograms are written after it. When to call it, and with how many
steps, is the controller's business (cnn/controller.py).
"""

from typing import Iterator, Optional

import tensorflow as tf

from cnn import steps
from cnn import summaries


class Trainer:
  """The compiled train loop over an iterator, its metrics, and its histograms and their writer.

  Args:
    loop: the compiled loop (`steps.make_train_loop`).
    iterator: the distributed training batches, positioned at `step`.
    metrics: the running train metrics the loop updates.
    writer: where the histograms go (a no-op writer on non-chief workers).
    step: the number of steps already taken (a resumed run's restored step).
    histograms: what the loop records on histogram steps (`record` is the loop's gradient summary).
  """

  def __init__(self, loop: steps.TrainLoop, iterator: Iterator, metrics: steps.Metrics,
               writer: tf.summary.SummaryWriter, step: int = 0,
               histograms: Optional[summaries.GradientHistograms] = None):
    self.loop, self.iterator, self.metrics, self.writer = loop, iterator, metrics, writer
    self.step, self.histograms = step, histograms

  def train(self, num_steps: int, histograms: bool = False) -> dict[str, tf.Tensor]:
    """Runs steps step+1 … step+num_steps; returns the last one's `loss`, `gradient_norm`, `learning_rate`."""
    histograms = histograms and self.histograms is not None
    outputs = self.loop(self.iterator, num_steps, self.step, histograms)
    self.step += num_steps
    if histograms:
      self.histograms.write(self.writer, self.step)
    return outputs

