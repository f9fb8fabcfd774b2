"""The streaming input pipeline alone, in images/s per core, on a folder of JPEGs (Imagewoof by default).

    python benchmarks/input_pipeline.py [--root=../shared/imagewoof2-160] [--image_size=128]
        [--batch_size=64] [--batches=30] [--cores=1,2]

Builds the training pipeline of a run with `--train_crop=random_resized --augment=flip` (list, read,
random-resized crop decoded by window, resize, flip, standardise) and reads `--batches` batches after
a warm-up of 3, with tf.data's thread pool limited to each of `--cores` threads. Divide a host's
images/s need by the per-core figure for the cores the input pipeline needs.

With `--recipe=experiments/imagewoof_resnet26d_5ep.cfg` (or `--model=NAME`: float32, SGD) it also times that
recipe's train step (its model, precision, optimizer and batch size; `--steps` after a warm-up) fed
by the pipeline and fed one cached batch, alternately, and prints their ratio: the fraction of the
step's speed the input pipeline leaves (1.0: not input-bound).
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from cnn import augment
from cnn import data as data_lib
from cnn import flags as cnn_flags
from cnn.config import Config
from cnn.training import trainer

flags.DEFINE_string("root", "../shared/imagewoof2-160", "Folder of images: train/<class>/*.")
flags.DEFINE_integer("image_size", 128, "Training image size.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("batches", 30, "Batches timed.")
flags.DEFINE_list("cores", ["1", "2"], "tf.data thread-pool sizes to time.")
flags.DEFINE_string("recipe", "", "Also time this flagfile's train step fed by the pipeline vs a cached batch.")
flags.DEFINE_string("model", "", "Also time this model's train step (float32, SGD) fed by the pipeline vs a "
                    "cached batch.")
flags.DEFINE_integer("step_batch_size", 32, "--model: the step's batch size.")
flags.DEFINE_integer("steps", 10, "--model: steps timed per measurement (two of each kind, alternating).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  streamed = dict(dataset=f"folder:{FLAGS.root}", data_memory_budget_mb=0, data_cache_dir="none")
  if FLAGS.recipe:  # Its crops, flips and image size too.
    config = Config(**{**cnn_flags.config_from_flagfile(FLAGS.recipe).__dict__, **streamed})
  else:
    config = Config(image_size=FLAGS.image_size, train_crop="random_resized", augment="flip", **streamed)
  source = data_lib.open_dataset(config)
  (split,) = data_lib.open_splits(source, [config.train_split], config.data_memory_budget_mb)
  augment_fn = augment.make_augment_fn(config, source.info.num_classes, len(split))
  mean_std = (np.full(3, 0.45), np.full(3, 0.25))
  for cores in map(int, FLAGS.cores):
    dataset = data_lib.train_dataset(split, FLAGS.batch_size, seed=0, augment_fn=augment_fn, mean_std=mean_std)
    options = data_lib.pipeline_options()
    options.threading.private_threadpool_size = cores
    iterator = iter(dataset.with_options(options))
    for _ in range(3):
      next(iterator)
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
      next(iterator)
    rate = FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - start)
    print(f"{cores} core(s): {rate:.0f} images/s, {rate / cores:.0f} images/s per core "
          f"({len(split)} train images of {FLAGS.root}, {config.image_size} px)")
  if FLAGS.recipe or FLAGS.model:
    step_speed(config, source.info, split, augment_fn, mean_std)


def step_speed(config: Config, info: data_lib.DatasetInfo, split, augment_fn, mean_std) -> None:
  """Prints the train step's time fed by the pipeline and fed one cached batch, and their ratio."""
  if not FLAGS.recipe:
    config = Config(**{**config.__dict__, "model": FLAGS.model, "batch_size": FLAGS.step_batch_size,
                       "optimizer": "sgd"})
  strategy = tf.distribute.get_strategy()
  model, _ = trainer.build_model_in_scope(config, info, strategy)
  training = trainer.build_training(config, model, strategy, 100, 1000)
  fed = iter(data_lib.train_dataset(split, config.batch_size, 0, augment_fn=augment_fn, mean_std=mean_std))
  cached = iter(tf.data.Dataset.from_tensors(next(fed)).repeat())
  seconds = {"pipeline": [], "cached": []}
  for iterator in (fed, cached):
    for _ in range(3):  # Warm-up: tracing, autotuning.
      training.train_loop(iterator, 1)
  for _ in range(2):
    for name, iterator in (("pipeline", fed), ("cached", cached)):
      start = time.perf_counter()
      for _ in range(FLAGS.steps):
        training.train_loop(iterator, 1)
      seconds[name].append(time.perf_counter() - start)
  fed_seconds, cached_seconds = min(seconds["pipeline"]), min(seconds["cached"])
  print(f"{FLAGS.recipe or FLAGS.model} at batch {config.batch_size}: {fed_seconds / FLAGS.steps * 1e3:.0f} ms/step fed by the "
        f"pipeline, {cached_seconds / FLAGS.steps * 1e3:.0f} ms/step on a cached batch: speed ratio "
        f"{cached_seconds / fed_seconds:.3f}")


if __name__ == "__main__":
  app.run(main)
