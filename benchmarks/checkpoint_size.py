"""Measures what resuming costs on CIFAR-10: the checkpoint, and rebuilding the data pipeline.

    python benchmarks/checkpoint_size.py --data_dir=../shared/tfds [--batch_size=32] [--steps=200]

Builds the train pipeline of cnn/data/pipeline.py and the tutorial's model and optimizer exactly as a run
does and takes `--steps` training steps. Then, ten times each, it saves (a) the whole training
checkpoint of cnn/checkpoints.py and (b) for comparison, the tf.data iterator that a checkpoint
would hold if the data position were not a function of the step; and it times (c) building the
pipeline at the last step of an epoch and reading its first batch (what a resumed run does).
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

from cnn import checkpoints
from cnn import data as data_lib
from cnn import models
from cnn import optim
from cnn.config import Config
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib

flags.DEFINE_string("data_dir", "../shared/tfds", "TFDS data directory holding cifar10.")
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_integer("steps", 200, "Training steps before saving.")
FLAGS = flags.FLAGS


def size(prefix):
  directory, name = os.path.split(prefix)
  return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory) if f.startswith(name + "."))


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  config = Config(data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size, download=False)
  builder = data_lib.get_builder(config.dataset, config.data_dir, False)
  info = data_lib.dataset_info(builder)
  split = data_lib.load_split(builder, "train")
  model = models.build_model(config, info)
  model(tf.zeros((1, *info.image_shape)))
  optimizer = optim.build_optimizer(config)
  metrics = metrics_lib.Metrics("train")
  optimizer.build(model.trainable_variables)
  train_step = train_step_lib.make_train_loop(
      model, optimizer, tf.keras.losses.SparseCategoricalCrossentropy(True, reduction="none"), metrics,
      tf.distribute.get_strategy(), config.batch_size)
  iterator = iter(data_lib.train_dataset(split, config.batch_size, config.seed))
  run_dir = tempfile.mkdtemp(prefix="ckpt_size-")
  checkpointer = checkpoints.Checkpointer(run_dir, model, optimizer, metrics.variables(), keep=2)
  for _ in range(FLAGS.steps):
    train_step(iterator)
  iterator_only = tf.train.Checkpoint(iterator=iterator)
  for what, save in [("whole checkpoint", lambda i: checkpointer.save(FLAGS.steps + i, 1)),
                     ("a tf.data iterator (not saved)", lambda i: iterator_only.write(os.path.join(run_dir, f"it-{i}")))]:
    times, sizes = [], []
    for i in range(10):
      train_step(iterator)
      start = time.perf_counter()
      path = save(i)
      times.append(time.perf_counter() - start)
      sizes.append(size(path))
    print(f"{what}: {statistics.median(sizes) / 1e6:.2f} MB (min {min(sizes) / 1e6:.2f}, max "
          f"{max(sizes) / 1e6:.2f}), save {statistics.median(times) * 1e3:.0f} ms median "
          f"(max {max(times) * 1e3:.0f} ms), CIFAR-10 train {len(split)} examples, batch {config.batch_size}")
  last_step_of_epoch = len(split) // config.batch_size - 1
  times = []
  for _ in range(10):
    start = time.perf_counter()
    next(iter(data_lib.train_dataset(split, config.batch_size, config.seed, start_step=last_step_of_epoch)))
    times.append(time.perf_counter() - start)
  print(f"pipeline rebuilt at step {last_step_of_epoch} (the most skipping): first batch in "
        f"{statistics.median(times) * 1e3:.0f} ms median (max {max(times) * 1e3:.0f} ms)")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
