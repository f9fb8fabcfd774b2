"""The outer loop: set up a run, train for the configured steps, evaluate, and write results.

`train_and_evaluate` reads top to bottom in marked sections. The per-batch math lives
in `cnn/steps.py`; this file decides when things happen (logging, evaluation, summaries).
"""

import dataclasses
import math
import time
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf

from cnn import data as data_lib
from cnn import models
from cnn import optim
from cnn import run_dir as run_dir_lib
from cnn import speed
from cnn import steps
from cnn import summaries
from cnn.config import Config
from cnn.errors import UserError
from cnn.models.layer_table import layer_table


def evaluate(eval_step: steps.EvalStep, dataset: tf.data.Dataset, metrics: steps.Metrics) -> dict[str, float]:
  """One pass of `eval_step` over `dataset`; returns the mean loss and accuracy."""
  metrics.reset()
  for images, labels in dataset:
    eval_step(images, labels)
  return metrics.result()


@dataclasses.dataclass
class Training:
  """What the loop drives: the model, its optimizer, loss and metrics, and the compiled steps."""
  model: tf.keras.Model
  optimizer: tf.keras.optimizers.Optimizer
  loss_fn: tf.keras.losses.Loss
  train_metrics: steps.Metrics
  eval_metrics: steps.Metrics
  train_step: steps.TrainStep
  eval_step: steps.EvalStep


def build_training(config: Config, info: data_lib.DatasetInfo) -> Training:
  """Builds the model (under `config.precision`), the optimizer and the compiled steps.

  Sets the Keras global precision policy: it applies to every layer built afterwards.
  """
  tf.keras.mixed_precision.set_global_policy(config.precision)
  model = models.build_model(config, info)
  model(tf.zeros((1, *info.image_shape)))  # Builds the variables.
  optimizer = optim.build_optimizer(config)
  # Built before the step is traced: an unbuilt LossScaleOptimizer would bake its initial scale
  # into the graph as a constant.
  optimizer.build(model.trainable_variables)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  train_metrics, eval_metrics = steps.Metrics("train"), steps.Metrics("eval")
  return Training(
      model=model, optimizer=optimizer, loss_fn=loss_fn, train_metrics=train_metrics,
      eval_metrics=eval_metrics,
      train_step=steps.make_train_step(model, optimizer, loss_fn, train_metrics, config.jit_compile),
      eval_step=steps.make_eval_step(model, loss_fn, eval_metrics, config.jit_compile))


