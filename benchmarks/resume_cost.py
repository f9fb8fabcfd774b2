"""What resuming costs on an ImageNet-size epoch: the streaming pipeline rebuilt at step k.

    python benchmarks/resume_cost.py [--num_examples=1281167] [--batch_size=1024] [--repeats=3]

A synthetic streaming split of `--num_examples` examples (each a 1×1 PNG, so that reading is
trivial and what is timed is the index stream) is built, as a resumed run builds it, at step 0 and
at the last step of its first epoch (the most skipping), and its first batch read; the median of
`--repeats` is printed. tests/streaming_run_test.py checks that no example before the step is read.
"""

import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from cnn import data as data_lib
from cnn.data import preprocess
from cnn.data import stream

flags.DEFINE_integer("num_examples", 1_281_167, "Examples in the synthetic split (ImageNet's train split).")
flags.DEFINE_integer("batch_size", 1024, "Global batch size.")
flags.DEFINE_integer("repeats", 3, "Timings per start step (the median is printed).")
FLAGS = flags.FLAGS


def first_batch_seconds(split: stream.StreamSplit, start_step: int) -> float:
  start = time.perf_counter()
  next(iter(data_lib.train_dataset(split, FLAGS.batch_size, seed=0, start_step=start_step)))
  return time.perf_counter() - start


def main(argv):
  del argv
  pixel = tf.io.encode_png(tf.zeros((1, 1, 3), tf.uint8)).numpy()
  split = stream.StreamSplit(np.arange(FLAGS.num_examples, dtype=np.int64), np.zeros(FLAGS.num_examples, np.int32),
                             preprocess.Preprocessing(1, random_crop=False, center_crop=False),
                             lambda key: tf.constant(pixel))
  last = FLAGS.num_examples // FLAGS.batch_size - 1
  for step in (0, last):
    seconds = statistics.median(first_batch_seconds(split, step) for _ in range(FLAGS.repeats))
    print(f"{FLAGS.num_examples} examples, batch {FLAGS.batch_size}: pipeline built at step {step} and its "
          f"first batch read in {seconds:.2f} s (median of {FLAGS.repeats})")


if __name__ == "__main__":
  app.run(main)
