"""The pixel values a model sees: uint8 rescaled to [0, 1], then optionally standardised per channel.

The channel statistics come from flags or from the training split (exact integer sums over a fixed
sample, so both back-ends give the same bits). `images_at` reads given examples' images from a split
of either kind (the eval summaries' misclassified images, for one); `head_images` samples a split's
first images, e.g. for a model's data-based initialisation.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from cnn.config import Config
from cnn.data import stream
from cnn.data.splits import READ_BATCH
from cnn.data.splits import Split

_STATS_SAMPLE = 100_000  # At most this many examples' pixels give the channel statistics.
_SAMPLE_BYTES = 256 << 20  # At most this much decoded data for a streaming split's initialisation sample.


def to_unit_range(images: tf.Tensor) -> tf.Tensor:
  """Rescales uint8 pixels to float32 in [0, 1], as the tutorial does (standardisation is `standardizer`)."""
  return tf.cast(images, tf.float32) / 255.0


def channel_stats(split: "Split | stream.StreamSplit") -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation of a split's pixels, in [0, 1] units.

  Over the images (a streaming split: their evaluation views) of every example, or of an evenly spread
  sample of `_STATS_SAMPLE` of a larger split. Sums are exact integers, so both back-ends give the
  same bits whatever their batching: a run's standardisation does not depend on its memory budget.
  """
  indices = stream.sample_indices(len(split), _STATS_SAMPLE)
  if isinstance(split, stream.StreamSplit):
    chunks = (batch.numpy() for batch in stream.sample_images(split, indices))
  else:
    chunks = (split.images[indices[start:start + READ_BATCH]] for start in range(0, len(indices), READ_BATCH))
  total = squares = count = 0
  for chunk in chunks:
    chunk = chunk.astype(np.int64)
    total = total + chunk.sum(axis=(0, 1, 2))
    squares = squares + np.square(chunk).sum(axis=(0, 1, 2))
    count += chunk.shape[0] * chunk.shape[1] * chunk.shape[2]
  mean = total / (255.0 * count)
  return mean, np.sqrt(np.maximum(squares / (255.0**2 * count) - mean**2, 0.0))


def images_at(split: "Split | stream.StreamSplit", indices: np.ndarray) -> np.ndarray:
  """uint8 images [len(indices), H, W, C] of examples `indices` of a split, in that order.

  A split in memory gives its arrays' rows; a streaming split reads and decodes those examples
  (their evaluation views, as the model sees them at evaluation).
  """
  indices = np.asarray(indices, np.int64)
  if not isinstance(split, stream.StreamSplit):
    return split.images[indices]
  if not len(indices):
    return np.zeros((0, *split.preprocessing.shape), np.uint8)
  return np.concatenate([batch.numpy() for batch in stream.sample_images(split, indices)])


def head_images(split: "Split | stream.StreamSplit", count: int) -> np.ndarray:
  """uint8 images of the split's first `count` examples (a streaming split: their evaluation views,
  fewer when they would take more than `_SAMPLE_BYTES`), e.g. for a model's data-based initialisation."""
  if not isinstance(split, stream.StreamSplit):
    return split.images[:count]
  # The view's shape, not --image_size: a fixed-size dataset streams at its own size (image_size 0).
  count = max(1, min(count, len(split), _SAMPLE_BYTES // int(np.prod(split.preprocessing.shape))))
  return images_at(split, np.arange(count))


def input_mean_std(config: Config,
                   train_split: Optional[Split]) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """The per-channel (mean, std) a run standardises with: given by flags, or from its training split.

  None unless --normalization=standardize. Training and the commands that use a trained run
  (evaluate, export) both call this, so they see the inputs alike.
  """
  if config.normalization != "standardize":
    return None
  if config.normalization_mean:
    return config.normalization_mean, config.normalization_std
  return channel_stats(train_split)


def standardizer(mean_std: tuple[np.ndarray, np.ndarray] | None):
  """`images -> (images - mean) / std` on [0, 1] floats, or the identity when `mean_std` is None."""
  if mean_std is None:
    return lambda images: images
  mean, std = (tf.constant(np.asarray(v), tf.float32) for v in mean_std)
  return lambda images: (images - mean) / std
