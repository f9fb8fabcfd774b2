"""The tutorial's network: (conv → activation → max-pool) × N → flatten → dense × M → logits."""

from typing import Sequence

import tensorflow as tf

from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.errors import UserError
from cnn.models import activations
from cnn.models import registry


class SimpleCNN(tf.keras.Model):
  """A plain conv/pool stack with dense layers on top.

  With the defaults on 32×32×3 inputs this is the TensorFlow CNN tutorial's network:
  Conv32 3×3 → MaxPool 2 → Conv64 3×3 → MaxPool 2 → Flatten → Dense64 → Dense10
  (167,562 parameters).

  Args:
    num_classes: size of the logits layer.
    conv_filters: filters of each conv layer.
    kernel_size: conv kernel size (square).
    strides: conv strides.
    padding: "valid" or "same".
    pool_sizes: max-pool window after each conv layer; 0 means no pooling there.
    dense_units: units of each hidden dense layer.
    activation: a Keras activation name for conv and hidden dense layers.
    dropout: dropout rate after each hidden dense layer (0 disables it).
  """

  def __init__(self, num_classes: int, conv_filters: Sequence[int] = (32, 64), kernel_size: int = 3,
               strides: int = 1, padding: str = "valid", pool_sizes: Sequence[int] = (2, 2),
               dense_units: Sequence[int] = (64,), activation: str = "relu", dropout: float = 0.0,
               name: str = "simple_cnn"):
    super().__init__(name=name)
    self.features = []
    for i, (filters, pool) in enumerate(zip(conv_filters, pool_sizes), start=1):
      self.features.append(tf.keras.layers.Conv2D(filters, kernel_size, strides, padding,
                                                  activation=activation, name=f"conv{i}"))
      if pool:
        self.features.append(tf.keras.layers.MaxPooling2D(pool, name=f"pool{i}"))
    self.flatten = tf.keras.layers.Flatten(name="flatten")
    self.hidden = [tf.keras.layers.Dense(units, activation=activation, name=f"dense{i}")
                   for i, units in enumerate(dense_units, start=1)]
    self.dropout = tf.keras.layers.Dropout(dropout, name="dropout") if dropout else None
    # float32 logits keep the softmax and loss in float32 under mixed precision.
    self.logits = tf.keras.layers.Dense(num_classes, name="logits", dtype="float32")

  def check_input_shape(self, image_shape: Sequence[int]) -> None:
    """Raises UserError naming the first layer that shrinks the image below 1×1."""
    shape = (None, *image_shape)
    for layer in self.features:
      try:
        shape = layer.compute_output_shape(shape)
      except ValueError:
        shape = (None, 0, 0, None)
      if min(shape[1:3]) < 1:
        raise UserError(f"layer {layer.name} shrinks the image below 1×1 (input {image_shape[0]}×"
                        f"{image_shape[1]}); use fewer conv/pool layers, --padding=same or smaller "
                        "--pool_size/--strides")

  def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    x = images
    for layer in self.features:
      x = layer(x)
    x = self.flatten(x)
    for dense in self.hidden:
      x = dense(x)
      if self.dropout is not None:
        x = self.dropout(x, training=training)
    return self.logits(x)


@registry.register("simple_cnn")
def build(config: Config, info: DatasetInfo) -> SimpleCNN:
  """SimpleCNN from the --conv_filters/--kernel_size/.../--dropout flags."""
  activations.get(config.activation)  # A bad name fails here, in one line.
  pool_sizes = config.pool_size * len(config.conv_filters) if len(config.pool_size) == 1 else config.pool_size
  model = SimpleCNN(info.num_classes, config.conv_filters, config.kernel_size, config.strides,
                    config.padding, pool_sizes, config.dense_units, config.activation, config.dropout)
  model.check_input_shape(info.image_shape)
  return model
