"""ImageNet ResNets, v1.5: resnet18, resnet26, resnet34, resnet50, resnet101, resnet152.

He et al. (2016), "Deep Residual Learning for Image Recognition", table 1, as torchvision builds them
("v1.5": a bottleneck block strides in its 3×3 conv, not its first 1×1 conv): a 7×7/2 conv of 64
filters and a 3×3/2 max-pool, four stages of basic blocks (18, 34) or bottleneck blocks (26, 50, 101,
152) of widths 64, 128, 256, 512 (bottlenecks expand them 4×), the first block of stages 2-4 halving
the image, global average pooling and a dense layer. Shortcuts that change the shape are a 1×1 conv
and BatchNorm (option B). With a 1000-class head: ResNet-18 11,689,512 parameters, ResNet-50
25,557,032 (torchvision's figures). resnet26 (bottlenecks, two per stage) is timm's smaller sibling.

Options (flags), from "Bag of Tricks for Image Classification with CNNs" (He et al. 2019):
  * --resnet_d: the deep stem (three 3×3 convs of 32, 32, 64 filters, the first with stride 2) and
    downsampling shortcuts that average-pool 2×2 before their 1×1 conv (ResNet-C and -D there;
    timm's resnet50d);
  * --zero_init_residual: the last BatchNorm of each block starts with gamma 0, so that each block
    starts as the identity.
`--activation` replaces ReLU everywhere (mish: the xresnet of fast.ai's Imagewoof records).
BatchNorm momentum 0.9 and epsilon 1e-5 (PyTorch's 0.1 and 1e-5), convs He-normal over fan-out, as
the reference implementations. Strided convs pad "same" (TensorFlow's asymmetric padding).
"""

from typing import Callable

import tensorflow as tf

from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.models import activations
from cnn.models import batch_norm
from cnn.models import registry

# name: (bottleneck?, blocks per stage)
_ARCHITECTURES = {
    "resnet18": (False, (2, 2, 2, 2)),
    "resnet26": (True, (2, 2, 2, 2)),
    "resnet34": (False, (3, 4, 6, 3)),
    "resnet50": (True, (3, 4, 6, 3)),
    "resnet101": (True, (3, 4, 23, 3)),
    "resnet152": (True, (3, 8, 36, 3)),
}
_WIDTHS = (64, 128, 256, 512)


def _conv(filters: int, kernel_size: int, strides: int, name: str) -> tf.keras.layers.Conv2D:
  # torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"). A new initializer per layer: a
  # Keras 3 initializer draws its seed once, when made, so a shared one gave every kernel of a shape
  # the same values, drawn at import time whatever --seed said.
  he_fan_out = tf.keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
  return tf.keras.layers.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False,
                                kernel_initializer=he_fan_out, name=name)


def _linear(units: int, fan_in: int) -> tf.keras.layers.Dense:
  """The logits layer as torchvision starts it (nn.Linear's default: weights and biases U(±1/√fan_in)).

  Not Keras's Glorot-uniform kernel, whose logits start about 2.4× wider: the loss at initialisation
  was 2.88 against PyTorch's 2.42 on Imagewoof (10 classes) and our first epoch trained behind it
  (benchmarks/README.md, run-level parity). A new initializer per layer (see `_conv`).
  """
  bound = fan_in ** -0.5
  return tf.keras.layers.Dense(units, name="logits", dtype="float32",
                               kernel_initializer=tf.keras.initializers.RandomUniform(-bound, bound),
                               bias_initializer=tf.keras.initializers.RandomUniform(-bound, bound))


def _batch_norm(name: str, zero_gamma: bool = False) -> tf.keras.layers.BatchNormalization:
  return batch_norm.batch_norm(name, momentum=0.9, epsilon=1e-5, gamma_initializer="zeros" if zero_gamma else "ones")


class Shortcut(tf.keras.layers.Layer):
  """The projection of a block whose shape changes: [avg-pool 2×2 (ResNet-D) →] 1×1 conv → BN."""

  def __init__(self, filters: int, strides: int, avg_down: bool, **kwargs):
    super().__init__(**kwargs)
    pool = avg_down and strides > 1
    self.pool = tf.keras.layers.AveragePooling2D(strides, padding="same", name="pool") if pool else None
    self.conv = _conv(filters, 1, 1 if pool else strides, "conv")
    self.bn = _batch_norm("bn")

  def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    if self.pool is not None:
      x = self.pool(x)
    return self.bn(self.conv(x), training=training)


