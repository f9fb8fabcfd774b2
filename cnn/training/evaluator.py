"""The evaluator (Orbit's): one pass over an eval dataset, as every evaluation of a run is done.

An `Evaluator` evaluates the model's weights and, under --ema_decay, their moving averages (the
weights the run reports), with test-time augmentation (--tta) already in its eval step; each
`Pass` gives the mean loss, accuracy and top-k accuracy, and each example's prediction in split
order. A run has one per eval set (cnn/training/eval_sets.py): --eval_split and each of --eval_splits at
every evaluation, and the final --test_split. A `SplitEvaluation` evaluates a trained run's
checkpoint on one split in the same way (`python -m cnn.evaluate`, and its `--watch`).
"""

import contextlib
import dataclasses
from typing import Any, Callable, Iterable, Optional

import numpy as np
import tensorflow as tf

from cnn import augment
from cnn import data as data_lib
from cnn import inference
from cnn import optim
from cnn import throughput
from cnn.training import eval_sets
from cnn.training import metrics as metrics_lib

EvalStep = Callable[[Any], dict[str, tf.Tensor]]


def make_eval_step(model: tf.keras.Model, loss_fn: tf.keras.losses.Loss, metrics: metrics_lib.Metrics,
                   strategy: tf.distribute.Strategy, jit_compile: bool = False) -> EvalStep:
  """A compiled forward pass over one (distributed) batch of (images, labels, indices).

  Each call updates the metrics and returns, for every example of the batch on every replica,
  its index in the split (`index`), predicted class (`predictions`) and that class's softmax
  probability (`confidence`), for the confusion matrix and the misclassified-image grid. An eval
  split's last batch is usually smaller: it gets its own trace (two in all), which keeps every
  metric exact without padding.
  """
  forward = tf.function(model, jit_compile=True) if jit_compile else model

  def replica_step(images: tf.Tensor, labels: tf.Tensor, index: tf.Tensor) -> dict[str, tf.Tensor]:
    logits = forward(images, training=False)
    metrics.update(loss_fn(labels, logits), labels, logits)
    return {"index": index, "predictions": tf.argmax(logits, axis=-1, output_type=tf.int32),
            "confidence": tf.reduce_max(tf.nn.softmax(logits), axis=-1)}

  @tf.function
  def eval_step(batch: Any) -> dict[str, tf.Tensor]:
    outputs = strategy.run(replica_step, args=batch)
    # One gather per tensor: gathering the whole dict at once returns only replica 0's values
    # under MirroredStrategy (TF 2.21, measured).
    return {key: strategy.gather(value, axis=0) for key, value in outputs.items()}

  return eval_step


def evaluate_pass(eval_step: EvalStep, dataset: Iterable,
                  metrics: metrics_lib.Metrics) -> tuple[dict[str, float], dict[str, np.ndarray]]:
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


@dataclasses.dataclass
class Pass:
  """One pass over an eval set with one set of weights."""
  prefix: str  # Its metrics' prefix and TensorBoard directory (cnn/training/eval_sets.py): eval, eval_ema, val, ...
  results: dict[str, float]  # Mean loss, accuracy (and top-k accuracy).
  outputs: dict[str, np.ndarray]  # Each example's predictions and confidence, in split order.
  split: Any  # The eval set's examples, in that order.
  reported: bool  # The weights the run reports (the averages under --ema_decay): images, results.json.

  def metrics(self) -> dict[str, float]:
    """The results as `<prefix>/<metric>`."""
    return {f"{self.prefix}/{key}": value for key, value in self.results.items()}


class Evaluator:
  """One eval set: `evaluate()` passes over it with the model's weights, then (--ema_decay) the averages.

  Args:
    name: the set's name (cnn/training/eval_sets.py: `eval` for --eval_split), for metrics and logs.
    split: its examples (for the images of misclassified examples).
    dataset: its distributed batches of (images, labels, indices).
    eval_step: the compiled eval step (TTA included).
    metrics: the eval metrics the step updates.
    model: the model, and `optimizer`, whose moving averages (--ema_decay) are swapped in.
  """

  def __init__(self, name: str, split: Any, dataset: Iterable, eval_step: EvalStep, metrics: metrics_lib.Metrics,
               model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer):
    self.name, self.split, self.dataset, self.eval_step, self.metrics = name, split, dataset, eval_step, metrics
    self.model, self.optimizer = model, optimizer
    self.averaged = bool(optim.moving_averages(model, optimizer))
    self.retraces = throughput.RetraceWatch(f"the eval step ({name})", eval_step)
    self.results: Optional[dict[str, float]] = None  # Of the last pass with the reported weights.

  def evaluate(self) -> list[Pass]:
    """A pass with the model's own weights, and with --ema_decay one with the averages (reported last)."""
    passes = []
    for prefix in eval_sets.prefixes(self.name, self.averaged):
      averages = prefix != self.name
      with optim.averaged_weights(self.model, self.optimizer) if averages else contextlib.nullcontext():
        results, outputs = evaluate_pass(self.eval_step, self.dataset, self.metrics)
      passes.append(Pass(prefix, results, outputs, self.split, reported=False))
    passes[-1].reported = True
    self.results = passes[-1].results
    self.retraces.check()
    return passes


@dataclasses.dataclass
class SplitEvaluation:
  """A trained run's model and one split, opened once and evaluated as the trainer evaluates.

  The model and its inputs are the run's evaluations' (moving averages, precision, TTA,
  standardisation, XLA); restoring another checkpoint into `trained.model` (`inference.restore_model`)
  and calling `evaluate()` again evaluates that one (`python -m cnn.evaluate --watch`).
  """
  trained: inference.TrainedModel
  split: str
  examples: Any
  eval_step: EvalStep
  metrics: metrics_lib.Metrics
  dataset: Any

  @classmethod
  def open(cls, trained: inference.TrainedModel, split: str = "", top_k: int = 0) -> "SplitEvaluation":
    """`split` (empty: the run's --eval_split), with top-`top_k` accuracy (0: the run's --eval_top_k)."""
    config = trained.config
    split = split or config.eval_split
    # Opened and read as the trainer's evaluations do: in memory or streaming, the same views.
    examples, = data_lib.open_splits(trained.source, [split], config.data_memory_budget_mb, train_first=False)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    top_k = eval_sets.top_k(dataclasses.replace(config, eval_top_k=top_k or config.eval_top_k),
                            trained.info.num_classes)
    metrics = metrics_lib.Metrics("eval", top_k)
    eval_step = make_eval_step(augment.with_tta(trained.model, config.tta), loss_fn, metrics,
                               tf.distribute.get_strategy(), config.jit_compile)
    dataset = data_lib.eval_dataset(examples, config.eval_batch_size, mean_std=trained.mean_std)
    return cls(trained, split, examples, eval_step, metrics, dataset)

  def evaluate(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Loss, accuracy (and top-k accuracy), and each example's prediction in split order."""
    return evaluate_pass(self.eval_step, self.dataset, self.metrics)  # As the trainer evaluates.
