"""A dataset's splits, opened in memory or streaming from disk.

A split whose decoded images fit the memory budget left (--data_memory_budget_mb, over the splits in
order) is decoded once into host memory as uint8 arrays (`Split`), through the disk cache of decoded
splits (`cnn.data.cache`): the small datasets this codebase trains on (CIFAR, MNIST families: 30-180
MB as uint8) sit comfortably in memory and cost no decode after loading. A larger split streams: it
keeps a key and a label per example (`stream.StreamSplit`: a folder's files, `cnn.data.folder`, or a
TFDS split's records, `cnn.data.tfds_stream`) and is decoded in the pipeline.
"""

import dataclasses
import os
import pathlib
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn.data import cache
from cnn.data import folder
from cnn.data import preprocess
from cnn.data import stream
from cnn.data import tfds_stream
from cnn.data.sources import DataSource
from cnn.errors import UserError

READ_BATCH = 4096  # Examples per batch when materialising a split.


@dataclasses.dataclass(frozen=True)
class Split:
  """One split in memory: uint8 images [N, H, W, C] and int32 labels [N]."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


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
               files=[cache.files_fingerprint(source.root / n) for n in folder.split_folders(name)],
               listing=(folder.LISTING_VERSION, source.skip_bad_images))  # Which of the files are listed.


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
  return load_split(source.builder, name, source.preprocessing.image_size, source.cache_dir,
                    source.preprocessing.antialias), decoded_bytes


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


def load_split(builder: tfds.core.DatasetBuilder, split: str, image_size: int = 0,
               cache_dir: Optional[pathlib.Path] = None, antialias: bool = False) -> Split:
  """Reads and decodes a whole split (TFDS slicing allowed) into memory.

  `image_size` > 0 resizes every image to that height and width (bilinear, antialiased with `antialias`,
  back to uint8). With a `cache_dir` (see `cnn.data.cache`), a split decoded before is memory-mapped from
  there instead.
  """
  entry = cache_dir and cache.key(
      dataset=builder.info.name, version=str(builder.info.version), split=split, image_size=image_size,
      # Named only when on: the entries decoded before the flag existed keep their keys.
      files=cache.files_fingerprint(builder.data_dir), **({"antialias": True} if antialias else {}))
  cached = cache.load(cache_dir, entry) if cache_dir else None
  if cached is not None:
    return Split(*cached)
  loaded = _decode_split(builder, split, image_size, antialias)
  if cache_dir and not cache.save(cache_dir, entry, loaded.images, loaded.labels):
    logging.warning("Could not write the data cache in %s (not writable?); the next run decodes again",
                    cache_dir)
  return loaded


def _decode_split(builder: tfds.core.DatasetBuilder, split: str, image_size: int, antialias: bool) -> Split:
  """A split read from TFDS and decoded into memory (see `load_split`)."""
  try:
    # One file at a time: as_dataset interleaves the shards otherwise, and streaming reads in file order.
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False,
                            read_config=tfds.ReadConfig(interleave_cycle_length=1))
    if image_size:
      ds = ds.map(lambda image, label: (preprocess.resize_to_uint8(image, image_size, antialias), label),
                  num_parallel_calls=tf.data.AUTOTUNE)
  except (ValueError, KeyError, AssertionError) as e:
    raise UserError(f"bad split '{split}' for {builder.info.name}: {str(e).splitlines()[0]} "
                    f"(splits: {', '.join(builder.info.splits)})") from None
  images, labels = [], []
  for image_batch, label_batch in tfds.as_numpy(ds.batch(READ_BATCH)):
    images.append(image_batch)
    labels.append(label_batch.astype(np.int32))
  if not labels:
    raise UserError(f"split '{split}' of {builder.info.name} is empty")
  return Split(images=np.concatenate(images), labels=np.concatenate(labels))
