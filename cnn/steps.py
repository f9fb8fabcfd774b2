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
    self.loss.update_state(loss, sample_weight=tf.shape(labels)[0])
    self.accuracy.update_state(labels, logits)

  def reset(self) -> None:
    self.loss.reset_state()
    self.accuracy.reset_state()

  def result(self) -> dict[str, float]:
    return {"loss": float(self.loss.result()), "accuracy": float(self.accuracy.result())}


TrainStep = Callable[..., None]  # train_step(iterator, num_steps=1)
EvalStep = Callable[[tf.Tensor, tf.Tensor], None]


def make_train_step(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
                    loss_fn: tf.keras.losses.Loss, metrics: Metrics, jit_compile: bool = False) -> TrainStep:
  """A compiled loop of `num_steps` train steps, each taking the next batch from `iterator`.

  The iterator is read inside the `tf.function` (as Orbit does), so `train_step(iterator, K)` runs
  K steps in one call (a `tf.range` loop: one dispatch from Python per K steps). `num_steps` is
  passed as a tensor, so a shorter last loop does not retrace. With `jit_compile`, the step's math
  is compiled by XLA; reading the iterator cannot be, so it stays outside the compiled part.
  Under mixed_float16 `optimizer` is a `LossScaleOptimizer`: the loss is scaled for the gradients,
  and `apply_gradients` unscales them and skips a step whose gradients are not finite.
  Like a `tf.function`, the result has `experimental_get_tracing_count()` (see cnn/speed.py).
  """
  scale_loss = getattr(optimizer, "scale_loss", lambda loss: loss)  # Only LossScaleOptimizer scales.

  def step(images: tf.Tensor, labels: tf.Tensor) -> None:
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = loss_fn(labels, logits)
      scaled_loss = scale_loss(loss)  # Inside the tape, or the gradients would be None.
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    metrics.update(loss, labels, logits)

  compiled_step = tf.function(step, jit_compile=True) if jit_compile else step

  @tf.function
  def loop(iterator: Iterator, num_steps: tf.Tensor) -> None:
    for _ in tf.range(num_steps):
      compiled_step(*next(iterator))

  def train_step(iterator: Iterator, num_steps: int = 1) -> None:
    loop(iterator, tf.constant(num_steps, tf.int32))

  train_step.experimental_get_tracing_count = loop.experimental_get_tracing_count
  return train_step


def make_eval_step(model: tf.keras.Model, loss_fn: tf.keras.losses.Loss, metrics: Metrics,
                   jit_compile: bool = False) -> EvalStep:
  """A compiled forward pass that only updates metrics.

  An eval split's last batch is usually smaller: it gets its own trace (two in all), which keeps
  every metric exact without padding.
  """

  @tf.function(jit_compile=jit_compile)
  def eval_step(images: tf.Tensor, labels: tf.Tensor) -> None:
    logits = model(images, training=False)
    metrics.update(loss_fn(labels, logits), labels, logits)

  return eval_step
