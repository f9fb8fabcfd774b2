"""Checkpoints that resume a run exactly: what is saved, when, and how it is restored safely.

A checkpoint holds everything the next step depends on, so that a run killed at any step and
restarted with the same command ends bit for bit where an uninterrupted run ends:

  * every model variable, keyed by its Keras path (a Keras 3 model's layers kept in Python lists
    are invisible to `tf.train.Checkpoint(model=...)`, and so are the `SeedGenerator` states of
    Dropout and other random layers: listing `model.variables` catches both),
  * the optimizer (slots, iterations, and the loss scale when it is a LossScaleOptimizer),
  * with --ema_decay, the moving averages again under `averages/`, keyed as the model's variables
    (the same variables as the optimizer's, saved once): what evaluation used, and what
    `inference.load_trained_model` restores,
  * the lookahead's slow weights (cnn/weight_hooks.py),
  * the global step, the epoch and the best value of --best_metric so far,
  * the running train metrics of the current epoch,
  * nothing for the data: the training batches are a pure function of (seed, step), so a resumed
    run rebuilds its pipeline at the restored step (`data.train_dataset(start_step=...)`) instead
    of restoring a tf.data iterator (which also could not be saved under tf.distribute).

Layout: `<run_dir>/checkpoints/ckpt-<step>.*` (the latest `--keep_checkpoints`) and
`<run_dir>/checkpoints/best/ckpt-<step>.*` (the `--keep_best` best by `--best_metric`, ranked in
`best.json`).
"""

import json
import os
import re
from typing import Any, Optional, Sequence

from absl import logging
import tensorflow as tf

from cnn import optim
from cnn.errors import UserError

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = os.path.join(CHECKPOINTS_DIR, "best")
BEST_FILE = "best.json"
# Errors of a checkpoint file that cannot be read (truncated, corrupt, missing shards).
READ_ERRORS = (tf.errors.OpError, IndexError)  # IndexError: "Read less bytes than requested".


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


def check_model_fits(model: tf.keras.Model, path: str) -> set[str]:
  """Raises UserError naming the variables whose names or shapes differ between checkpoint and model.

  Returns:
    The keys of the variables the checkpoint holds a moving average of (see `model_averages`).
  """
  try:
    listed = tf.train.list_variables(path)
  except READ_ERRORS as e:
    raise _Unreadable(f"cannot read checkpoint {path}: {first_line(e)}") from None
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


