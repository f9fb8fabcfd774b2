"""FLOPs counted from a model's graphs (not guessed): forward per image, and training per image.

The trainer logs them at the start of a run and feeds them to throughput accounting
(cnn/throughput.py) for FLOP/s and MFU.
"""

from typing import Any, Callable, Sequence

from absl import logging
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import


def count_flops(fn: Callable[..., Any], *input_specs: tf.TensorSpec) -> int:
  """Floating-point operations of one call of `fn` on inputs of `input_specs`, as TensorFlow counts them.

  `fn` is traced, its variables frozen to constants, and the graph counted by the TF profiler's
  `float_operation` counter: 2 per multiply-add in Conv2D / MatMul (and their gradients), 1 per
  element of BiasAdd, one per window element of MaxPool; activations and casts count 0.
  """
  concrete = tf.function(fn).get_concrete_function(*input_specs)
  graph = convert_to_constants.convert_variables_to_constants_v2(concrete).graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  return tf.compat.v1.profiler.profile(graph, options=options, cmd="scope").total_float_ops


def model_flops_per_image(model: tf.keras.Model, image_shape: Sequence[int], loss_fn: tf.keras.losses.Loss,
                          batch_size: int) -> tuple[float, float]:
  """(forward, train) FLOPs per image of `model`, counted on its graphs; (0, 0) if they cannot be.

  forward: one inference pass on one image. train: the forward pass, the loss and the gradients
  of one training batch of `batch_size`, divided by `batch_size` (about 3× forward: the backward
  pass computes gradients for both activations and weights). Both are traced with
  `training=False`, so that layers that update state in training (dropout's seed, batch-norm
  statistics) leave a graph that can be frozen; they differ from training mode by a few
  element-wise ops. The optimizer's update, which does not grow with the batch, is left out, as
  in the usual MFU accounting.
  """

  def gradients(images: tf.Tensor, labels: tf.Tensor) -> list[tf.Tensor]:
    with tf.GradientTape() as tape:
      loss = loss_fn(labels, model(images, training=False))
    return tape.gradient(loss, model.trainable_variables)

  try:
    forward = count_flops(lambda images: model(images, training=False),
                          tf.TensorSpec((1, *image_shape), tf.float32))
    train = count_flops(gradients, tf.TensorSpec((batch_size, *image_shape), tf.float32),
                        tf.TensorSpec((batch_size,), tf.int32))
  except (ValueError, TypeError, tf.errors.OpError) as e:  # A model the profiler cannot count.
    logging.warning("could not count the model's FLOPs (%s: %s); FLOP/s and MFU are not reported",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return 0.0, 0.0
  return float(forward), train / batch_size

