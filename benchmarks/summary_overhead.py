"""What TensorBoard summaries cost the train step, measured side by side in one process.

The weight and gradient histograms are written from inside the train step (gradients exist only
there), behind one `tf.cond` that is false on steps that are not due. This script times the
tutorial network's train step (batch 32, CIFAR-sized random images) three ways, interleaved in
rounds so that load from other processes hits all of them alike:

  none       no gradient summary in the step
  not due    histograms every 10**9 steps: the cond runs, nothing is written
  every step histograms written at every step (the cost of one due step)

and also times what a log step adds in Python (weight norm, learning rate, gradient norm, the
scalars written). Run from the repository root:

    python benchmarks/summary_overhead.py
"""

import statistics
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf

from cnn import steps
from cnn import summaries
from cnn.models.simple_cnn import SimpleCNN

_ROUNDS = flags.DEFINE_integer("rounds", 30, "Rounds; each times every variant once.")
_STEPS = flags.DEFINE_integer("steps", 50, "Train steps per variant per round.")


def make_variant(writer, every_steps):
  tf.keras.utils.set_random_seed(0)
  model = SimpleCNN(num_classes=10)
  model(tf.zeros((1, 32, 32, 3)))
  optimizer = tf.keras.optimizers.Adam(1e-3)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  histograms = summaries.gradient_histograms(writer, model, optimizer, every_steps)
  step = steps.make_train_step(model, optimizer, loss_fn, steps.Metrics("train"), histograms)
  batch = (tf.random.uniform((32, 32, 32, 3)), tf.random.uniform((32,), maxval=10, dtype=tf.int32))
  iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  for _ in range(10):  # Trace and warm up.
    outputs = step(iterator)
  float(outputs["gradient_norm"])
  return model, optimizer, step, iterator


def time_steps(step, iterator, count):
  start = time.perf_counter()
  for _ in range(count):
    outputs = step(iterator)
  float(outputs["gradient_norm"])  # Waits for the last step.
  return (time.perf_counter() - start) / count * 1e3


def main(argv):
  del argv
  logdir = tempfile.mkdtemp(prefix="summary_overhead_")
  writers = summaries.Writers(logdir)
  variants = {"none": make_variant(writers.train, 0),
              "not due": make_variant(writers.train, 10**9),
              "every step": make_variant(writers.train, 1)}
  times = {name: [] for name in variants}
  for _ in range(_ROUNDS.value):
    for name, (_, _, step, iterator) in variants.items():
      times[name].append(time_steps(step, iterator, _STEPS.value))

  model, optimizer, step, iterator = variants["none"]
  log_step = []
  for i in range(50):
    outputs = step(iterator)
    start = time.perf_counter()
    scalars = {"gradient_norm": float(outputs["gradient_norm"]), **summaries.train_scalars(model, optimizer)}
    writers.scalars(writers.train, scalars, i)
    log_step.append((time.perf_counter() - start) * 1e3)
  writers.close()

  none = statistics.median(times["none"])
  fastest = min(times["none"])
  print(f"train step, ms per step over {_ROUNDS.value} interleaved rounds of {_STEPS.value} steps "
        "(the fastest round is the least disturbed by other load):")
  for name, values in times.items():
    print(f"  {name:10s} fastest {min(values):7.3f} (ratio {min(values) / fastest:.3f})  "
          f"median {statistics.median(values):7.3f} (ratio {statistics.median(values) / none:.3f})")
  print(f"log-step extras (norms, learning rate, scalars written), ms: median {statistics.median(log_step):.3f}")


if __name__ == "__main__":
  app.run(main)
