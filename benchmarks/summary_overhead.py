"""What TensorBoard summaries cost the train step, measured side by side in one process.

The weight and gradient histograms are written from inside the train loop (gradients exist only
there). The trainer's one compiled loop carries them behind a `tf.cond` on a boolean tensor
(`train_step.make_train_loop(histograms=...)`): one trace for every step, and a step that is not due
runs no summary op. Before, the histograms were a second compiled loop, first traced at the first
due step (step 500: a 2-4 s stall mid-run). This script times, interleaved in rounds so that load
from other processes hits all alike, the tutorial network's step (batch 32, CIFAR-sized random
images):

  plain             a loop without histograms (what the second-loop design ran on most steps)
  folded            the trainer's loop, histograms off (what every step that is not due runs)
  folded+histograms the same loop, histograms on (the due step)
  separate+histograms  a second loop built with histograms always on (the old due step)

and each variant's first call (trace + step), and what a log step adds in Python (weight norm,
learning rate, gradient norm, the scalars written). Run from the repository root:

    python benchmarks/summary_overhead.py
"""

import statistics
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf

from cnn import summaries
from cnn.models.simple_cnn import SimpleCNN
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib

_ROUNDS = flags.DEFINE_integer("rounds", 20, "Rounds; each times every variant once.")
_STEPS = flags.DEFINE_integer("steps", 50, "Train steps per variant per round.")


def time_steps(step, iterator, count):
  start = time.perf_counter()
  for _ in range(count):
    outputs = step(iterator)
  float(outputs["gradient_norm"])  # Waits for the last step.
  return (time.perf_counter() - start) / count * 1e3


def main(argv):
  del argv
  writers = summaries.Writers(tempfile.mkdtemp(prefix="summary_overhead_"))
  tf.keras.utils.set_random_seed(0)
  model = SimpleCNN(num_classes=10)
  model(tf.zeros((1, 32, 32, 3)))
  optimizer = tf.keras.optimizers.Adam(1e-3)
  optimizer.build(model.trainable_variables)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  metrics, strategy = metrics_lib.Metrics("train"), tf.distribute.get_strategy()
  histograms = summaries.GradientHistograms(model, strategy)
  plain = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics, strategy, 32)
  recording = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics, strategy, 32,
                                             gradient_summary=histograms.record)

  def with_histograms(iterator):  # A due step, as TrainLoop runs it: record in the loop, write eagerly.
    outputs = recording(iterator, histograms=True)
    histograms.write(writers.train, 1)
    return outputs

  variants = {"plain": plain, "recording": recording, "recording+histograms": with_histograms}
  batch = (tf.random.uniform((32, 32, 32, 3)), tf.random.uniform((32,), maxval=10, dtype=tf.int32))
  iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  trace_ms = {}
  for name, step in variants.items():
    start = time.perf_counter()
    float(step(iterator)["gradient_norm"])
    trace_ms[name] = (time.perf_counter() - start) * 1e3
    for _ in range(10):  # Warm up.
      step(iterator)

  times = {name: [] for name in variants}
  for _ in range(_ROUNDS.value):
    for name, step in variants.items():
      times[name].append(time_steps(step, iterator, _STEPS.value))

  log_step = []
  for i in range(50):
    outputs = variants["plain"](iterator)
    start = time.perf_counter()
    scalars = {"gradient_norm": float(outputs["gradient_norm"]), **summaries.train_scalars(model, optimizer)}
    writers.scalars(writers.train, scalars, i)
    log_step.append((time.perf_counter() - start) * 1e3)
  writers.close()

  fastest = min(times["plain"])
  median = statistics.median(times["plain"])
  print(f"train step, ms per step over {_ROUNDS.value} interleaved rounds of {_STEPS.value} steps "
        "(the fastest round is the least disturbed by other load):")
  for name, values in times.items():
    print(f"  {name:20s} fastest {min(values):7.3f} (ratio {min(values) / fastest:.3f})  "
          f"median {statistics.median(values):7.3f} (ratio {statistics.median(values) / median:.3f})")
  print("first call (trace + step), ms: " + ", ".join(f"{k} {v:.0f}" for k, v in trace_ms.items()))
  print(f"log-step extras (norms, learning rate, scalars written), ms: median {statistics.median(log_step):.3f}")


if __name__ == "__main__":
  app.run(main)
