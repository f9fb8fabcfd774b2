"""Activation functions by the name --activation gives, and a fast Mish."""

from typing import Callable

import tensorflow as tf

from cnn.errors import UserError

# `get("mish")` gives `mish` below; False gives Keras's (benchmarks, comparisons).
FUSED_MISH = True


@tf.function(jit_compile=True)
def _mish_gradient(x: tf.Tensor, upstream: tf.Tensor) -> tf.Tensor:
  """upstream · mish'(x), in float32, as one XLA loop: no intermediate tensor is written out.

  With e = exp(x), n = e (e + 2): tanh(softplus(x)) = n / (n + 2) and sigmoid(x) = e / (1 + e), so
  mish'(x) = tanh(softplus(x)) + x sigmoid(x) (1 - tanh²(softplus(x))) needs one exponential.
  Above x = 20, tanh(softplus(x)) and sigmoid(x) are 1 in float32 (and e² overflows): selected, not
  clamped before the exp, which XLA's CPU loop ran 1.7× slower (a `minimum` in front of the exp; seen:
  30 against 18 ms of CPU on [64, 32, 32, 128] float32, ReluGrad 14), with the same values.
  """
  x32 = tf.cast(x, tf.float32)
  e = tf.exp(x32)
  n = e * (e + 2.0)
  large = x32 > 20.0
  t = tf.where(large, 1.0, n / (n + 2.0))
  derivative = t + x32 * tf.where(large, 1.0, e / (1.0 + e)) * (1.0 - t * t)
  return tf.cast(tf.cast(upstream, tf.float32) * derivative, x.dtype)


@tf.custom_gradient
def mish(x: tf.Tensor):
  """Mish, x · tanh(softplus(x)) (Misra 2019): Keras's values, its gradient without saved intermediates.

  Keras's mish is three ops forward (softplus, tanh, multiply), and their gradients (five ops, three
  of them transcendental) read the softplus and tanh it keeps. Here the forward pass is the same
  formula, whose intermediates nothing else reads, so that TensorFlow's graph optimiser can fuse it
  into one oneDNN op (`_MklFusedMish`) on CPUs, and the gradient recomputes from x alone in one
  fused XLA loop (`_mish_gradient`).
  """
  return x * tf.math.tanh(tf.math.softplus(x)), lambda upstream: _mish_gradient(x, upstream)


def get(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
  """The activation `name` (relu, gelu, silu, mish, ...): Keras's, but `mish` above for mish.

  Raises UserError for an unknown name.
  """
  if name == "mish" and FUSED_MISH:
    return mish
  try:
    return tf.keras.activations.get(name)
  except ValueError:
    raise UserError(f"unknown --activation={name}; e.g. relu, gelu, silu, mish, elu, tanh, sigmoid, linear") from None
