"""The running train and eval metrics: mean loss, accuracy and top-k accuracy, across replicas."""

import tensorflow as tf


class Metrics:
  """Mean loss and accuracy (and top-k accuracy, with `top_k` > 1) over the examples seen since the last `reset()`.

  Created under the strategy's scope, the metrics aggregate across replicas and workers.
  """

  def __init__(self, prefix: str, top_k: int = 0):
    self.loss = tf.keras.metrics.Mean(f"{prefix}_loss")
    self.accuracy = tf.keras.metrics.SparseCategoricalAccuracy(f"{prefix}_accuracy")
    self.top_k = (tf.keras.metrics.SparseTopKCategoricalAccuracy(top_k, name=f"{prefix}_{top_k_name(top_k)}")
                  if top_k > 1 else None)

  def update(self, per_example_loss: tf.Tensor, labels: tf.Tensor, logits: tf.Tensor) -> None:
    if labels.shape.rank == 2:  # Mixed one-hot labels (mixup, cutmix): accuracy against the top class.
      labels = tf.argmax(labels, axis=-1)
    self.loss.update_state(per_example_loss)
    self.accuracy.update_state(labels, logits)
    if self.top_k is not None:
      self.top_k.update_state(labels, logits)

  def reset(self) -> None:
    for metric in self._metrics():
      metric.reset_state()

  def variables(self) -> list[tf.Variable]:
    """The running totals and counts, for checkpoints (a resumed epoch continues its means)."""
    return [variable for metric in self._metrics() for variable in metric.variables]

  def result(self) -> dict[str, float]:
    """`loss`, `accuracy` and, with top-k, `top<k>_accuracy`."""
    results = {"loss": float(self.loss.result()), "accuracy": float(self.accuracy.result())}
    if self.top_k is not None:
      results[top_k_name(self.top_k.k)] = float(self.top_k.result())
    return results

  def _metrics(self) -> list[tf.keras.metrics.Metric]:
    return [self.loss, self.accuracy] + ([self.top_k] if self.top_k is not None else [])


def top_k_name(k: int) -> str:
  """The name of top-k accuracy in results, summaries and metrics.csv: top5_accuracy."""
  return f"top{k}_accuracy"
