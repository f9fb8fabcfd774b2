"""Every path serves example i of a multi-shard split as record i in file order: its image with its label.

The fixtures (tests/tiny_tfds/sharded.py) are written in 6 shards of 17-30 records, 13 classes; each
image shows its example's number, so a test reads back which record an image came from and checks its
label against it. One test per path: in memory, streamed, the centre-crop hold (images of varying
size), the TFRecord reader (slicing, its cache, a damaged record), ArrayRecord, a folder. Through the
tf.data service: tests/data_service_test.py.
"""

import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from cnn import data
from cnn.config import Config
from cnn.data import bad_images
from cnn.data import folder
from cnn.data import stream
from cnn.data import tfds_stream
from cnn.errors import UserError
from tiny_tfds import sharded

SLICE = "train[25:70]"  # Crosses two shard boundaries (30 records a shard).


@pytest.fixture(scope="module", name="images_dir")
def fixture_images_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("sharded"))
  sharded.prepare(sharded.IMAGES_NAME, data_dir)
  return data_dir


def _source(name, data_dir, **flags):
  return data.open_dataset(Config(dataset=name, data_dir=data_dir, download=False, **flags))


def _eval_examples(split, **kwargs):
  """(images, labels) of one evaluation pass over `split`, in split order."""
  batches = list(data.eval_dataset(split, 32, **kwargs))
  return np.concatenate([b[0].numpy() for b in batches]), np.concatenate([b[1].numpy() for b in batches])


def assert_in_file_order(builder, split_name, images, labels):
  """Example i shows record i of the split in file order, with that record's label."""
  expected = sharded.file_order(builder, split_name)
  np.testing.assert_array_equal(sharded.number_of(images), expected)
  np.testing.assert_array_equal(labels, sharded.label_of(expected))


def assert_paired(images, labels):
  """Each image goes with its own label, whatever the order (training batches)."""
  np.testing.assert_array_equal(labels, sharded.label_of(sharded.number_of(images)))


def test_in_memory_splits_are_in_file_order(images_dir):
  # Before: as_dataset interleaved the shards (16 at a time, blocks of 16): right pairs, another order.
  source = _source(sharded.IMAGES_NAME, images_dir)
  for name in ("test", SLICE):
    (held,) = data.open_splits(source, [name], budget_mb=64)
    assert isinstance(held, data.Split)
    assert_in_file_order(source.builder, name, held.images, held.labels)


@pytest.mark.e2e
def test_streamed_splits_pair_each_image_with_its_label_in_file_order(images_dir):
  # Before: labels read through as_dataset (interleaved shards) beside images read by offset.
  source = _source(sharded.IMAGES_NAME, images_dir)
  streamed, streamed_eval = data.open_splits(source, ["train", "test"], budget_mb=0)
  assert isinstance(streamed, stream.StreamSplit) and isinstance(streamed_eval, stream.StreamSplit)
  assert_in_file_order(source.builder, "test", *_eval_examples(streamed_eval))
  assert_in_file_order(source.builder, "train", *_eval_examples(streamed))
  (held,) = data.open_splits(source, ["train"], budget_mb=64)
  local = data.train_dataset(held, 16, seed=5, start_step=9)  # 11 steps an epoch: crosses into epoch 2.
  for (images, labels), (held_images, held_labels) in zip(data.train_dataset(streamed, 16, seed=5, start_step=9)
                                                          .take(4), local.take(4)):
    assert_paired(images.numpy(), labels.numpy())
    np.testing.assert_array_equal(images, held_images)
    np.testing.assert_array_equal(labels, held_labels)


@pytest.mark.e2e
def test_images_of_varying_size_held_as_centre_crops_keep_their_labels(tmp_path):
  # Before: the hold path decoded the streamed images beside the streamed (wrong) labels.
  builder = sharded.prepare(sharded.PHOTOS_NAME, str(tmp_path))
  source = _source(sharded.PHOTOS_NAME, str(tmp_path), image_size=8)
  assert source.preprocessing.center_crop
  (held,), (streamed,) = data.open_splits(source, [SLICE], 64), data.open_splits(source, [SLICE], 0)
  assert isinstance(held, data.Split) and isinstance(streamed, stream.StreamSplit)
  assert_in_file_order(builder, SLICE, held.images, held.labels)
  assert_in_file_order(builder, SLICE, *_eval_examples(streamed))


