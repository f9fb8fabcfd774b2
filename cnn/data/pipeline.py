"""Input pipelines from TensorFlow Datasets.

A split is read from TFDS once, decoded into host memory as uint8 arrays, and served
from there by index: each epoch is a seeded permutation of the example indices
(`stateless_shuffle(seed=[seed, epoch])`), cut into batches and gathered. This
  * shuffles the whole split every epoch (no shuffle buffer),
  * makes the example order a pure function of (seed, epoch): reproducible to the bit,
  * keeps a tf.data iterator's state to a position, not a buffer of images,
  * costs no decode after loading: the small datasets this codebase trains on
    (CIFAR, MNIST families: 30-180 MB as uint8) sit comfortably in memory.
"""

import dataclasses
import difflib
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn.config import Config
from cnn.data import cache
from cnn.data import folder
from cnn.data import preprocess
from cnn.data import stream
from cnn.data import tfds_stream
from cnn.errors import UserError

_READ_BATCH = 4096  # Examples per batch when materialising a split.
_TFDS_GCS = "https://storage.googleapis.com/"  # Where TFDS looks for prepared copies first.
_CROP_STREAM = 0x7E5D  # Folded into a batch's seed for the streaming back-end's crops.
_STATS_SAMPLE = 100_000  # At most this many examples' pixels give the channel statistics.
_SAMPLE_BYTES = 256 << 20  # At most this much decoded data for a streaming split's initialisation sample.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the loop need to know about a dataset, taken from TFDS's info."""
  name: str
  image_shape: tuple[int, int, int]
  num_classes: int
  class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Split:
  """One split in memory: uint8 images [N, H, W, C] and int32 labels [N]."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


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
    chunks = (split.images[indices[start:start + _READ_BATCH]] for start in range(0, len(indices), _READ_BATCH))
  total = squares = count = 0
  for chunk in chunks:
    chunk = chunk.astype(np.int64)
    total = total + chunk.sum(axis=(0, 1, 2))
    squares = squares + np.square(chunk).sum(axis=(0, 1, 2))
    count += chunk.shape[0] * chunk.shape[1] * chunk.shape[2]
  mean = total / (255.0 * count)
  return mean, np.sqrt(np.maximum(squares / (255.0**2 * count) - mean**2, 0.0))


def head_images(split: "Split | stream.StreamSplit", count: int) -> np.ndarray:
  """uint8 images of the split's first `count` examples (a streaming split: their evaluation views,
  fewer when they would take more than `_SAMPLE_BYTES`), e.g. for a model's data-based initialisation."""
  if not isinstance(split, stream.StreamSplit):
    return split.images[:count]
  size = split.preprocessing.image_size
  count = max(1, min(count, len(split), _SAMPLE_BYTES // (size * size * split.preprocessing.channels)))
  return np.concatenate([b.numpy() for b in stream.sample_images(split, np.arange(count))])


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


def folder_builder(path: str) -> tfds.core.DatasetBuilder:
  """TFDS's ImageFolder on `path`: split sub-folders (train/, test/) of class sub-folders of images."""
  root = pathlib.Path(path).expanduser()
  if not (root / "train").is_dir():
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    raise UserError(f"--dataset=folder:{path} needs sub-folders train/ and test/, each with one folder "
                    f"of images per class ({'found: ' + ', '.join(found) if found else 'none found'})")
  return tfds.folder_dataset.ImageFolder(str(root))


def probe_download_hosts(urls: list[str], timeout: float = 4.0, max_hosts: int = 2) -> str:
  """'' if the hosts of `urls` answer HTTP within `timeout` s each, else what failed (e.g. 'host: reason').

  TFDS retries a failing download with back-off for minutes; a compute node without internet should
  hear so in seconds. Any HTTP answer, an error status included, counts as reachable. Proxies from
  the environment (HTTPS_PROXY, ...) are used as the download would use them.
  """
  hosts = list(dict.fromkeys(f"{u.scheme}://{u.netloc}/" for u in map(urllib.parse.urlsplit, urls)))
  for host in hosts[:max_hosts]:
    try:
      urllib.request.urlopen(urllib.request.Request(host, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
      pass  # The host answered.
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections, bad proxy URLs.
      return f"{urllib.parse.urlsplit(host).netloc}: {getattr(e, 'reason', e)}"
  return ""


def get_builder(name: str, data_dir: str = "", download: bool = True) -> tfds.core.DatasetBuilder:
  """A prepared TFDS builder for `name`. Raises UserError if it is unknown or cannot be prepared."""
  if name.startswith("folder:"):
    return folder_builder(name[len("folder:"):])
  data_dir = data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(name, tfds.list_builders(), n=5, cutoff=0.5)
    hint = ", ".join(close or ["cifar10", "cifar100", "mnist", "fashion_mnist"])
    raise UserError(f"unknown dataset '{name}'; did you mean one of: {hint}?") from None
  if builder.is_prepared():
    return builder
  where = builder.data_dir_root
  how = (f"prepare it with `tfds build {name} --data_dir={where}` on a machine with internet, "
         "or point --data_dir at a TFDS data directory that holds it")
  if not download:
    raise UserError(f"dataset '{name}' is not prepared in {where} and --nodownload is set; {how}")
  unreachable = probe_download_hosts(list(builder.url_infos or ()) or [_TFDS_GCS])
  if unreachable:
    raise UserError(f"dataset '{name}' is not prepared in {where} and its download host is unreachable "
                    f"({unreachable}); {how}, or pass --nodownload")
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except  # Network and archive errors vary widely.
    raise UserError(f"dataset '{name}' is not prepared in {where} and downloading it failed "
                    f"({type(e).__name__}); {how}") from None
  return builder


def dataset_info(builder: tfds.core.DatasetBuilder, image_size: int = 0) -> DatasetInfo:
  """Image shape, number of classes and class names from the builder's features.

  `image_size` > 0 replaces the height and width (images are resized to it when loaded).
  """
  name = builder.info.name
  if not builder.info.supervised_keys:
    raise UserError(f"dataset '{name}' has no (image, label) supervised keys; it is not an image "
                    "classification dataset")
  image_key, label_key = builder.info.supervised_keys
  image, label = builder.info.features[image_key], builder.info.features[label_key]
  shape = tuple(image.shape)
  if image_size and len(shape) == 3:
    shape = (image_size, image_size, shape[2])
  if len(shape) == 3 and None in shape[:2] and shape[2] is not None:
    raise UserError(f"dataset '{name}' has images of varying size; resize them with --image_size=N")
  if not isinstance(label, tfds.features.ClassLabel) or len(shape) != 3 or None in shape:
    raise UserError(f"dataset '{name}' is not fixed-size image classification "
                    f"(image shape {image.shape}, label {type(label).__name__})")
  return DatasetInfo(name=name, image_shape=shape, num_classes=label.num_classes,
                     class_names=tuple(label.names))


def load_split(builder: tfds.core.DatasetBuilder, split: str, image_size: int = 0,
               cache_dir: Optional[pathlib.Path] = None) -> Split:
  """Reads and decodes a whole split (TFDS slicing allowed) into memory.

  `image_size` > 0 resizes every image to that height and width (bilinear, back to uint8). With a
  `cache_dir` (see `cnn.data.cache`), a split decoded before is memory-mapped from there instead.
  """
  entry = cache_dir and cache.key(
      dataset=builder.info.name, version=str(builder.info.version), split=split, image_size=image_size,
      files=cache.files_fingerprint(builder.data_dir))
  cached = cache.load(cache_dir, entry) if cache_dir else None
  if cached is not None:
    return Split(*cached)
  loaded = _decode_split(builder, split, image_size)
  if cache_dir and not cache.save(cache_dir, entry, loaded.images, loaded.labels):
    logging.warning("Could not write the data cache in %s (not writable?); the next run decodes again",
                    cache_dir)
  return loaded


@dataclasses.dataclass(frozen=True)
class DataSource:
  """A dataset opened for a run: what it is, where its splits come from, how its examples are viewed."""
  info: DatasetInfo
  builder: Optional[tfds.core.DatasetBuilder]  # None for a folder of images.
  root: Optional[pathlib.Path]  # The folder of --dataset=folder:PATH.
  preprocessing: preprocess.Preprocessing
  cache_dir: Optional[pathlib.Path]
  skip_bad_images: bool = False  # Folders: leave out (and count) the files that do not decode.


def open_dataset(config: Config) -> DataSource:
  """The run's dataset (`--dataset`: TFDS name or folder:PATH) and its preprocessing flags. Raises UserError."""
  if config.dataset.startswith("folder:"):
    root = pathlib.Path(config.dataset[len("folder:"):]).expanduser()
    if not (root / "train").is_dir():
      found = folder.split_names(root)
      raise UserError(f"--dataset={config.dataset} needs a sub-folder train/ (and val/ or test/), each with one "
                      f"folder of images per class ({'found: ' + ', '.join(found) if found else 'none found'})")
    if not config.image_size:
      raise UserError(f"--dataset={config.dataset} has images of varying size; resize them with --image_size=N")
    classes = folder.class_names(root)
    builder, varying = None, True
    info = DatasetInfo(root.resolve().name, (config.image_size, config.image_size, 3), len(classes), classes)
  else:
    builder, root = get_builder(config.dataset, config.data_dir, config.download), None
    info = dataset_info(builder, config.image_size)
    varying = None in tuple(builder.info.features[builder.info.supervised_keys[0]].shape)[:2]
  settings = preprocess.Preprocessing(
      config.image_size, tuple(config.crop_scale), tuple(config.crop_ratio), config.eval_crop_fraction,
      random_crop=config.train_crop == "random_resized", center_crop=varying, channels=info.image_shape[2],
      fixed_size=info.image_shape[:2])
  return DataSource(info, builder, root, settings, cache.resolve_dir(config.data_cache_dir),
                    config.skip_bad_images)


def memory_budget_bytes(budget_mb: int) -> int:
  """--data_memory_budget_mb in bytes; -1: a quarter of the host's physical memory."""
  if budget_mb >= 0:
    return budget_mb << 20
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def open_splits(source: DataSource, names: list[str], budget_mb: int, train_first: bool = True) -> list:
  """The splits `names` (empty names give None), each in memory while the decoded data fits the budget
  (in order), else streaming, which is said in the log. A training split (the first, when
  `train_first`) with random-resized crops streams always: its crops are taken from the originals."""
  budget, splits = memory_budget_bytes(budget_mb), []
  for position, name in enumerate(names):
    if not name:
      splits.append(None)
      continue
    random_crops = train_first and position == 0 and source.preprocessing.random_crop
    split, used = open_split(source, name, 0 if random_crops else budget, explain=budget_mb != 0 and not random_crops)
    if random_crops:
      logging.info("Split %s streams from disk: random-resized crops are taken from the original images", name)
    budget -= used
    splits.append(split)
  return splits


def open_split(source: DataSource, name: str, budget_bytes: int,
               explain: bool = False) -> tuple["Split | stream.StreamSplit", int]:
  """Split `name` in memory if its decoded images fit `budget_bytes`, else streaming (logged if `explain`);
  and the bytes it holds in memory."""
  if source.root is None:
    return _open_tfds_split(source, name, budget_bytes, explain)
  name = _folder_split_name(source.root, name)
  files = folder.list_split(str(source.root), name, source.info.class_names, source.cache_dir,
                            stream.decodable if source.skip_bad_images else None)
  streaming = stream.StreamSplit(files.paths, files.labels, source.preprocessing)
  decoded_bytes = len(files) * int(np.prod(source.info.image_shape))
  if not _fits(name, decoded_bytes, budget_bytes, explain):
    return streaming, 0
  return _hold(source, streaming, decoded_bytes, dataset=str(source.root.resolve()), split=name,
               files=[cache.files_fingerprint(source.root / n) for n in folder.split_folders(name)])


def _hold(source: DataSource, streaming: stream.StreamSplit, decoded_bytes: int,
          **key_parts) -> tuple[Split, int]:
  """A streaming split decoded into memory (its evaluation views), through the disk cache."""
  entry = source.cache_dir and cache.key(preprocessing=dataclasses.asdict(source.preprocessing), **key_parts)
  cached = cache.load(source.cache_dir, entry) if source.cache_dir else None
  if cached is not None:
    return Split(*cached), decoded_bytes
  loaded = Split(stream.decode_all(streaming), streaming.labels)
  if source.cache_dir:
    cache.save(source.cache_dir, entry, loaded.images, loaded.labels)
  return loaded, decoded_bytes


def _open_tfds_split(source: DataSource, name: str, budget_bytes: int,
                     explain: bool) -> tuple["Split | stream.StreamSplit", int]:
  """`open_split` for a TFDS dataset: `load_split`, or `tfds_stream.open_split` over the budget."""
  try:
    decoded_bytes = source.builder.info.splits[name].num_examples * int(np.prod(source.info.image_shape))
  except (ValueError, KeyError, AssertionError):
    decoded_bytes = 0  # A bad split name: load_split says what is wrong.
  if not _fits(name, decoded_bytes, budget_bytes, explain):
    return tfds_stream.open_split(source.builder, name, source.preprocessing, source.cache_dir), 0
  # Images of varying size are held as their centre crops, which streaming decodes; ArrayRecord files
  # are not readable by as_dataset.
  if source.preprocessing.center_crop or source.builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
    streaming = tfds_stream.open_split(source.builder, name, source.preprocessing, source.cache_dir)
    return _hold(source, streaming, decoded_bytes, dataset=source.builder.info.name, split=name,
                 version=str(source.builder.info.version), files=cache.files_fingerprint(source.builder.data_dir))
  return load_split(source.builder, name, source.preprocessing.image_size, source.cache_dir), decoded_bytes


def _fits(name: str, decoded_bytes: int, budget_bytes: int, explain: bool) -> bool:
  """Whether a split of `decoded_bytes` fits the budget left; says so when it does not and `explain`."""
  if decoded_bytes <= budget_bytes:
    return True
  if explain:
    logging.info("Split %s: %d MB decoded exceeds the memory budget left (%d MB, --data_memory_budget_mb); "
                 "streaming it from disk", name, decoded_bytes >> 20, budget_bytes >> 20)
  return False


def _folder_split_name(root: pathlib.Path, name: str) -> str:
  """`name`, or val/ for the default eval split `test` in a folder that has val/ and no test/ (fast.ai's layout)."""
  if name == "test" and not (root / "test").is_dir() and (root / "val").is_dir():
    logging.info("%s has no test/ split folder: evaluating on val/", root)
    return "val"
  return name


def _decode_split(builder: tfds.core.DatasetBuilder, split: str, image_size: int) -> Split:
  """A split read from TFDS and decoded into memory (see `load_split`)."""
  try:
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    if image_size:
      ds = ds.map(lambda image, label: (tf.saturate_cast(tf.round(tf.image.resize(
          image, (image_size, image_size))), tf.uint8), label), num_parallel_calls=tf.data.AUTOTUNE)
  except (ValueError, KeyError, AssertionError) as e:
    raise UserError(f"bad split '{split}' for {builder.info.name}: {str(e).splitlines()[0]} "
                    f"(splits: {', '.join(builder.info.splits)})") from None
  images, labels = [], []
  for image_batch, label_batch in tfds.as_numpy(ds.batch(_READ_BATCH)):
    images.append(image_batch)
    labels.append(label_batch.astype(np.int32))
  if not labels:
    raise UserError(f"split '{split}' of {builder.info.name} is empty")
  return Split(images=np.concatenate(images), labels=np.concatenate(labels))


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
  """Endless (images, labels) batches; each epoch a fresh permutation, remainder dropped.

  Batches never straddle an epoch, so step `k` of epoch `e` always sees the same examples (and
  augmentations) for a given seed: the data position is a pure function of the step. A resumed
  run builds the pipeline at its restored step (`start_step`) instead of checkpointing an
  iterator. Images are float32 in [0, 1] (standardised when `mean_std` is given), labels int32
  (or one-hot floats from a label-mixing `augment_fn`).

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
      (images, labels, number), `number` counting this pipeline's batches from step 0, so that the
      consumer can restore the order.
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
    number = (tf.cast(epoch, tf.int64) * batches_per_epoch + tf.cast(step, tf.int64)) * replicas_here + replica
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
