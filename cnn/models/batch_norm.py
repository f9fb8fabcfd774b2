"""BatchNormalization through TensorFlow's fused kernel (FusedBatchNormV3), the models' one BN factory.

Keras 3's `BatchNormalization` on the TensorFlow backend is not fused: moments, then
`tf.nn.batch_normalization`, a dozen ops each way (forward and backward of one BN in training on
[32, 32, 32, 256] float32: 53 ms against 16.5 ms fused, TF_NOTES 19; ResNet-50 has 53 of them).
`FusedBatchNormalization` is Keras's layer with the same variables (gamma, beta, moving_mean,
moving_variance: same names, paths and checkpoints) and the same arithmetic, computed by one op each
way (oneDNN on these CPUs, cuDNN on a GPU):

  * training: y = gamma (x - mean) / sqrt(var + epsilon) + beta with the batch's mean and biased
    variance; the moving statistics follow Keras's rule, moving = moving * momentum + batch *
    (1 - momentum), with the *biased* variance as Keras uses (the op returns it Bessel-corrected,
    n / (n - 1); the correction is undone here);
  * inference (and a frozen layer, `trainable=False`): the moving statistics (the fused op, fenced
    from the activation after it: see `_normalize_with_moving_statistics`).

bfloat16 and float16 inputs go into the op as they are (it normalises in float32 inside and keeps
the statistics, gamma and beta in float32): no casts of the activations, unlike Keras's layer, which
casts them to float32 and back. Anything the op does not do is left to Keras's layer: inputs that are
not 4-D channels-last, float64, masks, batch renormalisation, synchronized (cross-replica) BN.
"""

import tensorflow as tf

# The fused path; False builds Keras's own layer everywhere (benchmarks, comparisons).
FUSED = True
_FUSED_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


class FusedBatchNormalization(tf.keras.layers.BatchNormalization):
  """`tf.keras.layers.BatchNormalization` computed by FusedBatchNormV3 where it can be (see module doc)."""

  def _fusable(self, inputs, mask) -> bool:
    return (mask is None and not self.renorm and not self.synchronized and len(inputs.shape) == 4
            and self.axis in (-1, 3) and tf.as_dtype(inputs.dtype) in _FUSED_DTYPES)

  def call(self, inputs, training=None, mask=None):
    if not self._fusable(inputs, mask):
      return super().call(inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    gamma = self.gamma if self.scale else tf.ones([channels], tf.float32)
    beta = self.beta if self.center else tf.zeros([channels], tf.float32)
    if training and self.trainable:
      outputs, mean, variance = self._normalize_with_batch_statistics(inputs, gamma, beta)
      self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
      self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
    else:
      outputs = self._normalize_with_moving_statistics(inputs, gamma, beta)
    return tf.cast(outputs, self.compute_dtype)

  def _normalize_with_moving_statistics(self, inputs, gamma, beta):
    """Inference: FusedBatchNormV3 with the moving statistics, its output behind a Snapshot.

    TensorFlow's graph optimiser fuses conv + BN + activation for inference on oneDNN CPUs, but has no
    kernel for some of the fusions it makes: a following Mish or tanh fails in float32 graphs with
    UnimplementedError "Fusion is not implemented: [FusedBatchNorm,Mish]". The Snapshot (which forwards
    its buffer, no copy) keeps the activation out of the fusion; the conv + BN fold stays. resnet26-D
    inference, batch 64, 128 px, medians of 5 (loaded machine): 1.17 and 1.16 s a batch fenced, 1.08 and
    1.17 s unfenced (which fails for Mish), 1.31 s for a float32 multiply-add (Keras's arithmetic).
    """
    outputs = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=tf.convert_to_tensor(gamma), offset=tf.convert_to_tensor(beta),
        mean=tf.convert_to_tensor(self.moving_mean), variance=tf.convert_to_tensor(self.moving_variance),
        epsilon=self.epsilon, data_format="NHWC", is_training=False)[0]
    return _fence(outputs)

  def _normalize_with_batch_statistics(self, inputs, gamma, beta):
    """(outputs, batch mean, batch biased variance) of a training step."""
    empty = tf.constant([], tf.float32)
    outputs, mean, corrected, *_ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=tf.convert_to_tensor(gamma), offset=tf.convert_to_tensor(beta), mean=empty,
        variance=empty, epsilon=self.epsilon, data_format="NHWC", is_training=True)
    # The op reports var * n / max(n - 1, 1) over the n values of a channel; Keras keeps the biased one.
    shape = tf.shape(inputs)
    count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
    return outputs, mean, corrected * (tf.maximum(count - 1.0, 1.0) / count)


@tf.custom_gradient
def _fence(x: tf.Tensor):
  """x, through a Snapshot op (which the graph optimiser does not fuse across); the gradient passes."""
  return tf.raw_ops.Snapshot(input=x), lambda upstream: upstream


def batch_norm(name: str, momentum: float, epsilon: float, **kwargs) -> tf.keras.layers.BatchNormalization:
  """The models' BatchNormalization: fused (`FusedBatchNormalization`) unless `FUSED` is False.

  `momentum` is Keras's (PyTorch's 0.1 is 0.9 here); other arguments are Keras's layer's.
  """
  layer = FusedBatchNormalization if FUSED else tf.keras.layers.BatchNormalization
  return layer(momentum=momentum, epsilon=epsilon, name=name, **kwargs)
