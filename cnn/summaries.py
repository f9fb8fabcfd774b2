"""TensorBoard summaries: what a run writes for TensorBoard, where, and when.

Three writers, so that TensorBoard shows a run as three runs it can plot together:

  <run_dir>/        the run: hparams (HParams dashboard), text (flags, layer table, dataset,
                    versions, devices) at step 0, and the final results as scalars at the last step
  <run_dir>/train/  scalars at log steps, weight and gradient histograms, the input image grid,
                    the train step's graph, and profiler traces (plugins/profile/)
  <run_dir>/eval/   scalars, confusion matrix and misclassified-image grid at each eval

Everything is written from Python at the moments `cnn/training/controller.py` chooses. Gradients exist only
inside the train loop: on histogram steps the loop copies them into `GradientHistograms`'
variables, and the histograms are written from Python after that call.
"""

import contextlib
import os
import platform
from typing import Any, Callable, Iterator, Optional, Sequence

from absl import logging
import numpy as np
import tensorboard
from tensorboard.plugins.hparams import api as hp
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn import render
from cnn.config import Config
from cnn.config import OPERATIONAL_FIELDS
from cnn.data import DatasetInfo
from cnn.data import images_at
from cnn.data import Split
from cnn.data.stream import StreamSplit


class Writers:
  """The run's summary writers: `run` (the run directory itself), `train` and `eval`.

  Args:
    run_dir: the run directory; None for writers that discard everything (a non-chief worker).
  """

  def __init__(self, run_dir: Optional[str]):
    if run_dir is None:
      self.run = self.train = self.eval = tf.summary.create_noop_writer()
    else:
      self.run = tf.summary.create_file_writer(run_dir)
      self.train = tf.summary.create_file_writer(os.path.join(run_dir, "train"))
      self.eval = tf.summary.create_file_writer(os.path.join(run_dir, "eval"))

  @staticmethod
  def scalars(writer: tf.summary.SummaryWriter, values: dict[str, float], step: int) -> None:
    with writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)

  def flush(self) -> None:
    for writer in (self.run, self.train, self.eval):
      writer.flush()

  def close(self) -> None:
    for writer in (self.run, self.train, self.eval):
      writer.close()


# ------------------------------------------------------------------ At the start of a run.

def write_run_info(writer: tf.summary.SummaryWriter, config: Config, info: DatasetInfo, model_table: str,
                   num_parameters: int, run_name: str) -> None:
  """Text summaries (flags, model, dataset, versions, devices) and the run's hparams, at step 0."""
  with writer.as_default(step=0):
    tf.summary.text("flags", _code(config.to_flagfile()), description="The run's flags.txt.")
    tf.summary.text("model", _code(model_table), description="Layers, output shapes, parameter counts.")
    tf.summary.text("dataset", _table(
        ("dataset", info.name), ("image shape", "×".join(map(str, info.image_shape))),
        ("classes", f"{info.num_classes}: {', '.join(info.class_names)}"),
        ("train split", config.train_split), ("eval split", config.eval_split)))
    tf.summary.text("versions", _table(
        ("package", "version"), ("Python", platform.python_version()), ("TensorFlow", tf.__version__),
        ("Keras", tf.keras.__version__), ("TensorFlow Datasets", tfds.__version__),
        ("TensorBoard", tensorboard.__version__), ("NumPy", np.__version__),
        ("platform", platform.platform())))
    tf.summary.text("devices", _table(*_devices()))
    hp.hparams(hparams(config, num_parameters), trial_id=run_name)


def hparams(config: Config, num_parameters: int) -> dict[str, Any]:
  """The run's hyperparameters for the HParams dashboard: every Config field but the operational ones.

  Lists (e.g. conv_filters) become strings "32,64"; the model's parameter count is added.
  """
  values = {}
  for name, value in vars(config).items():
    if name not in OPERATIONAL_FIELDS:
      values[name] = ",".join(map(str, value)) if isinstance(value, tuple) else value
  values["num_parameters"] = num_parameters
  return values


