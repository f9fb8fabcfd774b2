"""TFDS datasets over the memory budget stream: random access by index to TFRecord (and ArrayRecord) splits."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnn import data
from cnn.config import Config
from cnn.data import stream
from cnn.data import tfds_stream
import tiny_tfds


def _source(data_dir, **flags):
  return data.open_dataset(Config(dataset=tiny_tfds.NAME, data_dir=data_dir, download=False, **flags))


def _batches(split, start_step=0, count=14):
  batches = data.train_dataset(split, 8, seed=3, start_step=start_step)
  return [(images.numpy(), labels.numpy()) for images, labels in batches.take(count)]


@pytest.mark.e2e
def test_a_streamed_tfds_split_feeds_the_in_memory_batches_and_resumes_at_any_step(tiny_data_dir):
  source = _source(tiny_data_dir)
  streamed, streamed_eval = data.open_splits(source, ["train", "test"], budget_mb=0)
  held, held_eval = data.open_splits(source, ["train", "test"], budget_mb=1)
  assert isinstance(streamed, stream.StreamSplit) and isinstance(held, data.Split)
  np.testing.assert_array_equal(streamed.labels, held.labels)
  expected = _batches(held)  # 12 steps an epoch: the run crosses into epoch 2.
  for (a_images, a_labels), (b_images, b_labels) in zip(_batches(streamed), expected):
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
  for step in (5, 11, 12):  # Exact resume: the pipeline rebuilt at step k gives batch k onwards.
    for (a_images, a_labels), (b_images, b_labels) in zip(_batches(streamed, step, 2), expected[step:]):
      np.testing.assert_array_equal(a_images, b_images)
      np.testing.assert_array_equal(a_labels, b_labels)
  a, b = (np.concatenate([batch[0] for batch in data.eval_dataset(s, 7)]) for s in (streamed_eval, held_eval))
  np.testing.assert_array_equal(a, b)


def test_the_record_table_is_cached_and_a_second_open_reads_no_labels(tiny_data_dir, tmp_path, monkeypatch):
  source = _source(tiny_data_dir, data_cache_dir=str(tmp_path / "cache"))
  first = tfds_stream.open_split(source.builder, "train[10:50]", source.preprocessing, source.cache_dir)
  monkeypatch.setattr(tfds_stream, "_labels", lambda *args: pytest.fail("scanned again"))
  monkeypatch.setattr(tfds_stream, "record_table", lambda *args: pytest.fail("scanned again"))
  second = tfds_stream.open_split(source.builder, "train[10:50]", source.preprocessing, source.cache_dir)
  np.testing.assert_array_equal(first.labels, second.labels)
  assert len(second) == 40
  held = data.load_split(source.builder, "train[10:50]")
  np.testing.assert_array_equal(stream.decode_all(second), held.images)


def test_array_record_splits_stream_through_array_record(tmp_path):
  pytest.importorskip("array_record")
  builder = tfds.builder(tiny_tfds.NAME, data_dir=str(tmp_path / "ar"), file_format="array_record")
  builder.download_and_prepare()
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  source = data.open_dataset(Config(dataset=tiny_tfds.NAME, data_dir=str(tmp_path / "ar"), download=False))
  (streamed,), (held,) = data.open_splits(source, ["test"], 0), data.open_splits(source, ["test"], 1)
  np.testing.assert_array_equal(stream.decode_all(streamed), held.images)
  np.testing.assert_array_equal(streamed.labels, held.labels)


@pytest.mark.e2e
def test_tfds_images_of_varying_size_are_centre_cropped_alike_in_memory_and_streaming(tmp_path):
  tfds.builder(tiny_tfds.PHOTOS_NAME, data_dir=str(tmp_path)).download_and_prepare()
  source = data.open_dataset(Config(dataset=tiny_tfds.PHOTOS_NAME, data_dir=str(tmp_path), download=False, image_size=8,
                                    train_crop="random_resized"))
  assert source.preprocessing.center_crop and source.info.image_shape == (8, 8, 3)
  (held,), (streamed,) = data.open_splits(source, ["test"], 1, train_first=False), data.open_splits(source, ["test"], 0)
  assert isinstance(held, data.Split) and isinstance(streamed, stream.StreamSplit)
  np.testing.assert_array_equal(held.images, stream.decode_all(streamed))
  (train,) = data.open_splits(source, ["train"], 1)  # Random-resized crops: streams within any budget.
  images, _ = next(iter(data.train_dataset(train, 4, seed=0)))
  assert isinstance(train, stream.StreamSplit) and images.shape == (4, 8, 8, 3)
