"""MaxBlurPool: anti-aliased max-pooling (Zhang 2019, "Making Convolutional Networks Shift-Invariant
Again"), as the Imagewoof leaderboard entries ran it: kornia 0.4's `MaxBlurPool2d(3, ceil_mode=True)`
(August-September 2020, liuyao12's `ResNet_separable.ipynb`; the notebook's log shows the bilinear
`interpolate(scale_factor=0.5)` warning of that kornia's `pyrdown`):

  1. max-pool 3×3 with stride 1, padded by 1 (padding never wins the max);
  2. blur with the 5×5 binomial kernel ([1, 4, 6, 4, 1] / 16, outer product), reflect-padded by 2;
  3. halve: bilinear resizing by 0.5 without corner alignment samples between pixels 2i and 2i + 1,
     i.e. the mean of each 2×2 block (odd sizes: the last row and column are dropped).

Steps 2 and 3 are one depthwise convolution here: the 5-tap binomial convolved with the 2-tap box is
the 6-tap [1, 5, 10, 10, 5, 1] / 32, taken with stride 2 over the reflect-padded map.
(kornia ≥ 0.5 changed the layer to a 2×2 max-pool and a 3×3 binomial blur with stride 2; that is not
what the leaderboard entries ran.)
"""

import itertools
from typing import Sequence

import numpy as np
import tensorflow as tf

from cnn.errors import UserError

# [1, 4, 6, 4, 1] / 16 convolved with [1, 1] / 2.
_TAPS = np.convolve([1.0, 4.0, 6.0, 4.0, 1.0], [1.0, 1.0]) / 32.0


class MaxBlurPool(tf.keras.layers.Layer):
  """Max-pool 3×3 stride 1, 5×5 binomial blur (reflect), 2×2 mean: [N, H, W, C] → [N, H//2, W//2, C]."""

  def call(self, inputs: tf.Tensor) -> tf.Tensor:
    maxima = tf.nn.max_pool2d(inputs, 3, 1, "SAME")  # SAME pooling ignores the padding: torch's -inf.
    padded = tf.pad(maxima, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
    channels = inputs.shape[-1]
    kernel = np.tile(np.outer(_TAPS, _TAPS)[:, :, None, None], (1, 1, channels, 1))
    return tf.nn.depthwise_conv2d(padded, tf.constant(kernel, inputs.dtype), [1, 2, 2, 1], "VALID")


def last_pool_input_side(side: int, same_halvings: int, pools: int) -> int:
  """The side the last of `pools` MaxBlurPools sees: `side` halved rounding up `same_halvings` times
  ("same"-padded strides before the first pool), then down by each pool before it."""
  for _ in range(same_halvings):
    side = -(-side // 2)
  for _ in range(pools - 1):
    side //= 2
  return side


def check_image_shape(model: str, image_shape: Sequence, same_halvings: int, pools: int) -> None:
  """Raises UserError when the last MaxBlurPool would see a map under 3 pixels (its reflect padding of
  2 needs 3, as kornia's); unknown sizes (None) pass."""
  sides = [side for side in image_shape[:2] if side]
  if sides and last_pool_input_side(min(sides), same_halvings, pools) < 3:
    smallest = next(s for s in itertools.count(1) if last_pool_input_side(s, same_halvings, pools) >= 3)
    raise UserError(f"--model={model} needs images of at least {smallest} pixels (its last MaxBlurPool reflects 2 "
                    f"pixels at each border), not {'×'.join(map(str, image_shape))}; set --image_size")
