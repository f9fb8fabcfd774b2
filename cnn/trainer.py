"""The outer loop: set up a run, train for the configured steps, evaluate, and write results.

`train_and_evaluate` reads top to bottom in marked sections. The per-batch math lives
in `cnn/steps.py`; this file decides when things happen (logging, evaluation, checkpoints,
summaries).
"""

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import time
from typing import Any, Iterable, Iterator, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from cnn import augment
from cnn import checkpoints
from cnn import data as data_lib
from cnn import distribute
from cnn import gradients
from cnn import guard
from cnn import init_from
from cnn import losses
from cnn import models
from cnn import optim
from cnn import plugins
from cnn import run_dir as run_dir_lib
from cnn import speed
from cnn import steps
from cnn import summaries
from cnn import system_errors
from cnn import weight_hooks as weight_hooks_lib
from cnn.config import Config
from cnn.errors import Interrupted
from cnn.models.layer_table import layer_table


def evaluate(eval_step: steps.EvalStep, dataset: Iterable,
             metrics: steps.Metrics) -> tuple[dict[str, float], dict[str, np.ndarray]]:
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
class Training:
  """What the loop drives: the model, its optimizer, loss and metrics, and the compiled steps."""
  model: tf.keras.Model
  optimizer: tf.keras.optimizers.Optimizer
  loss_fn: tf.keras.losses.Loss
  train_metrics: steps.Metrics
  eval_metrics: steps.Metrics
  train_step: steps.TrainStep
  eval_step: steps.EvalStep
  weight_hooks: Optional[weight_hooks_lib.WeightHooks]  # Freezing and lookahead, if the config has them.


def build_model(config: Config, info: data_lib.DatasetInfo, strategy: tf.distribute.Strategy) -> tf.keras.Model:
  """Builds `config.model` under `config.precision` in `strategy`'s scope (variables included).

  Sets the Keras global precision policy: it applies to every layer built afterwards.
  """
  tf.keras.mixed_precision.set_global_policy(config.precision)
  with strategy.scope():
    model = models.build_model(config, info)
    model(tf.zeros((1, *info.image_shape)))  # Builds the variables.
  return model


def build_training(config: Config, model: tf.keras.Model, strategy: tf.distribute.Strategy,
                   steps_per_epoch: int, total_steps: int) -> Training:
  """The optimizer (its schedule needs the run's length), loss, metrics and compiled steps for `model`."""
  with strategy.scope():
    optimizer = optim.build_optimizer(config, model.trainable_variables, steps_per_epoch, total_steps,
                                      optim.averaged_statistics(model))
    optimizer.build(model.trainable_variables)  # Before the step is traced (see make_train_step).
    train_metrics, eval_metrics = steps.Metrics("train"), steps.Metrics("eval")
    weight_hooks = weight_hooks_lib.build_weight_hooks(config, model, steps_per_epoch, total_steps)
  loss_fn = losses.build_loss(config, augment.needs_soft_labels(config.augment))
  eval_loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")  # Unsmoothed.
  return Training(
      model=model, optimizer=optimizer, loss_fn=loss_fn, train_metrics=train_metrics,
      eval_metrics=eval_metrics,
      train_step=make_train_step(config, model, optimizer, loss_fn, train_metrics, strategy, weight_hooks),
      eval_step=steps.make_eval_step(augment.with_tta(model, config.tta), eval_loss_fn, eval_metrics, strategy,
                                     config.jit_compile),
      weight_hooks=weight_hooks)


def make_train_step(config: Config, model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
                    loss_fn: tf.keras.losses.Loss, metrics: steps.Metrics, strategy: tf.distribute.Strategy,
                    weight_hooks: Optional[weight_hooks_lib.WeightHooks],
                    gradient_summary: Optional[steps.GradientSummary] = None) -> steps.TrainStep:
  """`steps.make_train_step` with the config's batch size, XLA and clipping settings."""
  return steps.make_train_step(model, optimizer, loss_fn, metrics, strategy, config.batch_size, config.jit_compile,
                               gradients.build_transforms(config, model.trainable_variables), weight_hooks,
                               gradient_summary)