class BestCheckpoints:
  """The `keep` best checkpoints by a metric, in their own directory (checkpoints/best/).

  `best.json` ranks them, best first, as {"step", "value", "metric"}; the directory's `checkpoint`
  file names the best last, so `tf.train.latest_checkpoint(directory)` (`cnn.evaluate
  --checkpoint=best`) gives the best one. A checkpoint is written before it is listed, and dropped
  ones are deleted after, so a run killed at any moment leaves the list true (`load` deletes files
  left unlisted).

  Args:
    checkpoint: what is saved.
    directory: where this process writes them.
    keep: how many to keep.
    metric: the metric's name (cnn/training/eval_sets.py); names ending in loss rank lowest first.
    read_directory: where the run's list is read from when resuming, if not `directory` (a
      multi-worker run's other workers write elsewhere but decide as the chief: every worker takes
      part in every save).
  """

  def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, keep: int, metric: str,
               read_directory: Optional[str] = None):
    self.checkpoint, self.directory, self.keep, self.metric = checkpoint, directory, keep, metric
    self.read_directory = read_directory or directory
    self.sign = 1.0 if metric.endswith("loss") else -1.0  # Ranks lowest first.
    self.entries: list[dict[str, Any]] = []  # Best first.

  def load(self, step: int, legacy_best: float) -> None:
    """Reads the list of a run resumed at `step`, dropping what came after it.

    `legacy_best`: the checkpoint's best eval accuracy, for a run from before best.json (one best).
    """
    path = os.path.join(self.read_directory, BEST_FILE)
    if os.path.isfile(path):
      with open(path) as f:
        entries = json.load(f)
    else:
      latest = tf.train.latest_checkpoint(self.read_directory)
      entries = ([{"step": checkpoint_step(latest), "value": legacy_best, "metric": self.metric}]
                 if latest and legacy_best >= 0 else [])
    self.entries = [e for e in entries if e["step"] <= step]
    self._write_list()

  def admits(self, value: float) -> bool:
    """Whether a checkpoint with `value` is among the best (a tie with the worst kept is not)."""
    return len(self.entries) < self.keep or self.sign * value < self.sign * self.entries[-1]["value"]

  def best(self) -> Optional[dict[str, Any]]:
    return self.entries[0] if self.entries else None

  def save(self, step: int, value: float) -> str:
    """Writes the checkpoint as step `step` with `value`, and drops what falls out of the best `keep`."""
    path = self.checkpoint.write(os.path.join(self.directory, f"ckpt-{step}"))
    entries = [e for e in self.entries if e["step"] != step] + [{"step": step, "value": value, "metric": self.metric}]
    entries.sort(key=lambda e: self.sign * e["value"])  # Stable: of equal values the earlier ranks first.
    self.entries = entries[:self.keep]
    self._write_list()
    return path

  def _write_list(self) -> None:
    """Writes best.json and the `checkpoint` file, then deletes dropped and unlisted checkpoint files."""
    tf.io.gfile.makedirs(self.directory)
    with open(os.path.join(self.directory, BEST_FILE + ".tmp"), "w") as f:
      json.dump(self.entries, f, indent=2)
    os.replace(os.path.join(self.directory, BEST_FILE + ".tmp"), os.path.join(self.directory, BEST_FILE))
    names = [f"ckpt-{e['step']}" for e in reversed(self.entries)]  # The best last: "latest".
    if names:
      tf.compat.v1.train.update_checkpoint_state(self.directory, names[-1], names)
    elif tf.io.gfile.exists(os.path.join(self.directory, "checkpoint")):
      tf.io.gfile.remove(os.path.join(self.directory, "checkpoint"))
    kept = {e["step"] for e in self.entries}
    for path in tf.io.gfile.glob(os.path.join(self.directory, "ckpt-*")):  # Also a killed write's _temp folder.
      if checkpoint_step(path) not in kept:
        (tf.io.gfile.rmtree if tf.io.gfile.isdir(path) else tf.io.gfile.remove)(path)


