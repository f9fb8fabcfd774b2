"""End to end: a researcher's own model through --extra_modules, own images through folder:PATH,
the recipes' flagfiles, and one-line errors for the toolkit's bad input."""

import json
import sys

import numpy as np
from PIL import Image
import pytest

from cnn import augment
from cnn import train
from cnn.models import registry
from conftest import run_cli

TINY = ["--train_steps=4", "--batch_size=8", "--eval_batch_size=16", "--log_every_steps=2"]

MODULE = '''
import tensorflow as tf
from cnn import augment
from cnn.models import registry


class Linear(tf.keras.Model):
  def __init__(self, num_classes):
    super().__init__(name="linear")
    self.flatten = tf.keras.layers.Flatten()
    self.logits = tf.keras.layers.Dense(num_classes, dtype="float32")

  def call(self, images, training=False):
    return self.logits(self.flatten(images))


@registry.register("{name}")
def build(config, info):
  return Linear(info.num_classes)


@augment.register("{name}_invert")
def invert(images, labels, ctx):
  flip = tf.random.stateless_uniform([tf.shape(images)[0]], ctx.seed) < 0.5
  return tf.where(flip[:, None, None, None], 1.0 - images, images), labels
'''


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
  """A directory outside the package on sys.path, as the current directory or PYTHONPATH would be.

  What its modules register is forgotten afterwards, so other tests see the package's own lists.
  """
  directory = tmp_path / "lab"
  directory.mkdir()
  monkeypatch.syspath_prepend(str(directory))
  monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))  # pylint: disable=protected-access
  monkeypatch.setattr(augment, "_AUGMENTATIONS", dict(augment._AUGMENTATIONS))  # pylint: disable=protected-access
  before = set(sys.modules)
  yield directory
  for name in set(sys.modules) - before:
    if name.startswith(("my_linear", "broken_lab")):
      del sys.modules[name]


@pytest.mark.e2e
def test_a_model_and_augmentation_from_an_outside_module_train(mock_tfds, module_dir, tmp_path):
  (module_dir / "my_linear_model.py").write_text(MODULE.format(name="my_linear"))
  flagfile = tmp_path / "exp.cfg"  # A flagfile may name the modules, as flags.txt does.
  flagfile.write_text("--extra_modules=my_linear_model\n--model=my_linear\n--augment=crop,my_linear_invert\n")
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [f"--flagfile={flagfile}", *TINY, f"--run_dir={run_dir}"])
  assert code == 0, stderr
  results = json.loads((run_dir / "results.json").read_text())
  assert results["steps"] == 4 and results["num_parameters"] == 32 * 32 * 3 * 10 + 10
  assert "--extra_modules=my_linear_model" in (run_dir / "flags.txt").read_text()
  assert "my_linear" in registry.names() and "my_linear_invert" in augment.names()


def test_a_module_that_fails_to_import_is_named_with_the_reason(module_dir, tmp_path):
  (module_dir / "broken_lab_module.py").write_text("import tensorflow\nraise RuntimeError('no GPU here')\n")
  for modules, message in [("broken_lab_module", "cannot import broken_lab_module: RuntimeError: no GPU here"),
                           ("no_such_lab_module", "cannot import no_such_lab_module: ModuleNotFoundError")]:
    code, stderr = run_cli(train.main, [f"--extra_modules={modules}", f"--run_dir={tmp_path / 'run'}"])
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"error: --extra_modules: {message}")
  assert not (tmp_path / "run").exists()


def write_image_folder(root, sizes=((20, 24), (30, 18), (16, 16))):
  rng = np.random.default_rng(0)
  for split, count in (("train", 12), ("test", 4)):
    for label, name in enumerate(("cat", "dog", "fish")):
      (root / split / name).mkdir(parents=True)
      for i in range(count):
        image = np.full((*sizes[i % len(sizes)], 3), 60 * label, np.uint8) + rng.integers(0, 40, (1, 1, 3), np.uint8)
        Image.fromarray(image).save(root / split / name / f"{i}.png")


