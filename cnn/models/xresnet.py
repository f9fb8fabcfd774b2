"""fast.ai's xresnet: xresnet18, xresnet34, xresnet50, xresnet101, xresnet152, xse_resnext50 and variants.

The network of fast.ai's Imagenette/Imagewoof baselines (fastai2 `vision/models/xresnet.py`, January
2020, and fastai's since): He et al.'s ResNet with the "Bag of Tricks" changes (He et al. 2019):

  * stem: three 3×3 conv-BN-activation layers of 32, 32 and 64 filters, the first with stride 2, then
    a 3×3/2 max-pool (or `MaxBlurPool`);
  * four stages of widths 64, 128, 256, 512 (stages 2-4 halve the image in their first block) of basic
    blocks (3×3 → 3×3, expansion 1: xresnet18, 34) or bottlenecks (1×1 → 3×3 with the stride → 1×1 of
    4× the width, expansion 4: xresnet50, 101, 152);
  * a block whose shape changes takes its shortcut through a 2×2 average pool (when it strides; a max
    pool with `shortcut_pool="max"`, as fast.ai's 2020-01 runs with `--pool MaxPool`; `MaxBlurPool` with
    "maxblur"), then a 1×1 conv and BatchNorm (ResNet-D);
  * the last BatchNorm of each block starts with gamma 0 (each block starts as the identity);
  * `self_attention`: a `SimpleSelfAttention` after the convs of the last block of the first stage
    (fast.ai's `sa=True`: its stage `len(layers) - 4`, block `blocks - 1`);
  * global average pooling and a dense layer.

`xse_resnext50` (fastai2's, of `SEResNeXtBlock`s at commit 3faec089: the network of fast.ai's 2020-01
Imagewoof runs, `--arch xse_resnext50 --pool MaxPool --sa 1`) is xresnet50 with each bottleneck's 3×3
conv in 32 groups, floor(width·4/64)·32 wide (as is the 1×1 before it), and a squeeze-excitation
(`SqueezeExcite`: mean over positions → 1×1 conv with bias to ceil(C // 16 / 8)·8 channels → activation
→ 1×1 conv with bias → sigmoid, times the input) after the convs, before self-attention and the sum.
Its grouped convs are `GroupedConv2D`s: TensorFlow's kernel, not Keras's XLA detour (230× slower on this CPU).

Convs and the dense layer are initialised as fast.ai's `init_cnn` does: He normal over fan-in
(torch's `kaiming_normal_`), biases 0. BatchNorm: momentum 0.9 (torch's 0.1), epsilon 1e-5, fused.
`--activation` replaces ReLU everywhere (fast.ai's runs: mish). Strided convs and pools pad "same"
(TensorFlow's asymmetric padding; torch pads 1 on each side). Parameter counts with a 1000-class head:
tests/xresnet_test.py (fast.ai's definitions, rebuilt in plain torch).
"""

import math
from typing import Callable, Sequence

import tensorflow as tf

from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.models import activations
from cnn.models import batch_norm
from cnn.models import registry
from cnn.models.blur_pool import MaxBlurPool, check_image_shape
from cnn.models.grouped_conv import GroupedConv2D
from cnn.models.self_attention import SimpleSelfAttention

# name: (expansion, blocks per stage)
ARCHITECTURES = {
    "xresnet18": (1, (2, 2, 2, 2)),
    "xresnet34": (1, (3, 4, 6, 3)),
    "xresnet50": (4, (3, 4, 6, 3)),
    "xresnet101": (4, (3, 4, 23, 3)),
    "xresnet152": (4, (3, 8, 36, 3)),
}
# fastai2's xse_resnext50 (`SEResNeXtBlock`, se_kwargs2): bottlenecks, grouped 3×3 convs, squeeze-excitation.
SE_RESNEXT = {"xse_resnext50": (4, (3, 4, 6, 3))}
SE_RESNEXT_GROUPS, SE_REDUCTION = 32, 16
WIDTHS = (64, 128, 256, 512)
STEM_WIDTHS = (32, 32, 64)


def he_normal_fan_in() -> tf.keras.initializers.Initializer:
  """torch's `kaiming_normal_` (fast.ai's `init_cnn`): N(0, 2 / fan_in). A new one per layer: a Keras 3
  initializer draws its seed once, when made."""
  return tf.keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def conv(filters: int, kernel_size: int, strides: int, name: str, groups: int = 1,
         use_bias: bool = False) -> tf.keras.layers.Conv2D:
  """A conv, without bias where BatchNorm follows, initialised as fast.ai's (biases 0); grouped: `GroupedConv2D`."""
  layer = GroupedConv2D if groups > 1 else tf.keras.layers.Conv2D
  return layer(filters, kernel_size, strides, padding="same", groups=groups, use_bias=use_bias,
               kernel_initializer=he_normal_fan_in(), name=name)


def bn(name: str, zero_gamma: bool = False) -> tf.keras.layers.BatchNormalization:
  """torch's BatchNorm2d defaults (momentum 0.1, epsilon 1e-5), fused; gamma 0 for a block's last."""
  return batch_norm.batch_norm(name, momentum=0.9, epsilon=1e-5, gamma_initializer="zeros" if zero_gamma else "ones")


