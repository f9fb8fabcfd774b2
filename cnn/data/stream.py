"""Streaming splits: examples read from disk by index and decoded in the tf.data pipeline.

A `StreamSplit` holds, per example, a small key (a file path, or an index into a TFDS split's
records: `cnn/data/tfds_stream.py`) and a label; host memory holds those, not pixels. `read_encoded`
turns a key into the encoded image inside the pipeline. An image file cut short, corrupt or gone
fails the run with the file's name in one line, not with a decoder traceback (`cnn/data/bad_images.py`).
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from cnn.data import bad_images
from cnn.data import preprocess
from cnn.data.bad_images import decodable  # noqa: F401  # --skip_bad_images, for splits.py.


@dataclasses.dataclass(frozen=True)
class StreamSplit:
  """One split on disk: keys [N], int32 labels [N], how examples are preprocessed, and how a key is read.

  `read(key) -> encoded image` (a tf function); None: keys are file paths, read whole.
  """
  keys: np.ndarray
  labels: np.ndarray
  preprocessing: preprocess.Preprocessing
  read: Optional[Callable[[tf.Tensor], tf.Tensor]] = None

  def __len__(self) -> int:
    return len(self.labels)


def read_encoded(key: tf.Tensor, read: Optional[Callable[[tf.Tensor], tf.Tensor]] = None) -> tf.Tensor:
  """The encoded image `key` names (`read`, default a file path); fails naming the key if it is cut short
  (`bad_images.check_encoded`)."""
  return bad_images.check_encoded(key, (read or tf.io.read_file)(key))


def bad_image_message(error: Exception) -> str:
  """The one-line message of an input pipeline's error about an image file or record, or '' for others."""
  return bad_images.pipeline_error_message(error)


def _watch(split: StreamSplit) -> None:
  if split.read is None:  # Files: searched if a decoder fails on one (`bad_images.pipeline_error_message`).
    bad_images.watch(split.keys)


def train_view(split: StreamSplit, key: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Example `key` of `split` read and decoded for training (see `preprocess.train_image`)."""
  _watch(split)
  image = preprocess.train_image(read_encoded(key, split.read), seed, split.preprocessing)
  return tf.ensure_shape(image, split.preprocessing.shape)


def eval_view(split: StreamSplit, key: tf.Tensor) -> tf.Tensor:
  """Example `key` of `split` read and decoded for evaluation (see `preprocess.eval_encoded`)."""
  _watch(split)
  return tf.ensure_shape(preprocess.eval_encoded(read_encoded(key, split.read), split.preprocessing),
                         split.preprocessing.shape)


def decode_all(split: StreamSplit, batch_size: int = 256) -> np.ndarray:
  """Every example's evaluation view, uint8 [N, S, S, C] (to hold a split in memory)."""
  return np.concatenate([batch.numpy() for batch in sample_images(split, np.arange(len(split)), batch_size)])


def sample_indices(num_examples: int, count: int) -> np.ndarray:
  """`count` indices spread evenly over the split (all of them when it is smaller): a fixed sample."""
  return np.unique(np.linspace(0, num_examples - 1, min(count, num_examples)).astype(np.int64))


def sample_images(split: StreamSplit, indices: np.ndarray, batch_size: int = 256) -> tf.data.Dataset:
  """Batches of the evaluation views (uint8) of examples `indices`, read in parallel."""
  return (tf.data.Dataset.from_tensor_slices(split.keys[indices])
          .map(lambda key: eval_view(split, key), num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size)
          .prefetch(1))
