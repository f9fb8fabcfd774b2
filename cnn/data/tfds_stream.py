"""Random access to the examples of a prepared TFDS split, for the streaming back-end.

Example `i` is record `i` of the split in file order (the order of its file instructions, slicing
included), read by index, so the streaming pipeline keeps the in-memory back-end's index stream (a
permutation of the whole split each epoch) and resumes at any step without reading what came before.
Labels are parsed once from the records the same reader returns for each index, so a label cannot
belong to another image; they are cached (`cnn.data.cache`) with the record table below.
  * TFRecord datasets (TFDS's default) are read in the graph, no Python per example: one scan of the
    record headers (12 bytes read a record) gives each example's file, header offset and length (24
    bytes an example: 31 MB for ImageNet, held in the graph as constants); example `i` is then a
    one-record `TFRecordDatasetV2` started at its offset (it seeks, and checks the CRCs) inside the
    map. So the split runs on tf.data service workers and from any step. Chosen over a Python read
    per batch (still Python: no service, the GIL), Grain (another dependency, Python workers) and
    `global_shuffle` (TF 2.21's TFRecordDataset has no random access).
  * ArrayRecord datasets have no TensorFlow op: read through TFDS's `as_data_source` in Python
    (`tf.py_function`), on this host only.
The serialized example is parsed in the pipeline with the image left encoded.
"""

import dataclasses
import os
import struct
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn.data import bad_images
from cnn.data import cache
from cnn.data import preprocess
from cnn.data import stream
from cnn.errors import UserError

_HEADER = 12  # A TFRecord: uint64 length, uint32 CRC of it, the data, uint32 CRC of the data.
_FOOTER = 4


def record_table(filename: str, skip: int, take: int) -> np.ndarray:
  """(header offset, data length) [take, 2] of records skip..skip+take of a TFRecord file."""
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
        table[position - skip] = (offset, length)
      offset += _HEADER + length + _FOOTER
  return table


def _scan(files: list[str], instructions) -> np.ndarray:
  """(index in `files`, header offset, length) [N, 3] of a TFRecord split's records in file order."""
  return np.concatenate([
      np.column_stack([np.full(i.take, files.index(i.filename)), record_table(i.filename, i.skip, i.take)])
      for i in instructions])


def tfrecord_reader(files: list[str], table: np.ndarray) -> Callable[[tf.Tensor], tf.Tensor]:
  """`index -> serialized record` in the graph: record `files[table[i, 0]]` at byte `table[i, 1]`.

  A record whose CRC does not match (or that the file no longer holds) fails with `bad_images.BAD_IMAGE`,
  the file and the offset: one line at the entry points.
  """
  file_names, records = tf.constant(files), tf.constant(table, tf.int64)

  def read(index: tf.Tensor) -> tf.Tensor:
    file_index, offset, length = tf.unstack(tf.gather(records, index))
    filename = tf.gather(file_names, file_index)
    one = tf.data.experimental.from_variant(tf.raw_ops.TFRecordDatasetV2(
        filenames=filename[None], compression_type="", buffer_size=length + _HEADER + _FOOTER,
        byte_offsets=offset[None]), tf.TensorSpec([], tf.string))
    # A bad record is an error the reader follows by ending (its file is given up): found is False.
    found, serialized = (one.take(1).map(lambda record: (True, record)).ignore_errors()
                         .concatenate(tf.data.Dataset.from_tensors((False, ""))).take(1).get_single_element())
    check = tf.debugging.Assert(found, [bad_images.BAD_IMAGE, filename, tf.strings.format(
        "holds a damaged record at byte {}: the dataset is damaged; prepare it again", offset)])
    with tf.control_dependencies([check]):
      return tf.identity(serialized)

  return read


def _array_record_reader(builder: tfds.core.DatasetBuilder, split: str) -> Callable[[tf.Tensor], tf.Tensor]:
  """`index -> serialized record` of an ArrayRecord split, through TFDS's data source (Python)."""
  source = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)

  def read(index: tf.Tensor) -> tf.Tensor:
    serialized = tf.py_function(lambda i: source[int(i)], [index], tf.string)
    serialized.set_shape([])
    return serialized

  return read


@dataclasses.dataclass(frozen=True)
class RecordRead:
  """`read(index) -> encoded image` of a TFDS split (a `stream.StreamSplit`'s `read`).

  `runs_python`: it calls Python per example (ArrayRecord), which a tf.data service worker cannot run.
  """
  serialized: Callable[[tf.Tensor], tf.Tensor]
  features: tfds.features.FeaturesDict
  image_key: str
  runs_python: bool

  def parse(self, index: tf.Tensor) -> dict[str, tf.Tensor]:
    """Example `index` parsed, its image left encoded."""
    return self.features.deserialize_example(self.serialized(index),
                                             decoders={self.image_key: tfds.decode.SkipDecoding()})

  def __call__(self, index: tf.Tensor) -> tf.Tensor:
    return self.parse(index)[self.image_key]


def _labels(read: RecordRead, label_key: str, num_examples: int) -> np.ndarray:
  """Every example's label, parsed from the record `read` gives for its index."""
  labels = tf.data.Dataset.range(num_examples).map(lambda i: read.parse(i)[label_key],
                                                   num_parallel_calls=tf.data.AUTOTUNE)
  return np.concatenate([batch.numpy().astype(np.int32) for batch in labels.batch(4096)])


def open_split(builder: tfds.core.DatasetBuilder, split: str, preprocessing: preprocess.Preprocessing,
               cache_dir: Optional[os.PathLike]) -> stream.StreamSplit:
  """Split `split` of a prepared TFDS dataset as a streaming split (keys: example indices in file order).

  The labels (and a TFRecord split's record table) are read once and cached in `cache_dir`. The split's
  `read` (a `RecordRead`) reads and parses without decoding: time it to rate the reading alone.
  """
  features, (image_key, label_key) = builder.info.features, builder.info.supervised_keys
  instructions = builder.info.splits[split].file_instructions
  array_record = builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  entry = cache_dir and cache.key(dataset=builder.info.name, version=str(builder.info.version), split=split,
                                      records=True, files=cache.files_fingerprint(builder.data_dir))
  cached = cache.load(cache_dir, entry) if cache_dir else None
  table, labels = (np.asarray(cached[0]), cached[1]) if cached else (None, None)
  if array_record:
    read = RecordRead(_array_record_reader(builder, split), features, image_key, runs_python=True)
  else:
    files = sorted({i.filename for i in instructions})
    table = _scan(files, instructions) if table is None else table
    read = RecordRead(tfrecord_reader(files, table), features, image_key, runs_python=False)
  if labels is None:
    labels = _labels(read, label_key, sum(i.take for i in instructions))
    if cache_dir:  # A read-only cache costs the next run the scan again.
      cache.save(cache_dir, entry, np.zeros((0, 3), np.int64) if table is None else table, labels)
  return stream.StreamSplit(np.arange(len(labels), dtype=np.int64), labels, preprocessing, read)