def dense_head(num_classes: int) -> tf.keras.layers.Dense:
  """The logits layer, float32 (mixed precision), He normal over fan-in and zero bias (`init_cnn`)."""
  return tf.keras.layers.Dense(num_classes, kernel_initializer=he_normal_fan_in(), name="logits", dtype="float32")


def stem_pool(kind: str) -> tf.keras.layers.Layer:
  """The pool after the stem: "max" (3×3/2) or "maxblur" (`MaxBlurPool`)."""
  if kind == "max":
    return tf.keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")
  if kind == "maxblur":
    return MaxBlurPool(name="stem_pool")
  raise ValueError(f"unknown stem pool {kind!r}: max or maxblur")


def downsampling_pool(kind: str, strides: int) -> tf.keras.layers.Layer:
  """A downsampling shortcut's pool: "avg" or "max" (`strides`×`strides`), or "maxblur" (`MaxBlurPool`)."""
  if kind == "maxblur":
    return MaxBlurPool(name="pool")
  pool = {"avg": tf.keras.layers.AveragePooling2D, "max": tf.keras.layers.MaxPooling2D}[kind]
  return pool(strides, padding="same", name="pool")


class ConvBN(tf.keras.layers.Layer):
  """conv → BN [→ activation]: fast.ai's `ConvLayer`."""

  def __init__(self, filters: int, kernel_size: int, strides: int = 1, activation=None, zero_gamma: bool = False,
               groups: int = 1, **kwargs):
    super().__init__(**kwargs)
    self.conv = conv(filters, kernel_size, strides, "conv", groups)
    self.bn = bn("bn", zero_gamma)
    self.activation = activation

  def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    x = self.bn(self.conv(x), training=training)
    return x if self.activation is None else self.activation(x)


