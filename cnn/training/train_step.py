"""The train step: K steps of training in one call of a `tf.function` over `tf.distribute`.

Everything around it is elsewhere: when it runs in cnn/training/controller.py, its owner (the iterator, the
step count, histograms) in cnn/training/trainer.py, the eval step and one pass over eval data in
cnn/training/evaluator.py; this function only computes and updates metrics. A single device is the default
strategy with one replica, so there is one code path.

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
from cnn.training import metrics as metrics_lib
from cnn.weight_hooks import WeightHooks


TrainLoopFunction = Callable[..., dict[str, tf.Tensor]]  # train_loop(iterator, num_steps=1, step=0, histograms=False)
GradientSummary = Callable[[Sequence[tf.Tensor]], None]


def make_train_loop(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
                    loss_fn: tf.keras.losses.Loss, metrics: metrics_lib.Metrics, strategy: tf.distribute.Strategy,
                    global_batch_size: int, jit_compile: bool = False,
                    transforms: Sequence[gradients_lib.Transform] = (), weight_hooks: Optional[WeightHooks] = None,
                    gradient_summary: Optional[GradientSummary] = None) -> TrainLoopFunction:
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
    (cnn/training/guard.py). The learning rate is read where it is logged (`summaries.train_scalars`), not
    at every step. Like a `tf.function`, it has `experimental_get_tracing_count()`.
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
    loss = gradient_norm = tf.constant(0.0)
    for i in tf.range(num_steps):
      held = chain.hold()  # For freezing, after the update.
      per_replica_loss, per_replica_norm = strategy.run(replica_step, args=(*next(iterator), histograms))
      chain.after_update(first_step + i + 1, held)  # Chain steps 5-6: freeze, lookahead.
      # Each replica's loss is its share of the global mean; every replica has the same norm.
      loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)
      gradient_norm = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica_norm, axis=None)
    return {"loss": loss, "gradient_norm": gradient_norm}

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
