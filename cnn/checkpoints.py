"""Checkpoints that resume a run exactly: what is saved, when, and how it is restored safely.

A checkpoint holds everything the next step depends on, so that a run killed at any step and
restarted with the same command ends bit for bit where an uninterrupted run ends:

  * every model variable, keyed by its Keras path (a Keras 3 model's layers kept in Python lists
    are invisible to `tf.train.Checkpoint(model=...)`, and so are the `SeedGenerator` states of
    Dropout and other random layers: listing `model.variables` catches both),
  * the optimizer (slots, iterations, and the loss scale when it is a LossScaleOptimizer),
  * with --ema_decay, the moving averages again under `averages/`, keyed as the model's variables
    (the same variables as the optimizer's, saved once): what evaluation used, and what
    `load_trained_model` restores for inference,
  * the lookahead's slow weights (cnn/weight_hooks.py),
  * the global step, the epoch and the best eval accuracy so far,
  * the running train metrics of the current epoch,
  * nothing for the data: the training batches are a pure function of (seed, step), so a resumed
    run rebuilds its pipeline at the restored step (`data.train_dataset(start_step=...)`) instead
    of restoring a tf.data iterator (which also could not be saved under tf.distribute).

Layout: `<run_dir>/checkpoints/ckpt-<step>.*` (the latest `--keep_checkpoints`) and
`<run_dir>/checkpoints/best/ckpt-<step>.*` (the one with the best eval accuracy).
"""

import contextlib
import dataclasses
import os
import re
import signal
from typing import Iterator, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn import data as data_lib
from cnn import models
from cnn import optim
from cnn import plugins
from cnn import run_dir as run_dir_lib
from cnn.config import Config
from cnn.errors import UserError

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = os.path.join(CHECKPOINTS_DIR, "best")
# Test-only: `CNN_TEST_SIGKILL_AT_STEP=K` makes a training process send itself SIGKILL right after step
# K (and any checkpoint due at K), so that tests kill it at an exact step. A real SIGKILL: nothing runs.
# `CNN_TEST_SIGTERM_AT_STEP=K` likewise sends SIGTERM (to one worker of a multi-worker run, say).
_SIGNAL_ENV = {signal.SIGKILL: "CNN_TEST_SIGKILL_AT_STEP", signal.SIGTERM: "CNN_TEST_SIGTERM_AT_STEP"}
# Errors of a checkpoint file that cannot be read (truncated, corrupt, missing shards).
_READ_ERRORS = (tf.errors.OpError, IndexError)  # IndexError: "Read less bytes than requested".


class _Unreadable(UserError):
  """A checkpoint file that cannot be read (as opposed to one that does not fit)."""


def model_variables(model: tf.keras.Model) -> dict[str, tf.Variable]:
  """Every variable of a built model by its path (seed-generator states included), for checkpoints."""
  variables = {}
  for variable in model.variables:
    key, n = variable.path, 1
    while key in variables:  # Paths need not be unique (e.g. seed generators); keep them apart.
      n += 1
      key = f"{variable.path}#{n}"
    variables[key] = variable
  return variables


def model_averages(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer) -> dict[str, tf.Variable]:
  """The moving average of each averaged model variable (--ema_decay), keyed as in `model_variables`."""
  average_of = {id(variable): average for variable, average in optim.moving_averages(model, optimizer)}
  return {key: average_of[id(v)] for key, v in model_variables(model).items() if id(v) in average_of}


def resolve(run_dir: str, which: str) -> str:
  """The checkpoint path `which` names: "latest", "best", or a checkpoint path. Raises UserError."""
  if which in ("latest", "best"):
    directory = os.path.join(run_dir, CHECKPOINTS_DIR if which == "latest" else BEST_DIR)
    path = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    if path is None:
      raise UserError(f"--run_dir={run_dir} has no {which} checkpoint (looked in {directory})")
    return path
  if not tf.io.gfile.exists(which + ".index"):
    raise UserError(f"--checkpoint={which} is not a checkpoint (no {which}.index); give latest, best, "
                    "or a path such as <run_dir>/checkpoints/ckpt-500")
  return which


def restore_model(model: tf.keras.Model, path: str) -> None:
  """Restores the model's variables from a training checkpoint as evaluation saw them, checking they all match.

  Where the checkpoint has a moving average of a variable (--ema_decay), the variable gets the
  average, as in the run's evaluations; the others their own value. The model must be built (by a
  forward call) first. Raises UserError naming what did not match, e.g. for a checkpoint of another model.
  """
  averaged_keys = check_model_fits(model, path)
  variables = model_variables(model)
  groups = {"model_variables": {k: v for k, v in variables.items() if k not in averaged_keys},
            "averages": {k: v for k, v in variables.items() if k in averaged_keys}}
  checkpoint = tf.train.Checkpoint(**{name: group for name, group in groups.items() if group})
  try:
    checkpoint.read(path).expect_partial().assert_existing_objects_matched()  # Other state is not needed.
  except _READ_ERRORS as e:
    raise UserError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
  except (AssertionError, ValueError) as e:
    raise UserError(_mismatch(path, e)) from None


