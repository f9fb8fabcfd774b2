"""The evaluator (Orbit's): one pass over an eval dataset, as every evaluation of a run is done.

An `Evaluator` evaluates the weights the run reports (the moving average under --ema_decay), with
test-time augmentation (--tta) already in its eval step, and gives the mean loss and accuracy
and each example's prediction in split order. A run has one per eval set: the eval split at each
epoch end, and the final --test_split; a second eval set is one more `Evaluator`.
"""

from typing import Iterable, Optional

import numpy as np
import tensorflow as tf

from cnn import optim
from cnn import steps
from cnn import throughput


def evaluate_pass(eval_step: steps.EvalStep, dataset: Iterable,
                  metrics: steps.Metrics) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """One pass of `eval_step` over `dataset` (distributed batches of images, labels, indices).

  Returns:
    The mean loss and accuracy, and each example's `predictions` and `confidence` in split order
    (replicas and workers see the examples out of order; their indices put them back).
  """
  metrics.reset()
  outputs = [eval_step(batch) for batch in dataset]
  outputs = {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}
  order = np.argsort(outputs.pop("index"), kind="stable")
  return metrics.result(), {key: values[order] for key, values in outputs.items()}


class Evaluator:
  """One eval set: `evaluate()` is a pass over it with the weights evaluation uses.

  Args:
    name: the split's name (e.g. "test"), for logs and results.
    dataset: its distributed batches of (images, labels, indices).
    eval_step: the compiled eval step (TTA included).
    metrics: the eval metrics the step updates.
    model: the model, and `optimizer`, whose moving averages (--ema_decay) are swapped in.
  """

  def __init__(self, name: str, dataset: Iterable, eval_step: steps.EvalStep, metrics: steps.Metrics,
               model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer):
    self.name, self.dataset, self.eval_step, self.metrics = name, dataset, eval_step, metrics
    self.model, self.optimizer = model, optimizer
    self.retraces = throughput.RetraceWatch(f"the eval step ({name})", eval_step)
    self.results: Optional[dict[str, float]] = None  # Of the last pass.

  def evaluate(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The mean loss and accuracy, and each example's `predictions` and `confidence` in split order."""
    with optim.averaged_weights(self.model, self.optimizer):  # The moving average when --ema_decay is set.
      self.results, outputs = evaluate_pass(self.eval_step, self.dataset, self.metrics)
    self.retraces.check()
    return self.results, outputs
