"""A run: set it up, train and evaluate it, and write its results.

`train_and_evaluate` reads top to bottom in banner sections, each delegating to a plain function
below it. Who does what (in cnn/training/ unless said): when things happen, controller.py; what is
trained and one call of the compiled train loop, trainer.py (the train step in train_step.py); one
pass over eval data, evaluator.py; what happens after a step or an eval, actions.py; checkpoints,
cnn/checkpoints.py; signals, preemption.py.
"""

import contextlib
import dataclasses
import math
import os
import shutil
import time
from typing import Any, Callable, Iterator, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from cnn import augment
from cnn import checkpoints
from cnn import data as data_lib
from cnn import distribute
from cnn import durations
from cnn import flops
from cnn import hardware
from cnn import plugins
from cnn import run_dir as run_dir_lib
from cnn import summaries
from cnn import system_errors
from cnn import throughput as throughput_lib
from cnn.config import Config
from cnn.data import service as data_service
from cnn.training import actions
from cnn.training import controller as controller_lib
from cnn.training import eval_sets
from cnn.training import evaluator as evaluator_lib
from cnn.training import metrics_csv
from cnn.training import preemption
from cnn.training import trainer as trainer_lib


def train_and_evaluate(config: Config) -> dict[str, Any]:
  """Trains `config.model` on `config.dataset`, evaluating when due (cnn/training/controller.py).

  Writes flags.txt, results.json, metrics.csv, checkpoints and TensorBoard event files into the run directory.
  A run directory that holds a run with the same settings resumes it from its latest checkpoint;
  one that holds it finished is left as it is (its results are returned).

  Raises:
    UserError: for settings, data or a run directory that cannot be used, non-finite training, or
      out of memory, disk space or permissions.
    Interrupted: on SIGTERM/SIGINT (on any worker), after saving a checkpoint.
  """
  with system_errors.as_user_errors(_memory_hint(config)):
    # ---------------------------------------------------------------- Set-up
    config.validate()
    run_dir = config.run_dir or run_dir_lib.default_run_dir(config)
    config = dataclasses.replace(config, run_dir=run_dir)  # So flags.txt names it, and resumes it.
    resuming = run_dir_lib.check(run_dir, config)
    finished = run_dir_lib.finished_results(run_dir, config) if resuming else None
    if finished:  # Nothing to do, and nothing is written.
      return _report_finished(run_dir, finished)
    strategy = set_up(config)
    chief = strategy.extended.should_checkpoint  # Only the chief writes the run directory.

    # ---------------------------------------------------------------- Model
    # Built before the splits are read, so that a bad name or shape fails in a second.
    source = data_lib.open_dataset(config)
    model, model_table = trainer_lib.build_model_in_scope(config, source.info, strategy)
    best_metric = eval_sets.best_metric(config, source.info.num_classes)  # Checks --eval_splits, --eval_top_k.

    # ---------------------------------------------------------------- Data
    data = open_data(config, source, strategy, resuming, run_dir)
    if hasattr(model, "initialize_from_data"):  # E.g. airbench94's whitening from training patches.
      model.initialize_from_data(data.preprocess(data_lib.head_images(data.train_split, 5000)))

    # ---------------------------------------------------------------- Training state
    training = trainer_lib.build_training(config, model, strategy, data.steps_per_epoch, data.total_steps,
                                          source.info.num_classes)
    throughput = measure_flops(config, training, source.info, strategy)
    writers = start_run_dir(config, run_dir, chief, strategy, source.info, model, model_table, data)
    write_dir = distribute.worker_dir(strategy, run_dir)  # A temporary directory on non-chief workers.
    time_to_accuracy = actions.TimeToAccuracy(config.target_accuracy)  # Its clock is in the checkpoint.
    checkpointer = build_checkpointer(config, run_dir, write_dir, training, best_metric, time_to_accuracy)
    trainer = start_trainer(config, run_dir, resuming, checkpointer, training, data, writers)

    # ---------------------------------------------------------------- Loop
    cadence, final_sets = build_evaluators(data, training)
    eval_summaries = actions.EvalSummaries(writers, run_dir if strategy.extended.should_save_summary else None,
                                           source.info.class_names, config)
    write_csv = ([actions.WriteMetricsCsv(metrics_table(run_dir, trainer.step), data.steps_per_epoch)]
                 if chief else [])
    controller = controller_lib.Controller(
        config, trainer, cadence, checkpointer, preemption.Preemption(strategy, run_dir),
        summaries.Profiler(os.path.join(run_dir, "train"), config.profile_steps if chief else (0, 0),
                           data.total_steps),
        controller_lib.Progress(trainer, throughput, writers, model, training.optimizer, data.total_steps,
                                training.schedule),
        step_actions=[actions.NanGuard(checkpointer, training.optimizer), time_to_accuracy.after_step],
        eval_actions=[eval_summaries, time_to_accuracy,  # Before the save: the target's step is saved.
                      actions.SaveCheckpoints(checkpointer, best_metric), *write_csv],
        steps_per_epoch=data.steps_per_epoch, total_steps=data.total_steps,
        cadence=durations.cadence(config, data.steps_per_epoch, data.total_steps))
    first_step = trainer.step
    time_to_accuracy.start()
    with (controller.preemption, contextlib.closing(writers), contextlib.closing(eval_summaries),
          _removed(write_dir, not chief)):
      step = controller.run()

      # -------------------------------------------------------------- Results
      results = {**final_evaluations(controller, final_sets),
                 **train_results(controller, step, first_step, data.steps_per_epoch, model, throughput, cadence),
                 **time_to_accuracy.results()}
      writers.scalars(writers.run, {k: v for k, v in results.items() if not isinstance(v, str)}, step)
  if chief:
    _write_results(run_dir, results, config.eval_split, controller.train_seconds)
  return results


