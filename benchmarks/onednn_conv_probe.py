"""Which oneDNN kernels one conv layer's training step runs, in TensorFlow and PyTorch, and how long each takes.

    pip install torch==2.13.0      # CPU build; a measuring tool here, not a dependency of cnn
    python benchmarks/onednn_conv_probe.py [--precision=bf16] [--shapes=32x32x256,32x32x16,32x16x32,32x8x64]
        [--steps=40] [--inter_op_threads=1]

For each shape (batch x size x channels, NHWC): a 3×3 conv of channels → channels, then FusedBatchNormV3
and ReLU, and its gradient, `--steps` times in a tf.function; and the same conv in PyTorch
(channels-last, `torch.autocast` for bf16). Each side runs in a subprocess with `ONEDNN_VERBOSE=1`;
oneDNN logs each primitive call's kernel and its time, and this prints, per pass (forward, backward
data, backward weights), the kernel and the median time of the calls after the first 10, side by side.
These are the kernels' own times: TensorFlow's graph and PyTorch's dispatch are not in them.

In the kernel names, `jit_bf16:avx512_core` is oneDNN emulating bf16 on a CPU without avx512_bf16/AMX;
`brg_conv_*` and `*:avx512_core_bf16` are native kernels. TensorFlow runs independent ops at once
(its inter-op pool): the backward data and backward weights convolutions then share the cores and
each takes about twice as long; `--inter_op_threads=1` (the default here) runs them one at a time, so
that each side's kernel times compare. One side's raw log: `ONEDNN_VERBOSE=1 python
benchmarks/onednn_conv_probe.py --side=tensorflow` (or `--side=torch`).
"""

import collections
import os
import re
import statistics
import subprocess
import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The script's flags (defined when it runs, so that importing its functions defines none)."""
  flags.DEFINE_enum("precision", "bf16", ["f32", "bf16"], "Activations' and weights' precision.")
  flags.DEFINE_list("shapes", ["32x32x256"], "batch x size x channels of the conv's input, NHWC.")
  flags.DEFINE_integer("steps", 40, "Training steps of the conv per side; medians over all but the first 10.")
  flags.DEFINE_integer("inter_op_threads", 1, "TensorFlow's inter-op threads (TF_NUM_INTEROP_THREADS); 0: its default.")
  flags.DEFINE_enum("side", "", ["", "tensorflow", "torch"], "Run only this side, in this process (no summary).")
  flags.register_validator("shapes", lambda shapes: all(re.fullmatch(r"[1-9]\d*(x[1-9]\d*){2}", s) for s in shapes),
                           "--shapes: batch x size x channels, e.g. 32x16x64")


_WARMUP_CALLS = 10  # Primitive creation and first-touch of the buffers.


def parse_shape(text: str) -> tuple[int, int, int]:
  batch, size, channels = (int(v) for v in text.split("x"))
  return batch, size, channels


def tensorflow_steps(bf16: bool, batch: int, size: int, channels: int, steps: int) -> None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  dtype = tf.bfloat16 if bf16 else tf.float32
  x = tf.cast(tf.random.normal((batch, size, size, channels)), dtype)
  kernel = tf.Variable(tf.random.normal((3, 3, channels, channels)))
  empty = tf.constant([], tf.float32)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = tf.nn.conv2d(x, tf.cast(kernel, dtype), 1, "SAME")
      y = tf.raw_ops.FusedBatchNormV3(x=y, scale=tf.ones([channels]), offset=tf.zeros([channels]), mean=empty,
                                      variance=empty, is_training=True)[0]
      loss = tf.reduce_sum(tf.cast(tf.nn.relu(y), tf.float32))
    return tape.gradient(loss, [x, kernel])

  for _ in range(steps):
    step(x)


def torch_steps(bf16: bool, batch: int, size: int, channels: int, steps: int) -> None:
  import torch  # pylint: disable=import-outside-toplevel  # A measuring tool, not a dependency.

  conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
  x = torch.randn(batch, channels, size, size).to(memory_format=torch.channels_last).requires_grad_()
  for _ in range(steps):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
      y = conv(x)
    y.float().sum().backward()


def conv_calls(verbose_log: str) -> dict[str, tuple[str, list[float]]]:
  """{pass: (kernel, [ms per call])} of the convolution calls in a oneDNN verbose log."""
  calls = collections.defaultdict(list)
  kernels = {}
  for line in verbose_log.splitlines():
    fields = line.split(",")
    if "exec" not in fields or "convolution" not in fields:
      continue
    at = fields.index("convolution")
    kernels[fields[at + 2]] = fields[at + 1]
    calls[fields[at + 2]].append(float(fields[-1]))
  return {kind: (kernels[kind], times) for kind, times in calls.items()}


def run_side(side: str, shape: str) -> dict[str, tuple[str, list[float]]]:
  """Runs one side in a subprocess with oneDNN's verbose log on; its convolution calls."""
  env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
  if FLAGS.inter_op_threads:
    env["TF_NUM_INTEROP_THREADS"] = str(FLAGS.inter_op_threads)
  command = [sys.executable, os.path.abspath(__file__), f"--side={side}", f"--shapes={shape}",
             f"--precision={FLAGS.precision}", f"--steps={FLAGS.steps}"]
  result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
  return conv_calls(result.stdout)


def summary(shape: str) -> str:
  """One line per pass: each side's median ms per call, their ratio, and the kernels."""
  sides = {side: run_side(side, shape) for side in ("tensorflow", "torch")}
  lines = [f"{shape} {FLAGS.precision}, median ms per call: tensorflow, torch, ratio; kernel(s)"]
  for kind in ("forward_training", "backward_data", "backward_weights"):
    medians, kernels = [], []
    for calls in sides.values():
      kernel, times = calls.get(kind, ("-", []))
      medians.append(statistics.median(times[_WARMUP_CALLS:] or times or [float("nan")]))
      kernels.append(kernel)
    named = kernels[0] if kernels[0] == kernels[1] else " / ".join(kernels)
    lines.append(f"  {kind:17s} {medians[0]:8.3f} {medians[1]:8.3f} {medians[0] / medians[1]:6.2f}  {named}")
  return "\n".join(lines)


def main(argv):
  del argv
  bf16 = FLAGS.precision == "bf16"
  if FLAGS.side:
    for shape in FLAGS.shapes:
      (tensorflow_steps if FLAGS.side == "tensorflow" else torch_steps)(bf16, *parse_shape(shape), FLAGS.steps)
    return
  for shape in FLAGS.shapes:
    print(summary(shape), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
