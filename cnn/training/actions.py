"""Actions: small things a run does after a train loop call or after an evaluation.

The controller (cnn/training/controller.py) runs `step_actions` after every call of the train loop, before
any checkpoint is saved, and `eval_actions` after every evaluation (--eval_every), each in
list order. A new action is a class (or function) with the same call signature, added to the list in
`cnn/training/run.py`.
"""

import dataclasses
import os
import time
from typing import Any, Callable, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from cnn import checkpoints
from cnn import summaries
from cnn.config import Config
from cnn.training import eval_sets
from cnn.training import evaluator as evaluator_lib
from cnn.training import guard
from cnn.training import metrics_csv


@dataclasses.dataclass
class EvalEvent:
  """What an eval action sees: the evaluation after `step` (in `epoch`), `seconds` after training started.

  `results` and `outputs` are --eval_split's with the weights the run reports (the averages under
  --ema_decay); `passes` are every eval set's with every set of weights, and `metrics` all their
  results by name (`eval/accuracy`, `eval_ema/top5_accuracy`, `val/loss`: cnn/training/eval_sets.py).
  """
  step: int
  epoch: int
  results: dict[str, float]  # Mean loss and accuracy (and top-k accuracy).
  outputs: dict[str, np.ndarray]  # Each example's predictions and confidence, in split order.
  seconds: float
  passes: list[evaluator_lib.Pass] = dataclasses.field(default_factory=list)
  metrics: dict[str, float] = dataclasses.field(default_factory=dict)


StepAction = Callable[[int, dict[str, tf.Tensor]], None]  # action(step, train loop outputs)
EvalAction = Callable[[EvalEvent], None]


class NanGuard:
  """Stops the run at a non-finite loss or gradient norm (cnn/training/guard.py), before anything is saved."""

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
  """A row of metrics.csv per evaluation (cnn/training/metrics_csv.py): step, epoch (fractional), every metric."""

  def __init__(self, table: metrics_csv.MetricsCsv, steps_per_epoch: int):
    self.table, self.steps_per_epoch = table, steps_per_epoch

  def __call__(self, event: EvalEvent) -> None:
    self.table.write(event.step, event.step / self.steps_per_epoch, event.metrics)


class TimeToAccuracy:
  """Training seconds and steps at which eval accuracy first reached `target` (0: off).

  Training time only, as the controller's `train_seconds`: the time from the start (or the end of
  the last eval) to the end of each train loop call, counted by `after_step` (a step action);
  evaluation is not. The count and the target's step and seconds are `variables()`, in the
  checkpoint's run state, so a resumed run counts on from where it stopped and keeps a target it had
  reached. An eval action (before the checkpoint is saved), whose `results()` go into results.json.
  """

  def __init__(self, target: float):
    self.target = target
    self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
    self.steps = tf.Variable(-1, dtype=tf.int64, trainable=False, name="time_to_accuracy_steps")  # -1: not yet.
    self.seconds = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="time_to_accuracy_seconds")
    self._since = time.perf_counter()

  def variables(self) -> dict[str, tf.Variable]:
    """The state a checkpoint carries across resumes."""
    return {"train_seconds": self.train_seconds, "time_to_accuracy_steps": self.steps,
            "time_to_accuracy_seconds": self.seconds}

  def start(self) -> None:
    """Training starts (or resumes) now."""
    self._since = time.perf_counter()

  def after_step(self, step: int, outputs: dict[str, tf.Tensor]) -> None:
    """A step action: the train loop call that just ended was training."""
    del step, outputs
    now = time.perf_counter()
    self.train_seconds.assign_add(now - self._since)
    self._since = now

  def update(self, accuracy: float, step: int, seconds: float) -> bool:
    """Records the first (step, seconds) with accuracy ≥ target; returns True at that moment."""
    if not self.target or int(self.steps) >= 0 or accuracy < self.target:
      return False
    self.steps.assign(step)
    self.seconds.assign(seconds)
    return True

  def results(self) -> dict[str, Any]:
    """`run_train_seconds`: the whole run's training time, every process that resumed it included (the
    steps a killed process ran past its last checkpoint are not: they were run again); the target's
    step and seconds when there is a target."""
    clock = {"run_train_seconds": float(self.train_seconds)}
    if not self.target:
      return clock
    reached = int(self.steps) >= 0
    return {**clock, "target_accuracy": self.target,
            "time_to_accuracy_seconds": float(self.seconds) if reached else None,
            "time_to_accuracy_steps": int(self.steps) if reached else None}

  def __call__(self, event: EvalEvent) -> None:
    if self.update(event.results["accuracy"], event.step, float(self.train_seconds)):
      logging.info("target accuracy %.4f reached at step %d, after %.1f s of training", self.target,
                   event.step, float(self.seconds))
    self._since = time.perf_counter()  # The evaluation was not training.
