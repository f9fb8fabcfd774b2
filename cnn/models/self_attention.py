"""fast.ai's SimpleSelfAttention: a residual self-attention over the positions of a feature map.

For a feature map x of C channels at L = H·W positions (x: [C, L] per image, as fast.ai writes it),

    o = gamma · (x xᵀ) (W x) + x

with W a C×C matrix (fast.ai's 1×1 Conv1d without bias) and gamma a learned scalar that starts at 0,
so that the layer starts as the identity. The product is taken in that order, (x xᵀ)(W x), three
[C, C]×[C, L]-sized products, linear in L. W is spectrally normalised as fast.ai's is (torch's
`spectral_norm`: one power iteration per training call, W / σ with σ = uᵀ W v, the vectors u and v
updated in training and kept as non-trainable variables). `symmetric` takes W's symmetric part,
(W + Wᵀ) / 2 (fast.ai's `sym`, "a symmetry hack"; there the spectral-norm hook recomputes the weight
before it is used, so `sym` only changes the weight between calls: here it is applied as intended).

Channels-last here: X = xᵀ [L, C] per image and the kernel K = Wᵀ (a Dense/1×1-conv kernel, [C_in,
C_out]); then oᵀ = (X K)(Xᵀ X) + X. Used by fast.ai's xresnet (`sa=True`: the last block of the
first stage) and by the Imagewoof leaderboard entries built on it.
"""

import tensorflow as tf


class SimpleSelfAttention(tf.keras.layers.Layer):
  """o = gamma · (x xᵀ)(W x) + x over the positions of a [N, H, W, C] map (see the module doc).

  Args:
    symmetric: use (W + Wᵀ) / 2.
    spectral_norm: divide W by its largest singular value, estimated by power iteration (fast.ai's).
  """

  def __init__(self, symmetric: bool = False, spectral_norm: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.symmetric = symmetric
    self.spectral_norm = spectral_norm

  def build(self, input_shape):
    channels = int(input_shape[-1])
    # torch's kaiming_normal_ of the [C, C, 1] Conv1d weight: std sqrt(2 / fan_in), fan_in = C.
    self.kernel = self.add_weight(
        name="kernel", shape=(channels, channels), autocast=False,
        initializer=tf.keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal"))
    self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros", autocast=False)
    if self.spectral_norm:
      # torch draws u (over outputs) and v (over inputs) from N(0, 1) and normalises them. A new
      # initializer per layer: a Keras 3 initializer draws its seed once, when made.
      normal = tf.keras.initializers.RandomNormal()
      unit = lambda shape, dtype=None: tf.math.l2_normalize(normal(shape, dtype))
      self.u = self.add_weight(name="u", shape=(channels,), initializer=unit, trainable=False, autocast=False)
      self.v = self.add_weight(name="v", shape=(channels,), initializer=unit, trainable=False, autocast=False)

  def normalized_kernel(self, training: bool = False) -> tf.Tensor:
    """K = Wᵀ in float32, divided by σ (training: after one power iteration, which updates u and v)."""
    kernel = tf.convert_to_tensor(self.kernel)
    if self.symmetric:
      kernel = (kernel + tf.transpose(kernel)) / 2.0
    if not self.spectral_norm:
      return kernel
    u, v = tf.convert_to_tensor(self.u), tf.convert_to_tensor(self.v)
    if training:
      # With W = Kᵀ: Wᵀu = K u and W v = vᵀ K. No gradient through the iteration, as in torch.
      frozen = tf.stop_gradient(kernel)
      v = tf.math.l2_normalize(tf.linalg.matvec(frozen, u), epsilon=1e-24)
      u = tf.math.l2_normalize(tf.linalg.matvec(frozen, v, transpose_a=True), epsilon=1e-24)
      self.u.assign(u)
      self.v.assign(v)
    sigma = tf.tensordot(u, tf.linalg.matvec(kernel, v, transpose_a=True), 1)
    return kernel / sigma

  def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
    shape = tf.shape(inputs)
    channels = inputs.shape[-1]
    x = tf.reshape(inputs, [shape[0], -1, channels])  # [N, L, C]
    kernel = tf.cast(self.normalized_kernel(training), inputs.dtype)
    projected = tf.matmul(x, kernel)  # (W x)ᵀ: [N, L, C]
    gram = tf.matmul(x, x, transpose_a=True)  # x xᵀ: [N, C, C], symmetric
    attended = tf.matmul(projected, gram)  # ((x xᵀ)(W x))ᵀ
    return tf.reshape(tf.cast(self.gamma, inputs.dtype) * attended + x, shape)

  def get_config(self):
    return {**super().get_config(), "symmetric": self.symmetric, "spectral_norm": self.spectral_norm}
