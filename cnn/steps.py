"""The inner loop: one train step and one eval step, each a `tf.function` over `tf.distribute`.

Everything around them is elsewhere: when they run in cnn/controller.py, the loop's owner in
cnn/train_loop.py, one pass over eval data in cnn/evaluator.py; these functions only compute and
update metrics. A single device is the
default strategy with one replica, so there is one code path.

The train loop reads the iterator inside the `tf.function` (as Orbit does): one call runs K steps in
a `tf.range` loop, one dispatch from Python per K steps, and its arguments are tensors, so it is
traced once. Each step: forward → loss → gradients → the gradient chain (cnn/gradients.py: sum over
replicas, unscale, transforms, the optimizer, then freezing and lookahead) → metrics. Each replica
averages its per-example losses over the *global* batch and the chain sums the gradients across
replicas, so any number of replicas computes the one-device update. Under mixed_float16 the
optimizer is a `LossScaleOptimizer`: the loss is scaled for the gradients, and a step whose
gradients are not finite is skipped (halving the scale).
"""

from typing import Any, Callable, Iterator, Optional, Sequence

import tensorflow as tf

from cnn import gradients as gradients_lib
from cnn.weight_hooks import WeightHooks


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


TrainLoop = Callable[..., dict[str, tf.Tensor]]  # train_loop(iterator, num_steps=1, step=0, histograms=False)
EvalStep = Callable[[Any], dict[str, tf.Tensor]]
GradientSummary = Callable[[Sequence[tf.Tensor]], None]


def make_train_loop(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
                    loss_fn: tf.keras.losses.Loss, metrics: Metrics, strategy: tf.distribute.Strategy,
                    global_batch_size: int, jit_compile: bool = False,
                    transforms: Sequence[gradients_lib.Transform] = (), weight_hooks: Optional[WeightHooks] = None,
                    gradient_summary: Optional[GradientSummary] = None) -> TrainLoop:
  """A compiled loop: `train_loop(iterator, K, step)` runs steps step+1 … step+K (module docstring).

  Args:
    model: the model, built under `strategy.scope()`.
    optimizer: its optimizer, created and built (`optimizer.build(variables)`) under the same
      scope: a Keras 3 optimizer that builds lazily inside `strategy.run` fails, and an unbuilt
      LossScaleOptimizer would bake its initial scale into the graph.
    loss_fn: a per-example loss (`reduction="none"`).
    metrics: train metrics, created under the same scope.
    strategy: the distribution strategy (the default one for a single device).
    global_batch_size: examples per step across all replicas.
    jit_compile: compile the forward and backward pass with XLA (the update, which all-reduces
      across replicas, and reading the iterator stay outside the compiled part).
    transforms: the gradient transforms before the optimizer, in order (clipping, scales, coupled
      L2: `gradients.build_transforms`).
    weight_hooks: freezing and lookahead after each update (cnn/weight_hooks.py).
    gradient_summary: called in the step, after the update, with the gradients the optimizer
      applied: summed over replicas, unscaled (float16), transformed (e.g. `summaries.GradientHistograms.record`,
      which keeps them for histograms), only in calls with `histograms=True`: behind a `tf.cond`,
      so the other calls run none of it and one trace serves both.

  Returns:
    The loop. Each call returns the last step's `loss` (mean over the global batch),
    `gradient_norm` (global L2 norm of the unscaled gradients), which the NaN guard checks
    (cnn/guard.py), and `learning_rate` (the rate that step applied). Like a `tf.function`, it has `experimental_get_tracing_count()`.
  """
  loss_scaling = isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer)
  chain = gradients_lib.Chain(optimizer, transforms, weight_hooks)

  def gradients_of(images: tf.Tensor, labels: tf.Tensor):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      per_example_loss = loss_fn(labels, logits)
      loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
      if model.losses:  # Regularisers, averaged over replicas like the loss.
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
      scaled_loss = optimizer.scale_loss(loss) if loss_scaling else loss  # In the tape, or no gradients.
    return loss, per_example_loss, logits, tape.gradient(scaled_loss, model.trainable_variables)

  compiled_gradients_of = tf.function(gradients_of, jit_compile=True) if jit_compile else gradients_of

  def replica_step(images: tf.Tensor, labels: tf.Tensor, histograms: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    loss, per_example_loss, logits, gradients = compiled_gradients_of(images, labels)
    applied, gradient_norm = chain.apply(gradients, model.trainable_variables)  # Chain steps 1-4: the update.
    metrics.update(per_example_loss, labels, logits)
    if gradient_summary is not None:  # The same on every replica; the first one records it.
      tf.cond(histograms, lambda: _no_outputs(gradient_summary, applied), tf.no_op)
    return loss, gradient_norm

  @tf.function
  def loop(iterator: Iterator, num_steps: tf.Tensor, first_step: tf.Tensor,
           histograms: tf.Tensor) -> dict[str, tf.Tensor]:
    loss = gradient_norm = learning_rate = tf.constant(0.0)
    for i in tf.range(num_steps):
      # The rate this step applies: read before its update advances the optimizer's count.
      learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
      held = chain.hold()  # For freezing, after the update.
      per_replica_loss, per_replica_norm = strategy.run(replica_step, args=(*next(iterator), histograms))
      chain.after_update(first_step + i + 1, held)  # Chain steps 5-6: freeze, lookahead.
      # Each replica's loss is its share of the global mean; every replica has the same norm.
      loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)
      gradient_norm = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica_norm, axis=None)
    return {"loss": loss, "gradient_norm": gradient_norm, "learning_rate": learning_rate}

  def train_loop(iterator: Iterator, num_steps: int = 1, step: int = 0,
                 histograms: bool = False) -> dict[str, tf.Tensor]:
    """Runs `num_steps` steps after the first `step` (which only the weight hooks read); with
    `histograms`, each also runs `gradient_summary`."""
    return loop(iterator, tf.constant(num_steps, tf.int32), tf.constant(step, tf.int32), tf.constant(histograms))

  train_loop.experimental_get_tracing_count = loop.experimental_get_tracing_count
  train_loop.get_concrete_function = lambda iterator: loop.get_concrete_function(
      iterator, tf.constant(1), tf.constant(0), tf.constant(False))
  return train_loop


def _no_outputs(function: Callable[..., None], *args: Any) -> tf.Operation:
  """`function(*args)` as a `tf.cond` branch: its ops run, and the branch returns no tensor."""
  function(*args)
  return tf.no_op()


def make_eval_step(model: tf.keras.Model, loss_fn: tf.keras.losses.Loss, metrics: Metrics,
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
