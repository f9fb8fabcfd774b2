"""ImageNet-style crops on datasets of fixed size: random-resized crops come back at the dataset's size."""

import numpy as np
import pytest

from cnn import data
from cnn import train
from cnn.config import Config
from cnn.data import stream
from conftest import run_cli
import tiny_tfds


def test_random_resized_crops_of_a_fixed_size_dataset_keep_its_size_without_image_size(tiny_data_dir):
  source = data.open_dataset(Config(dataset=tiny_tfds.NAME, data_dir=tiny_data_dir, download=False,
                                    train_crop="random_resized", crop_scale=(0.25, 0.5)))
  assert source.info.image_shape == tiny_tfds.IMAGE_SHAPE
  (crops,), (held,) = data.open_splits(source, ["train"], -1), data.open_splits(source, ["train"], 1, train_first=False)
  assert isinstance(crops, stream.StreamSplit) and isinstance(held, data.Split)  # Crops stream within any budget.
  images, labels = next(iter(data.train_dataset(crops, 8, seed=0)))
  assert images.shape == (8, *tiny_tfds.IMAGE_SHAPE)
  # Crops of a quarter to half the area, enlarged: neighbouring pixels repeat more than in the originals.
  whole, whole_labels = next(iter(data.train_dataset(held, 8, seed=0)))
  assert _smoothness(images.numpy()) < 0.8 * _smoothness(whole.numpy())
  np.testing.assert_array_equal(labels.numpy(), whole_labels.numpy())  # The same examples, cropped.


def _smoothness(images: np.ndarray) -> float:
  """Mean absolute difference of horizontally neighbouring pixels."""
  return float(np.abs(np.diff(images, axis=2)).mean())


@pytest.mark.e2e
def test_a_run_with_random_resized_crops_on_a_fixed_size_tfds_dataset_trains(tiny_data_dir, tmp_path):
  code, stderr = run_cli(train.main, [f"--dataset={tiny_tfds.NAME}", f"--data_dir={tiny_data_dir}", "--nodownload",
                                      "--train_crop=random_resized", "--batch_size=16", "--train_steps=2",
                                      "--summary_images=0", "--nowrite_graph", f"--run_dir={tmp_path / 'run'}"])
  assert code == 0, stderr[-2000:]
