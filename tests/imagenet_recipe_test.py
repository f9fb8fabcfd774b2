"""The ImageNet recipe (`experiments/imagenet2012_resnet50.cfg`) on ImageNet-shaped TFDS datasets.

The datasets are written by `benchmarks/imagenet_shaped.py` (JPEGs at ImageNet's pixel count, several
shards, `imagenet2012`'s features and split names) into the test's tmp directory: from
`../shared/imagewoof2-160` when it is there, and from generated photos always. The recipe's learning
rate is given per 256 images of batch (`--lr_reference_batch`), so a few CPU steps at batch 8 run at
0.1 × 8 / 256.
"""

import dataclasses
import importlib.util
import json
import logging
import pathlib

from absl import logging as absl_logging
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn import flags as cnn_flags
from cnn import schedules
from cnn.config import Config
from cnn.errors import UserError
from conftest import REPO, run_cli

SHARED_IMAGEWOOF = REPO.parent / "shared" / "imagewoof2-160"
RECIPE = "experiments/imagenet2012_resnet50.cfg"


def imagenet_shaped():
  """benchmarks/imagenet_shaped.py as a module (benchmarks/ is not a package)."""
  spec = importlib.util.spec_from_file_location("imagenet_shaped", REPO / "benchmarks" / "imagenet_shaped.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def write_photos(root: pathlib.Path, classes: int = 12) -> pathlib.Path:
  """root/{train,val}/<synset>/ with one noise JPEG of its own size per class (some grayscale)."""
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    for label in range(classes):
      (root / split / f"n{label:08d}").mkdir(parents=True)
      channels = 1 if label % 5 == 0 else 3
      pixels = rng.integers(0, 256, (30 + 3 * label, 50 - 2 * label, channels), np.uint8)
      (root / split / f"n{label:08d}" / f"{split}_{label}.JPEG").write_bytes(tf.io.encode_jpeg(pixels).numpy())
  return root


def recipe_args(data_dir, run_dir, batch_size: int, *extra: str) -> list[str]:
  """The recipe on `imagenet_shaped` at 32 px, 3 steps (one epoch of the test sets: one evaluation),
  overriding only what a CPU test needs (one device, float32, no warmup longer than the run)."""
  return [f"--flagfile={RECIPE}", "--dataset=imagenet_shaped", f"--data_dir={data_dir}", "--nodownload",
          "--image_size=32", f"--batch_size={batch_size}", "--train_steps=3", "--lr_warmup_epochs=0",
          "--strategy=default", "--precision=float32", "--log_every_steps=1", "--summary_images=0",
          "--nowrite_graph", "--histogram_every_steps=0", f"--run_dir={run_dir}", *extra]


class _Lines(logging.Handler):
  """Keeps the messages of the records it is handed."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []

  def emit(self, record: logging.LogRecord) -> None:
    self.lines.append(record.getMessage())


def run_recipe(*args) -> str:
  """Runs `recipe_args(*args)`; returns the log line that gives the learning rate."""
  from cnn import train  # pylint: disable=import-outside-toplevel  # Defines the flags.
  # On absl's own logger, at INFO: after a first app.run in this process, flagsaver has restored its level
  # to WARNING and it no longer reaches pytest's caplog.
  logger, handler = absl_logging.get_absl_logger(), _Lines()
  logger.addHandler(handler)
  try:
    code, stderr = run_cli(train.main, [*recipe_args(*args), "--verbosity=0"])
  finally:
    logger.removeHandler(handler)
  assert code == 0, stderr
  assert json.loads((pathlib.Path(args[1]) / "results.json").read_text())["steps"] == 3
  (line,) = [line for line in handler.lines if line.startswith("Learning rate ")]
  return line


def test_the_recipe_scales_its_learning_rate_with_the_batch():
  config = cnn_flags.config_from_flagfile(RECIPE)
  assert (config.learning_rate, config.lr_reference_batch, config.batch_size) == (0.1, 256, 1024)
  assert schedules.peak_learning_rate(config) == pytest.approx(0.4)  # Goyal et al.'s 0.1 × 1024 / 256.
  schedule = schedules.build_schedule(dataclasses.replace(config, batch_size=8, lr_warmup_epochs=0), 10, 100)
  assert float(schedule(0)) == pytest.approx(0.1 * 8 / 256)
  assert schedules.peak_learning_rate(Config(learning_rate=0.1, batch_size=8)) == 0.1  # 0: as given.


def test_the_reference_batch_is_a_setting_a_resumed_run_must_keep():
  assert Config(lr_reference_batch=256).differences(Config()) == ["--lr_reference_batch=256 (the run has 0)"]
  assert "--lr_reference_batch=256\n" in Config(lr_reference_batch=256).to_flagfile()


@pytest.mark.e2e
def test_the_recipe_runs_on_a_generated_imagenet_shaped_set(tmp_path):
  module = imagenet_shaped()
  settings = module.Settings(source=str(write_photos(tmp_path / "photos")), width=80, height=70)
  builder = module.build(str(tmp_path / "tfds"), settings, shards=8)
  assert [builder.info.splits[s].num_shards for s in ("train", "validation")] == [8, 8]
  assert module.build(str(tmp_path / "tfds"), settings, shards=8).info.splits["train"].num_examples == 12  # Reused.
  with pytest.raises(UserError, match="holds imagenet_shaped made otherwise .*, 8 shards"):
    module.build(str(tmp_path / "tfds"), dataclasses.replace(settings, quality=80), shards=8)
  # resnet18 for the recipe's resnet50: the same rule, half the test's time (the real-data test runs resnet50).
  line = run_recipe(tmp_path / "tfds", tmp_path / "run", 4, "--eval_batch_size=4", "--model=resnet18")
  assert line.startswith(f"Learning rate {0.1 * 4 / 256:.6g}: "), line
  flags_txt = (tmp_path / "run" / "flags.txt").read_text()
  assert "--learning_rate=0.1\n" in flags_txt and "--lr_reference_batch=256\n" in flags_txt
  from cnn import train  # pylint: disable=import-outside-toplevel
  code, stderr = run_cli(train.main, recipe_args(tmp_path / "tfds", tmp_path / "run", 4, "--eval_batch_size=4",
                                                 "--model=resnet18", "--train_steps=4", "--lr_reference_batch=512"))
  assert code == 2 and "--lr_reference_batch=512 (the run has 256)" in stderr, stderr  # Resuming checks it.


@pytest.mark.e2e
@pytest.mark.skipif(not SHARED_IMAGEWOOF.is_dir(), reason=f"real photos not found at {SHARED_IMAGEWOOF}")
def test_the_recipe_runs_on_imagewoof_made_imagenet_shaped(tmp_path):
  module = imagenet_shaped()
  builder = module.build(str(tmp_path / "tfds"), module.Settings(source=str(SHARED_IMAGEWOOF), per_class=3),
                         shards=8)
  assert [builder.info.splits[s].num_examples for s in ("train", "validation")] == [30, 30]
  assert [builder.info.splits[s].num_shards for s in ("train", "validation")] == [8, 8]
  encoded = builder.as_dataset("train", decoders={"image": tfds.decode.SkipDecoding()}).take(5)
  for example in encoded:  # ImageNet's typical pixel count, each image's own aspect ratio.
    height, width, _ = tf.io.decode_jpeg(example["image"]).shape
    assert abs(height * width - 400 * 350) < 1000, (height, width)
  line = run_recipe(tmp_path / "tfds", tmp_path / "run", 8, "--eval_batch_size=10")
  assert line.startswith(f"Learning rate {0.4 * 8 / 1024:.6g}: "), line


def test_bad_settings_are_one_line_errors(tmp_path):
  module = imagenet_shaped()
  with pytest.raises(UserError, match="--shards=4: .* at least 8"):
    module.build(str(tmp_path), module.Settings(source=str(tmp_path)), shards=4)
  with pytest.raises(UserError, match="--size=400 must be WIDTHxHEIGHT"):
    module.parse_size("400")
  with pytest.raises(UserError, match="is not a folder"):
    module.build(str(tmp_path / "out"), module.Settings(source=str(tmp_path / "missing")))
