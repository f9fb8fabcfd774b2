"""The inner loop: one train step and one eval step, each a `tf.function`.

Everything around them (epochs, logging, evaluation cadence, summaries) is in
`cnn/trainer.py`; these functions only compute and update metrics.
"""

from typing import Callable, Iterator

import tensorflow as tf


class Metrics:
  """Mean loss and accuracy over the batches since the last `reset()`."""

  def __init__(self, prefix: str):
    self.loss = tf.keras.metrics.Mean(f"{prefix}_loss")
    self.accuracy = tf.keras.metrics.SparseCategoricalAccuracy(f"{prefix}_accuracy")

  def update(self, loss: tf.Tensor, labels: tf.Tensor, logits: tf.Tensor) -> None:
    if labels.shape.rank == 2:  # Mixed one-hot labels (mixup, cutmix): accuracy against the top class.
      labels = tf.argmax(labels, axis=-1)
    self.loss.update_state(loss, sample_weight=tf.shape(labels)[0])
    self.accuracy.update_state(labels, logits)

  def reset(self) -> None:
    self.loss.reset_state()
    self.accuracy.reset_state()

  def result(self) -> dict[str, float]:
    return {"loss": float(self.loss.result()), "accuracy": float(self.accuracy.result())}


TrainStep = Callable[[Iterator], None]
EvalStep = Callable[[tf.Tensor, tf.Tensor], None]


def make_train_step(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
                    loss_fn: tf.keras.losses.Loss, metrics: Metrics) -> TrainStep:
  """A compiled step that takes the next batch from `iterator`: forward, loss, gradients, update.

  The iterator is read inside the `tf.function` (as Orbit does), so that several steps per call
  and `tf.distribute` can be added without changing the caller.
  """

  @tf.function
  def train_step(iterator: Iterator) -> None:
    images, labels = next(iterator)
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = loss_fn(labels, logits)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    metrics.update(loss, labels, logits)

  return train_step


def make_eval_step(model: tf.keras.Model, loss_fn: tf.keras.losses.Loss, metrics: Metrics) -> EvalStep:
  """A compiled forward pass that only updates metrics."""

  @tf.function
  def eval_step(images: tf.Tensor, labels: tf.Tensor) -> None:
    logits = model(images, training=False)
    metrics.update(loss_fn(labels, logits), labels, logits)

  return eval_step