@pytest.mark.e2e
def test_an_image_folder_of_varied_sizes_trains_end_to_end(tmp_path):
  write_image_folder(tmp_path / "pets")
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [f"--dataset=folder:{tmp_path / 'pets'}", "--image_size=16", "--model=resnet20",
                                      "--normalization=standardize", "--augment=crop,flip", "--train_steps=6",
                                      "--batch_size=12", "--optimizer=sgd", "--learning_rate=0.05",
                                      f"--run_dir={run_dir}", "--log_every_steps=3"])
  assert code == 0, stderr
  results = json.loads((run_dir / "results.json").read_text())
  assert results["steps"] == 6 and results["epochs"] == 2.0
  assert 0.0 <= results["eval_accuracy"] <= 1.0


@pytest.mark.parametrize("argv, message", [
    (["--image_size=0"], "has images of varying size; resize them with --image_size=N"),
    (["--image_size=16", "--eval_split=val"], "split 'val' not found in {root} (splits there: test, train)"),
])
def test_image_folder_errors(tmp_path, argv, message):
  write_image_folder(tmp_path / "pets")
  code, stderr = run_cli(train.main, [f"--dataset=folder:{tmp_path / 'pets'}", *argv,
                                      f"--run_dir={tmp_path / 'run'}"])
  assert code == 2 and message.format(root=tmp_path / "pets") in stderr, stderr
  assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize("argv, message", [
    (["--augment=crop,rotate"], "unknown augmentation 'rotate' in --augment; registered: alternating_flip"),
    (["--lr_schedule=step"], "--lr_schedule=step is not one of: constant, piecewise, cosine, linear"),
    (["--freeze_after_epochs=1"], "--freeze_after_epochs needs --freeze_variables"),
    (["--freeze_variables=conv("], "--freeze_variables: bad regular expression"),
    (["--freeze_variables=nothing_matches"], "--freeze_variables=nothing_matches matches no trainable variable "
     "of --model=simple_cnn (paths look like: simple_cnn/conv1/kernel"),
    (["--lookahead_decay=1"], "--lookahead_decay=1.0 must be less than 1.0"),
    (["--lr_warmup_epochs=2"], "--lr_warmup_epochs=2.0 (64 steps) is not shorter than training (4 steps)"),
    (["--optimizer=adamw", "--weight_decay=0.1", "--weight_decay_type=l2"], "--optimizer=adamw decays weights "
     "decoupled"),
    (["--weight_decay_exclude=bias,("], "--weight_decay_exclude: bad regular expression"),
    (["--normalization=standardize", "--normalization_mean=0.5", "--normalization_std=0.2,0.2"],
     "--normalization_mean and --normalization_std need one value per channel each"),
    (["--normalization_std=0.2,0"], "--normalization_std=0.0 must be greater than 0.0"),
    (["--dataset=folder:/nonexistent/pets"], "--dataset=folder:/nonexistent/pets needs a sub-folder train/ "
     "(and val/ or test/)"),
])
def test_toolkit_bad_input_is_one_line_and_writes_nothing(mock_tfds, tmp_path, argv, message):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [*TINY, f"--run_dir={run_dir}", *argv])
  assert code == 2 and len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: "), stderr
  assert message in stderr
  assert not run_dir.exists()


@pytest.mark.e2e
@pytest.mark.parametrize("recipe", ["cifar10_resnet20", "cifar10_resnet56", "cifar10_airbench94"])
def test_recipe_flagfiles_run(mock_tfds, tmp_path, recipe):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [f"--flagfile=experiments/{recipe}.cfg", "--train_steps=3", "--batch_size=16",
                                      "--eval_split=test[:32]", "--lr_boundaries=1,2", "--lr_warmup_epochs=0.07",
                                      f"--run_dir={run_dir}"])
  assert code == 0, stderr
  flags_txt = (run_dir / "flags.txt").read_text()
  assert f"--model={recipe.split('_')[1]}" in flags_txt and "--weight_decay_type=l2" in flags_txt


@pytest.mark.e2e
def test_a_validation_split_from_train_and_a_final_test_evaluation(mock_tfds, tmp_path):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [*TINY, "--train_split=train[:75%]", "--eval_split=train[75%:]",
                                      "--test_split=test", f"--run_dir={run_dir}"])
  assert code == 0, stderr
  results = json.loads((run_dir / "results.json").read_text())
  assert results["eval_split"] == "train[75%:]" and results["test_split"] == "test"
  assert 0.0 <= results["test_accuracy"] <= 1.0 and results["test_loss"] > 0