def check_model_fits(model: tf.keras.Model, path: str) -> set[str]:
  """Raises UserError naming the variables whose names or shapes differ between checkpoint and model.

  Returns:
    The keys of the variables the checkpoint holds a moving average of (see `model_averages`).
  """
  try:
    listed = tf.train.list_variables(path)
  except _READ_ERRORS as e:
    raise _Unreadable(f"cannot read checkpoint {path}: {_first_line(e)}") from None
  suffix = "/.ATTRIBUTES/VARIABLE_VALUE"

  def saved_under(prefix: str) -> dict[str, tuple[int, ...]]:
    return {_unescape(name[len(prefix):-len(suffix)]): tuple(shape) for name, shape in listed
            if name.startswith(prefix) and name.endswith(suffix)}

  saved = saved_under("model_variables/")
  here = {name: tuple(variable.shape) for name, variable in model_variables(model).items()}
  problems = [f"{name} is {saved[name]} there, {here[name]} here"
              for name in sorted(saved.keys() & here.keys()) if saved[name] != here[name]][:2]
  if saved.keys() - here.keys():
    problems.append(f"it has variables this model lacks ({_names(saved.keys() - here.keys())})")
  if here.keys() - saved.keys():
    problems.append(f"it lacks {_names(here.keys() - saved.keys())}")
  if problems:
    raise UserError(f"checkpoint {path} is of another model: {'; '.join(problems)}; check the run's flags")
  return set(saved_under("averages/"))


@dataclasses.dataclass
class TrainedModel:
  """A run's model with a checkpoint restored, what it was trained on, and how it sees its inputs."""
  config: Config
  builder: tfds.core.DatasetBuilder
  info: data_lib.DatasetInfo
  model: tf.keras.Model
  checkpoint: str
  mean_std: Optional[tuple[np.ndarray, np.ndarray]]  # Per-channel standardisation, as in training.

  def preprocess(self, images: tf.Tensor) -> tf.Tensor:
    """uint8 images (already at the model's size) → the model's float inputs, as in training."""
    return data_lib.standardizer(self.mean_std)(data_lib.normalize(images))


def load_trained_model(run_dir: str, which: str = "latest", data_dir: str = "", dataset: str = "") -> TrainedModel:
  """Rebuilds a run's model from its flags.txt and restores checkpoint `which` (latest, best or a path).

  The model is the one the run evaluated: its --extra_modules imported, built under its --precision,
  with the moving averages restored under --ema_decay (`restore_model`).

  Args:
    run_dir: the run directory.
    which: "latest", "best", or a checkpoint path.
    data_dir: where the dataset is on this machine, if not at the run's --data_dir.
    dataset: for a run on `folder:PATH`, the folder on this machine (`folder:OTHER_PATH`).

  Raises:
    UserError: a missing run, checkpoint or dataset, or a checkpoint of another model.
  """
  config = run_dir_lib.read_config(run_dir)
  config = dataclasses.replace(config, data_dir=data_dir or config.data_dir, dataset=_dataset(config, dataset))
  path = resolve(run_dir, which)
  plugins.import_modules(config.extra_modules)
  builder = data_lib.get_builder(config.dataset, config.data_dir, config.download)
  info = data_lib.dataset_info(builder, config.image_size)
  previous_policy = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(config.precision)  # As the trainer builds it.
  try:
    model = models.build_model(config, info)
    model(tf.zeros((1, *info.image_shape)))  # Build first: restoring into an unbuilt model skips variables.
  finally:
    tf.keras.mixed_precision.set_global_policy(previous_policy)
  restore_model(model, path)
  # The training split is read only when the run's standardisation statistics came from it.
  needs_split = config.normalization == "standardize" and not config.normalization_mean
  train_split = data_lib.load_split(builder, config.train_split, config.image_size) if needs_split else None
  mean_std = data_lib.input_mean_std(config, train_split)
  return TrainedModel(config, builder, info, model, path, mean_std)


def _dataset(config: Config, dataset: str) -> str:
  """The run's --dataset, or `dataset` where it moves a folder dataset. Raises UserError."""
  if not dataset or dataset == config.dataset:
    return config.dataset
  if not (dataset.startswith("folder:") and config.dataset.startswith("folder:")):
    raise UserError(f"--dataset={dataset}: only the location of a folder dataset can be changed (the run "
                    f"has --dataset={config.dataset}); use --data_dir for a TFDS dataset elsewhere")
  return dataset