def train_and_evaluate(config: Config) -> dict[str, Any]:
  """Trains `config.model` on `config.dataset`, evaluating at every epoch end.

  Writes flags.txt, results.json, checkpoints and TensorBoard event files into the run directory.
  A run directory that holds a run with the same settings resumes it from its latest checkpoint;
  one that holds it finished is left as it is (its results are returned).

  Args:
    config: the run's settings.

  Returns:
    The contents of results.json.

  Raises:
    UserError: for settings, data or a run directory that cannot be used, non-finite training, or
      out of memory, disk space or permissions.
    Interrupted: on SIGTERM/SIGINT (on any worker), after saving a checkpoint.
  """
  with system_errors.as_user_errors(_memory_hint(config)):
    return _train_and_evaluate(config)


def _train_and_evaluate(config: Config) -> dict[str, Any]:
  # ---------------------------------------------------------------- Check the settings.
  config.validate()
  run_dir = config.run_dir or run_dir_lib.default_run_dir(config)
  resuming = run_dir_lib.check(run_dir, config)
  finished = run_dir_lib.finished_results(run_dir, config) if resuming else None
  if finished:  # Nothing to do, and nothing is written.
    print(f"{run_dir} holds this run finished ({finished['steps']} steps, {finished['eval_split']} accuracy "
          f"{finished['eval_accuracy']:.4f}); nothing to do (a larger --train_steps or --epochs extends it)",
          flush=True)
    return finished
  strategy = distribute.make_strategy(config)
  chief = distribute.is_chief(strategy)
  tf.keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()  # Process-wide; TensorFlow cannot undo it.
  per_replica_batch = distribute.per_replica_batch_size(strategy, config.batch_size, "batch_size")
  distribute.per_replica_batch_size(strategy, config.eval_batch_size, "eval_batch_size")
  plugins.import_modules(config.extra_modules)  # Already imported by the CLI; needed from a notebook.

  # ---------------------------------------------------------------- Model.
  # Built before the splits are read, so that a bad name or shape fails in a second.
  source = data_lib.open_dataset(config)
  info = source.info
  model = build_model(config, info, strategy)
  if config.init_from:  # A resumed run restores its own checkpoint over this, below.
    init_from.initialize(model, config.init_from, info.num_classes)
  augment.check_pairing(config.augment, per_replica_batch, config.batch_size)  # Also checks the names.
  model_table = layer_table(model, info.image_shape)
  logging.info("Model %s:\n%s", config.model, model_table)

  # ---------------------------------------------------------------- Data.
  # In memory within --data_memory_budget_mb, else streaming (see data.open_splits); the same pipeline.
  train_split, eval_split, test_split = data_lib.open_splits(
      source, [config.train_split, config.eval_split, config.test_split], config.data_memory_budget_mb)
  mean_std = data_lib.input_mean_std(config, train_split)
  if mean_std is not None:
    logging.info("Standardising inputs with mean %s, std %s", *(np.round(v, 4).tolist() for v in mean_std))
  augment_fn = augment.make_augment_fn(config, info.num_classes, len(train_split))
  eval_ds = strategy.distribute_datasets_from_function(
      lambda context: data_lib.eval_dataset(eval_split, config.eval_batch_size, context, mean_std))
  steps_per_epoch = data_lib.steps_per_epoch(train_split, config.batch_size)
  total_steps = run_dir_lib.length_in_steps(config, steps_per_epoch)
  if resuming:
    run_dir_lib.check_length(run_dir, config, steps_per_epoch)
  num_epochs = math.ceil(total_steps / steps_per_epoch)
  logging.info("%s: %d train examples (%s), %d eval examples (%s), image %s, %d classes", info.name,
               len(train_split), config.train_split, len(eval_split), config.eval_split,
               "×".join(map(str, info.image_shape)), info.num_classes)
  if hasattr(model, "initialize_from_data"):  # E.g. airbench94's whitening from training patches.
    model.initialize_from_data(data_lib.standardizer(mean_std)(data_lib.normalize(
        data_lib.head_images(train_split, 5000))))

  # ---------------------------------------------------------------- Optimizer, loss, metrics, steps.
  # Here, as the learning-rate schedule needs the run's length in steps.
  training = build_training(config, model, strategy, steps_per_epoch, total_steps)
  optimizer, loss_fn = training.optimizer, training.loss_fn
  train_metrics, eval_metrics = training.train_metrics, training.eval_metrics
  train_step, eval_step = training.train_step, training.eval_step
  flops_per_image, train_flops_per_image = speed.model_flops_per_image(model, info.image_shape, loss_fn,
                                                                       per_replica_batch)
  throughput = speed.Throughput(config.batch_size, train_flops_per_image, config.peak_tflops,
                                strategy.num_replicas_in_sync)
  logging.info("%.4g MFLOPs per image forward, %.4g MFLOPs per image in training; precision %s, %d "
               "step(s) per loop, XLA %s", flops_per_image / 1e6, train_flops_per_image / 1e6,
               config.precision, config.steps_per_loop, "on" if config.jit_compile else "off")

  # ---------------------------------------------------------------- Run directory and summaries.
  # Only the chief writes the run directory; other workers' summaries go nowhere.
  if chief:
    run_dir_lib.prepare(run_dir, config.overwrite)
    run_dir_lib.write_flags(run_dir, config)
  writers = summaries.Writers(run_dir if chief else None)
  summaries.write_run_info(writers.run, config, info, model_table, model.count_params(),
                           os.path.basename(os.path.normpath(run_dir)))
  if config.summary_images and chief:
    summaries.write_input_grid(
        writers.train, data_lib.train_dataset(train_split, config.batch_size, config.seed, augment_fn=augment_fn,
                                              mean_std=mean_std), info.class_names, config.summary_images)
  # The same step, also writing weight and gradient histograms: run only on due steps, so that
  # the other steps carry no summary op at all.
  histogram_step = make_train_step(config, model, optimizer, loss_fn, train_metrics, strategy,
                                   training.weight_hooks,
                                   summaries.gradient_histograms(writers.train, model, optimizer))
  profiler = summaries.Profiler(os.path.join(run_dir, "train"), config.profile_steps if chief else (0, 0),
                                total_steps)
  logging.info("Run directory %s: %d steps (%d epochs of %d steps), global batch %d = %d replicas × %d",
               run_dir, total_steps, num_epochs, steps_per_epoch, config.batch_size,
               strategy.num_replicas_in_sync, per_replica_batch)

  # ---------------------------------------------------------------- Checkpoints: restore or start.
  write_dir = distribute.worker_dir(strategy, run_dir)  # A temporary directory on non-chief workers.
  checkpointer = checkpoints.Checkpointer(
      run_dir, model, optimizer, train_metrics.variables(), config.keep_checkpoints, write_dir,
      training.weight_hooks.variables() if training.weight_hooks else ())
  step = first_step = checkpointer.restore() if resuming else 0
  if step:
    print(f"Resuming {run_dir} from step {step} (epoch {step // steps_per_epoch + 1}) of {total_steps}: "
          f"{checkpointer.last_saved}", flush=True)
  # The data position is a function of the step: the pipeline starts where the restored run was.
  train_iterator = iter(strategy.distribute_datasets_from_function(
      lambda context: data_lib.train_dataset(train_split, config.batch_size, config.seed, context, step,
                                             augment_fn, mean_std)))
  if config.write_graph and not step:
    summaries.write_graph(writers.train, train_step, train_iterator)

  # ---------------------------------------------------------------- Train.
  train_seconds, loop_start = 0.0, time.perf_counter()
  eval_results = None
  train_retraces = speed.RetraceWatch("the train step", train_step)
  eval_retraces = speed.RetraceWatch("the eval step", eval_step)
  time_to_accuracy = speed.TimeToAccuracy(config.target_accuracy)
  stop_requested = distribute.any_worker(strategy)  # A signal stops every worker at the same step.
  with checkpoints.stop_on_signals() as signals, contextlib.closing(writers), _removed(write_dir, not chief):
    for epoch in range(step // steps_per_epoch + 1, num_epochs + 1):
      if step % steps_per_epoch == 0:  # Not when resuming mid-epoch: the running means were restored.
        train_metrics.reset()
      epoch_start = interval_start = time.perf_counter()
      interval_steps, epoch_end = 0, min(epoch * steps_per_epoch, total_steps)
      while step < epoch_end:
        if config.histogram_every_steps and (step + 1) % config.histogram_every_steps == 0:
          step_fn, num_steps = histogram_step, 1
        else:  # Up to --steps_per_loop steps per call, ending where something is due.
          step_fn, num_steps = train_step, min(config.steps_per_loop, epoch_end - step,
                                               *_steps_to_next(step, config))
        with profiler.step(step + 1, step + num_steps):
          outputs = step_fn(train_iterator, num_steps, step)
        step, interval_steps = step + num_steps, interval_steps + num_steps
        guard.check(step, outputs, checkpointer.describe_last(), optimizer)  # Before any save.
        checkpointer.after_step(step, epoch, config.checkpoint_every_steps)
        if stop_requested(bool(signals)):
          _stop(checkpointer, step, epoch, signals, run_dir)
        if step % config.log_every_steps == 0:
          rates = throughput.rates(interval_steps, time.perf_counter() - interval_start)
          eta = (total_steps - step) * rates["step_seconds"]
          scalars = {**rates, "gradient_norm": float(outputs["gradient_norm"]),
                     "peak_host_memory_mb": speed.peak_host_memory_mb(),
                     **summaries.train_scalars(model, optimizer)}
          _log_progress(step, total_steps, epoch, train_metrics.result(), scalars, eta, writers)
          train_retraces.check()
          interval_start, interval_steps = time.perf_counter(), 0
      train_seconds += time.perf_counter() - epoch_start
      if step > total_steps:
        break  # Resumed past a shortened --train_steps: nothing left to train.
      train_results = train_metrics.result()

      # ------------------------------------------------------------ Evaluate (and save) at each epoch end.
      with optim.averaged_weights(model, optimizer):  # The moving average when --ema_decay is set.
        eval_results, eval_outputs = evaluate(eval_step, eval_ds, eval_metrics)
      eval_retraces.check()
      writers.scalars(writers.eval, eval_results, step)
      summaries.write_eval(writers.eval, step, eval_split, eval_outputs["predictions"],
                           eval_outputs["confidence"], info.class_names, config)
      writers.flush()
      checkpointer.after_eval(step, epoch, eval_results["accuracy"])
      logging.info("epoch %d/%d  step %d  train loss %.4f accuracy %.4f  eval loss %.4f accuracy %.4f",
                   epoch, num_epochs, step, train_results["loss"], train_results["accuracy"],
                   eval_results["loss"], eval_results["accuracy"])
      if time_to_accuracy.update(eval_results["accuracy"], step, time.perf_counter() - loop_start):
        logging.info("target accuracy %.4f reached at step %d, %.1f s after training started",
                     config.target_accuracy, step, time_to_accuracy.seconds)
      if stop_requested(bool(signals)):
        _stop(checkpointer, step, epoch, signals, run_dir)
    profiler.stop()
    checkpointer.save(step, math.ceil(step / steps_per_epoch))
    with optim.averaged_weights(model, optimizer):
      if eval_results is None:  # A resumed run that had nothing left to train.
        eval_results, _ = evaluate(eval_step, eval_ds, eval_metrics)
      if test_split is not None:  # --test_split: one final evaluation, as each eval (EMA, TTA).
        test_ds = strategy.distribute_datasets_from_function(
            lambda context: data_lib.eval_dataset(test_split, config.eval_batch_size, context, mean_std))
        test_results, _ = evaluate(eval_step, test_ds, eval_metrics)
        logging.info("%s: loss %.4f accuracy %.4f", config.test_split, test_results["loss"],
                     test_results["accuracy"])
    train_results = train_metrics.result()

    # -------------------------------------------------------------- Results.
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
        # Speed (cnn/speed.py): rates over this process's training steps, the first (tracing) call included.
        **(throughput.rates(step - first_step, train_seconds) if step > first_step else {"images_per_second": 0.0}),
        "flops_per_image": flops_per_image,
        "train_flops_per_image": train_flops_per_image,
        "peak_host_memory_mb": speed.peak_host_memory_mb(),
        "retraces": train_retraces.retraces + eval_retraces.retraces,
        **time_to_accuracy.results(),
    }
    if test_split is not None:
      results.update(test_accuracy=test_results["accuracy"], test_loss=test_results["loss"],
                     test_split=config.test_split)
    writers.scalars(writers.run, {k: v for k, v in results.items() if not isinstance(v, str)}, step)
  if not chief:
    return results
  run_dir_lib.write_results(run_dir, results)
  print(f"{config.eval_split} accuracy: {results['eval_accuracy']:.4f}  (loss {results['eval_loss']:.4f}, "
        f"{step} steps, {train_seconds:.0f} s of training; results in {run_dir})")
  return results


