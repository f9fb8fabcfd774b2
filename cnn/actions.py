"""Actions: small things a run does after a train loop call or after an evaluation.

The controller (cnn/controller.py) runs `step_actions` after every call of the train loop, before
any checkpoint is saved, and `eval_actions` after every evaluation at an epoch end, each in list
order. A new action is a class (or function) with the same call signature, added to the list in
`cnn/trainer.py`.
"""

import dataclasses
from typing import Any, Callable, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from cnn import checkpoints
from cnn import guard
from cnn import summaries
from cnn.config import Config
from cnn.data import Split


@dataclasses.dataclass
class EvalEvent:
  """What an eval action sees: the evaluation after `step` (in `epoch`), `seconds` after training started."""
  step: int
  epoch: int
  results: dict[str, float]  # Mean loss and accuracy.
  outputs: dict[str, np.ndarray]  # Each example's predictions and confidence, in split order.
  seconds: float


StepAction = Callable[[int, dict[str, tf.Tensor]], None]  # action(step, train loop outputs)
EvalAction = Callable[[EvalEvent], None]


class NanGuard:
  """Stops the run at a non-finite loss or gradient norm (cnn/guard.py), before anything is saved."""

  def __init__(self, checkpointer: checkpoints.Checkpointer, optimizer: tf.keras.optimizers.Optimizer):
    self.checkpointer, self.optimizer = checkpointer, optimizer

  def __call__(self, step: int, outputs: dict[str, tf.Tensor]) -> None:
    guard.check(step, outputs, self.checkpointer.describe_last(), self.optimizer)


class EvalSummaries:
  """The eval scalars, confusion matrix and misclassified-image grid in TensorBoard."""

  def __init__(self, writers: summaries.Writers, split: Split, class_names: list[str], config: Config):
    self.writers, self.split, self.class_names, self.config = writers, split, class_names, config

  def __call__(self, event: EvalEvent) -> None:
    self.writers.scalars(self.writers.eval, event.results, event.step)
    summaries.write_eval(self.writers.eval, event.step, self.split, event.outputs["predictions"],
                         event.outputs["confidence"], self.class_names, self.config)
    self.writers.flush()


class SaveCheckpoints:
  """Keeps the checkpoint as the best if its eval accuracy is, and saves the latest."""

  def __init__(self, checkpointer: checkpoints.Checkpointer):
    self.checkpointer = checkpointer

  def __call__(self, event: EvalEvent) -> None:
    self.checkpointer.after_eval(event.step, event.epoch, event.results["accuracy"])


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