class Checkpointer:
  """The run's checkpoint: the latest ones in checkpoints/, the best by eval accuracy in checkpoints/best/.

  Args:
    run_dir: the run directory.
    model: the model, built (by a forward call) before this is made.
    optimizer: the optimizer; it is built here, so that restoring can check every slot.
    metric_variables: variables of the running train metrics.
    keep: how many of the latest checkpoints to keep.
    write_dir: where this process saves, if not `run_dir`: a multi-worker run's non-chief workers
      must take part in every save, but into a temporary directory (their copy is not kept). They
      restore from the chief's checkpoints in `run_dir`.
    weight_hook_variables: the lookahead's slow weights (cnn/weight_hooks.py), if any.
  """

  def __init__(self, run_dir: str, model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
               metric_variables: Sequence[tf.Variable], keep: int,
               write_dir: Optional[str] = None, weight_hook_variables: Sequence[tf.Variable] = ()):
    self.model = model
    optimizer.build(model.trainable_variables)  # Slots exist before restoring: assert_consumed sees them.
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    self.best_eval_accuracy = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_eval_accuracy")
    averages = model_averages(model, optimizer)  # Also in the optimizer; here for inference (restore_model).
    self.checkpoint = tf.train.Checkpoint(
        model_variables=model_variables(model), optimizer=optimizer,
        train_metrics=list(metric_variables), step=self.step, epoch=self.epoch,
        best_eval_accuracy=self.best_eval_accuracy, weight_hooks=list(weight_hook_variables),
        **({"averages": averages} if averages else {}))
    self.directory = os.path.join(run_dir, CHECKPOINTS_DIR)
    write_dir = write_dir or run_dir
    self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(write_dir, CHECKPOINTS_DIR),
                                              max_to_keep=keep)
    self.best_manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(write_dir, BEST_DIR),
                                                   max_to_keep=1)
    # Lists (never writes) the checkpoints to restore from: the chief's.
    self._restore_manager = (self.manager if write_dir == run_dir else
                             tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep))
    self.last_saved: Optional[str] = None
    self._saved_step = -1
    self._signal_at = {int(os.environ[name]): signum for signum, name in _SIGNAL_ENV.items()
                       if os.environ.get(name)}

  def restore(self) -> int:
    """Restores the latest readable checkpoint; returns its step (0 when there is none).

    A latest checkpoint that cannot be read (truncated, corrupt) is reported and the one before it
    is tried. A checkpoint that does not fit this run (another model, optimizer, ...) is a UserError.
    """
    for path in reversed(self._restore_manager.checkpoints):
      try:
        check_model_fits(self.model, path)
        self.checkpoint.restore(path).assert_consumed()
      except (*_READ_ERRORS, _Unreadable) as e:
        logging.warning("Checkpoint %s cannot be read (%s); falling back to the one before it", path,
                        _first_line(e))
        continue
      except (AssertionError, ValueError) as e:
        raise UserError(_mismatch(path, e)) from None
      self.last_saved, self._saved_step = path, int(self.step)
      return int(self.step)
    if self._restore_manager.checkpoints:
      logging.warning("No checkpoint in %s could be read; starting from step 0", self.directory)
    return 0

  def save(self, step: int, epoch: int) -> str:
    """Saves the state after `step` (in `epoch`) unless it is saved already; returns the path."""
    if step != self._saved_step:
      self.step.assign(step)
      self.epoch.assign(epoch)
      self.last_saved, self._saved_step = self.manager.save(checkpoint_number=step), step
    return self.last_saved

  def after_step(self, step: int, epoch: int, every: int) -> None:
    """Saves every `every` steps (0: never); the test-only self-signal hooks (see _SIGNAL_ENV)."""
    if every and step % every == 0:
      self.save(step, epoch)
    if step in self._signal_at:
      os.kill(os.getpid(), self._signal_at[step])

  def after_eval(self, step: int, epoch: int, eval_accuracy: float) -> None:
    """At an epoch end: keeps the checkpoint as the best if its eval accuracy is, and saves the latest."""
    if eval_accuracy > float(self.best_eval_accuracy):
      self.best_eval_accuracy.assign(eval_accuracy)
      self.step.assign(step)
      self.epoch.assign(epoch)
      self.best_manager.save(checkpoint_number=step)
      self._saved_step = -1  # The latest must be saved too: best_eval_accuracy changed.
    self.save(step, epoch)

  def describe_last(self) -> str:
    """Where the last saved state is, as a clause for messages."""
    if not self.last_saved:
      return "no checkpoint was saved yet"
    return f"the last good checkpoint is {self.last_saved} (step {self._saved_step})"


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[list[int]]:
  """Turns SIGTERM/SIGINT into a request the loop honours after its current step.

  Yields a list that receives the signal number. A second signal acts at once (the handlers are
  restored on the first). Outside the main thread (e.g. some notebooks) signals are left alone.
  """
  received: list[int] = []
  previous = {}

  def handler(signum, frame):
    del frame
    received.append(signum)
    for s, h in previous.items():
      signal.signal(s, h)

  try:
    for s in signals:
      previous[s] = signal.signal(s, handler)
  except ValueError:  # Not the main thread.
    pass
  try:
    yield received
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def _unescape(name: str) -> str:
  # tf.train.Checkpoint escapes "/" in object names as ".S" and "." as "..".
  return re.sub(r"\.(.)", lambda m: "/" if m[1] == "S" else m[1], name)


def _names(names) -> str:
  names = sorted(names)
  return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _first_line(error: Exception) -> str:
  text = getattr(error, "message", None) or str(error)
  return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def _mismatch(path: str, error: Exception) -> str:
  return (f"checkpoint {path} does not fit this run ({_first_line(error)[:300]}); it is from another "
          "model or settings: check the run's flags.txt")
