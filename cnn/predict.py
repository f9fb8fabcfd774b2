"""Classifies image files with an export: `python -m cnn.predict --model=EXPORT_DIR a.png b.jpg ...`.

Prints the top-k classes with their names and probabilities for each image. Images are decoded
by TensorFlow (PNG, JPEG, GIF, BMP, WebP), converted to the model's channel count (grey ↔ RGB, alpha
dropped) and, for an export of fixed input size, resized to it; an export that takes any size (a
dataset of varying size) gets each image as it is and takes its evaluation view (centre crop) itself.

A file that cannot be read as an image (missing, a folder, empty, cut short, not an image) is named
on stderr, one line each, and the others are classified. Exit status: 0 when every image was
classified; 1 when some could not be read (each named) and the rest were classified; 2 for a usage
error (no images given, --model not an export), when nothing is classified.
"""

import os
import sys
from typing import Optional, Sequence

from absl import flags
import numpy as np
import tensorflow as tf

from cnn import cli
from cnn.data import bad_images
from cnn.errors import UserError

FLAGS = flags.FLAGS
cli.define_flag(flags.DEFINE_string, "model", "", "An export directory written by cnn.export (required).")
cli.define_flag(flags.DEFINE_integer, "top_k", 3, "How many classes to show for each image.", lower_bound=1)


def load_export(export_dir: str) -> tuple[tf.types.experimental.ConcreteFunction, tuple, list[str]]:
  """The serving function, input image shape (H, W, C; H and W None for any size) and class names of an
  export. Raises UserError."""
  if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
    raise UserError(f"--model={export_dir} is not an export (no saved_model.pb); write one with "
                    "python -m cnn.export --run_dir=RUN --export_dir=DIR")
  loaded = tf.saved_model.load(export_dir)
  serve = loaded.signatures["serving_default"]
  shape = tuple(serve.structured_input_signature[1]["images"].shape[1:])
  names = [n.decode() for n in loaded.class_names.numpy()]
  return serve, shape, names


def _unreadable(path: str) -> Optional[str]:
  """Why `path` cannot be read as an image file before decoding it, or None."""
  if os.path.isdir(path):
    return "is a folder, not an image file"
  if not os.path.exists(path):
    return "does not exist" + (" (a broken symbolic link)" if os.path.islink(path) else "")
  if not os.access(path, os.R_OK):
    return "cannot be read (permission denied)"
  return "is empty (0 bytes)" if os.path.getsize(path) == 0 else None


def read_image(path: str, shape: Sequence[int]) -> tf.Tensor:
  """Decodes an image file into uint8 `shape` (H, W, C): channels converted, size resized as needed
  (kept where H and W are None). Raises UserError naming the file and what is wrong with it."""
  reason = _unreadable(path)
  if reason:
    raise UserError(f"{path} {reason}")
  try:
    encoded = tf.io.read_file(path)
  except tf.errors.OpError as e:
    raise UserError(f"{path} cannot be read ({e.message.strip().splitlines()[0]})") from None
  try:
    image = tf.io.decode_image(encoded, expand_animations=False)
  except tf.errors.InvalidArgumentError:
    raise UserError(f"{path} {bad_images.describe(encoded.numpy())}") from None
  height, width, channels = shape
  have = image.shape[-1]
  if have in (2, 4):  # Drop alpha.
    image, have = image[..., :have - 1], have - 1
  if have == 1 and channels == 3:
    image = tf.image.grayscale_to_rgb(image)
  elif have == 3 and channels == 1:
    image = tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
  elif have != channels:
    raise UserError(f"image {path} has {image.shape[-1]} channels; the model takes {channels}")
  if height is not None and tuple(image.shape[:2]) != (height, width):
    resized = tf.image.resize(tf.cast(image, tf.float32), (height, width), antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
  return image


def predict(export_dir: str, paths: Sequence[str], top_k: int = 3) -> list[list[tuple[str, float]]]:
  """For each image file, its `top_k` (class name, probability) pairs, most probable first. Raises
  UserError for the first file that cannot be read."""
  serve, shape, names = load_export(export_dir)
  return _classify(serve, shape, names, [read_image(p, shape) for p in paths], top_k)


def _classify(serve, shape: tuple, names: list[str], images: list[tf.Tensor],
              top_k: int) -> list[list[tuple[str, float]]]:
  """The `top_k` (class name, probability) pairs of each image decoded by `read_image` for `shape`."""
  if not images:
    return []
  if shape[0] is None:  # Any size: one image a call, as it is.
    probabilities = np.concatenate([serve(images=image[None])["probabilities"].numpy() for image in images])
  else:
    probabilities = serve(images=tf.stack(images))["probabilities"].numpy()
  top = np.argsort(-probabilities, axis=1, kind="stable")[:, :min(top_k, len(names))]
  return [[(names[j], float(p[j])) for j in row] for p, row in zip(probabilities, top)]


def main(argv: Sequence[str]) -> None:
  paths = argv[1:]
  if not paths:
    raise UserError("give image files to classify: python -m cnn.predict --model=EXPORT_DIR a.png b.jpg")
  serve, shape, names = load_export(cli.required("model"))
  readable, images = [], []
  for path in paths:
    try:
      images.append(read_image(path, shape))
      readable.append(path)
    except UserError as e:  # Named, and the others classified.
      print(f"error: {e}", file=sys.stderr)
  for path, top in zip(readable, _classify(serve, shape, names, images, FLAGS.top_k)):
    print(f"{path}: " + ", ".join(f"{name} {p:.4f}" for name, p in top))
  if len(readable) < len(paths):
    sys.exit(1)  # Some images named on stderr; the module docstring lists the exit statuses.


if __name__ == "__main__":
  cli.run(main, takes_arguments=True)