# ------------------------------------------------------------------ Set-up.

def set_up(config: Config) -> tf.distribute.Strategy:
  """The run's strategy, seeds and determinism; checks the batch sizes against the replicas."""
  strategy = distribute.make_strategy(config)
  tf.keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()  # Process-wide; TensorFlow cannot undo it.
  distribute.per_replica_batch_size(strategy, config.batch_size, "batch_size")
  distribute.per_replica_batch_size(strategy, config.eval_batch_size, "eval_batch_size")
  plugins.import_modules(config.extra_modules)  # Already imported by the CLI; needed from a notebook.
  return strategy


def _report_finished(run_dir: str, finished: dict[str, Any]) -> dict[str, Any]:
  print(f"{run_dir} holds this run finished ({finished['steps']} steps, {finished['eval_split']} accuracy "
        f"{finished['eval_accuracy']:.4f}); nothing to do (a larger --train_steps or --epochs extends it)",
        flush=True)
  return finished


# ------------------------------------------------------------------ Data.

@dataclasses.dataclass
class RunData:
  """The run's splits, how its inputs are prepared, and its length in steps."""
  train_split: Any
  eval_split: Any
  test_split: Any  # None without --test_split.
  mean_std: Optional[tuple[np.ndarray, np.ndarray]]
  augment_fn: Optional[Callable]
  steps_per_epoch: int
  total_steps: int
  config: Config
  strategy: tf.distribute.Strategy
  service_workers: int = 0  # Workers of the --data_service tf.data service (0: none, input made here).
  named_splits: list[tuple[str, Any]] = dataclasses.field(default_factory=list)  # --eval_splits, by name.

  def preprocess(self, images: Any) -> tf.Tensor:
    """uint8 images → the model's float inputs, as the pipeline makes them."""
    return data_lib.standardizer(self.mean_std)(data_lib.to_unit_range(images))

  def eval_dataset(self, split: Any) -> tf.distribute.DistributedDataset:
    return self.strategy.distribute_datasets_from_function(
        lambda context: data_lib.eval_dataset(split, self.config.eval_batch_size, context, self.mean_std))

  def train_dataset(self, start_step: int) -> tf.distribute.DistributedDataset:
    """The training batches from `start_step` on: the data position is a function of the step."""
    def dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
      batches = data_lib.train_dataset(self.train_split, self.config.batch_size, self.config.seed, context,
                                       start_step, self.augment_fn, self.mean_std,
                                       service_shards=self.service_workers > 1)
      if not self.config.data_service:
        return batches
      return data_service.distribute(batches, self.config.data_service, self.service_workers)

    return self.strategy.distribute_datasets_from_function(dataset)

  @property
  def eval_sets(self) -> list[tuple[str, Any]]:
    """(name, split) of each eval set (eval_sets.py): --eval_split, --eval_splits, then --test_split if set."""
    return [(eval_sets.PRIMARY, self.eval_split), *self.named_splits] + (
        [(eval_sets.split_name(self.config.test_split), self.test_split)] if self.test_split is not None else [])