def test_the_tfrecord_reader_reads_record_i_its_table_is_cached_and_a_damaged_record_is_one_line(
    images_dir, tmp_path, monkeypatch):
  source = _source(sharded.IMAGES_NAME, images_dir, data_cache_dir=str(tmp_path / "cache"))
  first = tfds_stream.open_split(source.builder, SLICE, source.preprocessing, source.cache_dir)
  assert_in_file_order(source.builder, SLICE, stream.decode_all(first), first.labels)
  monkeypatch.setattr(tfds_stream, "record_table", lambda *args: pytest.fail("scanned again"))
  monkeypatch.setattr(tfds_stream, "_labels", lambda *args: pytest.fail("labels read again"))
  second = tfds_stream.open_split(source.builder, SLICE, source.preprocessing, source.cache_dir)
  np.testing.assert_array_equal(first.labels, second.labels)
  monkeypatch.undo()
  # A damaged record (a flipped byte in a copy of the dataset) stops the run naming its file.
  copy = tmp_path / "damaged"
  shutil.copytree(f"{images_dir}/{sharded.IMAGES_NAME}", copy / sharded.IMAGES_NAME)
  damaged_source = _source(sharded.IMAGES_NAME, str(copy))
  shard = pathlib.Path(damaged_source.builder.info.splits["test"].file_instructions[2].filename)
  content = bytearray(shard.read_bytes())
  content[100] ^= 0xFF  # Inside the first record's data.
  shard.write_bytes(content)
  with pytest.raises(tf.errors.OpError) as error:
    tfds_stream.open_split(damaged_source.builder, "test", damaged_source.preprocessing, None)
  message = bad_images.pipeline_error_message(error.value)
  assert message == f"{shard} holds a damaged record at byte 0: the dataset is damaged; prepare it again", message


def test_array_record_splits_are_in_file_order_streamed_and_held(tmp_path):
  pytest.importorskip("array_record")
  builder = sharded.prepare(sharded.IMAGES_NAME, str(tmp_path), file_format="array_record")
  source = _source(sharded.IMAGES_NAME, str(tmp_path))
  (held,), (streamed,) = data.open_splits(source, [SLICE], 64), data.open_splits(source, [SLICE], 0)
  assert isinstance(held, data.Split) and isinstance(streamed, stream.StreamSplit)
  assert_in_file_order(builder, SLICE, held.images, held.labels)
  assert_in_file_order(builder, SLICE, *_eval_examples(streamed))


def test_folder_examples_are_the_listed_files_with_their_class(tmp_path):
  root = tmp_path / "images"
  for number in range(60):  # 13 class folders, each file named by its number.
    path = root / "train" / f"c{sharded.label_of(number):02d}" / f"{number}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(sharded.image_of(number, 10 + number % 5, 12)).numpy())
  source = data.open_dataset(Config(dataset=f"folder:{root}", image_size=8))
  listed = folder.list_split(str(root), "train", source.info.class_names)
  numbers = np.array([int(p.decode().rsplit("/", 1)[1].split(".")[0]) for p in listed.paths])
  np.testing.assert_array_equal(listed.labels, sharded.label_of(numbers))
  (held,), (streamed,) = data.open_splits(source, ["train"], 64), data.open_splits(source, ["train"], 0)
  for images, labels in ((held.images, held.labels), _eval_examples(streamed)):
    np.testing.assert_array_equal(sharded.number_of(images), numbers)
    np.testing.assert_array_equal(labels, listed.labels)


def test_an_array_record_split_streamed_is_refused_by_the_data_service(tmp_path):
  pytest.importorskip("array_record")
  from cnn.data import service  # pylint: disable=import-outside-toplevel
  sharded.prepare(sharded.IMAGES_NAME, str(tmp_path), file_format="array_record")
  (streamed,) = data.open_splits(_source(sharded.IMAGES_NAME, str(tmp_path)), ["test"], 0)
  with pytest.raises(UserError, match="ArrayRecord.*TFRecord") as error:
    service.check_split(streamed)
  assert "\n" not in str(error.value)