class Block(tf.keras.layers.Layer):
  """A basic block (3×3 → 3×3) or a v1.5 bottleneck (1×1 → 3×3 with the stride → 1×1, 4× wider).

  Each conv is followed by BN, each BN but the last by the activation; the shortcut is added, then
  the activation.
  """

  def __init__(self, width: int, strides: int, bottleneck: bool, in_channels: int, avg_down: bool,
               zero_init: bool, activation: Callable[[tf.Tensor], tf.Tensor] = tf.nn.relu, **kwargs):
    super().__init__(**kwargs)
    self.activation = activation
    self.out_channels = width * 4 if bottleneck else width
    shapes = ([(width, 1, 1), (width, 3, strides), (self.out_channels, 1, 1)] if bottleneck else
              [(width, 3, strides), (width, 3, 1)])
    self.convs = [_conv(f, k, s, f"conv{i}") for i, (f, k, s) in enumerate(shapes, start=1)]
    self.bns = [_batch_norm(f"bn{i}", zero_init and i == len(shapes)) for i in range(1, len(shapes) + 1)]
    changes_shape = strides > 1 or in_channels != self.out_channels
    self.shortcut = Shortcut(self.out_channels, strides, avg_down, name="shortcut") if changes_shape else None

  def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    y = x
    for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
      y = bn(conv(y), training=training)
      if i < len(self.convs) - 1:
        y = self.activation(y)
    shortcut = x if self.shortcut is None else self.shortcut(x, training=training)
    return self.activation(y + shortcut)


class ImageNetResNet(tf.keras.Model):
  """An ImageNet ResNet (v1.5).

  Args:
    num_classes: size of the logits layer.
    bottleneck: bottleneck blocks (ResNet-50 and deeper) rather than basic blocks.
    blocks_per_stage: blocks in each of the four stages, e.g. (3, 4, 6, 3).
    resnet_d: the deep stem and average-pooling downsampling shortcuts.
    zero_init_residual: gamma 0 in the last BatchNorm of each block.
    activation: a Keras activation name (relu: the published networks).
  """

  def __init__(self, num_classes: int, bottleneck: bool, blocks_per_stage, resnet_d: bool = False,
               zero_init_residual: bool = False, activation: str = "relu", name: str = "resnet"):
    super().__init__(name=name)
    self.activation = activations.get(activation)
    self.stem_activation = tf.keras.layers.Activation(self.activation, name=activation)  # A layer: see layer_table.
    stem = [(32, 2), (32, 1), (64, 1)] if resnet_d else [(64, 2)]
    self.stem_convs = [_conv(f, 3 if resnet_d else 7, s, f"stem_conv{i}") for i, (f, s) in enumerate(stem, 1)]
    self.stem_bns = [_batch_norm(f"stem_bn{i}") for i in range(1, len(stem) + 1)]
    self.stem_pool = tf.keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")
    self.blocks, channels = [], 64
    for stage, (width, count) in enumerate(zip(_WIDTHS, blocks_per_stage)):
      for i in range(count):
        block = Block(width, 2 if stage > 0 and i == 0 else 1, bottleneck, channels, resnet_d,
                      zero_init_residual, self.activation, name=f"stage{stage + 1}_block{i + 1}")
        self.blocks.append(block)
        channels = block.out_channels
    self.pool = tf.keras.layers.GlobalAveragePooling2D(name="pool")
    self.logits = _linear(num_classes, _WIDTHS[-1] * (4 if bottleneck else 1))

  def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    x = images
    for conv, bn in zip(self.stem_convs, self.stem_bns):
      x = self.stem_activation(bn(conv(x), training=training))
    x = self.stem_pool(x)
    for block in self.blocks:
      x = block(x, training=training)
    return self.logits(self.pool(x))


def _register(name: str, bottleneck: bool, blocks_per_stage: tuple[int, ...]) -> None:
  @registry.register(name)
  def build(config: Config, info: DatasetInfo) -> ImageNetResNet:
    return ImageNetResNet(info.num_classes, bottleneck, blocks_per_stage, config.resnet_d,
                          config.zero_init_residual, config.activation, name=name)

  build.__doc__ = f"{name}: the ImageNet ResNet (v1.5) with {blocks_per_stage} blocks per stage."


for _name, (_bottleneck, _blocks) in _ARCHITECTURES.items():
  _register(_name, _bottleneck, _blocks)
