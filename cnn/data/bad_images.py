"""Image files that are cut short, corrupt or gone, met while streaming: each reported in one line naming it.

Decoders fail without naming the file they were given. Catching a failure per example inside tf.data
(a nested dataset with `ignore_errors` per example) costs about 30 times the decode, and checking every
format's structure in the graph 55-65 µs of CPU an image, against 170 µs to decode a 160 px JPEG
(benchmarks/bad_image_check.py). So:

* `check_encoded` checks what a decoder may not catch, for about 25 µs an image (the JPEG check before
  it: 10-20): an empty file, a JPEG without its end marker (decoded by a crop window, a cut-short JPEG
  can give grey pixels without an error), a PNG without its IEND chunk; it fails with `BAD_IMAGE` and
  the key. `describe` then says what is wrong, reading the file in Python, only then.
* Any other file a decoder refuses (a GIF, BMP or WebP cut short, a PNG with a bad chunk, a JPEG with
  garbage inside) fails the pipeline with the decoder's error alone; `pipeline_error_message` then
  finds the file by decoding the files of the folder splits that stream (`watch`), in order, up to
  the first that fails (at most `_SEARCH_SECONDS`).
* A file gone since the folder was listed (deleted mid-run): read_file's NotFoundError names it.

`decodable` decodes every file once (--skip_bad_images) with the same checks.
"""

import re
import time
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

from cnn.data import folder

BAD_IMAGE = "cnn-bad-image:"  # Marks the pipeline's error for a corrupt image; the key follows.
SKIP_HINT = "remove or replace it, or pass --skip_bad_images"
_TAIL = 64  # Bytes at the end searched for an end marker (some cameras append bytes after a JPEG's).
_SEARCH_SECONDS = 120  # How long a decoder error's file is looked for before giving up.
_WATCHED_SPLITS = 4  # The folder splits streamed last, searched newest first.
_watched: list[np.ndarray] = []
# The decoders' ops: an InvalidArgumentError raised in one of them is a file that does not decode.
_DECODE_OPS = re.compile(r"\{\{node [^}]*(Decode(Image|Jpeg|AndCropJpeg|Png|Gif|Bmp|WebP)|ExtractJpegShape)\}\}")
_GONE = "; No such file or directory"
# What TensorFlow puts before an op's message: its function node, and tf.data's map that ran it.
_PREFIXES = re.compile(r"^(.*\}\}\s*)?(Error in user-defined function passed to .*? with iterator: \S+: )?")


def _has(data: tf.Tensor, marker: bytes) -> tf.Tensor:
  """Whether `marker` occurs in `data` (a scalar string): one split, where a byte-by-byte search takes many ops."""
  _, _, shape = tf.raw_ops.StringSplitV2(input=tf.reshape(data, [1]), sep=marker)
  return shape[1] > 1  # The most parts of an element.


def check_encoded(key: tf.Tensor, encoded: tf.Tensor) -> tf.Tensor:
  """`encoded`, after checks that fail the pipeline with `BAD_IMAGE` and `key` (module docstring)."""
  size = tf.strings.length(encoded)
  tail = tf.strings.substr(encoded, size - tf.minimum(size, _TAIL), _TAIL)
  png = tf.equal(tf.strings.substr(encoded, 0, 4), b"\x89PNG")
  whole = tf.logical_and(
      tf.logical_or(tf.logical_not(tf.io.is_jpeg(encoded)), _has(tail, b"\xff\xd9")),
      tf.logical_or(tf.logical_not(png), _has(tail, b"IEND")))
  key = tf.convert_to_tensor(key)
  key = key if key.dtype == tf.string else tf.strings.as_string(key)  # Other data would put Assert in a cond.
  check = tf.debugging.Assert(tf.logical_and(size > 0, whole), [BAD_IMAGE, key, SKIP_HINT])
  with tf.control_dependencies([check]):
    return tf.identity(encoded)


def describe(data: bytes) -> str:
  """What is wrong with an image file's contents `data` that do not decode, as the rest of a sentence."""
  kind = folder.image_format(data[:12])
  truncated = {
      "JPEG": b"\xff\xd9" not in data[-_TAIL:],
      "PNG": b"IEND" not in data[-_TAIL:],
      "GIF": not data.endswith(b";"),
      "BMP": len(data) < int.from_bytes(data[2:6], "little"),
      "WebP": len(data) < int.from_bytes(data[4:8], "little") + 8,
  }
  if not data:
    return "is empty (0 bytes)"
  if not kind:
    return f"is not a {folder.FORMATS} image by its contents"
  if truncated[kind]:
    return f"is a {kind} file cut short"
  return f"is a {kind} file that does not decode (corrupt inside)"


