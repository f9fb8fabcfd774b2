"""Streaming splits: examples read from disk by index and decoded in the tf.data pipeline.

A `StreamSplit` holds, per example, a small key (a file path, or an index into a TFDS split's
records: `cnn/data/tfds_stream.py`) and a label; host memory holds those, not pixels. `read_encoded`
turns a key into the encoded image inside the pipeline. A JPEG whose
body is cut short (its header is fine, so the listing accepted it) fails the run with the file's
name (`BAD_IMAGE`, which the entry points print as one line), not with a decoder traceback.
"""

import dataclasses
import re
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from cnn.data import preprocess

BAD_IMAGE = "cnn-bad-image:"  # Marks the pipeline's error for a corrupt image; the path follows.
_JPEG_END = (0xFF, 0xD9)  # A JPEG ends with this marker (some cameras append bytes after it).
_JPEG_TAIL = 64  # Bytes at the end of a JPEG searched for the marker.


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


def _jpeg_is_whole(encoded: tf.Tensor) -> tf.Tensor:
  """False for a JPEG without its end marker in its last bytes (a truncated body); True otherwise."""
  size = tf.strings.length(encoded)
  tail_size = tf.minimum(size, _JPEG_TAIL)
  tail = tf.io.decode_raw(tf.strings.substr(encoded, size - tail_size, tail_size), tf.uint8)
  ends = tf.logical_and(tf.equal(tail[:-1], _JPEG_END[0]), tf.equal(tail[1:], _JPEG_END[1]))
  return tf.logical_or(tf.logical_not(tf.io.is_jpeg(encoded)), tf.reduce_any(ends))


def read_encoded(key: tf.Tensor, read: Optional[Callable[[tf.Tensor], tf.Tensor]] = None) -> tf.Tensor:
  """The encoded image `key` names (`read`, default a file path); fails with `BAD_IMAGE` and the key if
  it is a cut-short JPEG."""
  encoded = (read or tf.io.read_file)(key)
  check = tf.debugging.Assert(_jpeg_is_whole(encoded), [BAD_IMAGE, key, "is a truncated JPEG: remove or "
                                                        "replace it, or pass --skip_bad_images"])
  with tf.control_dependencies([check]):
    return tf.identity(encoded)


def bad_image_message(error: Exception) -> str:
  """The one-line message of a pipeline error raised by `read_encoded`, or '' for other errors."""
  text = str(error)
  if BAD_IMAGE not in text:
    return ""
  # Assert prints each of its data items in brackets: [marker] [key] [hint].
  return " ".join(["corrupt image", *re.findall(r"\[([^\[\]]*)\]", text.split(BAD_IMAGE, 1)[1].splitlines()[0])])


def decodable(paths: np.ndarray) -> np.ndarray:
  """Which image files read and decode whole (bool [N]): each is decoded once (--skip_bad_images)."""

  def decode(index, path):
    image = tf.io.decode_image(read_encoded(path), channels=3, expand_animations=False)
    return index, tf.shape(image)  # The shape keeps the decode from being pruned.

  decoded = (tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
             .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
             .ignore_errors())
  mask = np.zeros(len(paths), bool)
  mask[[int(index) for index, _ in decoded.as_numpy_iterator()]] = True
  return mask


def train_view(split: StreamSplit, key: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Example `key` of `split` read and decoded for training (see `preprocess.train_image`)."""
  image = preprocess.train_image(read_encoded(key, split.read), seed, split.preprocessing)
  return tf.ensure_shape(image, split.preprocessing.shape)


def eval_view(split: StreamSplit, key: tf.Tensor) -> tf.Tensor:
  """Example `key` of `split` read and decoded for evaluation (see `preprocess.eval_encoded`)."""
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
