"""`--init_from=PATH`: start a run from another model's weights (fine-tuning, transfer learning).

PATH is a training checkpoint written by cnn (`<run_dir>/checkpoints/ckpt-500`, or a run directory:
its latest checkpoint; only the model's variables are read, not the optimizer nor the step: under
--ema_decay their moving averages, the weights its evaluations used), or a
Keras weights file (`.weights.h5`, from `model.save_weights` of the same model). Every variable must
exist on both sides with the same shape, except the classifier head when the class count differs:
the variables whose shapes differ only in their last dimension, which is the class count here (one
other count there), keep their fresh initialisation. Anything else is a one-line UserError naming
the first mismatches.

The trainer calls `initialize` right after building the model; a resumed run then restores its own
checkpoint over it, so the run's checkpoint wins.
"""

import os
import tempfile
import warnings

from absl import logging
import h5py
import tensorflow as tf

from cnn import checkpoints
from cnn import inference
from cnn.errors import UserError

Shapes = dict[str, tuple[int, ...]]
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def initialize(model: tf.keras.Model, path: str, num_classes: int) -> None:
  """Sets the built `model`'s variables from `path` (see the module docstring). Raises UserError."""
  path = os.path.expanduser(path)
  if path.endswith(".h5"):
    head = _load_weights_file(model, path, num_classes)
  else:
    head = _load_checkpoint(model, path, num_classes)
  logging.info("Initialised the model from %s%s", path,
               f"; new classifier head for {num_classes} classes: {', '.join(sorted(head))}" if head else "")


def head_variables(saved: Shapes, here: Shapes, num_classes: int, path: str) -> set[str]:
  """The names of the classifier head's variables when the class count differs (else an empty set).

  Raises:
    UserError: naming what else differs between `saved` (the file) and `here` (the model).
  """
  problems = []  # pylint: disable=protected-access  (checkpoints._names, as its mismatch messages)
  if saved.keys() - here.keys():
    problems.append(f"it has variables this model lacks ({checkpoints._names(saved.keys() - here.keys())})")
  if here.keys() - saved.keys():
    problems.append(f"it lacks {checkpoints._names(here.keys() - saved.keys())}")
  differ = {name for name in saved.keys() & here.keys() if saved[name] != here[name]}
  other_counts = {saved[name][-1] for name in differ if saved[name][:-1] == here[name][:-1]}
  head = {name for name in differ if here[name] and here[name][-1] == num_classes
          and saved[name][:-1] == here[name][:-1]}
  if len(other_counts) > 1:
    head = set()
  problems += [f"{name} is {saved[name]} there, {here[name]} here" for name in sorted(differ - head)][:2]
  if problems:
    raise UserError(f"--init_from={path} does not fit this model: {'; '.join(problems)}")
  return head


def _load_checkpoint(model: tf.keras.Model, path: str, num_classes: int) -> set[str]:
  """From a cnn training checkpoint (or a run directory's latest); returns the head's variable names.

  Under --ema_decay the checkpoint also holds the moving averages (`averages/`): those are taken, as
  the run's evaluations, `cnn.evaluate` and `cnn.export` use them (`inference.restore_model`).
  """
  if os.path.isdir(path):
    path = inference.resolve(path, "latest")
  elif not tf.io.gfile.exists(path + ".index"):
    raise UserError(f"--init_from={path} is neither a checkpoint (no {path}.index), a run directory, nor "
                    "a .weights.h5 file")
  try:
    listed = tf.train.list_variables(path)
  except (tf.errors.OpError, IndexError) as e:
    raise UserError(f"--init_from={path} cannot be read: {str(e).strip().splitlines()[0]}") from None
  saved, averaged = (_saved_under(listed, prefix) for prefix in ("model_variables/", "averages/"))
  variables = checkpoints.model_variables(model)
  head = head_variables(saved, {name: tuple(v.shape) for name, v in variables.items()}, num_classes, path)
  kept = {name: v for name, v in variables.items() if name not in head}
  groups = {"model_variables": {name: v for name, v in kept.items() if name not in averaged},
            "averages": {name: v for name, v in kept.items() if name in averaged}}
  tf.train.Checkpoint(**{group: members for group, members in groups.items() if members}).read(
      path).expect_partial().assert_existing_objects_matched()
  return head


def _saved_under(listed: list[tuple[str, list[int]]], prefix: str) -> Shapes:
  """The shapes of a checkpoint's variables under `prefix` (e.g. `model_variables/`), keyed by path."""
  return {checkpoints._unescape(name[len(prefix):-len(_SUFFIX)]): tuple(shape)  # pylint: disable=protected-access
          for name, shape in listed if name.startswith(prefix) and name.endswith(_SUFFIX)}


def _load_weights_file(model: tf.keras.Model, path: str, num_classes: int) -> set[str]:
  """From a Keras `.weights.h5` file; returns the head's entries (the file's dataset paths).

  Keras names the file's entries by its own walk of the model (`layers/dense/vars/0`), so the model's
  own weights, saved to a temporary file, give the entries to compare with. Once only the head
  differs, Keras loads the file skipping the head's layer (`skip_mismatch`), which keeps its fresh
  initialisation.
  """
  if not os.path.isfile(path):
    raise UserError(f"--init_from={path}: no such file")
  with tempfile.TemporaryDirectory() as tmp:
    fresh = os.path.join(tmp, "fresh.weights.h5")
    model.save_weights(fresh)
    try:
      with h5py.File(path, "r") as theirs, h5py.File(fresh, "r") as ours:
        head = head_variables(_dataset_shapes(theirs), _dataset_shapes(ours), num_classes, path)
    except OSError as e:
      raise UserError(f"--init_from={path} cannot be read as a Keras weights file: {e}") from None
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # Keras warns of each layer it skips: the head, which `initialize` logs.
      model.load_weights(path, skip_mismatch=bool(head))
  except ValueError as e:
    raise UserError(f"--init_from={path} does not fit this model: {str(e).strip().splitlines()[0]}") from None
  return head


def _dataset_shapes(file: h5py.File) -> Shapes:
  shapes = {}
  file.visititems(lambda name, item: shapes.__setitem__(name, tuple(item.shape))
                  if isinstance(item, h5py.Dataset) else None)
  return shapes
