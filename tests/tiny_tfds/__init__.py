"""A tiny real TFDS dataset, generated on the machine: 16×16×3 images, 3 classes.

Unlike `tfds.testing.mock_data`, it is written as TFRecord files into a data_dir and read by
TFDS's own reader, so split slicing works and its pipelines can be iterator-checkpointed.
"""

import numpy as np
import tensorflow_datasets as tfds

NAME = "cnn_tiny_images"
IMAGE_SHAPE = (16, 16, 3)
CLASS_NAMES = ("red", "green", "blue")
SPLIT_SIZES = {"train": 96, "test": 30}
PHOTOS_NAME = "cnn_tiny_photos"


class CnnTinyImages(tfds.core.GeneratorBasedBuilder):
  """Each image is noise with one colour channel brighter: its label. Learnable in a few steps."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split, size) for split, size in SPLIT_SIZES.items()}

  def _generate_examples(self, split, size):
    rng = np.random.default_rng(0 if split == "train" else 1)
    for i in range(size):
      label = i % len(CLASS_NAMES)
      image = rng.integers(0, 128, IMAGE_SHAPE, dtype=np.uint8)
      image[..., label] += 100
      yield i, {"image": image, "label": label}


class CnnTinyPhotos(tfds.core.GeneratorBasedBuilder):
  """JPEGs of varying size (as imagenette, food101): 2 classes, 12 train and 6 test images."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3),
                                                                          encoding_format="jpeg"),
                                             "label": tfds.features.ClassLabel(names=("a", "b"))}),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(12), "test": self._generate_examples(6)}

  def _generate_examples(self, count):
    rng = np.random.default_rng(count)
    for i in range(count):
      yield i, {"image": rng.integers(0, 256, (20 + 3 * i, 40 - i, 3), np.uint8), "label": i % 2}
