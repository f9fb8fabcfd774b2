"""A model with BatchNorm in a module outside the package, for tests of `--extra_modules=outside_bn_net`."""

import tensorflow as tf

from cnn.models import registry


class BatchNormNet(tf.keras.Model):
  """Conv → BatchNorm → ReLU → global pooling → float32 logits: small, with moving statistics."""

  def __init__(self, num_classes):
    super().__init__(name="bn_net")
    self.conv = tf.keras.layers.Conv2D(8, 3, name="conv")
    self.bn = tf.keras.layers.BatchNormalization(name="bn")
    self.relu = tf.keras.layers.ReLU()
    self.pool = tf.keras.layers.GlobalAveragePooling2D()
    self.logits = tf.keras.layers.Dense(num_classes, dtype="float32", name="logits")

  def call(self, images, training=False):
    return self.logits(self.pool(self.relu(self.bn(self.conv(images), training=training))))


@registry.register("outside_bn_net")
def build(config, info):
  del config  # Unused.
  return BatchNormNet(info.num_classes)
