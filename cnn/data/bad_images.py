"""Image files that are cut short, corrupt or gone, met while streaming: each reported in one line naming it.

Decoders fail without naming the file they were given, and catching a failure per example inside
tf.data (a nested dataset with `ignore_errors` per example) costs about 30 times the decode. So:

* `check_encoded` runs cheap structural checks on every encoded image in the pipeline and fails with
  `BAD_IMAGE`, the file and the reason: empty, a JPEG without its end marker, a PNG without its IEND
  chunk, a GIF without its trailer, a BMP or WebP shorter than its header says. That is every format
  cut short (an interrupted download or copy), named at no cost.
* A file the checks pass but the decoder refuses (a PNG with a bad chunk, a JPEG with garbage inside)
  fails the pipeline with the decoder's error alone; `pipeline_error_message` then finds the file by
  decoding the files of the folder splits that stream (`watch`), in order, up to the first that fails.
* A file gone since the folder was listed (deleted mid-run): read_file's NotFoundError names it.

`decodable` decodes every file once (--skip_bad_images) with the same checks.
"""

import re
import time
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

BAD_IMAGE = "cnn-bad-image:"  # Marks the pipeline's error for a corrupt image; the path follows.
SKIP_HINT = "remove or replace it, or pass --skip_bad_images"
_SEARCH_SECONDS = 120  # How long a decoder error's file is looked for before giving up.
_WATCHED_SPLITS = 4  # The folder splits streamed last, searched newest first.
_watched: list[np.ndarray] = []
# The decoders' ops: an InvalidArgumentError raised in one of them is a file that does not decode.
_DECODE_OPS = re.compile(r"\{\{node [^}]*(Decode(Image|Jpeg|AndCropJpeg|Png|Gif|Bmp|WebP)|ExtractJpegShape)\}\}")
_GONE = "; No such file or directory"
# What TensorFlow puts before an op's message: its function node, and tf.data's map that ran it.
_PREFIXES = re.compile(r"^(.*\}\}\s*)?(Error in user-defined function passed to .*? with iterator: \S+: )?")


def _little_endian(head: tf.Tensor, offset: int) -> tf.Tensor:
  """The uint32 stored little-endian at `offset` of `head` (`_head`), as int64."""
  raw = tf.cast(tf.io.decode_raw(tf.strings.substr(head, offset, 4), tf.uint8), tf.int64)
  return tf.reduce_sum(raw * tf.constant([1, 1 << 8, 1 << 16, 1 << 24], tf.int64))


def _head(encoded: tf.Tensor) -> tf.Tensor:
  """The first 12 bytes of `encoded`, zero-padded: what the format checks read."""
  return tf.strings.substr(tf.strings.join([encoded, b"\0" * 12]), 0, 12)


def _tail_has(encoded: tf.Tensor, marker: bytes, tail: int) -> tf.Tensor:
  """Whether `marker` occurs in the last `tail` bytes of `encoded`."""
  size = tf.strings.length(encoded)
  window = tf.io.decode_raw(tf.strings.substr(encoded, size - tf.minimum(size, tail), tail), tf.uint8)
  starts = tf.maximum(tf.shape(window)[0] - len(marker) + 1, 0)
  hits = tf.ones([starts], tf.bool)
  for i, byte in enumerate(marker):
    hits = tf.logical_and(hits, tf.equal(window[i:i + starts], byte))
  return tf.reduce_any(hits)


def _problems(encoded: tf.Tensor) -> list[tuple[tf.Tensor, str]]:
  """(is this wrong, what) for each structural check of an encoded image."""
  size = tf.cast(tf.strings.length(encoded), tf.int64)
  head = _head(encoded)
  png = tf.equal(tf.strings.substr(head, 0, 4), b"\x89PNG")
  gif, bmp = tf.equal(tf.strings.substr(head, 0, 3), b"GIF"), tf.equal(tf.strings.substr(head, 0, 2), b"BM")
  webp = tf.logical_and(tf.equal(tf.strings.substr(head, 0, 4), b"RIFF"), tf.equal(tf.strings.substr(head, 8, 4), b"WEBP"))
  bmp_size = _little_endian(head, 2)  # The file's size (0 allowed for uncompressed bitmaps).
  return [
      (tf.equal(size, 0), "is empty (0 bytes)"),
      # Some cameras append bytes after a JPEG's end marker: it is looked for in the last 64.
      (tf.logical_and(tf.io.is_jpeg(encoded), tf.logical_not(_tail_has(encoded, b"\xff\xd9", 64))),
       "is a truncated JPEG (its end marker is missing)"),
      (tf.logical_and(png, tf.logical_not(_tail_has(encoded, b"IEND", 64))),
       "is a truncated PNG (its IEND chunk is missing)"),
      (tf.logical_and(gif, tf.logical_not(_tail_has(encoded, b";", 1))), "is a truncated GIF (its trailer is missing)"),
      (tf.logical_and(bmp, size < bmp_size), "is a truncated BMP (shorter than its header says)"),
      (tf.logical_and(webp, size < _little_endian(head, 4) + 8), "is a truncated WebP (shorter than its header says)"),
  ]


def check_encoded(key: tf.Tensor, encoded: tf.Tensor) -> tf.Tensor:
  """`encoded`, after checks that fail the pipeline with `BAD_IMAGE`, `key` and what is wrong (module doc)."""
  problems = _problems(encoded)
  reason = tf.constant("")
  for wrong, what in reversed(problems):  # The first problem found is the one named.
    reason = tf.where(wrong, what, reason)
  check = tf.debugging.Assert(tf.equal(reason, ""), [BAD_IMAGE, key, reason, SKIP_HINT])
  with tf.control_dependencies([check]):
    return tf.identity(encoded)


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
      return f"corrupt image {found.decode()} does not decode ({what}): {SKIP_HINT}"
    if time.monotonic() > deadline:
      break
  return (f"an image does not decode ({what}) and the file was not found; pass --skip_bad_images, which decodes "
          "every file once when the folder is listed and leaves out (and counts) those that fail")


def pipeline_error_message(error: Exception) -> str:
  """The one-line message of an input pipeline's error about an image file, or '' for other errors."""
  text = str(error)
  if BAD_IMAGE in text:
    # Assert prints its data items in brackets: [marker] [key] [reason] [hint]; a key may hold brackets.
    items = text.split(BAD_IMAGE, 1)[1].splitlines()[0].strip().removeprefix("] [").rsplit("]", 1)[0]
    parts = items.rsplit("] [", 2)
    return f"corrupt image {parts[0]} {parts[1]}: {SKIP_HINT}" if len(parts) == 3 else ""
  if isinstance(error, tf.errors.NotFoundError) and "{{node ReadFile}}" in text and _GONE in text:
    path = _message_line(text, text.index(_GONE))
    return (f"image file {path} is gone: deleted or moved after the run listed its folder; put it back, or "
            "start the run again (the folder is listed anew)")
  decoder = _DECODE_OPS.search(text)
  if isinstance(error, tf.errors.InvalidArgumentError) and decoder:
    return _decoder_failure_message(_message_line(text, decoder.start()))
  return ""