def write_input_grid(writer: tf.summary.SummaryWriter, dataset: tf.data.Dataset,
                     class_names: Sequence[str], max_images: int) -> None:
  """A grid of the first training batch as the model sees it (after any augmentation), at step 0.

  The train dataset is deterministic, so its first batch is the batch of the first train step.
  """
  images, labels = next(iter(dataset.take(1)))
  images, labels = images[:max_images].numpy(), labels[:max_images].numpy()
  if labels.ndim == 2:  # Mixed labels (mixup, cutmix): the classes in the mix, with their weights.
    captions = [[f"{class_names[c]} {weights[c]:.0%}" for c in np.argsort(-weights)[:2] if weights[c] > 0]
                for weights in labels]
  else:
    captions = [[class_names[label]] for label in labels]
  grid = render.image_grid(images, captions)
  with writer.as_default(step=0):
    tf.summary.image("inputs", grid[None], description=(
        f"The first {len(labels)} training inputs after augmentation, with their class names."))


def write_graph(writer: tf.summary.SummaryWriter, train_step: Callable, iterator: Iterator) -> None:
  """The train step's graph for the Graphs dashboard (the trace the first step call reuses)."""
  with writer.as_default():
    tf.summary.graph(train_step.get_concrete_function(iterator).graph)


# ------------------------------------------------------------------ During training.

class GradientHistograms:
  """Per-layer weight and gradient histograms, written without a summary op in the compiled loop.

  On a histogram step the loop copies the gradients the optimizer applied (summed over replicas,
  unscaled under float16, through the transforms of cnn/gradients.py) into variables of this
  object (`record`, behind a `tf.cond`: a few assigns to trace, none run on other steps); the
  caller then writes both histograms eagerly from Python (`write`). Tracing histogram ops for every
  variable inside the loop cost 3-4 s at the first histogram step (or at the first call, behind a
  cond), on every run; an eager histogram costs milliseconds, on due steps only.

  Args:
    model: the model whose trainable variables are summarised, built under `strategy`'s scope.
    strategy: the run's strategy; the copies are per replica (every replica holds the same sum)
      and are read from the first.
  """

  def __init__(self, model: tf.keras.Model, strategy: tf.distribute.Strategy):
    self.model = model
    with strategy.scope():
      self.gradients = [
          tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="applied_gradient",
                      synchronization=tf.VariableSynchronization.ON_READ,
                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
          for v in model.trainable_variables]

  def record(self, gradients: Sequence[tf.Tensor]) -> None:
    """In the loop, on a histogram step: keeps the applied gradients for `write`."""
    for copy, gradient in zip(self.gradients, gradients):
      copy.assign(tf.cast(gradient, copy.dtype))

  def write(self, writer: tf.summary.SummaryWriter, step: int) -> None:
    """The weights now and the gradients `record` kept, as histograms at `step`."""
    with writer.as_default(step=step):
      for variable, gradient in zip(self.model.trainable_variables, self.gradients):
        name = _variable_name(self.model, variable)
        tf.summary.histogram(f"weights/{name}", variable)
        tf.summary.histogram(f"gradients/{name}", gradient)


def train_scalars(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
                  schedule: Optional[tf.keras.optimizers.schedules.LearningRateSchedule] = None) -> dict[str, float]:
  """The model's global weight norm, the loss scale under float16 and, given the optimizer's schedule,
  the learning rate of the last step.

  That rate is the schedule at the optimizer's step count before that step (`optimizer.learning_rate` is
  the next step's). Read here, where it is logged, rather than at every step of the train loop.
  """
  values = {"weight_norm": float(tf.linalg.global_norm(model.trainable_variables))}
  if schedule is not None:
    # Through convert_to_tensor: int() of a Keras variable fails under tf.distribute.
    taken = int(tf.convert_to_tensor(optimizer.iterations))  # Every step, a skipped float16 one too: the
    values["learning_rate"] = float(schedule(max(taken - 1, 0)))  # schedule's count (tests/optim_test.py).
  if isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer):
    # Through convert_to_tensor: float() of a Keras variable fails under tf.distribute.
    values["loss_scale"] = float(tf.convert_to_tensor(optimizer.dynamic_scale) if optimizer.built
                                 else optimizer.initial_scale)
  return values


