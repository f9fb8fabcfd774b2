"""He et al. (2016) CIFAR ResNets: resnet20, resnet32, resnet44, resnet56, resnet110.

"Deep Residual Learning for Image Recognition", section 4.2: a 3×3 conv with 16 filters, then three
stages of n basic blocks each (16, 32 and 64 filters; the first block of stages 2 and 3 halves the
image with stride 2), global average pooling and a dense layer: 6n+2 weighted layers. Shortcuts
are identities; where a block changes the shape they are option A of the paper: subsample by 2 and
pad the new channels with zeros, so they have no parameters (ResNet-20: 269,722 trainable parameters,
ResNet-56: 853,018).
"""

import tensorflow as tf

from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.models import batch_norm
from cnn.models import registry

_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}


def _conv(filters: int, strides: int, name: str) -> tf.keras.layers.Conv2D:
  return tf.keras.layers.Conv2D(filters, 3, strides, padding="same", use_bias=False,
                                kernel_initializer="he_normal", name=name)


def _batch_norm(name: str) -> tf.keras.layers.BatchNormalization:
  # PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5), as the reference implementations.
  return batch_norm.batch_norm(name, momentum=0.9, epsilon=1e-5)


class BasicBlock(tf.keras.layers.Layer):
  """conv → BN → ReLU → conv → BN, plus the shortcut, → ReLU."""

  def __init__(self, filters: int, strides: int, **kwargs):
    super().__init__(**kwargs)
    self.filters, self.strides = filters, strides
    self.conv1, self.bn1 = _conv(filters, strides, "conv1"), _batch_norm("bn1")
    self.conv2, self.bn2 = _conv(filters, 1, "conv2"), _batch_norm("bn2")

  def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    y = tf.nn.relu(self.bn1(self.conv1(x), training=training))
    y = self.bn2(self.conv2(y), training=training)
    shortcut = x
    if self.strides > 1 or x.shape[-1] != self.filters:  # Option A: subsample, zero-pad channels.
      shortcut = x[:, ::self.strides, ::self.strides, :]
      extra = self.filters - x.shape[-1]
      shortcut = tf.pad(shortcut, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])
    return tf.nn.relu(y + shortcut)


class CifarResNet(tf.keras.Model):
  """A CIFAR ResNet of depth 6n+2 (n = `blocks_per_stage`).

  Args:
    num_classes: size of the logits layer.
    blocks_per_stage: n; depth 20, 32, 44, 56, 110 for n = 3, 5, 7, 9, 18.
    widths: filters of the three stages.
  """

  def __init__(self, num_classes: int, blocks_per_stage: int, widths=(16, 32, 64), name: str = "resnet"):
    super().__init__(name=name)
    self.stem, self.stem_bn = _conv(widths[0], 1, "stem"), _batch_norm("stem_bn")
    self.blocks = [BasicBlock(width, 2 if stage > 0 and i == 0 else 1, name=f"stage{stage + 1}_block{i + 1}")
                   for stage, width in enumerate(widths) for i in range(blocks_per_stage)]
    self.pool = tf.keras.layers.GlobalAveragePooling2D(name="pool")
    self.logits = tf.keras.layers.Dense(num_classes, name="logits", dtype="float32")

  def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    x = tf.keras.ops.relu(self.stem_bn(self.stem(images), training=training))  # keras.ops: see layer_table.
    for block in self.blocks:
      x = block(x, training=training)
    return self.logits(self.pool(x))


def _register(name: str, blocks_per_stage: int) -> None:
  @registry.register(name)
  def build(config: Config, info: DatasetInfo) -> CifarResNet:
    del config  # The depth is in the name; the recipe (optimizer, augmentation) is in the flagfile.
    return CifarResNet(info.num_classes, blocks_per_stage, name=name)

  build.__doc__ = f"{name}: the CIFAR ResNet with {blocks_per_stage} blocks per stage."


for _name, _n in _DEPTHS.items():
  _register(_name, _n)
