"""--init_from: a run starts from another run's checkpoint or a .weights.h5 file; a new head; mismatches."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from cnn import init_from
from cnn import models
from cnn import train
from cnn.checkpoints import model_variables
from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.errors import UserError
from cnn.models.resnet import CifarResNet
from checkpoints_test import tiny_args
from conftest import run_cli

TEN = DatasetInfo("ten", (16, 16, 3), 10, tuple(f"c{i}" for i in range(10)))
THREE = DatasetInfo("three", (16, 16, 3), 3, ("a", "b", "c"))


def values(model):
  return {name: v.numpy() for name, v in model_variables(model).items()}


def built(info, seed, **settings):
  tf.keras.utils.set_random_seed(seed)
  model = models.build_model(Config(**{"model": "resnet20", **settings}), info)
  model(tf.zeros((1, *info.image_shape)))
  return model


def save_checkpoint(model, directory):
  """A checkpoint laid out as the trainer's (cnn/checkpoints.py): the model's variables by path."""
  return tf.train.Checkpoint(model_variables=model_variables(model)).write(str(directory / "ckpt-1"))


@pytest.mark.e2e
def test_a_run_starts_from_another_runs_checkpoint(tiny_data_dir, tmp_path):
  source = tmp_path / "source"
  assert run_cli(train.main, tiny_args(tiny_data_dir, source, "--train_steps=3"))[0] == 0
  # A learning rate of 1e-12: one step leaves the weights where they started.
  args = ["--train_steps=1", "--optimizer=sgd", "--learning_rate=1e-12", "--seed=7"]
  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, tmp_path / "tuned", *args, f"--init_from={source}"))
  assert code == 0, stderr
  assert run_cli(train.main, tiny_args(tiny_data_dir, tmp_path / "fresh", *args))[0] == 0
  state = {name: tf.train.load_checkpoint(str(tmp_path / name / "checkpoints" / "ckpt-3" if name == "source" else
                                                tmp_path / name / "checkpoints" / "ckpt-1"))
           for name in ("source", "tuned", "fresh")}
  kernel = "model_variables/simple_cnn.Sconv1.Skernel/.ATTRIBUTES/VARIABLE_VALUE"
  source_kernel, tuned_kernel, fresh_kernel = (state[name].get_tensor(kernel) for name in ("source", "tuned", "fresh"))
  np.testing.assert_allclose(tuned_kernel, source_kernel, atol=1e-9)
  assert np.abs(fresh_kernel - source_kernel).max() > 0.01  # Without --init_from: its own initialisation.


@pytest.mark.e2e
def test_a_different_class_count_gets_a_fresh_head_and_everything_else_from_the_checkpoint(tmp_path):
  source, target = built(TEN, seed=1), built(THREE, seed=2)
  fresh = values(target)
  init_from.initialize(target, save_checkpoint(source, tmp_path), THREE.num_classes)
  for name, value in values(target).items():
    if "/logits/" in name:
      np.testing.assert_array_equal(value, fresh[name])  # Kept its own initialisation: 3 classes.
    else:
      np.testing.assert_array_equal(value, values(source)[name])


@pytest.mark.e2e
def test_a_run_trained_with_ema_gives_its_averages_as_evaluation_and_export_do(tmp_path):
  # A checkpoint laid out as the trainer's under --ema_decay: the raw weights, and their averages under
  # averages/ (cnn/checkpoints.py). The averages are what its evals, cnn.evaluate and cnn.export used.
  source, averaged = built(TEN, seed=1), built(TEN, seed=3)
  averages = {name: v for name, v in model_variables(averaged).items() if "seed_generator" not in name}
  path = tf.train.Checkpoint(model_variables=model_variables(source), averages=averages).write(
      str(tmp_path / "ckpt-1"))
  target = built(THREE, seed=2)
  fresh = values(target)
  init_from.initialize(target, path, THREE.num_classes)
  for name, value in values(target).items():
    expected = fresh[name] if "/logits/" in name else values(averaged if name in averages else source)[name]
    np.testing.assert_array_equal(value, expected, err_msg=name)


@pytest.mark.e2e
def test_an_incompatible_checkpoint_is_one_line_naming_the_mismatch(tmp_path, tiny_data_dir):
  source = tmp_path / "source"
  assert run_cli(train.main, tiny_args(tiny_data_dir, source, "--train_steps=1"))[0] == 0
  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, tmp_path / "wide", "--conv_filters=16",
                                               f"--init_from={source}"))
  assert code == 2
  assert stderr.strip() == (f"error: --init_from={source / 'checkpoints' / 'ckpt-1'} does not fit this model: "
                            "simple_cnn/conv1/bias is (8,) there, (16,) here; simple_cnn/conv1/kernel is "
                            "(3, 3, 3, 8) there, (3, 3, 3, 16) here")
  assert not (tmp_path / "wide").exists()  # Refused before anything was written.
  with pytest.raises(UserError, match=r"does not fit this model: it has variables this model lacks \(resnet20/logits/bias, .*; it lacks resnet32/"):
    init_from.initialize(built(TEN, 0, model="resnet32"), save_checkpoint(built(TEN, 0), tmp_path), 10)
  with pytest.raises(UserError, match="is neither a checkpoint"):
    init_from.initialize(built(TEN, 0), str(tmp_path / "nothing"), 10)


@pytest.mark.e2e
def test_a_keras_weights_file_initialises_the_model_with_a_new_head(tmp_path):
  source = built(TEN, seed=1)
  source.save_weights(str(tmp_path / "source.weights.h5"))
  same = built(TEN, seed=2)
  init_from.initialize(same, str(tmp_path / "source.weights.h5"), TEN.num_classes)
  expected = values(source)
  for name, value in values(same).items():
    np.testing.assert_array_equal(value, expected[name], err_msg=name)
  other = built(THREE, seed=2)
  fresh = values(other)
  with warnings.catch_warnings():
    warnings.simplefilter("error", UserWarning)  # The head is skipped without Keras's "could not be loaded" warning.
    init_from.initialize(other, str(tmp_path / "source.weights.h5"), THREE.num_classes)
  for name, value in values(other).items():
    np.testing.assert_array_equal(value, fresh[name] if "/logits/" in name else expected[name],
                                  err_msg=name)
  wider = CifarResNet(10, 3, widths=(32, 32, 64))
  wider(tf.zeros((1, 16, 16, 3)))
  with pytest.raises(UserError, match=r"^--init_from=.* does not fit this model: blocks/basic_block/bn1/vars/0 is \(16,\) there, \(32,\) here"):
    init_from.initialize(wider, str(tmp_path / "source.weights.h5"), 10)
