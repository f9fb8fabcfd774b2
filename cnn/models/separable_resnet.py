"""separable_resnet: the best Imagewoof 128 px / 5 epoch leaderboard entry's network (76.61%, mean of 5).

liuyao12's `ResNet_separable.ipynb` (imagenette_experiments, August-September 2020; "depthwise (x6)"),
built with ayasyrev's `model_constructor` (`Net(c_out=10, layers=[3, 6, 8, 3], expansion=4)` with the
notebook's own `NewLayer` and `NewResBlock`, `stem_sizes=[3, 32, 64, 64]`, `pool=MaxBlurPool2d(3, True)`,
Mish, `sa=True`, depth multiplier 6):

  * stem: three separable layers of 32, 64 and 64 filters, each a depthwise 3×3 conv with 6 filters
    per input channel (the first with stride 2), a 1×1 conv, BatchNorm and the activation; then a
    3×3/2 max-pool;
  * four stages of [3, 6, 8, 3] bottlenecks of widths 64, 128, 256, 512 (outputs 4× wider). A block
    that halves the image first passes its input through `MaxBlurPool`, for both paths (the
    model's `pool`; the blocks' convs all have stride 1). Then: 1×1 conv → BN → activation →
    depthwise 3×3 conv with 6 filters per channel (no BN, no activation) → 1×1 conv → BN with gamma 0;
    the shortcut is a 1×1 conv and BN where the width changes (the first block of each stage);
  * `SimpleSelfAttention` after the convs of the last block of the first stage;
  * global average pooling and a dense layer.

Initialised as `model_constructor`'s `init_cnn` (torch's `kaiming_normal_` over fan-in for every conv
and the dense layer: a depthwise conv's fan-in is its 3×3 window). Parameter count: tests/xresnet_test.py
(the notebook's model, rebuilt in plain torch). `--activation` sets the activation (the entry: mish).
"""

import math
from typing import Callable

import tensorflow as tf

from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.models import activations
from cnn.models import registry
from cnn.models.blur_pool import MaxBlurPool, check_image_shape
from cnn.models.self_attention import SimpleSelfAttention
from cnn.models.xresnet import WIDTHS, ConvBN, StemBlocksHead, bn, conv, dense_head, stem_pool

BLOCKS_PER_STAGE = (3, 6, 8, 3)
STEM_WIDTHS = (32, 64, 64)
DEPTH_MULTIPLIER = 6


def depthwise(multiplier: int, strides: int, name: str) -> tf.keras.layers.DepthwiseConv2D:
  """A 3×3 depthwise conv; torch's fan-in of a grouped conv is its window (9), not window × channels."""
  he_normal = tf.keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / 9.0))
  return tf.keras.layers.DepthwiseConv2D(3, strides, padding="same", depth_multiplier=multiplier, use_bias=False,
                                         depthwise_initializer=he_normal, name=name)


class SeparableConvBN(tf.keras.layers.Layer):
  """depthwise 3×3 (× multiplier) → 1×1 conv → BN → activation: the notebook's stem `NewLayer`."""

  def __init__(self, filters: int, strides: int, multiplier: int, activation, **kwargs):
    super().__init__(**kwargs)
    self.depthwise = depthwise(multiplier, strides, "depthwise")
    self.pointwise = conv(filters, 1, 1, "pointwise")
    self.bn = bn("bn")
    self.activation = activation

  def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    return self.activation(self.bn(self.pointwise(self.depthwise(x)), training=training))


class SeparableBottleneck(tf.keras.layers.Layer):
  """act(convs(x') [→ self-attention] + [1×1 conv → BN](x')), x' = MaxBlurPool(x) when it strides."""

  def __init__(self, width: int, in_channels: int, strides: int, multiplier: int,
               activation: Callable[[tf.Tensor], tf.Tensor], self_attention: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.activation = activation
    self.out_channels = 4 * width
    self.reduce = MaxBlurPool(name="reduce") if strides > 1 else None
    self.conv1 = ConvBN(width, 1, activation=activation, name="conv1")
    self.depthwise = depthwise(multiplier, 1, "depthwise")
    self.conv3 = ConvBN(self.out_channels, 1, zero_gamma=True, name="conv3")
    self.attention = SimpleSelfAttention(name="attention") if self_attention else None
    self.shortcut = ConvBN(self.out_channels, 1, name="shortcut") if in_channels != self.out_channels else None

  def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    if self.reduce is not None:
      x = self.reduce(x)
    y = self.conv3(self.depthwise(self.conv1(x, training=training)), training=training)
    if self.attention is not None:
      y = self.attention(y, training=training)
    if self.shortcut is not None:
      x = self.shortcut(x, training=training)
    return self.activation(y + x)


class SeparableResNet(StemBlocksHead):
  """The leaderboard entry's network (see the module doc).

  Args:
    num_classes: size of the logits layer.
    activation: an activation name (`activations.get`; the entry: mish).
    multiplier: filters per channel of the depthwise convs (the 76.61% entry: 6).
    blocks_per_stage: bottlenecks in each of the four stages.
  """

  def __init__(self, num_classes: int, activation: str = "mish", multiplier: int = DEPTH_MULTIPLIER,
               blocks_per_stage=BLOCKS_PER_STAGE, name: str = "separable_resnet"):
    super().__init__(name=name)
    act = activations.get(activation)
    self.stem = [SeparableConvBN(f, 2 if i == 1 else 1, multiplier, act, name=f"stem{i}")
                 for i, f in enumerate(STEM_WIDTHS, 1)]
    self.stem_pool = stem_pool("max")
    self.blocks, channels = [], STEM_WIDTHS[-1]
    for stage, (width, count) in enumerate(zip(WIDTHS, blocks_per_stage)):
      for i in range(count):
        block = SeparableBottleneck(width, channels, 2 if stage > 0 and i == 0 else 1, multiplier, act,
                                    self_attention=stage == 0 and i == count - 1,
                                    name=f"stage{stage + 1}_block{i + 1}")
        self.blocks.append(block)
        channels = block.out_channels
    self.pool = tf.keras.layers.GlobalAveragePooling2D(name="pool")
    self.logits = dense_head(num_classes)


@registry.register("separable_resnet")
def build(config: Config, info: DatasetInfo) -> SeparableResNet:
  """separable_resnet: liuyao12's depthwise (x6) ResNet, the Imagewoof 128 px / 5 epoch leader.

  Raises UserError for images too small for its MaxBlurPools (under 45 pixels).
  """
  check_image_shape("separable_resnet", info.image_shape, same_halvings=2, pools=len(BLOCKS_PER_STAGE) - 1)
  return SeparableResNet(info.num_classes, config.activation)
