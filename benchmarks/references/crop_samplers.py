"""The random-resized-crop windows of ours (TensorFlow's sampler) against torchvision's, on Imagewoof's image shapes.

    python benchmarks/references/crop_samplers.py --samples=20000

Ours draws windows with `tf.image.stateless_sample_distorted_bounding_box` (cnn/data/preprocess.py:
`random_window`); torchvision's RandomResizedCrop with its own `get_params` (written out in
imagewoof_resnet_torch.py). Both at scale (0.35, 1) and ratio (3/4, 4/3). For each image shape this prints
the distribution of the window's area fraction and aspect ratio (w/h), and how often each falls back.
No training: it measures what differs, not what the difference does to accuracy.
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imagewoof_resnet_torch import random_resized_crop_params  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from cnn.data.preprocess import random_window  # pylint: disable=wrong-import-position

SCALE, RATIO = (0.35, 1.0), (3 / 4, 4 / 3)


def ours(height: int, width: int, samples: int) -> np.ndarray:
  seeds = tf.random.stateless_uniform([samples, 2], seed=[1, 2], minval=0, maxval=2**31 - 1, dtype=tf.int64)
  shape = tf.constant([height, width, 3])
  windows = tf.function(lambda s: tf.map_fn(lambda seed: tf.stack(random_window(shape, seed, SCALE, RATIO)), s,
                                            fn_output_signature=tf.int32))(seeds)
  return windows.numpy()  # (y, x, h, w)


def torchvision(height: int, width: int, samples: int) -> np.ndarray:
  torch.manual_seed(0)
  return np.array([random_resized_crop_params(width, height, SCALE, RATIO) for _ in range(samples)])


def describe(windows: np.ndarray, height: int, width: int) -> str:
  h, w = windows[:, 2].astype(float), windows[:, 3].astype(float)
  area, aspect = h * w / (height * width), w / h
  whole = np.mean((h == height) & (w == width))
  q = lambda v: "/".join(f"{x:.2f}" for x in np.quantile(v, [0.1, 0.5, 0.9]))
  return (f"area mean {area.mean():.3f} (10/50/90%: {q(area)}), aspect mean {aspect.mean():.3f} "
          f"(10/50/90%: {q(aspect)}), whole image {100 * whole:.1f}%")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", type=int, default=20000)
  args = parser.parse_args()
  for height, width in ((160, 160), (160, 213), (160, 240), (213, 160), (160, 400)):
    print(f"{height}×{width}")
    print(f"  ours (TF)    {describe(ours(height, width, args.samples), height, width)}")
    print(f"  torchvision  {describe(torchvision(height, width, args.samples), height, width)}")


if __name__ == "__main__":
  main()
