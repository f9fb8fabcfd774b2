"""The controller (Orbit's): it owns *when*; the trainer, evaluators and actions own *what*.

`Controller.run()` trains epoch by epoch up to the run's length. Within an epoch it calls the
trainer (cnn/training/trainer.py) with up to --steps_per_loop steps, cutting a call where something
is due (`steps_to_next`): a progress line, a checkpoint, a histogram step (a call of one step
with `histograms=True`), the ends of the profile window. After each call it runs the step actions
(the NaN guard), the checkpoint cadence, and the preemption check; every --eval_every (a duration,
cnn/durations.py, as every cadence here), at the last step and, with --eval_at_start, at step 0 it evaluates every eval
set (cnn/training/evaluator.py) and runs the eval actions (cnn/training/actions.py); it saves at each epoch end.
"""

import dataclasses
import math
import time
from typing import Optional, Sequence

from absl import logging
import tensorflow as tf

from cnn import checkpoints
from cnn import durations
from cnn import schedules
from cnn import summaries
from cnn import throughput as throughput_lib
from cnn.config import Config
from cnn.training import actions as actions_lib
from cnn.training import evaluator as evaluator_lib
from cnn.training import preemption as preemption_lib
from cnn.training import trainer as trainer_lib


def steps_to_next(step: int, config: Config, cadence: durations.Cadence) -> list[int]:
  """Steps from `step` to what ends a loop early: the next log step and checkpoint, the step before
  the next histogram step (which runs alone, with histograms) and the profile window's ends
  (the trace starts with a call that begins at START and stops after END)."""
  every = [cadence.log_every, cadence.checkpoint_every]
  histogram = cadence.histogram_every
  start, end = config.profile_steps
  window = [start - 1 - step if step < start - 1 else end - step] if start and step < end else []
  before_histogram = [histogram - 1 - step % histogram] if histogram else []  # > 0: not due now.
  return [n - step % n for n in every if n] + before_histogram + window


def next_call(step: int, epoch_end: int, config: Config, cadence: durations.Cadence,
              also_end_in: Sequence[int] = ()) -> tuple[int, bool]:
  """The next call of the train loop after `step`: (its number of steps, whether it writes histograms).

  `also_end_in`: more distances (in steps) at which the call must end, e.g. the next evaluation or a
  test's self-signal.
  """
  if cadence.histogram_every and (step + 1) % cadence.histogram_every == 0:
    return 1, True
  return min(config.steps_per_loop, epoch_end - step, *steps_to_next(step, config, cadence), *also_end_in), False


class Progress:
  """The progress line and train scalars at log steps: rates since the last one, ETA, metrics."""

  def __init__(self, trainer: trainer_lib.Trainer, throughput: throughput_lib.Throughput,
               writers: summaries.Writers, model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
               total_steps: int, schedule: Optional[schedules.Schedule] = None):
    self.trainer, self.throughput, self.writers = trainer, throughput, writers
    self.model, self.optimizer, self.total_steps, self.schedule = model, optimizer, total_steps, schedule
    self.retraces = throughput_lib.RetraceWatch("the train step", trainer.loop)
    self.start_interval()

  def start_interval(self) -> None:
    self.interval_start, self.interval_steps = time.perf_counter(), 0

  def log(self, step: int, epoch: int, outputs: dict[str, tf.Tensor]) -> None:
    rates = self.throughput.rates(self.interval_steps, time.perf_counter() - self.interval_start)
    eta = (self.total_steps - step) * rates["step_seconds"]
    scalars = {**rates, "gradient_norm": float(outputs["gradient_norm"]),
               "peak_host_memory_mb": throughput_lib.peak_host_memory_mb(),
               **summaries.train_scalars(self.model, self.optimizer, self.schedule)}
    train_results = self.trainer.metrics.result()
    loss_scale = f"  loss scale {scalars['loss_scale']:g}" if "loss_scale" in scalars else ""
    logging.info("step %d/%d  epoch %d  loss %.4f  accuracy %.4f  %s%s  ETA %s", step, self.total_steps, epoch,
                 train_results["loss"], train_results["accuracy"], throughput_lib.Throughput.describe(scalars),
                 loss_scale, _duration(eta))
    self.writers.scalars(self.writers.train, {**train_results, **scalars}, step)
    self.retraces.check()
    self.start_interval()


