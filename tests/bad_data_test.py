"""Bad data as a new user's folders have it, through the real entry points (train, evaluate, predict).

Every case ends in one line naming the file (or class folder) and what to do, or in a counted skip
under --skip_bad_images: never a traceback, never a silently wrong count. The folders are written by
the tests: images of varying size in every format TensorFlow decodes (JPEG, PNG, GIF, BMP, WebP).
"""

import io
import json
import os
import struct

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from conftest import run_cli
from cnn import train  # pylint: disable=unused-import  # Imported first: its flags are defined unchecked.
from cnn import evaluate
from cnn import export
from cnn import predict
from cnn.data import bad_images
from cnn.data import folder
from cnn.data import stream

SIZE = 16
FORMATS = ("jpg", "png", "gif", "bmp", "webp")
_PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}


def encode(fmt, image):
  """`image` (uint8 [H, W, 3]) encoded as `fmt` (a file suffix of FORMATS)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, _PIL_FORMATS[fmt])
  return buffer.getvalue()


def write_pets(root, classes=("cat", "dog"), per_class=4, splits=("train", "val")):
  """root/<split>/<class>/<i>.<format>: images of varying size, the formats in turn."""
  rng = np.random.default_rng(0)
  for split in splits:
    for label, name in enumerate(classes):
      (root / split / name).mkdir(parents=True, exist_ok=True)
      for i in range(per_class):
        image = rng.integers(0, 128, (16 + 3 * i, 20 + 2 * label, 3), np.uint8)
        fmt = FORMATS[(i + label) % len(FORMATS)]
        (root / split / name / f"{i}.{fmt}").write_bytes(encode(fmt, image))
  return root


def noise(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def cut_short(data):
  """`data` cut short, as a download or copy that stopped."""
  return data[:len(data) * 2 // 3]


def run_train(root, run_dir, *extra):
  return run_cli(train.main, [f"--dataset=folder:{root}", f"--image_size={SIZE}", "--model=simple_cnn",
                              "--batch_size=4", "--train_steps=2", "--log_every_steps=1", "--summary_images=0",
                              "--nowrite_graph", "--histogram_every_steps=0", f"--run_dir={run_dir}", *extra])


def assert_one_line(stderr, *parts):
  """stderr is one `error:` line holding every part (so, no traceback)."""
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
  for part in parts:
    assert str(part) in lines[0], (part, lines[0])


def checked(key, data):
  """`bad_images.check_encoded` run in a tf.data pipeline, as the streaming pipelines run it."""
  return list(tf.data.Dataset.from_tensors(tf.constant(data)).map(lambda d: bad_images.check_encoded(key, d)))


def test_every_format_cut_short_or_empty_is_named_by_the_pipeline_check():
  image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), np.uint8)
  for fmt in FORMATS:
    whole = encode(fmt, image)
    assert checked("ok", whole)
    key = f"/x/photo [1].{fmt}"  # Brackets, as in a browser's second download of a file.
    for data, what in ((cut_short(whole), "is a truncated "), (b"", "is empty (0 bytes)")):
      with pytest.raises(tf.errors.InvalidArgumentError) as error:
        checked(key, data)
      message = bad_images.pipeline_error_message(error.value)
      assert message.startswith(f"corrupt image {key} {what}") and "--skip_bad_images" in message, message
      with pytest.raises(tf.errors.InvalidArgumentError):  # What the check spares the decoder.
        tf.io.decode_image(data, channels=3, expand_animations=False)


@pytest.mark.parametrize("fmt, split, budget", [
    ("jpg", "train", "0"), ("png", "train", "0"), ("gif", "train", "0"), ("bmp", "train", "0"),
    ("webp", "train", "0"), ("png", "train", "-1"), ("bmp", "train", "-1"),
    ("gif", "val", "0"), ("webp", "val", "0"), ("jpg", "val", "-1"), ("gif", "val", "-1"),
])
def test_a_file_cut_short_stops_the_run_naming_it(tmp_path, fmt, split, budget):
  # --data_memory_budget_mb=0: every split streams (a train split fails mid-epoch, an eval split at its
  # first evaluation); -1 (the default): both are decoded into memory when the run starts.
  root = write_pets(tmp_path / "pets")
  path = next((root / split / "dog").glob(f"*.{fmt}"), None) or root / split / "dog" / f"9.{fmt}"
  path.write_bytes(cut_short(path.read_bytes()) if path.exists() else cut_short(encode(fmt, noise(20, 24))))
  code, stderr = run_train(root, tmp_path / "run", f"--data_memory_budget_mb={budget}")
  assert code == 2
  assert_one_line(stderr, f"corrupt image {path} ", "--skip_bad_images")
