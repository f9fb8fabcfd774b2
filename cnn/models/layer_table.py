"""The layer table printed at the start of a run."""

from typing import Sequence

import tensorflow as tf


def layer_table(model: tf.keras.Model, image_shape: Sequence[int]) -> str:
  """Keras's summary of `model`: each layer with its output shape and parameter count.

  A subclassed model's own summary cannot show shapes its `call` computes, so the table is
  taken from a functional view of the same layers (`call` traced on a symbolic input).
  """
  inputs = tf.keras.Input(tuple(image_shape))
  view = tf.keras.Model(inputs, model.call(inputs), name=model.name)
  lines = []
  view.summary(print_fn=lambda line, line_break=False: lines.append(line), line_length=80)
  return "\n".join(lines)