def _describe_file(key: str) -> str:
  try:
    with open(key, "rb") as f:
      return describe(f.read())
  except OSError:  # No longer there.
    return "is empty or cut short"


def watch(keys: np.ndarray) -> None:
  """Remembers the file paths of a folder split that streams, to search when a decoder fails."""
  for i, known in enumerate(_watched):
    if known is keys:
      del _watched[i]
      break
  _watched.insert(0, keys)
  del _watched[_WATCHED_SPLITS:]


def _decoded_indices(paths: np.ndarray) -> tf.data.Dataset:
  """The indices of `paths` whose files read and decode whole, in order (each file decoded once)."""

  def decode(index, path):
    image = tf.io.decode_image(check_encoded(path, tf.io.read_file(path)), channels=3, expand_animations=False)
    return index, tf.shape(image)  # The shape keeps the decode from being pruned.

  return (tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
          .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .ignore_errors()
          .map(lambda index, _: index))


def decodable(paths: np.ndarray) -> np.ndarray:
  """Which image files read and decode whole (bool [N]): each is decoded once (--skip_bad_images)."""
  mask = np.zeros(len(paths), bool)
  mask[list(_decoded_indices(paths).as_numpy_iterator())] = True
  return mask


def _first_undecodable(paths: np.ndarray, deadline: float) -> Optional[bytes]:
  """The first of `paths` that does not decode; None if all do, or when `deadline` (monotonic) passes first."""
  expected = 0
  for index in _decoded_indices(paths).as_numpy_iterator():
    if index != expected:
      return paths[expected]
    expected += 1
    if time.monotonic() > deadline:
      return None
  return paths[expected] if expected < len(paths) else None


def _message_line(text: str, end: int) -> str:
  """The op's message on the line that ends before `end` of an error's text, without TensorFlow's prefixes."""
  lines = text[:end].rstrip(" \t\n[").splitlines()
  return _PREFIXES.sub("", lines[-1].strip()) if lines else ""


def _decoder_failure_message(what: str) -> str:
  """The message for a decoder's error: the file found among the watched splits, else what to do."""
  logging.info("An image did not decode (%s); looking for it in the folders streamed", what)
  deadline = time.monotonic() + _SEARCH_SECONDS
  for paths in list(_watched):
    found = _first_undecodable(paths, deadline)
    if found is not None:
      return f"corrupt image {found.decode()} {_describe_file(found.decode())} ({what}): {SKIP_HINT}"
    if time.monotonic() > deadline:
      break
  if not _watched:  # No folder streamed: a TFDS dataset's image.
    return f"an image of the dataset does not decode ({what}): the dataset is damaged; prepare it again"
  return (f"an image does not decode ({what}) and the file was not found in {_SEARCH_SECONDS} s; pass "
          "--skip_bad_images, which decodes every file once when the folder is listed and leaves out (and "
          "counts) those that fail")


def pipeline_error_message(error: Exception) -> str:
  """The one-line message of an input pipeline's error about an image file, or '' for other errors."""
  text = str(error)
  if BAD_IMAGE in text:
    # Assert prints its data items in brackets: [marker] [key] [what]; a key may hold brackets. `what` is
    # SKIP_HINT from `check_encoded`, or what another reader says (tfds_stream: a damaged record).
    items = text.split(BAD_IMAGE, 1)[1].splitlines()[0].strip().removeprefix("] [").rsplit("]", 1)[0]
    key, what = items.rsplit("] [", 1) if "] [" in items else (items, "")
    if what != SKIP_HINT:
      return f"{key} {what}"
    if key.isdigit():  # A TFDS split's example, by index (cnn/data/tfds_stream.py).
      return f"example {key} of the dataset is an empty or cut-short image: the dataset is damaged; prepare it again"
    return f"corrupt image {key} {_describe_file(key)}: {SKIP_HINT}"
  if isinstance(error, tf.errors.NotFoundError) and "{{node ReadFile}}" in text and _GONE in text:
    path = _message_line(text, text.index(_GONE))
    return (f"image file {path} is gone: deleted or moved after the run listed its folder; put it back, or "
            "start the run again (the folder is listed anew)")
  decoder = _DECODE_OPS.search(text)
  if isinstance(error, tf.errors.InvalidArgumentError) and decoder:
    return _decoder_failure_message(_message_line(text, decoder.start()))
  return ""