class Checkpointer:
  """The run's checkpoint: the latest ones in checkpoints/, the best by a metric in checkpoints/best/.

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
    keep_best: how many of the best checkpoints to keep (`BestCheckpoints`).
    best_metric: the metric that ranks them (cnn/training/eval_sets.py).
    run_state: other variables a resumed run carries on from, by name, under `run_state/` (the
      training clock: `actions.TimeToAccuracy.variables()`). A checkpoint written without them
      restores, leaving them as they are.
  """

  def __init__(self, run_dir: str, model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
               metric_variables: Sequence[tf.Variable], keep: int,
               write_dir: Optional[str] = None, weight_hook_variables: Sequence[tf.Variable] = (),
               keep_best: int = 1, best_metric: str = "eval/accuracy",
               run_state: Optional[dict[str, tf.Variable]] = None):
    self.model = model
    optimizer.build(model.trainable_variables)  # Slots exist before restoring: assert_consumed sees them.
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    self.best_eval_accuracy = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_eval_accuracy")
    averages = model_averages(model, optimizer)  # Also in the optimizer; here for inference (cnn/inference.py).
    objects = dict(
        model_variables=model_variables(model), optimizer=optimizer,
        train_metrics=list(metric_variables), step=self.step, epoch=self.epoch,
        best_eval_accuracy=self.best_eval_accuracy, weight_hooks=list(weight_hook_variables),
        **({"averages": averages} if averages else {}))
    self._without_run_state = tf.train.Checkpoint(**objects)  # For checkpoints written before it.
    self.checkpoint = tf.train.Checkpoint(**objects, **({"run_state": run_state} if run_state else {}))
    self.directory = os.path.join(run_dir, CHECKPOINTS_DIR)
    write_dir = write_dir or run_dir
    self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(write_dir, CHECKPOINTS_DIR),
                                              max_to_keep=keep)
    self.best = BestCheckpoints(self.checkpoint, os.path.join(write_dir, BEST_DIR), keep_best, best_metric,
                                os.path.join(run_dir, BEST_DIR))
    # Lists (never writes) the checkpoints to restore from: the chief's.
    self._restore_manager = (self.manager if write_dir == run_dir else
                             tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep))
    self.last_saved: Optional[str] = None
    self._saved_step = -1

  def restore(self) -> int:
    """Restores the latest readable checkpoint; returns its step (0 when there is none).

    A latest checkpoint that cannot be read (truncated, corrupt) is reported and the one before it
    is tried. A checkpoint that does not fit this run (another model, optimizer, ...) is a UserError.
    """
    for path in reversed(self._restore_manager.checkpoints):
      try:
        check_model_fits(self.model, path)
        self._checkpoint_of(path).restore(path).assert_consumed()
      except (*READ_ERRORS, _Unreadable) as e:
        logging.warning("Checkpoint %s cannot be read (%s); falling back to the one before it", path,
                        first_line(e))
        continue
      except (AssertionError, ValueError) as e:
        raise UserError(mismatch(path, e)) from None
      self.last_saved, self._saved_step = path, int(self.step)
      self.best.load(int(self.step), float(self.best_eval_accuracy))
      return int(self.step)
    if self._restore_manager.checkpoints:
      logging.warning("No checkpoint in %s could be read; starting from step 0", self.directory)
    self.best.load(0, -1.0)
    return 0

  def _checkpoint_of(self, path: str) -> tf.train.Checkpoint:
    """The checkpoint object that restores `path`: without the run state if `path` has none."""
    if any(name.startswith("run_state/") for name, _ in tf.train.list_variables(path)):
      return self.checkpoint
    return self._without_run_state

  def save(self, step: int, epoch: int) -> str:
    """Saves the state after `step` (in `epoch`) unless it is saved already; returns the path."""
    if step != self._saved_step:
      self.step.assign(step)
      self.epoch.assign(epoch)
      self.last_saved, self._saved_step = self.manager.save(checkpoint_number=step), step
    return self.last_saved

  def after_step(self, step: int, epoch: int, every: int) -> None:
    """Saves every `every` steps (0: never)."""
    if every and step % every == 0:
      self.save(step, epoch)

  def after_eval(self, step: int, epoch: int, value: float) -> None:
    """After an eval: keeps the checkpoint among the best if its metric's `value` is, and saves the latest.

    `best_eval_accuracy` in the checkpoint holds the best value of the metric.
    """
    if self.best.admits(value):
      self.step.assign(step)
      self.epoch.assign(epoch)
      best = self.best.best()
      if best is None or self.best.sign * value < self.best.sign * best["value"]:
        self.best_eval_accuracy.assign(value)
      self.best.save(step, value)
      self._saved_step = -1  # The latest must be saved too: best_eval_accuracy may have changed.
    self.save(step, epoch)

  def describe_last(self) -> str:
    """Where the last saved state is, as a clause for messages."""
    if not self.last_saved:
      return "no checkpoint was saved yet"
    return f"the last good checkpoint is {self.last_saved} (step {self._saved_step})"


def checkpoint_step(path: str) -> int:
  """The step of a checkpoint path or file: .../ckpt-500, ckpt-500.index → 500 (-1 if none)."""
  match = re.search(r"ckpt-(\d+)", os.path.basename(path))
  return int(match[1]) if match else -1


def _unescape(name: str) -> str:
  # tf.train.Checkpoint escapes "/" in object names as ".S" and "." as "..".
  return re.sub(r"\.(.)", lambda m: "/" if m[1] == "S" else m[1], name)


def _names(names) -> str:
  names = sorted(names)
  return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def first_line(error: Exception) -> str:
  text = getattr(error, "message", None) or str(error)
  return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def mismatch(path: str, error: Exception) -> str:
  return (f"checkpoint {path} does not fit this run ({first_line(error)[:300]}); it is from another "
          "model or settings: check the run's flags.txt")