class Profiler:
  """Captures a `tf.profiler` trace of train steps START..END (counted from 1, inclusive).

  The trace goes to `<logdir>/plugins/profile/<time>/<host>.xplane.pb`, which TensorBoard's
  Profile dashboard reads (`pip install -e '.[profile]'` installs it). Each call of the train step
  in the window is annotated with its first step's number, so the dashboard shows a step-time
  breakdown. The trace starts with the call whose first step is START: the trainer ends a
  `--steps_per_loop` call before START and at END (`controller.steps_to_next`).
  """

  def __init__(self, logdir: str, steps: Sequence[int], total_steps: int):
    self.logdir, (self.start, self.end) = logdir, steps
    self.active = False
    if 0 < total_steps < self.start:
      logging.warning("--profile_steps=%d,%d: the run has only %d steps; nothing is profiled", self.start,
                      self.end, total_steps)

  @contextlib.contextmanager
  def step(self, step: int, last_step: Optional[int] = None) -> Iterator[None]:
    """Wraps the call of train steps `step`..`last_step` (default: `step` alone).

    Starts the trace when the call begins at START (or inside the window, so that a call cut
    elsewhere is not missed) and stops it after the call that reaches END.
    """
    last_step = step if last_step is None else last_step
    if not self.active and self.start and step <= self.end and last_step >= self.start:
      if step != self.start:
        logging.warning("--profile_steps=%d,%d: the trace starts at step %d", self.start, self.end, step)
      tf.profiler.experimental.start(self.logdir)
      self.active = True
    if not self.active:
      yield
      return
    with tf.profiler.experimental.Trace("train", step_num=step, _r=1):
      yield
    if last_step >= self.end:
      self.stop()

  def stop(self) -> None:
    """Ends the trace if it is running (also when the run ends inside the window)."""
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False
      logging.info("Profile of steps %d-%d written under %s", self.start, self.end, self.logdir)


# ------------------------------------------------------------------ At each eval.

def write_eval(writer: tf.summary.SummaryWriter, step: int, split: Split | StreamSplit, predictions: np.ndarray,
               confidence: np.ndarray, class_names: Sequence[str], config: Config) -> None:
  """The confusion matrix (image and table) and the most confidently misclassified images.

  Args:
    writer: the eval writer.
    step: the train step the model was evaluated at.
    split: the eval split (in memory or streaming: the images shown are read from it), in the order the
      predictions were made.
    predictions: predicted class of each example.
    confidence: the predicted class's softmax probability for each example.
    class_names: the dataset's class names.
    config: `confusion_matrix` and `summary_images` say what to write.
  """
  with writer.as_default(step=step):
    if config.confusion_matrix:
      matrix = tf.math.confusion_matrix(split.labels, predictions, num_classes=len(class_names)).numpy()
      tf.summary.image("confusion_matrix", render.confusion_matrix_image(matrix, class_names)[None],
                       description="Rows: true class; columns: predicted class; colour: share of the row.")
      rows = [(name, *counts) for name, counts in zip(class_names, matrix)]
      tf.summary.text("confusion_matrix_table", _table(("true \\ predicted", *class_names), *rows))
    if config.summary_images:
      wrong = np.flatnonzero(predictions != split.labels)
      worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:config.summary_images]
      if len(worst):
        captions = [[f"true {class_names[split.labels[i]]}",
                     f"pred {class_names[predictions[i]]} {confidence[i]:.0%}"] for i in worst]
        tf.summary.image("misclassified", render.image_grid(images_at(split, worst), captions)[None],
                         description=(f"The {len(worst)} most confidently misclassified of {len(wrong)} "
                                      "misclassified eval images: true class, predicted class, its probability."))


# ------------------------------------------------------------------ Helpers.

def _variable_name(model: tf.keras.Model, variable: tf.Variable) -> str:
  """`conv1/kernel` for `simple_cnn/conv1/kernel`: the layer path inside the model."""
  path = variable.path
  return path[len(model.name) + 1:] if path.startswith(model.name + "/") else path


def _code(text: str) -> str:
  """Markdown that shows `text` verbatim in a monospace block."""
  return f"```\n{text.rstrip()}\n```"


def _table(*rows: Sequence[Any]) -> str:
  """A markdown table; the first row is the header."""
  lines = ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
  lines.insert(1, "|" + " --- |" * len(rows[0]))
  return "\n".join(lines)


def _devices() -> list[tuple[str, str]]:
  rows = [("device", "details")]
  for device in tf.config.list_physical_devices():
    details = tf.config.experimental.get_device_details(device)
    rows.append((device.name, ", ".join(f"{k}: {v}" for k, v in details.items()) or device.device_type))
  cpu = _cpu_model()
  rows.append(("host CPU", f"{cpu + ', ' if cpu else ''}{os.cpu_count()} logical cores"))
  return rows


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
  except OSError:  # Not Linux.
    return platform.processor()
