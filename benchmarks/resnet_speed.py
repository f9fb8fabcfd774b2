"""The ResNets' train step against a PyTorch twin, side by side in one process.

    pip install torch==2.13.0      # CPU build; a measuring tool here, not a dependency of cnn
    python benchmarks/resnet_speed.py [--models=resnet50] [--batch_sizes=32,64]
        [--precisions=float32,mixed_bfloat16] [--image_size=128] [--rounds=3] [--steps=5] [--before]
    # the Imagewoof recipe's network: --models=resnet26 --resnet_d --zero_init_residual --activation=mish
    #   --num_classes=10
    # Mish's step against ReLU's (ours only): ... --activations=relu,mish
    # where the step's time goes: --profile_dir=/tmp/prof (top ops by self time, per precision)
    # the CIFAR ResNets: --models=resnet20,resnet56 --image_size=32 --num_classes=10 --batch_sizes=32,64,128
    # other models, before/after only: --models=airbench94 --before --image_size=32 --num_classes=10

For each model, batch size and precision: our train step (`cnn.trainer.build_training`: forward,
backward, the gradient chain, SGD with momentum, the train metrics) and the same network in plain
PyTorch (torchvision does not import beside this torch; channels-last, `torch.autocast` for
bfloat16, SGD with momentum), each fed one cached batch of random images. `--before` adds our step
built as before issue 20 (Keras's BatchNormalization and Mish). Rounds alternate the sides; each
round times `--steps` steps after two of warm-up. Prints images/s per side (range over rounds) and
the ratio of medians ours/PyTorch. The machine is shared: read the ranges, and `uptime`, printed first.
bfloat16 pays only on CPUs with bf16 instructions (avx512_bf16, amx_bf16), printed first too.
"""

import gc
import os
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

try:  # The PyTorch twins, beside this script: `python -m benchmarks.…` from the root, or the script itself.
  from benchmarks import resnet_twins
except ImportError:
  import resnet_twins  # pylint: disable=import-error

from cnn import hardware
from cnn.training import trainer
from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.models import activations
from cnn.models import batch_norm

flags.DEFINE_list("models", ["resnet50"], "Models with a PyTorch twin (resnet_twins.TWINS: the ImageNet ResNets "
                  "resnet18 ... resnet101, the CIFAR ResNets resnet20 ... resnet110) or, without one (with "
                  "--before: ours against ours before), any model.")