def train_and_evaluate(config: Config) -> dict[str, Any]:
  """Trains `config.model` on `config.dataset`, evaluating at every epoch end.

  Writes flags.txt, results.json and TensorBoard event files into the run directory.

  Args:
    config: the run's settings.

  Returns:
    The contents of results.json.

  Raises:
    UserError: for settings, data or a run directory that cannot be used.
  """
  # ---------------------------------------------------------------- Check the settings.
  config.validate()
  run_dir = config.run_dir or run_dir_lib.default_run_dir(config)
  run_dir_lib.check(run_dir, config.overwrite)
  tf.keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()  # Process-wide; TensorFlow cannot undo it.

  # ---------------------------------------------------------------- Model, optimizer, loss, metrics.
  # Built before the splits are read, so that a bad name or shape fails in a second.
  builder = data_lib.get_builder(config.dataset, config.data_dir, config.download)
  info = data_lib.dataset_info(builder)
  training = build_training(config, info)
  model, optimizer = training.model, training.optimizer
  train_metrics, eval_metrics = training.train_metrics, training.eval_metrics
  train_step, eval_step = training.train_step, training.eval_step
  logging.info("Model %s:\n%s", config.model, layer_table(model, info.image_shape))
  flops_per_image, train_flops_per_image = speed.model_flops_per_image(
      model, info.image_shape, training.loss_fn, config.batch_size)
  throughput = speed.Throughput(config.batch_size, train_flops_per_image, config.peak_tflops)
  logging.info("%.4g MFLOPs per image forward, %.4g MFLOPs per image in training; precision %s, %d "
               "step(s) per loop, XLA %s", flops_per_image / 1e6, train_flops_per_image / 1e6,
               config.precision, config.steps_per_loop, "on" if config.jit_compile else "off")

  # ---------------------------------------------------------------- Data.
  train_split = data_lib.load_split(builder, config.train_split)
  eval_split = data_lib.load_split(builder, config.eval_split)
  train_ds = data_lib.train_dataset(train_split, config.batch_size, config.seed)
  eval_ds = data_lib.eval_dataset(eval_split, config.eval_batch_size)
  steps_per_epoch = len(train_split) // config.batch_size
  total_steps = config.train_steps or config.epochs * steps_per_epoch
  num_epochs = math.ceil(total_steps / steps_per_epoch)
  logging.info("%s: %d train examples (%s), %d eval examples (%s), image %s, %d classes", info.name,
               len(train_split), config.train_split, len(eval_split), config.eval_split,
               "×".join(map(str, info.image_shape)), info.num_classes)

  # ---------------------------------------------------------------- Run directory.
  run_dir_lib.prepare(run_dir, config.overwrite)
  run_dir_lib.write_flags(run_dir, config)
  writers = summaries.Writers(run_dir)
  logging.info("Run directory %s: %d steps (%d epochs of %d steps, batch %d)", run_dir, total_steps,
               num_epochs, steps_per_epoch, config.batch_size)

  # ---------------------------------------------------------------- Train.
  step, train_seconds, loop_start = 0, 0.0, time.perf_counter()
  train_iterator = iter(train_ds)
  train_retraces = speed.RetraceWatch("the train step", train_step)
  eval_retraces = speed.RetraceWatch("the eval step", eval_step)
  time_to_accuracy = speed.TimeToAccuracy(config.target_accuracy)
  for epoch in range(1, num_epochs + 1):
    train_metrics.reset()
    epoch_start = interval_start = time.perf_counter()
    interval_steps, epoch_end = 0, min(epoch * steps_per_epoch, total_steps)
    while step < epoch_end:
      # Up to --steps_per_loop steps per call, cut short at the next log step and at the epoch end.
      num_steps = min(config.steps_per_loop, epoch_end - step,
                      config.log_every_steps - step % config.log_every_steps)
      train_step(train_iterator, num_steps)
      step, interval_steps = step + num_steps, interval_steps + num_steps
      if step % config.log_every_steps == 0:
        rates = throughput.rates(interval_steps, time.perf_counter() - interval_start)
        eta = (total_steps - step) * rates["step_seconds"]
        _log_progress(step, total_steps, epoch, train_metrics.result(), rates, eta, optimizer, writers)
        train_retraces.check()
        interval_start, interval_steps = time.perf_counter(), 0
    train_seconds += time.perf_counter() - epoch_start
    train_results = train_metrics.result()

    # -------------------------------------------------------------- Evaluate at each epoch end.
    eval_results = evaluate(eval_step, eval_ds, eval_metrics)
    eval_retraces.check()
    writers.scalars(writers.eval, eval_results, step)
    writers.flush()
    logging.info("epoch %d/%d  step %d  train loss %.4f accuracy %.4f  eval loss %.4f accuracy %.4f",
                 epoch, num_epochs, step, train_results["loss"], train_results["accuracy"],
                 eval_results["loss"], eval_results["accuracy"])
    if time_to_accuracy.update(eval_results["accuracy"], step, time.perf_counter() - loop_start):
      logging.info("target accuracy %.4f reached at step %d, %.1f s after training started",
                   config.target_accuracy, step, time_to_accuracy.seconds)
  writers.close()

  # ---------------------------------------------------------------- Results.
  results = {
      "eval_accuracy": eval_results["accuracy"],
      "eval_loss": eval_results["loss"],
      "eval_split": config.eval_split,
      "train_accuracy": train_results["accuracy"],
      "train_loss": train_results["loss"],
      "train_seconds": train_seconds,
      "wall_seconds": time.perf_counter() - loop_start,  # Training and evaluation.
      "steps": step,
      "epochs": step / steps_per_epoch,
      "num_parameters": model.count_params(),
      # Speed (cnn/speed.py): rates over all training steps, the first (tracing) call included.
      **throughput.rates(step, train_seconds),
      "flops_per_image": flops_per_image,
      "train_flops_per_image": train_flops_per_image,
      "peak_host_memory_mb": speed.peak_host_memory_mb(),
      "retraces": train_retraces.retraces + eval_retraces.retraces,
      **time_to_accuracy.results(),
  }
  run_dir_lib.write_results(run_dir, results)
  print(f"{config.eval_split} accuracy: {results['eval_accuracy']:.4f}  (loss {results['eval_loss']:.4f}, "
        f"{step} steps, {train_seconds:.0f} s of training; results in {run_dir})")
  return results


def _log_progress(step: int, total_steps: int, epoch: int, train_results: dict[str, float],
                  rates: dict[str, float], eta_seconds: float, optimizer: tf.keras.optimizers.Optimizer,
                  writers: summaries.Writers) -> None:
  """The progress line and the train scalars; stops the run on a non-finite loss."""
  if not np.isfinite(train_results["loss"]):
    raise UserError(f"training loss became {train_results['loss']} by step {step}; try a lower "
                    "--learning_rate")
  extra = {"peak_host_memory_mb": speed.peak_host_memory_mb()}
  if isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer):
    extra["loss_scale"] = float(optimizer.dynamic_scale)
  logging.info("step %d/%d  epoch %d  loss %.4f  accuracy %.4f  %s%s  ETA %s", step, total_steps, epoch,
               train_results["loss"], train_results["accuracy"], speed.Throughput.describe(rates),
               f"  loss scale {extra['loss_scale']:g}" if "loss_scale" in extra else "",
               _duration(eta_seconds))
  writers.scalars(writers.train, {**train_results, **rates, **extra}, step)


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"
