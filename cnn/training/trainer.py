"""What is trained, and one call of training (Orbit's trainer; the controller, controller.py, owns *when*).

`build_model_in_scope` and `build_training` make the model and what trains it: optimizer, loss,
metrics, the compiled train loop (train_step.py) and eval step. `Trainer.train(num_steps)` runs the
next `num_steps` steps over its iterator in one call of the compiled loop and returns the last
step's outputs; with `histograms=True` the loop also keeps the applied gradients, and the weight and
gradient histograms are written after it.
"""

import dataclasses
from typing import Iterator, Optional

from absl import logging
import tensorflow as tf

from cnn import augment
from cnn import data as data_lib
from cnn import durations
from cnn import gradients
from cnn import init_from
from cnn import losses
from cnn import models
from cnn import optim
from cnn import schedules
from cnn import summaries
from cnn import weight_hooks as weight_hooks_lib
from cnn.config import Config
from cnn.models.layer_table import layer_table
from cnn.training import eval_sets
from cnn.training import evaluator as evaluator_lib
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib


def build_model_in_scope(config: Config, info: data_lib.DatasetInfo,
                         strategy: tf.distribute.Strategy) -> tuple[tf.keras.Model, str]:
  """`models.build_model` under `config.precision`, its variables in `strategy`'s scope, with
  --init_from applied; returns it and its layer table.

  The Keras global precision policy is `config.precision` while the model is built, and as it was after.
  """
  with models.precision_policy(config.precision), strategy.scope():
    model = models.build_model(config, info)
    model(tf.zeros((1, *info.image_shape)))  # Builds the variables.
  if config.init_from:  # A resumed run restores its own checkpoint over this.
    init_from.initialize(model, config.init_from, info.num_classes)
  per_replica_batch = config.batch_size // strategy.num_replicas_in_sync
  augment.check_pairing(config.augment, per_replica_batch, config.batch_size)  # Also checks the names.
  model_table = layer_table(model, info.image_shape)
  logging.info("Model %s:\n%s", config.model, model_table)
  return model, model_table


@dataclasses.dataclass
class Training:
  """What the loop drives: the model, its optimizer, loss and metrics, and the compiled loop and step."""
  model: tf.keras.Model
  optimizer: tf.keras.optimizers.Optimizer
  loss_fn: tf.keras.losses.Loss
  train_metrics: metrics_lib.Metrics
  eval_metrics: metrics_lib.Metrics
  train_loop: train_step_lib.TrainLoopFunction
  eval_step: evaluator_lib.EvalStep
  weight_hooks: Optional[weight_hooks_lib.WeightHooks]  # Freezing and lookahead, if the config has them.
  histograms: Optional[summaries.GradientHistograms]  # With --histogram_every, if due in the run.
  schedule: Optional[schedules.Schedule] = None  # The optimizer's learning rate by step (read where it is logged).


def build_training(config: Config, model: tf.keras.Model, strategy: tf.distribute.Strategy,
                   steps_per_epoch: int, total_steps: int, num_classes: int = 0) -> Training:
  """The optimizer (its schedule needs the run's length), loss, metrics and compiled loop and step for `model`.

  `num_classes` (0: unknown) sets the eval metrics' top-k (cnn/training/eval_sets.py). With --histogram_every
  the train loop copies the applied gradients on histogram steps
  (`summaries.GradientHistograms`, behind a `tf.cond`): no summary op in the compiled loop.
  """
  with strategy.scope():
    schedule = schedules.build_schedule(config, steps_per_epoch, total_steps)
    optimizer = optim.build_optimizer(config, model.trainable_variables, steps_per_epoch, total_steps,
                                      optim.averaged_statistics(model), schedule)
    optimizer.build(model.trainable_variables)  # Before the loop is traced (see train_step.make_train_loop).
    train_metrics = metrics_lib.Metrics("train")
    eval_metrics = metrics_lib.Metrics("eval", eval_sets.top_k(config, num_classes) if num_classes else 0)
    weight_hooks = weight_hooks_lib.build_weight_hooks(config, model, steps_per_epoch, total_steps)
  loss_fn = losses.build_loss(config, augment.needs_soft_labels(config.augment))
  eval_loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")  # Unsmoothed.
  histogram_every = durations.cadence(config, steps_per_epoch, total_steps).histogram_every
  due = 0 < histogram_every <= total_steps  # Else never due: no histogram ops to trace.
  histograms = summaries.GradientHistograms(model, strategy) if due else None
  transforms = gradients.build_transforms(config, model.trainable_variables)
  train_loop = train_step_lib.make_train_loop(model, optimizer, loss_fn, train_metrics, strategy, config.batch_size,
                                              config.jit_compile, transforms, weight_hooks,
                                              histograms.record if histograms else None)
  return Training(
      model=model, optimizer=optimizer, loss_fn=loss_fn, train_metrics=train_metrics,
      eval_metrics=eval_metrics, train_loop=train_loop,
      eval_step=evaluator_lib.make_eval_step(augment.with_tta(model, config.tta), eval_loss_fn, eval_metrics, strategy,
                                             config.jit_compile),
      weight_hooks=weight_hooks, histograms=histograms, schedule=schedule)


class Trainer:
  """Orbit's trainer: the compiled train loop over its iterator, its metrics, its histograms and their writer.

  Args:
    loop: the compiled loop (`train_step.make_train_loop`).
    iterator: the distributed training batches, positioned at `step`.
    metrics: the running train metrics the loop updates.
    writer: where the histograms go (a no-op writer on non-chief workers).
    step: the number of steps already taken (a resumed run's restored step).
    histograms: what the loop records on histogram steps (`record` is the loop's gradient summary).
  """

  def __init__(self, loop: train_step_lib.TrainLoopFunction, iterator: Iterator, metrics: metrics_lib.Metrics,
               writer: tf.summary.SummaryWriter, step: int = 0,
               histograms: Optional[summaries.GradientHistograms] = None):
    self.loop, self.iterator, self.metrics, self.writer = loop, iterator, metrics, writer
    self.step, self.histograms = step, histograms

  def train(self, num_steps: int, histograms: bool = False) -> dict[str, tf.Tensor]:
    """Runs steps step+1 … step+num_steps; returns the last one's `loss` and `gradient_norm`."""
    histograms = histograms and self.histograms is not None
    outputs = self.loop(self.iterator, num_steps, self.step, histograms)
    self.step += num_steps
    if histograms:
      self.histograms.write(self.writer, self.step)
    return outputs