flags.DEFINE_list("batch_sizes", ["32", "64"], "Batch sizes.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "float32 and/or mixed_bfloat16.")
flags.DEFINE_integer("image_size", 128, "Image size.")
flags.DEFINE_integer("num_classes", 1000, "Classes of the head.")
flags.DEFINE_bool("resnet_d", False, "The ResNet-D stem and shortcuts, both sides.")
flags.DEFINE_bool("zero_init_residual", False, "Last BN gamma of each block 0, both sides.")
flags.DEFINE_string("activation", "relu", "relu or mish, both sides.")
flags.DEFINE_list("activations", [], "Ours only, one step per activation in the same rounds, ratios to the "
                  "first (--activations=relu,mish: Mish's step against ReLU's); replaces the other sides.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
flags.DEFINE_integer("steps", 5, "Timed steps per side per round.")
flags.DEFINE_bool("before", False, "Also time our step with Keras's BatchNormalization and Mish.")
flags.DEFINE_string("profile_dir", "", "Trace a few of our steps here and print the top ops by self time.")
FLAGS = flags.FLAGS

def our_step(model_name: str, batch_size: int, precision: str, fused: bool, activation: str = ""):
  """A callable running one step of our train loop on a cached batch (`activation`: --activation's if empty)."""
  batch_norm.FUSED = activations.FUSED_MISH = fused
  try:
    config = Config(model=model_name, batch_size=batch_size, precision=precision, optimizer="sgd",
                    learning_rate=0.01, momentum=0.9, resnet_d=FLAGS.resnet_d,
                    zero_init_residual=FLAGS.zero_init_residual, activation=activation or FLAGS.activation)
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    info = DatasetInfo("random", shape, FLAGS.num_classes, tuple(map(str, range(FLAGS.num_classes))))
    strategy = tf.distribute.get_strategy()
    model, _ = trainer.build_model_in_scope(config, info, strategy)
    training = trainer.build_training(config, model, strategy, steps_per_epoch=100, total_steps=1000)
  finally:
    batch_norm.FUSED = activations.FUSED_MISH = True
  rng = np.random.default_rng(0)
  batch = (tf.constant(rng.normal(size=(batch_size, *shape)), tf.float32),
           tf.constant(rng.integers(0, FLAGS.num_classes, batch_size), tf.int32))
  iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  return lambda: float(training.train_loop(iterator, 1)["loss"])


def torch_step(model_name: str, batch_size: int, precision: str):
  """A callable running one PyTorch train step of the same network on a cached batch."""
  import torch  # pylint: disable=import-outside-toplevel  # A measuring tool, not a dependency.

  model = resnet_twins.TWINS[model_name](
      num_classes=FLAGS.num_classes, activation=FLAGS.activation, resnet_d=FLAGS.resnet_d,
      zero_init_residual=FLAGS.zero_init_residual).to(memory_format=torch.channels_last)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  images = torch.randn(batch_size, 3, FLAGS.image_size, FLAGS.image_size).to(memory_format=torch.channels_last)
  labels = torch.randint(0, FLAGS.num_classes, (batch_size,))
  dtype = torch.bfloat16 if precision == "mixed_bfloat16" else torch.float32

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
      logits = model(images)
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    loss.backward()
    optimizer.step()
    return float(loss)

  return step


def measure(steps: dict) -> dict[str, list[float]]:
  """images/s of each callable over interleaved rounds (the batch size is the callable's key's)."""
  for step in steps.values():
    for _ in range(2):  # Warm-up: tracing, oneDNN primitive caches.
      step()
  rates = {name: [] for name in steps}
  for _ in range(FLAGS.rounds):
    for name, step in steps.items():
      start = time.perf_counter()
      for _ in range(FLAGS.steps):
        step()
      rates[name].append(FLAGS.steps * name[1] / (time.perf_counter() - start))
  return rates


def profile(step, precision: str) -> None:
  """Traces 3 steps of `step` and prints the 15 TensorFlow ops of most self time."""
  from xprof.convert import raw_to_tool_data  # pylint: disable=import-outside-toplevel  # pip install xprof
  import json  # pylint: disable=import-outside-toplevel

  directory = os.path.join(FLAGS.profile_dir, precision)
  tf.profiler.experimental.start(directory)
  for _ in range(3):
    step()
  tf.profiler.experimental.stop()
  xplanes = [os.path.join(root, f) for root, _, files in os.walk(directory) for f in files
             if f.endswith(".xplane.pb")]
  data, _ = raw_to_tool_data.xspace_to_tool_data(sorted(xplanes)[-1:], "framework_op_stats^", {})
  table = json.loads(data)[0] if isinstance(data, (str, bytes)) else data
  columns = [c["id"] for c in table["cols"]]
  rows = [{k: cell.get("v") if cell else None for k, cell in zip(columns, row["c"])} for row in table["rows"]]
  rows = [r for r in rows if r.get("host_or_device") == "Host" and r.get("type") != "IDLE"]
  total = sum(r["total_self_time"] for r in rows)
  by_type: dict[str, float] = {}
  for r in rows:
    by_type[r["type"]] = by_type.get(r["type"], 0.0) + r["total_self_time"]
  print(f"  {precision}: top op types by self time over 3 steps ({total / 3e3:.0f} ms/step of op time)")
  for op_type, self_time in sorted(by_type.items(), key=lambda kv: -kv[1])[:15]:
    print(f"    {op_type:32s} {self_time / total:6.1%}  {self_time / 3e3:7.1f} ms/step")


def sides(model_name: str, batch_size: int, precision: str) -> dict:
  """{(side name, batch size): step callable} of one configuration: ours, ours_before, torch, or ours per activation."""
  if FLAGS.activations:
    return {(f"ours_{activation}", batch_size): our_step(model_name, batch_size, precision, True, activation)
            for activation in FLAGS.activations}
  steps = {("ours", batch_size): our_step(model_name, batch_size, precision, fused=True)}
  if FLAGS.before:
    steps[("ours_before", batch_size)] = our_step(model_name, batch_size, precision, fused=False)
  if model_name in resnet_twins.TWINS:
    steps[("torch", batch_size)] = torch_step(model_name, batch_size, precision)
  return steps


def bf16_instructions() -> str:
  """Which bfloat16 instructions this CPU has: without them oneDNN (ours and PyTorch's) emulates bf16
  convolutions (`jit_bf16:avx512_core` in ONEDNN_VERBOSE), 3-5x slower than float32 ones (seen)."""
  found = hardware.cpu_bf16_instructions()
  if found is None:
    return "unknown (no /proc/cpuinfo)"
  return ", ".join(found) if found else "none: bf16 convolutions are emulated, slower than float32"


def main(argv):
  del argv
  print(os.popen("uptime").read().strip(), flush=True)
  print(f"bfloat16 instructions: {bf16_instructions()}", flush=True)
  for model_name in FLAGS.models:
    for batch_size in map(int, FLAGS.batch_sizes):
      for precision in FLAGS.precisions:
        steps = sides(model_name, batch_size, precision)
        rates = measure(steps)
        line = ", ".join(f"{name} {min(r):.1f}-{max(r):.1f}" for (name, _), r in rates.items())
        median = {name: statistics.median(r) for (name, _), r in rates.items()}
        base = "torch" if "torch" in median else "ours_before" if "ours_before" in median else next(iter(median))
        ratios = ", ".join(f"{name}/{base} {median[name] / median[base]:.2f}" for name in median if name != base)
        print(f"{model_name} {FLAGS.activation} b{batch_size} {precision}: images/s {line}; {ratios}", flush=True)
        if FLAGS.profile_dir:
          for (name, _), step in steps.items():
            if name != "torch":
              profile(step, f"{model_name}-b{batch_size}-{precision}-{name}")
        del steps
        gc.collect()  # Frees this configuration's models before the next is built.
  print(os.popen("uptime").read().strip())


if __name__ == "__main__":
  app.run(main)
