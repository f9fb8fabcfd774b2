"""Inference: a trained run's model, restored with the weights its evaluations used, and its preprocessing.

`cnn.evaluate`, `cnn.export` and `cnn.predict` start here: `load_trained_model(run_dir, which)`
rebuilds the model from the run's flags.txt, restores a checkpoint (`resolve`: latest, best or a
path) through `restore_model` (moving averages where the run kept them, as evaluation saw them),
and opens the run's dataset as training did (`data.open_dataset`: its preprocessing, e.g. the centre
crop of images of varying size) with the standardisation the run's inputs had. Training state and
its checkpoints are in cnn/checkpoints.py.
"""

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from cnn import data as data_lib
from cnn import models
from cnn import plugins
from cnn import run_dir as run_dir_lib
from cnn.checkpoints import BEST_DIR
from cnn.checkpoints import CHECKPOINTS_DIR
from cnn.checkpoints import READ_ERRORS
from cnn.checkpoints import check_model_fits
from cnn.checkpoints import first_line
from cnn.checkpoints import mismatch
from cnn.checkpoints import model_variables
from cnn.config import Config
from cnn.data import preprocess
from cnn.errors import UserError


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
  except READ_ERRORS as e:
    raise UserError(f"cannot read checkpoint {path}: {first_line(e)}") from None
  except (AssertionError, ValueError) as e:
    raise UserError(mismatch(path, e)) from None



@dataclasses.dataclass
class TrainedModel:
  """A run's model with a checkpoint restored, what it was trained on, and how it sees its inputs."""
  config: Config
  source: data_lib.DataSource  # The run's dataset, opened as training opened it.
  model: tf.keras.Model
  checkpoint: str
  mean_std: Optional[tuple[np.ndarray, np.ndarray]]  # Per-channel standardisation, as in training.

  @property
  def info(self) -> data_lib.DatasetInfo:
    return self.source.info

  @property
  def takes_any_size(self) -> bool:
    """Whether the dataset's images vary in size: evaluation sees their centre crops, not the whole image."""
    return self.source.preprocessing.center_crop

  def preprocess(self, images: tf.Tensor) -> tf.Tensor:
    """uint8 evaluation views (already at the model's size) → the model's float inputs, as in training."""
    return data_lib.standardizer(self.mean_std)(data_lib.to_unit_range(images))

  def preprocess_photos(self, images: tf.Tensor) -> tf.Tensor:
    """uint8 decoded images [N, H, W, C] of any (one) size → the model's inputs, as evaluation makes them.

    Each image's evaluation view (`preprocess.decoded_eval_view`: the centre crop for a dataset of
    varying size), standardised.
    """
    settings = self.source.preprocessing
    views = tf.map_fn(lambda image: preprocess.decoded_eval_view(image, settings), images,
                      fn_output_signature=tf.TensorSpec(settings.shape, tf.float32))
    return data_lib.standardizer(self.mean_std)(views)


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
  source = data_lib.open_dataset(config)
  info = source.info
  previous_policy = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(config.precision)  # As the trainer builds it.
  try:
    model = models.build_model(config, info)
    model(tf.zeros((1, *info.image_shape)))  # Build first: restoring into an unbuilt model skips variables.
  finally:
    tf.keras.mixed_precision.set_global_policy(previous_policy)
  restore_model(model, path)
  # The training split is opened only when the run's standardisation statistics came from it, as the
  # run opens it (run.open_data): the statistics are the same bits.
  needs_split = config.normalization == "standardize" and not config.normalization_mean
  train_split = (data_lib.open_splits(source, [config.train_split], config.data_memory_budget_mb)[0]
                 if needs_split else None)
  mean_std = data_lib.input_mean_std(config, train_split)
  return TrainedModel(config, source, model, path, mean_std)


def _dataset(config: Config, dataset: str) -> str:
  """The run's --dataset, or `dataset` where it moves a folder dataset. Raises UserError."""
  if not dataset or dataset == config.dataset:
    return config.dataset
  if not (dataset.startswith("folder:") and config.dataset.startswith("folder:")):
    raise UserError(f"--dataset={dataset}: only the location of a folder dataset can be changed (the run "
                    f"has --dataset={config.dataset}); use --data_dir for a TFDS dataset elsewhere")
  return dataset