def open_data(config: Config, source: data_lib.DataSource, strategy: tf.distribute.Strategy, resuming: bool,
              run_dir: str) -> RunData:
  """Opens the splits (in memory within --data_memory_budget_mb, else streaming: see data.open_splits)."""
  info = source.info
  named = eval_sets.named_splits(config.eval_splits)
  train_split, eval_split, test_split, *named_splits = data_lib.open_splits(
      source, [config.train_split, config.eval_split, config.test_split, *(split for _, split in named)],
      config.data_memory_budget_mb)
  mean_std = data_lib.input_mean_std(config, train_split)
  if mean_std is not None:
    logging.info("Standardising inputs with mean %s, std %s", *(np.round(v, 4).tolist() for v in mean_std))
  service_workers = 0
  if config.data_service:
    data_service.check_split(train_split)
    service_workers = data_service.connect(config.data_service)
    logging.info("Training input from the tf.data service at %s: %d worker(s)", config.data_service,
                 service_workers)
  steps_per_epoch = data_lib.steps_per_epoch(train_split, config.batch_size)
  total_steps = run_dir_lib.length_in_steps(config, steps_per_epoch)
  if resuming:
    run_dir_lib.check_length(run_dir, config, steps_per_epoch)
  logging.info("%s: %d train examples (%s), %d eval examples (%s), image %s, %d classes", info.name,
               len(train_split), config.train_split, len(eval_split), config.eval_split,
               "×".join(map(str, info.image_shape)), info.num_classes)
  return RunData(train_split, eval_split, test_split, mean_std,
                 augment.make_augment_fn(config, info.num_classes, len(train_split)), steps_per_epoch,
                 total_steps, config, strategy, service_workers,
                 [(name, split) for (name, _), split in zip(named, named_splits)])


# ------------------------------------------------------------------ Training state.

def measure_flops(config: Config, training: trainer_lib.Training, info: data_lib.DatasetInfo,
                  strategy: tf.distribute.Strategy) -> throughput_lib.Throughput:
  """Counts the model's FLOPs (cnn/flops.py), logs them, and returns the run's throughput accounting."""
  per_replica_batch = config.batch_size // strategy.num_replicas_in_sync
  forward, train = flops.model_flops_per_image(training.model, info.image_shape, training.loss_fn, per_replica_batch)
  logging.info("%.4g MFLOPs per image forward, %.4g MFLOPs per image in training; precision %s, %d "
               "step(s) per loop, XLA %s", forward / 1e6, train / 1e6, config.precision, config.steps_per_loop,
               "on" if config.jit_compile else "off")
  accelerators = len(tf.config.list_physical_devices("GPU")) + len(tf.config.list_physical_devices("TPU"))
  warning = hardware.bf16_warning(config.precision, accelerators)
  if warning:
    logging.warning(warning)
  return throughput_lib.Throughput(config.batch_size, train, config.peak_tflops, strategy.num_replicas_in_sync,
                                   forward)


