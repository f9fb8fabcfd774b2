"""Which oneDNN kernels one conv layer's training step runs, and how long each call takes.

    ONEDNN_VERBOSE=1 python benchmarks/onednn_conv_probe.py --precision=bf16 [--torch] \
        | grep ',exec,' | awk -F, '{print $6, $7, $8, $NF}'

A 3×3 conv of 256 → 256 channels on [32, 32, 32, 256] (NHWC), then FusedBatchNormV3 and ReLU, and
its gradient, twice in a tf.function; `--torch`: the same conv in PyTorch (channels-last,
`torch.autocast` for bf16; pip install torch==2.13.0). In the log, `jit_bf16:avx512_core` is oneDNN
emulating bf16 on a CPU without avx512_bf16/AMX; `brg_conv_*` and `*_bf16:avx512_core_bf16` are the
native kernels. The last field of each `exec` line is the call's time in ms.
"""

from absl import app
from absl import flags

flags.DEFINE_enum("precision", "bf16", ["f32", "bf16"], "Activations' and weights' precision.")
flags.DEFINE_bool("torch", False, "PyTorch's conv instead of TensorFlow's.")
FLAGS = flags.FLAGS


def tensorflow_step(bf16: bool) -> None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  dtype = tf.bfloat16 if bf16 else tf.float32
  x = tf.cast(tf.random.normal((32, 32, 32, 256)), dtype)
  kernel = tf.Variable(tf.random.normal((3, 3, 256, 256)))
  empty = tf.constant([], tf.float32)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = tf.nn.conv2d(x, tf.cast(kernel, dtype), 1, "SAME")
      y = tf.raw_ops.FusedBatchNormV3(x=y, scale=tf.ones([256]), offset=tf.zeros([256]), mean=empty,
                                      variance=empty, is_training=True)[0]
      loss = tf.reduce_sum(tf.cast(tf.nn.relu(y), tf.float32))
    return tape.gradient(loss, [x, kernel])

  for _ in range(2):
    step(x)


def torch_step(bf16: bool) -> None:
  import torch  # pylint: disable=import-outside-toplevel  # A measuring tool, not a dependency.

  conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
  x = torch.randn(32, 256, 32, 32).to(memory_format=torch.channels_last).requires_grad_()
  for _ in range(2):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
      y = conv(x)
    y.float().sum().backward()


def main(argv):
  del argv
  (torch_step if FLAGS.torch else tensorflow_step)(FLAGS.precision == "bf16")


if __name__ == "__main__":
  app.run(main)