def _log_progress(step: int, total_steps: int, epoch: int, train_results: dict[str, float],
                  scalars: dict[str, float], eta_seconds: float, writers: summaries.Writers) -> None:
  """The progress line and the train scalars (metrics and `scalars`)."""
  loss_scale = f"  loss scale {scalars['loss_scale']:g}" if "loss_scale" in scalars else ""
  logging.info("step %d/%d  epoch %d  loss %.4f  accuracy %.4f  %s%s  ETA %s", step, total_steps, epoch,
               train_results["loss"], train_results["accuracy"], speed.Throughput.describe(scalars),
               loss_scale, _duration(eta_seconds))
  writers.scalars(writers.train, {**train_results, **scalars}, step)


def _steps_to_next(step: int, config: Config) -> list[int]:
  """Steps from `step` to what ends a loop early: the next log step and checkpoint, the step before
  the next histogram step (which runs alone, in the histogram step) and the profile window's ends
  (the trace starts with a call that begins at START and stops after END)."""
  every = [config.log_every_steps, config.checkpoint_every_steps]
  histogram = config.histogram_every_steps
  start, end = config.profile_steps
  window = [start - 1 - step if step < start - 1 else end - step] if start and step < end else []
  before_histogram = [histogram - 1 - step % histogram] if histogram else []  # > 0: not due now.
  return [n - step % n for n in every if n] + before_histogram + window