def start_run_dir(config: Config, run_dir: str, chief: bool, strategy: tf.distribute.Strategy,
                  info: data_lib.DatasetInfo, model: tf.keras.Model, model_table: str,
                  data: RunData) -> summaries.Writers:
  """Prepares the run directory (on the chief) and returns its summary writers, the run's info written."""
  if chief:
    run_dir_lib.prepare(run_dir, config.overwrite)
    run_dir_lib.write_flags(run_dir, config)
  writers = summaries.Writers(run_dir if strategy.extended.should_save_summary else None)
  summaries.write_run_info(writers.run, config, info, model_table, model.count_params(),
                           os.path.basename(os.path.normpath(run_dir)))
  if config.summary_images and chief:
    summaries.write_input_grid(
        writers.train, data_lib.train_dataset(data.train_split, config.batch_size, config.seed,
                                              augment_fn=data.augment_fn, mean_std=data.mean_std),
        info.class_names, config.summary_images)
  num_epochs = math.ceil(data.total_steps / data.steps_per_epoch)
  logging.info("Run directory %s: %d steps (%d epochs of %d steps), global batch %d = %d replicas × %d",
               run_dir, data.total_steps, num_epochs, data.steps_per_epoch, config.batch_size,
               strategy.num_replicas_in_sync, config.batch_size // strategy.num_replicas_in_sync)
  return writers


def build_checkpointer(config: Config, run_dir: str, write_dir: str, training: trainer_lib.Training,
                       best_metric: str, time_to_accuracy: actions.TimeToAccuracy) -> checkpoints.Checkpointer:
  """What a checkpoint holds: model, optimizer, running train metrics, weight hooks' state, the target's clock."""
  return checkpoints.Checkpointer(
      run_dir, training.model, training.optimizer, training.train_metrics.variables(), config.keep_checkpoints,
      write_dir, training.weight_hooks.variables() if training.weight_hooks else (), config.keep_best, best_metric,
      time_to_accuracy.variables())


def start_trainer(config: Config, run_dir: str, resuming: bool, checkpointer: checkpoints.Checkpointer,
                     training: trainer_lib.Training, data: RunData, writers: summaries.Writers) -> trainer_lib.Trainer:
  """Restores the latest checkpoint when resuming, and starts the trainer at its step."""
  step = checkpointer.restore() if resuming else 0
  if step:
    print(f"Resuming {run_dir} from step {step} (epoch {step // data.steps_per_epoch + 1}) of "
          f"{data.total_steps}: {checkpointer.last_saved}", flush=True)
  iterator = iter(data.train_dataset(step))
  if config.write_graph and not step:
    summaries.write_graph(writers.train, training.train_loop, iterator)
  return trainer_lib.Trainer(training.train_loop, iterator, training.train_metrics, writers.train, step,
                             training.histograms)


# ------------------------------------------------------------------ Results.

def build_evaluators(data: RunData, training: trainer_lib.Training) -> tuple[list[evaluator_lib.Evaluator],
                                                                  list[evaluator_lib.Evaluator]]:
  """The evaluators of every evaluation (--eval_split's, then --eval_splits'), and of the final one (--test_split)."""
  evaluators = [evaluator_lib.Evaluator(name, split, data.eval_dataset(split), training.eval_step,
                                        training.eval_metrics, training.model, training.optimizer)
                for name, split in data.eval_sets]
  every = len(evaluators) - (data.test_split is not None)
  return evaluators[:every], evaluators[every:]


def final_evaluations(controller: controller_lib.Controller,
                      test_evaluators: list[evaluator_lib.Evaluator]) -> dict[str, Any]:
  """The last evaluation's results (evaluated now if none was in this process) and one of --test_split,
  as results.json keys: `eval_*` and `test_*` of the reported weights, and every metric by name."""
  if controller.eval_metrics is None:
    controller.evaluation()
  config = controller.config
  results = {**{f"eval_{key}": value for key, value in controller.eval_results.items()},
             "eval_split": config.eval_split, **controller.eval_metrics}
  for evaluator in test_evaluators:  # One final evaluation, as each eval (EMA, TTA).
    passes = evaluator.evaluate()
    logging.info("%s: loss %.4f accuracy %.4f", config.test_split, evaluator.results["loss"],
                 evaluator.results["accuracy"])
    results.update({f"test_{key}": value for key, value in evaluator.results.items()}, test_split=config.test_split)
    results.update({name: value for eval_pass in passes for name, value in eval_pass.metrics().items()})
  return results


def metrics_table(run_dir: str, step: int) -> metrics_csv.MetricsCsv:
  """The run's metrics.csv, without rows after `step` (a killed run's evaluations past its checkpoint)."""
  table = metrics_csv.MetricsCsv(os.path.join(run_dir, metrics_csv.FILE))
  table.truncate(step)
  return table


def train_results(controller: controller_lib.Controller, step: int, first_step: int, steps_per_epoch: int,
                  model: tf.keras.Model, throughput: throughput_lib.Throughput,
                  evaluators: list[evaluator_lib.Evaluator]) -> dict[str, Any]:
  """The run's train metrics, times, length and speed, as results.json keys (this process began at `first_step`)."""
  metrics = controller.trainer.metrics.result()
  return {"train_accuracy": metrics["accuracy"], "train_loss": metrics["loss"],
          "train_seconds": controller.train_seconds,
          "wall_seconds": time.perf_counter() - controller.loop_start,  # Training and evaluation.
          "steps": step, "epochs": step / steps_per_epoch, "num_parameters": model.count_params(),
          **speed_results(throughput, step - first_step, controller, evaluators)}


def _write_results(run_dir: str, results: dict[str, Any], eval_split: str, train_seconds: float) -> None:
  run_dir_lib.write_results(run_dir, results)
  print(f"{eval_split} accuracy: {results['eval_accuracy']:.4f}  (loss {results['eval_loss']:.4f}, "
        f"{results['steps']} steps, {train_seconds:.0f} s of training; results in {run_dir})")


def speed_results(throughput: throughput_lib.Throughput, steps_here: int, controller: controller_lib.Controller,
                  evaluators: list[evaluator_lib.Evaluator]) -> dict[str, Any]:
  """Rates over this process's training steps (the first, tracing, call included), FLOPs, memory, retraces."""
  rates = throughput.rates(steps_here, controller.train_seconds) if steps_here > 0 else {"images_per_second": 0.0}
  return {**rates, "flops_per_image": throughput.flops_per_image,
          "train_flops_per_image": throughput.train_flops_per_image,
          "peak_host_memory_mb": throughput_lib.peak_host_memory_mb(),
          "retraces": controller.progress.retraces.retraces + evaluators[0].retraces.retraces}


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
