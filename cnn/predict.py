"""Classifies image files with an export: `python -m cnn.predict --model=EXPORT_DIR a.png b.jpg ...`.

Prints the top-k classes with their names and probabilities for each image. Images are decoded
by TensorFlow (PNG, JPEG, GIF, BMP), converted to the model's channel count (grey ↔ RGB, alpha
dropped) and, for an export of fixed input size, resized to it; an export that takes any size (a
dataset of varying size) gets each image as it is and takes its evaluation view (centre crop) itself.
"""

import os
from typing import Sequence

from absl import flags
import numpy as np
import tensorflow as tf

from cnn import cli
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


def read_image(path: str, shape: Sequence[int]) -> tf.Tensor:
  """Decodes an image file into uint8 `shape` (H, W, C): channels converted, size resized as needed
  (kept where H and W are None)."""
  try:
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
  except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, tf.errors.PermissionDeniedError) as e:
    reason = "no such file" if isinstance(e, tf.errors.NotFoundError) else "not a PNG, JPEG, GIF or BMP image"
    raise UserError(f"cannot read image {path}: {reason}") from None
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
  """For each image file, its `top_k` (class name, probability) pairs, most probable first."""
  serve, shape, names = load_export(export_dir)
  images = [read_image(p, shape) for p in paths]
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
  for path, top in zip(paths, predict(cli.required("model"), paths, FLAGS.top_k)):
    print(f"{path}: " + ", ".join(f"{name} {p:.4f}" for name, p in top))


if __name__ == "__main__":
  cli.run(main, takes_arguments=True)