def _stop(checkpointer: checkpoints.Checkpointer, step: int, epoch: int, signals: list[int], run_dir: str) -> None:
  """Saves after the current step and raises Interrupted saying how to resume.

  `signals` are this process's; empty when another worker of a multi-worker run was signalled.
  """
  path = checkpointer.save(step, epoch)  # On every worker: the save is a collective.
  path = os.path.join(checkpointer.directory, os.path.basename(path))  # The chief's copy, which is kept.
  signum = signals[0] if signals else signal.SIGTERM
  cause = signal.Signals(signum).name if signals else "a signal to another worker"
  raise Interrupted(
      f"stopped by {cause} after step {step}; saved {path}. Resume with: "
      f"python -m cnn.train --flagfile={os.path.join(run_dir, run_dir_lib.FLAGS_FILE)}", signum)


@contextlib.contextmanager
def _removed(directory: str, remove: bool) -> Iterator[None]:
  """Deletes `directory` on leaving (a non-chief worker's own checkpoints), however the run ends."""
  try:
    yield
  finally:
    if remove:
      shutil.rmtree(directory, ignore_errors=True)


def _memory_hint(config: Config) -> str:
  """What sets a run's memory, for the out-of-memory error."""
  size = f"--image_size={config.image_size}" if config.image_size else "the dataset's image size (--image_size)"
  return f"--batch_size={config.batch_size}, --eval_batch_size={config.eval_batch_size}, {size}"


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"
