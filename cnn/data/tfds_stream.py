"""Random access to the examples of a prepared TFDS split, for the streaming back-end.

Example `i` of a split is read by index, so the streaming pipeline keeps the in-memory back-end's
index stream (a permutation of the whole split each epoch) and resumes at any step without reading
what came before:
  * ArrayRecord datasets (`tfds build --file_format=array_record`, TFDS's `data_source` files) are
    read with `array_record`'s `ArrayRecordDataSource` over the split's file instructions.
  * TFRecord datasets (TFDS's default) have no index. One scan of their record headers (12 bytes read
    per record, the data skipped) gives each example's file, offset and length; an example is then
    one `pread`. The table (24 bytes an example: 31 MB for ImageNet) and the labels are cached
    (`cnn.data.cache`), keyed like decoded splits, so the scan happens once per dataset version.
Either way the serialized example is parsed in the pipeline with the image left encoded.
"""

import os
import struct
import threading
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn.data import cache
from cnn.data import preprocess
from cnn.data import stream
from cnn.errors import UserError

_HEADER = 12  # A TFRecord: uint64 length, uint32 CRC of it, the data, uint32 CRC of the data.
_FOOTER = 4


def record_table(filename: str, skip: int, take: int) -> np.ndarray:
  """(offset, length) [take, 2] of records skip..skip+take of a TFRecord file, from their headers."""
  table, offset = np.empty((take, 2), np.int64), 0
  with open(filename, "rb") as f:
    for position in range(skip + take):
      f.seek(offset)
      header = f.read(_HEADER)
      if len(header) < _HEADER:
        raise UserError(f"{filename} ends after {position} records, but its dataset info says more: "
                        "the dataset is damaged; prepare it again")
      length = struct.unpack("<Q", header[:8])[0]
      if position >= skip:
        table[position - skip] = (offset + _HEADER, length)
      offset += _HEADER + length + _FOOTER
  return table


class TFRecordReader:
  """`reader[i]`: the serialized example `i` of a TFRecord split (`files[table[i, 0]]` at `table[i, 1:]`)."""

  def __init__(self, files: list[str], table: np.ndarray):
    self._files, self._table = files, table
    self._descriptors, self._lock = {}, threading.Lock()

  def _descriptor(self, file_index: int) -> int:
    with self._lock:  # pread on a shared descriptor is thread-safe; opening it once is what is locked.
      if file_index not in self._descriptors:
        self._descriptors[file_index] = os.open(self._files[file_index], os.O_RDONLY)
      return self._descriptors[file_index]

  def __getitem__(self, index: int) -> bytes:
    file_index, offset, length = (int(v) for v in self._table[index])
    return os.pread(self._descriptor(file_index), length, offset)

  def __len__(self) -> int:
    return len(self._table)


def _scan(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
  """(file, offset, length) [N, 3] of every example of a TFRecord split, from the record headers."""
  instructions = builder.info.splits[split].file_instructions
  files = sorted({i.filename for i in instructions})
  return np.concatenate([
      np.column_stack([np.full(i.take, files.index(i.filename)), record_table(i.filename, i.skip, i.take)])
      for i in instructions])


def _labels(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
  """Every example's label, in order, read sequentially with the images left encoded (TFRecord)."""
  image_key, label_key = builder.info.supervised_keys
  dataset = builder.as_dataset(split=split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()})
  return _concat(dataset.map(lambda example: example[label_key], num_parallel_calls=tf.data.AUTOTUNE))


def _concat(labels: tf.data.Dataset) -> np.ndarray:
  return np.concatenate([batch.numpy().astype(np.int32) for batch in labels.batch(4096)])


def _serialized(reader) -> Callable[[tf.Tensor], tf.Tensor]:
  """`index -> serialized example` in the pipeline (`reader[i]` in Python: a file read, no decoding)."""

  def read(index: tf.Tensor) -> tf.Tensor:
    serialized = tf.py_function(lambda i: reader[int(i)], [index], tf.string)
    serialized.set_shape([])
    return serialized

  return read


def open_split(builder: tfds.core.DatasetBuilder, split: str, preprocessing: preprocess.Preprocessing,
               cache_dir: Optional[os.PathLike]) -> stream.StreamSplit:
  """Split `split` of a prepared TFDS dataset as a streaming split (keys: example indices).

  The labels (and a TFRecord split's record table) are read once and cached in `cache_dir`.
  """
  features, (image_key, label_key) = builder.info.features, builder.info.supervised_keys
  instructions = builder.info.splits[split].file_instructions
  array_record = builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  entry = cache_dir and cache.key(dataset=builder.info.name, version=str(builder.info.version), split=split,
                                      records=True, files=cache.files_fingerprint(builder.data_dir))
  cached = cache.load(cache_dir, entry) if cache_dir else None
  table, labels = (np.asarray(cached[0]), cached[1]) if cached else (None, None)
  if array_record:
    from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel
    reader = array_record_data_source.ArrayRecordDataSource(instructions)
  else:
    table = _scan(builder, split) if table is None else table
    reader = TFRecordReader(sorted({i.filename for i in instructions}), table)
  serialized = _serialized(reader)

  def parse(index: tf.Tensor) -> dict[str, tf.Tensor]:
    return features.deserialize_example(serialized(index), decoders={image_key: tfds.decode.SkipDecoding()})

  if labels is None:
    labels = _labels(builder, split) if not array_record else _concat(tf.data.Dataset.range(len(reader)).map(
        lambda i: parse(i)[label_key], num_parallel_calls=tf.data.AUTOTUNE))
    if cache_dir:  # A read-only cache costs the next run the scan again.
      cache.save(cache_dir, entry, np.zeros((0, 3), np.int64) if table is None else table, labels)
  return stream.StreamSplit(np.arange(len(labels), dtype=np.int64), labels, preprocessing,
                            lambda index: parse(index)[image_key])
