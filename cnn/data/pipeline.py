"""The training and evaluation tf.data pipelines over a split, in memory or streaming.

A split is served by index: each epoch is a seeded permutation of the example indices
(`stateless_shuffle(seed=[seed, epoch])`), cut into batches and gathered (in memory) or read and
decoded per example (streaming). This
  * shuffles the whole split every epoch (no shuffle buffer),
  * makes the example order a pure function of (seed, epoch): reproducible to the bit,
  * keeps a tf.data iterator's state to a position, not a buffer of images.
Training batches never straddle an epoch, so step `k` of epoch `e` always sees the same examples
(and augmentations) for a given seed: a resumed run builds the pipeline at its restored step
instead of checkpointing an iterator.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from cnn.data import folder
from cnn.data import preprocess
from cnn.data import stream
from cnn.data.normalization import standardizer
from cnn.data.normalization import to_unit_range
from cnn.data.splits import Split
from cnn.errors import UserError

_CROP_STREAM = 0x7E5D  # Folded into a batch's seed for the streaming back-end's crops.


def steps_per_epoch(split: Split, batch_size: int) -> int:
  """Full batches in one pass over `split`. Raises UserError if there is none."""
  if len(split) < batch_size:
    raise UserError(f"--batch_size={batch_size} is larger than the training split ({len(split)} examples)")
  return len(split) // batch_size


def pipeline_options() -> tf.data.Options:
  """tf.data settings, chosen deliberately (the others keep tf.data's defaults).

  * deterministic: batches leave the parallel map in order, so the example order stays a
    function of the seed (the default, stated because it matters here).
  * max_intra_op_parallelism=1: each op of the pipeline runs on one thread. Its ops are small
    (a gather and a cast of one batch); letting them spread over the cores would only take the
    cores from the train step, which shares them on a CPU host.
  * autotune (default on): tf.data picks the map's parallelism and the prefetch depth at run time.
  """
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = True
  return options


def train_dataset(split: Split, batch_size: int, seed: int,
                  input_context: Optional[tf.distribute.InputContext] = None, start_step: int = 0,
                  augment_fn=None, mean_std: Optional[tuple[np.ndarray, np.ndarray]] = None,
                  preprocessing: Optional[preprocess.Preprocessing] = None,
                  service_shards: bool = False) -> tf.data.Dataset:
  """Endless (images, labels) batches from `start_step` on; each epoch a fresh permutation, remainder
  dropped (module docstring). Images are float32 in [0, 1] (standardised when `mean_std` is given),
  labels int32 (or one-hot floats from a label-mixing `augment_fn`).

  Args:
    split: the training split: in memory (`Split`) or on disk (`stream.StreamSplit`); the example
      order, the shares and the random draws are the same for both.
    batch_size: the global batch size (all replicas of all workers together).
    seed: the run's seed (example order, augmentation).
    input_context: under `tf.distribute`, which input pipeline this is. Every pipeline draws
      the same global batches and keeps its own slice of each, cut into per-replica batches,
      so a step sees the same examples whatever the number of workers and replicas.
    start_step: the global step the first batch is for (0 for a fresh run).
    augment_fn: optional `fn(images, labels, epoch, step, indices, positions, global_batch_size) ->
      (images, labels)` on [0, 1] images (see `cnn.augment.make_augment_fn`), applied before
      standardisation; `positions` are the examples' places in the global batch, which its random
      draws follow so that every layout of replicas and workers augments alike.
    mean_std: optional per-channel (mean, std) in [0, 1] units.
    preprocessing: for a bare `folder.FileSplit`, its preprocessing (a `stream.StreamSplit` has its own).
    service_shards: for a tf.data service of several workers (cnn/data/service.py): each worker reads
      and decodes every N-th batch only (`SHARD_HINT`, before the reading), and elements are
      (images, labels, number), `number` counting this pipeline's batches from `start_step` (0, 1, ...),
      so that the consumer can restore the order.
  """
  split = _as_stream(split, preprocessing)
  batches_per_epoch = steps_per_epoch(split, batch_size)
  num_examples = len(split)
  pipelines, pipeline = (input_context.num_input_pipelines, input_context.input_pipeline_id) if input_context else (1, 0)
  per_pipeline = batch_size // pipelines
  per_replica = input_context.get_per_replica_batch_size(batch_size) if input_context else batch_size
  standardize = standardizer(mean_std)
  replicas_here = per_pipeline // per_replica

  def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_examples), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)
    return batches.enumerate().map(lambda step, indices: (epoch, step, indices))

  def replica_batches(epoch: tf.Tensor, step: tf.Tensor, global_batch: tf.Tensor) -> tf.data.Dataset:
    mine = slice(pipeline * per_pipeline, (pipeline + 1) * per_pipeline)
    indices = tf.reshape(global_batch[mine], [-1, per_replica])
    positions = tf.reshape(tf.range(batch_size)[mine], [-1, per_replica])  # Places in the global batch.
    return tf.data.Dataset.from_tensor_slices((indices, positions)).map(
        lambda indices, positions: (epoch, step, indices, positions))

  def finish(epoch, step, indices, positions, *read) -> tuple[tf.Tensor, tf.Tensor]:
    # The in-memory back-end gathers here, in the parallel map; the streaming one has read already.
    batch_images, batch_labels = read or (tf.gather(images, indices), tf.gather(labels, indices))
    batch_images = to_unit_range(batch_images)
    if augment_fn is not None:
      batch_images, batch_labels = augment_fn(batch_images, batch_labels, epoch, step, indices, positions,
                                              batch_size)
    if not service_shards:
      return standardize(batch_images), batch_labels
    replica = tf.cast(positions[0] - pipeline * per_pipeline, tf.int64) // per_replica
    number = ((tf.cast(epoch, tf.int64) * batches_per_epoch + tf.cast(step, tf.int64) - start_step) * replicas_here
              + replica)
    return standardize(batch_images), batch_labels, number

  first_epoch, steps_into_epoch = divmod(start_step, batches_per_epoch)
  index_batches = (tf.data.Dataset.counter(start=first_epoch)
                   .flat_map(epoch_batches)
                   .skip(steps_into_epoch)  # Index batches only: skipping costs microseconds a step.
                   .flat_map(replica_batches))
  if service_shards:
    index_batches = index_batches.shard(tf.data.experimental.SHARD_HINT, tf.data.experimental.SHARD_HINT)
  if isinstance(split, stream.StreamSplit):
    batches = _read_train_batches(index_batches, split, seed, per_replica)
  else:
    batches, images, labels = index_batches, tf.constant(split.images), tf.constant(split.labels)
  return (batches
          .map(finish, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE)
          .with_options(pipeline_options()))


def _read_train_batches(index_batches: tf.data.Dataset, split: stream.StreamSplit, seed: int,
                        per_replica: int) -> tf.data.Dataset:
  """Per-replica index batches -> (epoch, step, indices, positions, images, labels), read and decoded
  per example in parallel (streaming back-end). Each crop's seed is a function of (seed, epoch, step,
  place in the global batch) alone."""
  keys, labels = tf.constant(split.keys), tf.constant(split.labels)

  def examples(epoch, step, indices, positions):
    count = tf.shape(indices)[0]
    return tf.data.Dataset.from_tensor_slices(
        (tf.fill([count], epoch), tf.fill([count], step), indices, positions))

  def read(epoch, step, index, position):
    batch_seed = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)]), tf.cast(step, tf.int64))
    crop_seed = tf.random.experimental.stateless_fold_in(  # Apart from the augmentations' seeds.
        tf.random.experimental.stateless_fold_in(batch_seed, _CROP_STREAM), tf.cast(position, tf.int64))
    image = stream.train_view(split, keys[index], crop_seed)
    return epoch, step, index, position, image, labels[index]

  return (index_batches.flat_map(examples)
          .map(read, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(per_replica, drop_remainder=True)
          .map(lambda epoch, step, *rest: (epoch[0], step[0], *rest)))


def eval_dataset(split: Split, batch_size: int,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 mean_std: Optional[tuple[np.ndarray, np.ndarray]] = None,
                 preprocessing: Optional[preprocess.Preprocessing] = None) -> tf.data.Dataset:
  """One pass over the split in order; the last batch may be smaller. `mean_std`, `preprocessing` as
  train_dataset (a streaming split gets the evaluation view, `preprocess.eval_encoded`).

  Elements are (images, labels, indices): each example's index in the split travels with it,
  because under `tf.distribute` each input pipeline evaluates its own shard of the examples
  (in per-replica batches of the global `batch_size`) and the results come back out of order.
  """
  standardize = standardizer(mean_std)
  split = _as_stream(split, preprocessing)
  if isinstance(split, stream.StreamSplit):
    dataset = tf.data.Dataset.from_tensor_slices((split.keys, split.labels, np.arange(len(split))))
  else:
    dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels, np.arange(len(split))))
  if input_context:
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  if isinstance(split, stream.StreamSplit):  # Read and decode per example, in parallel.
    dataset = dataset.map(lambda key, label, index: (stream.eval_view(split, key), label, index),
                          num_parallel_calls=tf.data.AUTOTUNE)
  return (dataset
          .batch(batch_size)
          .map(lambda images, labels, index: (standardize(to_unit_range(images)), labels, index),
               num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE)
          .with_options(pipeline_options()))


def _as_stream(split, preprocessing: Optional[preprocess.Preprocessing]):
  """A bare `folder.FileSplit` with `preprocessing` as a `stream.StreamSplit`; other splits as they are."""
  if isinstance(split, folder.FileSplit):
    return stream.StreamSplit(split.paths, split.labels, preprocessing)
  return split
