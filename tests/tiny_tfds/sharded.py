"""Multi-shard TFDS fixtures whose every example shows its own number, to check which image goes with which label.

Real TFDS datasets come in many shards (ImageNet: 1,024), and TFDS writes a split's examples in an order
hashed from their keys. Example `n` here has a flat-colour image that encodes `n` (`number_of` reads it
back, JPEG included), the label `label_of(n)` (13 classes) and the feature `number`. `file_order` reads
a split's records in the order of its file instructions: the order every path must serve them in.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

IMAGES_NAME = "cnn_sharded_images"
PHOTOS_NAME = "cnn_sharded_photos"
NUM_CLASSES = 13
SHARDS = 6
SPLIT_SIZES = {"train": 180, "test": 102}  # 30 and 17 records a shard: more than TFDS's blocks of 16.
IMAGE_SHAPE = (16, 16, 3)
_STEP = 16  # Colour levels a digit apart: a JPEG's error (a few levels) cannot move a digit.


def label_of(number):
  """Example `number`'s label: a pattern neither shards nor blocks of 16 line up with."""
  return (np.asarray(number) * 5 + 3) % NUM_CLASSES


def image_of(number: int, height: int, width: int) -> np.ndarray:
  """A flat image whose red and green levels are the base-16 digits of `number` (< 256), blue its label."""
  colour = [(number % 16) * _STEP + 8, (number // 16) * _STEP + 8, label_of(number) * _STEP + 8]
  return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def number_of(images) -> np.ndarray:
  """The numbers images [N, H, W, 3] (uint8, or float in [0, 1]) show, read at their centre pixel."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.round(images * 255)
  centre = images[:, images.shape[1] // 2, images.shape[2] // 2, :2].astype(np.int64)
  low, high = (centre // _STEP)[:, 0], (centre // _STEP)[:, 1]
  return high * 16 + low


class _Sharded(tfds.core.GeneratorBasedBuilder):
  """Examples 0 … N-1 of each split, keyed by number (TFDS shuffles them by key when writing)."""

  VERSION = tfds.core.Version("1.0.0")
  IMAGE = tfds.features.Image(shape=IMAGE_SHAPE)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": self.IMAGE,
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "number": tf.int64,
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(size) for split, size in SPLIT_SIZES.items()}

  def _size(self, number: int) -> tuple[int, int]:
    del number
    return IMAGE_SHAPE[:2]

  def _generate_examples(self, size):
    for number in range(size):
      yield number, {"image": image_of(number, *self._size(number)), "label": int(label_of(number)),
                     "number": number}


class CnnShardedImages(_Sharded):
  """16×16 PNGs in `SHARDS` shards a split."""


class CnnShardedPhotos(_Sharded):
  """JPEGs of varying size (as ImageNet) in `SHARDS` shards a split."""

  IMAGE = tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")

  def _size(self, number: int) -> tuple[int, int]:
    return 12 + number % 7, 20 - number % 5


def prepare(name: str, data_dir: str, file_format: str = "tfrecord") -> tfds.core.DatasetBuilder:
  """`name` prepared in `data_dir` in `SHARDS` shards a split."""
  builder = tfds.builder(name, data_dir=data_dir, file_format=file_format)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=SHARDS))
  assert all(builder.info.splits[s].num_shards == SHARDS for s in SPLIT_SIZES), builder.info.splits
  return builder


def file_order(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
  """The `number` of each record of `split` (slicing included), its files read one after the other."""
  numbers = []
  for instruction in builder.info.splits[split].file_instructions:
    if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
      from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
      reader = array_record_module.ArrayRecordReader(instruction.filename)
      records = reader.read(list(range(instruction.skip, instruction.skip + instruction.take)))
    else:
      records = tf.data.TFRecordDataset(instruction.filename).skip(instruction.skip).take(instruction.take)
    numbers += [int(builder.info.features.deserialize_example(tf.constant(record))["number"]) for record in records]
  return np.array(numbers)
