"""Actions: small things a run does after a train loop call or after an evaluation.

The controller (cnn/controller.py) runs `step_actions` after every call of the train loop, before
any checkpoint is saved, and `eval_actions` after every evaluation (--eval_every_steps), each in
list order. A new action is a class (or function) with the same call signature, added to the list in
`cnn/trainer.py`.
"""

import dataclasses
import os
from typing import Any, Callable, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from cnn import checkpoints
from cnn import eval_sets
from cnn import evaluator as evaluator_lib
from cnn import guard
from cnn import metrics_csv
from cnn import summaries
from cnn.config import Config


@dataclasses.dataclass
class EvalEvent:
  """What an eval action sees: the evaluation after `step` (in `epoch`), `seconds` after training started.

  `results` and `outputs` are --eval_split's with the weights the run reports (the averages under
  --ema_decay); `passes` are every eval set's with every set of weights, and `metrics` all their
  results by name (`eval/accuracy`, `eval_ema/top5_accuracy`, `val/loss`: cnn/eval_sets.py).
  """
  step: int
  epoch: int
  results: dict[str, float]  # Mean loss and accuracy (and top-k accuracy).
  outputs: dict[str, np.ndarray]  # Each example's predictions and confidence, in split order.
  seconds: float
  passes: list[evaluator_lib.Pass] = dataclasses.field(default_factory=list)
  metrics: dict[str, float] = dataclasses.field(default_factory=dict)
  train_seconds: float = 0.0  # Of `seconds`, those not spent in evaluations.


StepAction = Callable[[int, dict[str, tf.Tensor]], None]  # action(step, train loop outputs)
EvalAction = Callable[[EvalEvent], None]


class NanGuard:
  """Stops the run at a non-finite loss or gradient norm (cnn/guard.py), before anything is saved."""

  def __init__(self, checkpointer: checkpoints.Checkpointer, optimizer: tf.keras.optimizers.Optimizer):
    self.checkpointer, self.optimizer = checkpointer, optimizer

  def __call__(self, step: int, outputs: dict[str, tf.Tensor]) -> None:
    guard.check(step, outputs, self.checkpointer.describe_last(), self.optimizer)


class EvalSummaries:
  """Each pass's scalars in its own directory (`eval/`, `eval_ema/`, `val/`: side by side in TensorBoard);
  the confusion matrix and misclassified-image grid of each set's reported weights."""

  def __init__(self, writers: summaries.Writers, run_dir: Optional[str], class_names: list[str], config: Config):
    """`run_dir`: where the writers of the other passes write; None on workers that write no summaries."""
    self.run_dir, self.class_names, self.config = run_dir, class_names, config
    self.writers = {eval_sets.PRIMARY: writers.eval}
    self.owned: list[tf.summary.SummaryWriter] = []  # The writers made here, closed here.

  def writer(self, prefix: str) -> tf.summary.SummaryWriter:
    if prefix not in self.writers:
      self.writers[prefix] = (tf.summary.create_file_writer(os.path.join(self.run_dir, prefix)) if self.run_dir
                              else tf.summary.create_noop_writer())
      self.owned.append(self.writers[prefix])
    return self.writers[prefix]

  def __call__(self, event: EvalEvent) -> None:
    for eval_pass in event.passes:
      writer = self.writer(eval_pass.prefix)
      summaries.Writers.scalars(writer, eval_pass.results, event.step)
      if eval_pass.reported:
        summaries.write_eval(writer, event.step, eval_pass.split, eval_pass.outputs["predictions"],
                             eval_pass.outputs["confidence"], self.class_names, self.config)
      writer.flush()

  def close(self) -> None:
    for writer in self.owned:
      writer.close()


class SaveCheckpoints:
  """Keeps the checkpoint among the best if its `metric` is (cnn/checkpoints.py), and saves the latest."""

  def __init__(self, checkpointer: checkpoints.Checkpointer, metric: str):
    self.checkpointer, self.metric = checkpointer, metric

  def __call__(self, event: EvalEvent) -> None:
    self.checkpointer.after_eval(event.step, event.epoch, event.metrics[self.metric])


class WriteMetricsCsv:
  """A row of metrics.csv per evaluation (cnn/metrics_csv.py): step, epoch (fractional), every metric."""

  def __init__(self, table: metrics_csv.MetricsCsv, steps_per_epoch: int):
    self.table, self.steps_per_epoch = table, steps_per_epoch

  def __call__(self, event: EvalEvent) -> None:
    self.table.write(event.step, event.step / self.steps_per_epoch, event.metrics)


class TimeToAccuracy:
  """Wall seconds and steps at which eval accuracy first reached `target` (0: off): an eval action,
  and its `results()` go into results.json."""

  def __init__(self, target: float):
    self.target = target
    self.seconds: Optional[float] = None
    self.steps: Optional[int] = None

  def update(self, accuracy: float, step: int, seconds: float) -> bool:
    """Records the first (step, seconds) with accuracy ≥ target; returns True at that moment."""
    if not self.target or self.steps is not None or accuracy < self.target:
      return False
    self.seconds, self.steps = seconds, step
    return True

  def results(self) -> dict[str, Any]:
    if not self.target:
      return {}
    return {"target_accuracy": self.target, "time_to_accuracy_seconds": self.seconds,
            "time_to_accuracy_steps": self.steps}

  def __call__(self, event: EvalEvent) -> None:
    if self.update(event.results["accuracy"], event.step, event.seconds):
      logging.info("target accuracy %.4f reached at step %d, %.1f s after training started", self.target,
                   event.step, self.seconds)
