"""The outer loop: set up a run, train for the configured steps, evaluate, and write results.

`train_and_evaluate` reads top to bottom in marked sections. The per-batch math lives
in `cnn/steps.py`; this file decides when things happen (logging, evaluation, summaries).
"""

import math
import time
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf

from cnn import augment
from cnn import data as data_lib
from cnn import losses
from cnn import models
from cnn import optim
from cnn import plugins
from cnn import run_dir as run_dir_lib
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
  plugins.import_modules(config.extra_modules)  # Already imported by the CLI; needed from a notebook.

  # ---------------------------------------------------------------- Model, loss, metrics.
  # Built before the splits are read, so that a bad name or shape fails in a second.
  builder = data_lib.get_builder(config.dataset, config.data_dir, config.download)
  info = data_lib.dataset_info(builder, config.image_size)
  model = models.build_model(config, info)
  model(tf.zeros((1, *info.image_shape)))  # Builds the variables.
  soft_labels = augment.needs_soft_labels(config.augment)  # Also checks the names.
  loss_fn = losses.build_loss(config, soft_labels)
  eval_loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # Plain CE, unsmoothed.
  train_metrics, eval_metrics = steps.Metrics("train"), steps.Metrics("eval")
  logging.info("Model %s:\n%s", config.model, layer_table(model, info.image_shape))

  # ---------------------------------------------------------------- Data.
  train_split = data_lib.load_split(builder, config.train_split, config.image_size)
  eval_split = data_lib.load_split(builder, config.eval_split, config.image_size)
  test_split = data_lib.load_split(builder, config.test_split, config.image_size) if config.test_split else None
  mean_std = None
  if config.normalization == "standardize":
    mean_std = ((config.normalization_mean, config.normalization_std) if config.normalization_mean
                else data_lib.channel_stats(train_split))
    logging.info("Standardising inputs with mean %s, std %s", *(np.round(v, 4).tolist() for v in mean_std))
  augment_fn = augment.make_augment_fn(config, info.num_classes, len(train_split))
  train_ds = data_lib.train_dataset(train_split, config.batch_size, config.seed, augment_fn, mean_std)
  eval_ds = data_lib.eval_dataset(eval_split, config.eval_batch_size, mean_std)
  steps_per_epoch = len(train_split) // config.batch_size
  total_steps = config.train_steps or config.epochs * steps_per_epoch
  num_epochs = math.ceil(total_steps / steps_per_epoch)
  if hasattr(model, "initialize_from_data"):  # E.g. airbench94's whitening from training patches.
    model.initialize_from_data(data_lib.standardizer(mean_std)(data_lib.normalize(train_split.images[:5000])))

  # ---------------------------------------------------------------- Optimizer and steps.
  # Here, as its schedule needs the run's length in steps.
  optimizer = optim.build_optimizer(config, model.trainable_variables, steps_per_epoch, total_steps)
  train_step = steps.make_train_step(model, optimizer, loss_fn, train_metrics)
  eval_step = steps.make_eval_step(augment.with_tta(model, config.tta), eval_loss_fn, eval_metrics)
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
  for epoch in range(1, num_epochs + 1):
    train_metrics.reset()
    epoch_start = interval_start = time.perf_counter()
    interval_steps = 0
    for _ in range(min(steps_per_epoch, total_steps - step)):
      train_step(train_iterator)
      step, interval_steps = step + 1, interval_steps + 1
      if step % config.log_every_steps == 0:
        images_per_second = interval_steps * config.batch_size / (time.perf_counter() - interval_start)
        eta = (total_steps - step) * config.batch_size / images_per_second
        _log_progress(step, total_steps, epoch, train_metrics.result(), images_per_second, eta, writers)
        interval_start, interval_steps = time.perf_counter(), 0
    train_seconds += time.perf_counter() - epoch_start
    train_results = train_metrics.result()

    # -------------------------------------------------------------- Evaluate at each epoch end.
    with optim.averaged_weights(model, optimizer):  # The moving average when --ema_decay is set.
      eval_results = evaluate(eval_step, eval_ds, eval_metrics)
    writers.scalars(writers.eval, eval_results, step)
    writers.flush()
    logging.info("epoch %d/%d  step %d  train loss %.4f accuracy %.4f  eval loss %.4f accuracy %.4f",
                 epoch, num_epochs, step, train_results["loss"], train_results["accuracy"],
                 eval_results["loss"], eval_results["accuracy"])
  writers.close()
  if test_split is not None:  # --test_split: one final evaluation, as each eval (EMA, TTA).
    with optim.averaged_weights(model, optimizer):
      test_results = evaluate(eval_step, data_lib.eval_dataset(test_split, config.eval_batch_size, mean_std),
                              eval_metrics)
    logging.info("%s: loss %.4f accuracy %.4f", config.test_split, test_results["loss"], test_results["accuracy"])

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
      "images_per_second": step * config.batch_size / train_seconds,
      "num_parameters": model.count_params(),
  }
  if test_split is not None:
    results.update(test_accuracy=test_results["accuracy"], test_loss=test_results["loss"],
                   test_split=config.test_split)
  run_dir_lib.write_results(run_dir, results)
  print(f"{config.eval_split} accuracy: {results['eval_accuracy']:.4f}  (loss {results['eval_loss']:.4f}, "
        f"{step} steps, {train_seconds:.0f} s of training; results in {run_dir})")
  return results


def _log_progress(step: int, total_steps: int, epoch: int, train_results: dict[str, float],
                  images_per_second: float, eta_seconds: float, writers: summaries.Writers) -> None:
  """The progress line and the train scalars; stops the run on a non-finite loss."""
  if not np.isfinite(train_results["loss"]):
    raise UserError(f"training loss became {train_results['loss']} by step {step}; try a lower "
                    "--learning_rate")
  logging.info("step %d/%d  epoch %d  loss %.4f  accuracy %.4f  %.0f images/s  ETA %s", step, total_steps,
               epoch, train_results["loss"], train_results["accuracy"], images_per_second,
               _duration(eta_seconds))
  writers.scalars(writers.train, {**train_results, "images_per_second": images_per_second}, step)


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"
