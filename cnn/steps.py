"""The inner loop: one train step and one eval step, each a `tf.function`.

Everything around them (epochs, logging, evaluation cadence, summaries) is in
`cnn/trainer.py`; these functions only compute and update metrics.
"""

from typing import Any, Callable, Iterator

import tensorflow as tf


class Metrics:
  """Mean loss and accuracy over the examples seen since the last `reset()`.

  Created under the strategy's scope, the metrics aggregate across replicas and workers.
  """

  def __init__(self, prefix: str):
    self.loss = tf.keras.metrics.Mean(f"{prefix}_loss")
    self.accuracy = tf.keras.metrics.SparseCategoricalAccuracy(f"{prefix}_accuracy")

  def update(self, per_example_loss: tf.Tensor, labels: tf.Tensor, logits: tf.Tensor) -> None:
    self.loss.update_state(per_example_loss)
    self.accuracy.update_state(labels, logits)

  def reset(self) -> None:
    self.loss.reset_state()
    self.accuracy.reset_state()

  def result(self) -> dict[str, float]:
    return {"loss": float(self.loss.result()), "accuracy": float(self.accuracy.result())}


TrainStep = Callable[[Iterator], None]
EvalStep = Callable[[Any], None]


def make_train_step(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
                    loss_fn: tf.keras.losses.Loss, metrics: Metrics, strategy: tf.distribute.Strategy,
                    global_batch_size: int) -> TrainStep:
  """A compiled step that takes the next batch from `iterator`: forward, loss, gradients, update.

  The iterator is read inside the `tf.function` (as Orbit does). Each replica averages its
  per-example losses over the *global* batch, and the optimizer sums gradients across
  replicas, so any number of replicas computes the one-device update.

  Args:
    model: the model, built under `strategy.scope()`.
    optimizer: its optimizer, created and built (`optimizer.build(variables)`) under the same
      scope: a Keras 3 optimizer that builds lazily inside `strategy.run` fails.
    loss_fn: a per-example loss (`reduction="none"`).
    metrics: train metrics, created under the same scope.
    strategy: the distribution strategy (the default one for a single device).
    global_batch_size: examples per step across all replicas.
  """

  def replica_step(images: tf.Tensor, labels: tf.Tensor) -> None:
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      per_example_loss = loss_fn(labels, logits)
      loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
      if model.losses:  # Regularisers, averaged over replicas like the loss.
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    metrics.update(per_example_loss, labels, logits)

  @tf.function
  def train_step(iterator: Iterator) -> None:
    strategy.run(replica_step, args=next(iterator))

  return train_step


def make_eval_step(model: tf.keras.Model, loss_fn: tf.keras.losses.Loss, metrics: Metrics,
                   strategy: tf.distribute.Strategy) -> EvalStep:
  """A compiled forward pass over one (distributed) batch that only updates metrics."""

  def replica_step(images: tf.Tensor, labels: tf.Tensor) -> None:
    logits = model(images, training=False)
    metrics.update(loss_fn(labels, logits), labels, logits)

  @tf.function
  def eval_step(batch: Any) -> None:
    strategy.run(replica_step, args=batch)

  return eval_step
