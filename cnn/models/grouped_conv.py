"""A grouped 2D convolution run by TensorFlow's own kernels (oneDNN on CPUs, cuDNN on GPUs), not through XLA.

Keras 3 on TensorFlow runs every grouped convolution as an XLA-compiled function, its workaround for CPU
kernels that once lacked groups. TensorFlow 2.21's kernels have them (with and without oneDNN), and the
detour costs: forward and backward of a 3×3 conv in 32 groups on [32, 16, 16, 256] float32 took 4,036 ms
through Keras's path against 17 ms here; and in a training loop a Mish custom gradient beside it failed
at run time ("NotFoundError: Unable to find Function with name: __inference__mish_gradient_…").
"""

import tensorflow as tf


class GroupedConv2D(tf.keras.layers.Conv2D):
  """Keras's `Conv2D` (same arguments, variables and checkpoints), its op `tf.nn.convolution` called directly.

  Channels-last only (the models' layout).
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if self.data_format != "channels_last":
      raise ValueError(f"GroupedConv2D is channels_last only, not {self.data_format}")

  def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    return tf.nn.convolution(inputs, kernel, self.strides, self.padding.upper(), dilations=self.dilation_rate)
