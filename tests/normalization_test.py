"""Pixel values and samples of a split's images, alike for a split in memory and a streamed one."""

import numpy as np

from cnn import data
from cnn.config import Config
from cnn.data import stream
import tiny_tfds


def _held_and_streamed(data_dir, split="test", **flags):
  """Split `split` of the tiny TFDS dataset in memory and streaming (at its own size unless flags say)."""
  source = data.open_dataset(Config(dataset=tiny_tfds.NAME, data_dir=data_dir, download=False, **flags))
  (held,), (streamed,) = (data.open_splits(source, [split], budget, train_first=False) for budget in (1, 0))
  assert isinstance(held, data.Split) and isinstance(streamed, stream.StreamSplit)
  return held, streamed


def test_images_at_reads_a_streamed_splits_examples_in_the_order_asked(tiny_data_dir):
  held, streamed = _held_and_streamed(tiny_data_dir)
  indices = np.array([29, 0, 7, 7, 3])
  np.testing.assert_array_equal(data.images_at(streamed, indices), held.images[indices])
  np.testing.assert_array_equal(data.images_at(held, indices), held.images[indices])
  empty = data.images_at(streamed, np.array([], np.int64))
  assert empty.shape == (0, *tiny_tfds.IMAGE_SHAPE) and empty.dtype == np.uint8


def test_head_images_of_a_fixed_size_split_streamed_at_its_own_size(tiny_data_dir):
  # No --image_size: the views keep the dataset's size (airbench94's whitening samples them).
  held, streamed = _held_and_streamed(tiny_data_dir, "train")
  np.testing.assert_array_equal(data.head_images(streamed, 40), held.images[:40])
  np.testing.assert_array_equal(data.head_images(streamed, 1000), held.images)


def test_channel_stats_of_a_streamed_split_are_the_in_memory_ones(tiny_data_dir):
  held, streamed = _held_and_streamed(tiny_data_dir, "train", image_size=12)
  for a, b in zip(data.channel_stats(streamed), data.channel_stats(held)):
    np.testing.assert_array_equal(a, b)