class SqueezeExcite(tf.keras.layers.Layer):
  """fast.ai's `SEModule`: x · sigmoid(1×1 conv(act(1×1 conv(mean over positions of x)))).

  The hidden width is `ceil(channels // reduction / 8) * 8`; both convs have biases (no BatchNorm).
  """

  def __init__(self, channels: int, reduction: int, activation: Callable[[tf.Tensor], tf.Tensor], **kwargs):
    super().__init__(**kwargs)
    self.pool = tf.keras.layers.GlobalAveragePooling2D(keepdims=True, name="pool")
    self.squeeze = conv(math.ceil(channels // reduction / 8) * 8, 1, 1, "squeeze", use_bias=True)
    self.excite = conv(channels, 1, 1, "excite", use_bias=True)
    self.activation = activation

  def call(self, x: tf.Tensor) -> tf.Tensor:
    return x * tf.sigmoid(self.excite(self.activation(self.squeeze(self.pool(x)))))


def resnext_width(width: int, groups: int, base_width: int = 4) -> int:
  """fast.ai's `SEResNeXtBlock`: the grouped conv's width, `floor(width · base_width / 64) · groups`."""
  return math.floor(width * (base_width / 64)) * groups


class XResBlock(tf.keras.layers.Layer):
  """fast.ai's `ResBlock`: act(convs(x) [→ SE] [→ self-attention] + [pool →] [1×1 conv → BN](x)).

  `groups` > 1 makes it fast.ai's `SEResNeXtBlock`: the strided 3×3 conv is grouped and `resnext_width`
  wide; `se_reduction` > 0 adds a `SqueezeExcite` after the convs.
  """

  def __init__(self, expansion: int, width: int, in_channels: int, strides: int,
               activation: Callable[[tf.Tensor], tf.Tensor], self_attention: bool = False,
               shortcut_pool: str = "avg", groups: int = 1, se_reduction: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.activation = activation
    self.out_channels = width * expansion
    hidden = resnext_width(width, groups) if groups > 1 else width
    # fast.ai's nh1 = nh2: a bottleneck's first 1×1 is as wide as its 3×3.
    shapes = ([(hidden, 1, 1, 1), (hidden, 3, strides, groups), (self.out_channels, 1, 1, 1)] if expansion == 4 else
              [(hidden, 3, strides, groups), (self.out_channels, 3, 1, 1)])
    last = len(shapes)
    self.convs = [ConvBN(f, k, s, None if i == last else activation, zero_gamma=i == last, groups=g, name=f"conv{i}")
                  for i, (f, k, s, g) in enumerate(shapes, start=1)]
    self.se = SqueezeExcite(self.out_channels, se_reduction, activation, name="se") if se_reduction else None
    self.attention = SimpleSelfAttention(name="attention") if self_attention else None
    self.pool = downsampling_pool(shortcut_pool, strides) if strides > 1 else None
    self.shortcut = ConvBN(self.out_channels, 1, name="shortcut") if in_channels != self.out_channels else None

  def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    y = x
    for layer in self.convs:
      y = layer(y, training=training)
    if self.se is not None:
      y = self.se(y)
    if self.attention is not None:
      y = self.attention(y, training=training)
    if self.pool is not None:
      x = self.pool(x)
    if self.shortcut is not None:
      x = self.shortcut(x, training=training)
    return self.activation(y + x)


class StemBlocksHead(tf.keras.Model):
  """The forward pass the xresnet family shares: stem layers, stem pool, blocks, global pool, logits.

  Subclasses build `stem` (a list of layers), `stem_pool`, `blocks` (a list), `pool` and `logits`.
  """

  def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    x = images
    for layer in self.stem:
      x = layer(x, training=training)
    x = self.stem_pool(x)
    for block in self.blocks:
      x = block(x, training=training)
    return self.logits(self.pool(x))


class XResNet(StemBlocksHead):
  """fast.ai's xresnet (see the module doc).

  Args:
    num_classes: size of the logits layer.
    expansion: 1 (basic blocks) or 4 (bottlenecks).
    blocks_per_stage: blocks in each of the four stages, e.g. (3, 4, 6, 3).
    activation: an activation name (`activations.get`).
    self_attention: `SimpleSelfAttention` in the last block of the first stage.
    stem_pool_kind: "max" or "maxblur".
    shortcut_pool: "avg", "max" or "maxblur", the downsampling shortcuts' pool.
    groups: > 1: ResNeXt blocks, their 3×3 convs grouped (`XResBlock`); fast.ai's xse_resnext: 32.
    se_reduction: > 0: a `SqueezeExcite` of that reduction in every block; fast.ai's xse_resnext: 16.
  """

  def __init__(self, num_classes: int, expansion: int, blocks_per_stage: Sequence[int], activation: str = "relu",
               self_attention: bool = False, stem_pool_kind: str = "max", shortcut_pool: str = "avg",
               groups: int = 1, se_reduction: int = 0, name: str = "xresnet"):
    super().__init__(name=name)
    act = activations.get(activation)
    self.stem = [ConvBN(f, 3, 2 if i == 1 else 1, act, name=f"stem{i}") for i, f in enumerate(STEM_WIDTHS, 1)]
    self.stem_pool = stem_pool(stem_pool_kind)
    self.blocks, channels = [], STEM_WIDTHS[-1]
    for stage, (width, count) in enumerate(zip(WIDTHS, blocks_per_stage)):
      for i in range(count):
        block = XResBlock(expansion, width, channels, 2 if stage > 0 and i == 0 else 1, act,
                          self_attention=self_attention and stage == 0 and i == count - 1,
                          shortcut_pool=shortcut_pool, groups=groups, se_reduction=se_reduction,
                          name=f"stage{stage + 1}_block{i + 1}")
        self.blocks.append(block)
        channels = block.out_channels
    self.pool = tf.keras.layers.GlobalAveragePooling2D(name="pool")
    self.logits = dense_head(num_classes)


# Registered variants: suffix → (self-attention, stem pool, shortcut pool).
VARIANTS = {
    "": (False, "max", "avg"),
    "_sa": (True, "max", "avg"),  # fast.ai's baseline runs (train_imagenette.py --sa 1).
    "_sa_maxpool": (True, "max", "max"),  # --sa 1 --pool MaxPool, as fast.ai's 2020-01 runs.
    # ... with every max-pool made a MaxBlurPool (ducha-aiki's "2020-01 + MaxBlurPool" leaderboard entries).
    "_sa_maxblur": (True, "maxblur", "maxblur"),
}


def _register(name: str, expansion: int, blocks_per_stage: tuple[int, ...], variant: tuple[bool, str, str],
              groups: int = 1, se_reduction: int = 0) -> None:
  self_attention, stem_pool_kind, shortcut_pool = variant

  @registry.register(name)
  def build(config: Config, info: DatasetInfo) -> XResNet:
    if stem_pool_kind == "maxblur":  # The stem's pool and the three shortcut pools; UserError for small images.
      check_image_shape(name, info.image_shape, same_halvings=1, pools=4)
    return XResNet(info.num_classes, expansion, blocks_per_stage, config.activation, self_attention,
                   stem_pool_kind, shortcut_pool, groups, se_reduction, name=name)

  family = f"xse_resnext (groups {groups}, SE reduction {se_reduction})" if groups > 1 else "xresnet"
  build.__doc__ = (f"{name}: fast.ai's {family}, {blocks_per_stage} blocks per stage (self-attention "
                   f"{self_attention}, stem pool {stem_pool_kind}, shortcut pool {shortcut_pool}).")


# Every depth plain; 18, 34 and 50 with self-attention; xresnet50 and xse_resnext50 with the pooling variants too.
for _name, (_expansion, _blocks) in ARCHITECTURES.items():
  for _suffix, _variant in VARIANTS.items():
    if _suffix == "" or (_suffix == "_sa" and _name in ("xresnet18", "xresnet34")) or _name == "xresnet50":
      _register(_name + _suffix, _expansion, _blocks, _variant)
for _suffix, _variant in VARIANTS.items():
  _register("xse_resnext50" + _suffix, *SE_RESNEXT["xse_resnext50"], _variant, SE_RESNEXT_GROUPS, SE_REDUCTION)
