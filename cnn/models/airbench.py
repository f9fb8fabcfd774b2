"""airbench94: the network of Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (arXiv 2404.00498).

From the paper's description (and its reference code's hyperparameters):
  * a 2×2 conv of 24 filters, no padding, frozen after initialisation from the training set's 2×2 patch
    statistics: the 12 eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue + eps), and
    their negatives ("patch whitening"); then GELU;
  * three blocks of widths 64, 256, 256: conv → max-pool 2 → BN → GELU → conv → BN → GELU, 3×3 convs
    without bias, BN without scale (eps 1e-12, PyTorch momentum 0.6 = Keras momentum 0.4), the first
    filters of each conv initialised to the identity;
  * max-pool over the remaining 3×3, a bias-free linear head (PyTorch's default init), and logits scaled by 1/9.

The whitening filters need training images: the trainer calls `initialize_from_data(images)` (the
normalised, un-augmented training images) on any model that has that method, before training.
"""

import numpy as np
import tensorflow as tf

from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.models import batch_norm
from cnn.models import registry

WHITEN_EPS = 5e-4  # Added to the patch-covariance eigenvalues, as the reference code does.


class PartialIdentity(tf.keras.initializers.Initializer):
  """A conv kernel [kh, kw, in, out] whose first min(in, out) filters are the identity (Dirac).

  The rest is PyTorch's default conv initialisation, uniform within ±1/sqrt(fan_in).
  """

  def __call__(self, shape, dtype=None):
    kernel = tf.keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")(shape, dtype)
    channels = min(shape[2], shape[3])
    mask, dirac = np.ones(shape, np.float32), np.zeros(shape, np.float32)
    mask[:, :, :channels, :channels] = 0.0
    dirac[shape[0] // 2, shape[1] // 2, np.arange(channels), np.arange(channels)] = 1.0
    return kernel * tf.constant(mask, kernel.dtype) + tf.constant(dirac, kernel.dtype)


def _conv(filters: int, name: str) -> tf.keras.layers.Conv2D:
  return tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                kernel_initializer=PartialIdentity(), name=name)


def _batch_norm(name: str) -> tf.keras.layers.BatchNormalization:
  return batch_norm.batch_norm(name, momentum=0.4, epsilon=1e-12, scale=False)


class ConvGroup(tf.keras.layers.Layer):
  """conv → max-pool 2 → BN → GELU → conv → BN → GELU."""

  def __init__(self, filters: int, **kwargs):
    super().__init__(**kwargs)
    self.conv1, self.bn1 = _conv(filters, "conv1"), _batch_norm("bn1")
    self.conv2, self.bn2 = _conv(filters, "conv2"), _batch_norm("bn2")
    self.pool = tf.keras.layers.MaxPooling2D(2, name="pool")

  def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    x = tf.nn.gelu(self.bn1(self.pool(self.conv1(x)), training=training), approximate=False)
    return tf.nn.gelu(self.bn2(self.conv2(x), training=training), approximate=False)


class Airbench94(tf.keras.Model):
  """The airbench94 network (1.97M parameters on CIFAR-10, 24 of them trainable in the whitening bias).

  Args:
    num_classes: size of the logits layer.
    widths: filters of the three blocks.
    whiten_width: filters of the 2×2 whitening conv (twice the number of eigenvectors kept).
    scale: the factor on the logits.
  """

  def __init__(self, num_classes: int, widths=(64, 256, 256), whiten_width: int = 24, scale: float = 1 / 9,
               name: str = "airbench94"):
    super().__init__(name=name)
    self.whiten = tf.keras.layers.Conv2D(whiten_width, 2, padding="valid", name="whiten")
    self.groups = [ConvGroup(width, name=f"block{i}") for i, width in enumerate(widths, start=1)]
    self.pool = tf.keras.layers.GlobalMaxPooling2D(name="pool")
    # PyTorch's nn.Linear init, U(±1/√fan_in), as the reference code's head (Keras's Glorot is 2.4× wider
    # at 256 inputs: a different start, which a short run does not forget; benchmarks/README.md).
    self.head = tf.keras.layers.Dense(num_classes, use_bias=False, name="head", dtype="float32",
                                      kernel_initializer=tf.keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"))
    self.scale = scale

  def build(self, input_shape):
    super().build(input_shape)
    self.whiten.build(input_shape)
    self.whiten.kernel.trainable = False  # Set by initialize_from_data. The recipe freezes the bias later.

  def initialize_from_data(self, images: np.ndarray) -> None:
    """Sets the whitening filters from the 2×2 patches of `images` [N, H, W, C] (normalised floats)."""
    images = tf.convert_to_tensor(images, tf.float32)
    if not self.whiten.built:
      self(images[:1])
    patches = tf.image.extract_patches(images, [1, 2, 2, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
    patches = tf.reshape(patches, (-1, patches.shape[-1])).numpy().astype(np.float64)  # [P, 2*2*C]
    patches -= patches.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(patches.T @ patches / len(patches))
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]  # Largest first.
    count = self.whiten.filters // 2
    filters = eigenvectors[:, :count] / np.sqrt(eigenvalues[:count] + WHITEN_EPS)
    # extract_patches orders a patch (row, col, channel), the kernel's layout [2, 2, C, filters].
    kernel = np.concatenate([filters, -filters], axis=1).reshape(self.whiten.kernel.shape)
    self.whiten.kernel.assign(kernel.astype(np.float32))

  def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    x = tf.keras.ops.gelu(self.whiten(images), approximate=False)  # keras.ops: see layer_table.
    for group in self.groups:
      x = group(x, training=training)
    return self.head(self.pool(x)) * self.scale


@registry.register("airbench94")
def build(config: Config, info: DatasetInfo) -> Airbench94:
  """airbench94 for the dataset's classes; its recipe is experiments/cifar10_airbench94.cfg."""
  del config
  return Airbench94(info.num_classes)