@dataclasses.dataclass
class Controller:
  """Drives a run from `trainer.step` to `total_steps`; see the module's docstring.

  `train_seconds` (time in train loop calls, evaluations excluded), `loop_start`, `eval_results`
  (the last evaluation's of --eval_split with the reported weights) and `eval_metrics` (the last
  evaluation's, every set by name) are read for the run's results.
  """
  config: Config
  trainer: trainer_lib.Trainer
  evaluators: Sequence[evaluator_lib.Evaluator]  # --eval_split's first, then --eval_splits'.
  checkpointer: checkpoints.Checkpointer
  preemption: preemption_lib.Preemption
  profiler: summaries.Profiler
  progress: Progress
  step_actions: Sequence[actions_lib.StepAction]
  eval_actions: Sequence[actions_lib.EvalAction]
  steps_per_epoch: int
  total_steps: int
  cadence: durations.Cadence  # Steps between logs, checkpoints, histograms, evaluations (the last step's too).

  def run(self) -> int:
    """Trains and evaluates when due; returns the last step. Raises Interrupted on a signal."""
    self.train_seconds, self.eval_seconds, self.loop_start = 0.0, 0.0, time.perf_counter()
    self.eval_results, self.eval_metrics = None, None
    step, num_epochs = self.trainer.step, math.ceil(self.total_steps / self.steps_per_epoch)
    if step == 0 and self.config.eval_at_start:
      self.evaluate(0, 0)
    for epoch in range(step // self.steps_per_epoch + 1, num_epochs + 1):
      epoch_start, eval_seconds = time.perf_counter(), self.eval_seconds
      step = self.train_epoch(epoch)
      self.train_seconds += time.perf_counter() - epoch_start - (self.eval_seconds - eval_seconds)
      if step > self.total_steps:
        break  # Resumed past a shortened --train_steps: nothing left to train.
      self.checkpointer.save(step, epoch)  # At each epoch end (already saved if it was evaluated).
    self.profiler.stop()
    self.checkpointer.save(step, math.ceil(step / self.steps_per_epoch))
    return step

  def eval_due(self, step: int) -> bool:
    return step % self.cadence.eval_every == 0 or step == self.total_steps

  def train_epoch(self, epoch: int) -> int:
    """Runs the train loop to the end of `epoch` (or of the run), in calls cut where something is due,
    evaluating where due."""
    config, step = self.config, self.trainer.step
    if step % self.steps_per_epoch == 0:  # Not when resuming mid-epoch: the running means were restored.
      self.trainer.metrics.reset()
    self.progress.start_interval()
    epoch_end = min(epoch * self.steps_per_epoch, self.total_steps)
    while step < epoch_end:
      eval_every = self.cadence.eval_every
      also_end_in = [*self.preemption.steps_to_next_signal(step), eval_every - step % eval_every]
      num_steps, histograms = next_call(step, epoch_end, config, self.cadence, also_end_in)
      with self.profiler.step(step + 1, step + num_steps):
        outputs = self.trainer.train(num_steps, histograms)
      step = self.trainer.step
      self.progress.interval_steps += num_steps
      for action in self.step_actions:  # Before any save: the NaN guard.
        action(step, outputs)
      self.checkpointer.after_step(step, epoch, self.cadence.checkpoint_every)
      self.preemption.after_step(step)
      self.stop_if_requested(step, epoch)
      if step % self.cadence.log_every == 0:
        self.progress.log(step, epoch, outputs)
      if self.eval_due(step):
        self.evaluate(step, epoch)
        self.progress.start_interval()  # The next rates are of training alone.
    return step

  def evaluation(self) -> tuple[list[evaluator_lib.Pass], dict[str, float]]:
    """Every eval set's passes, and their metrics by name; the last results kept for the run's results."""
    passes = [eval_pass for evaluator in self.evaluators for eval_pass in evaluator.evaluate()]
    self.eval_metrics = {name: value for eval_pass in passes for name, value in eval_pass.metrics().items()}
    self.eval_results = self.evaluators[0].results
    return passes, self.eval_metrics

  def evaluate(self, step: int, epoch: int) -> None:
    """An evaluation, its log line and the eval actions (summaries, checkpoints, metrics.csv, ...)."""
    start = time.perf_counter()
    train_results = self.trainer.metrics.result()
    passes, metrics = self.evaluation()
    logging.info("epoch %d/%d  step %d  train loss %.4f accuracy %.4f  %s", epoch,
                 math.ceil(self.total_steps / self.steps_per_epoch), step, train_results["loss"],
                 train_results["accuracy"], "  ".join(_describe(eval_pass) for eval_pass in passes))
    reported = next(eval_pass for eval_pass in passes if eval_pass.reported)  # --eval_split's.
    event = actions_lib.EvalEvent(step, epoch, self.eval_results, reported.outputs,
                                  time.perf_counter() - self.loop_start, passes, metrics)
    for action in self.eval_actions:
      action(event)
    self.eval_seconds += time.perf_counter() - start
    self.stop_if_requested(step, epoch)

  def stop_if_requested(self, step: int, epoch: int) -> None:
    """On a signal to any worker: saves after `step` on every worker and raises Interrupted."""
    if self.preemption.requested():
      self.preemption.stop(lambda: self.checkpointer.save(step, epoch), self.checkpointer.directory, step)


def _describe(eval_pass: evaluator_lib.Pass) -> str:
  """`eval_ema loss 0.1234 accuracy 0.9500 top5_accuracy 0.9900`."""
  return " ".join([eval_pass.prefix] + [f"{name} {value:.4f}" for name, value in eval_pass.results.items()])


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"
