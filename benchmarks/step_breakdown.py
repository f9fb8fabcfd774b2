"""Where a train step's time goes, per precision: `python benchmarks/step_breakdown.py`.

Times, on one cached batch (no input pipeline), interleaved over rounds with medians: an empty
call of a `tf.function` that reads the iterator (the per-call floor), the forward pass alone,
the forward and backward passes (gradients, no update), and the full train loop (one step) of `cnn.training.trainer.build_training` (forward, backward, Adam, metrics), for
each precision. Explains what bf16 speeds up and what it cannot.
"""

import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from cnn import data as data_lib
from cnn.config import Config
from cnn.training import trainer

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
_STEPS = flags.DEFINE_integer("steps", 100, "Timed calls per measurement.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")


def _passes(training, batch):
  """Callables timing the forward pass and the forward + backward passes of `training.model`."""

  @tf.function
  def forward(images):
    return training.model(images, training=True)

  @tf.function
  def gradients(images, labels):
    with tf.GradientTape() as tape:
      loss = training.loss_fn(labels, training.model(images, training=True))
    return tape.gradient(loss, training.model.trainable_variables)

  return lambda: forward(batch[0]), lambda: gradients(*batch)


def main(argv):
  del argv
  info = data_lib.DatasetInfo("random", (32, 32, 3), 10, tuple(map(str, range(10))))
  rng = np.random.default_rng(0)
  batch = (tf.random.uniform((_BATCH.value, 32, 32, 3)),
           tf.constant(rng.integers(0, 10, _BATCH.value, dtype=np.int32)))
  iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  counter = tf.Variable(0)

  @tf.function
  def empty(iterator):
    next(iterator)
    counter.assign_add(1)

  timers = {"empty call": lambda: empty(iterator)}
  for precision in ("float32", "mixed_bfloat16"):
    config, strategy = Config(precision=precision, batch_size=_BATCH.value), tf.distribute.get_strategy()
    model, _ = trainer.build_model_in_scope(config, info, strategy)
    training = trainer.build_training(config, model, strategy, steps_per_epoch=100, total_steps=1000)
    timers[f"{precision} forward"], timers[f"{precision} forward+backward"] = _passes(training, batch)
    timers[f"{precision} train step"] = lambda loop=training.train_loop: loop(iterator)
  tf.keras.mixed_precision.set_global_policy("float32")
  milliseconds = {name: [] for name in timers}
  for _ in range(_ROUNDS.value):
    for name, timer in timers.items():
      for _ in range(10):
        timer()
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        timer()
      milliseconds[name].append((time.perf_counter() - start) / _STEPS.value * 1e3)
  for name, values in milliseconds.items():
    print(f"{name:28s} {statistics.median(values):6.2f} ms  (rounds: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
  app.run(main)
