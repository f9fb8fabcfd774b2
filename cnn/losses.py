"""The training loss: cross-entropy on logits, sparse unless labels are smoothed or mixed."""

import tensorflow as tf

from cnn.config import Config


class SoftCrossEntropy(tf.keras.losses.Loss):
  """Categorical cross-entropy on logits that takes integer labels [B] or soft labels [B, K].

  Keras's `SparseCategoricalCrossentropy` has no label smoothing and cannot take mixed labels;
  integer labels are made one-hot here, so the same loss serves both.
  """

  def __init__(self, label_smoothing: float = 0.0, name: str = "soft_cross_entropy"):
    super().__init__(name=name, reduction="none")  # Per example: the step averages over the global batch.
    self.label_smoothing = label_smoothing

  def call(self, labels, logits):
    if labels.shape.rank == 1:  # Class ids (Keras has cast them to the logits' float dtype).
      labels = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
    return tf.keras.losses.categorical_crossentropy(labels, logits, from_logits=True,
                                                    label_smoothing=self.label_smoothing)


def build_loss(config: Config, soft_labels: bool) -> tf.keras.losses.Loss:
  """The per-example training loss for `config`: soft when smoothing or label-mixing augmentations are on.

  Args:
    config: the run's settings (--label_smoothing).
    soft_labels: whether the training batches carry one-hot/mixed labels (mixup, cutmix).
  """
  if config.label_smoothing or soft_labels:
    return SoftCrossEntropy(config.label_smoothing)
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
