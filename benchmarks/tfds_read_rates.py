"""Records/s per core of a streamed TFDS split: read+parse, and read+parse+decode, through cnn's reader.

    PYTHONPATH=. python benchmarks/tfds_read_rates.py --data_dir=/tmp/imagenet_shaped \
        [--dataset=imagenet_shaped] [--split=train] [--image_size=224] [--calls=1,2] [--examples=2000]

The split is opened as a training run streams it (`cnn.data.tfds_stream.open_split`: example i read
by index) and read in a random order (random access over every shard, as an epoch's permutation
does), by a tf.data map with `--calls` parallel calls on a thread pool of as many threads:
  * read+parse: the StreamSplit's `read` (the serialized example read and parsed, the image left
    encoded): what a tf.data service worker or a data-loading core does before decoding;
  * +train view: also `stream.train_view`, ImageNet's training view (a random-resized crop, scale
    0.08-1, decoded by window from the JPEG, resized to --image_size): the recipe's per-image work;
  * +eval view: also `stream.eval_view` (the whole JPEG decoded, the centre 87.5% resized).
Each figure is the median of --repeats timed passes after a warm-up pass. Per core = rate / calls,
which other jobs on the machine lower; records per CPU-second (this process's CPU time, all threads)
is the per-core cost and holds on a shared machine. The load average is printed. `PYTHONPATH` picks whose `cnn` is measured
(this worktree's, or another branch's checkout).
"""

import os
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn.data import preprocess
from cnn.data import stream
from cnn.data import tfds_stream

flags.DEFINE_string("data_dir", None, "TFDS data directory holding --dataset.", required=True)
flags.DEFINE_string("dataset", "imagenet_shaped", "TFDS dataset (benchmarks/imagenet_shaped.py writes one).")
flags.DEFINE_string("split", "train", "Split to read.")
flags.DEFINE_integer("image_size", 224, "Side of the decoded views.")
flags.DEFINE_list("calls", ["1", "2"], "Parallel calls (and thread-pool sizes) to time.")
flags.DEFINE_integer("examples", 2000, "Examples per timed pass (decoding passes read a quarter as many).")
flags.DEFINE_integer("repeats", 3, "Timed passes per figure (the median is reported).")
FLAGS = flags.FLAGS


def stages(split: stream.StreamSplit) -> dict[str, tuple]:
  """Name -> (the per-example function of an index, fraction of --examples it reads)."""
  seed = tf.constant([1, 2], tf.int64)
  return {
      "read+parse": (lambda key: tf.strings.length(split.read(key)), 1.0),
      "+train view": (lambda key: stream.train_view(split, key, tf.random.experimental.stateless_fold_in(seed, key)),
                      0.25),
      "+eval view": (lambda key: stream.eval_view(split, key), 0.25),
  }


def rate(split: stream.StreamSplit, function, calls: int, count: int, order: np.ndarray) -> tuple[float, float]:
  """(examples per second, per CPU-second of this process) of `function` over `count` examples of
  `order`, mapped with `calls` parallel calls."""
  options = tf.data.Options()
  options.threading.private_threadpool_size = calls
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False  # Exactly `calls` calls in flight.
  keys = tf.constant(split.keys[order[:count]])
  dataset = (tf.data.Dataset.from_tensor_slices(keys).map(function, num_parallel_calls=calls)
             .prefetch(2 * calls).with_options(options))
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in dataset:
    pass
  return count / (time.perf_counter() - start), count / (time.process_time() - cpu_start)


def main(argv):
  del argv
  builder = tfds.builder(FLAGS.dataset, data_dir=FLAGS.data_dir)
  settings = preprocess.Preprocessing(FLAGS.image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                                      crop_fraction=0.875, random_crop=True, center_crop=True)
  split = tfds_stream.open_split(builder, FLAGS.split, settings, None)
  info = builder.info.splits[FLAGS.split]
  print(f"{FLAGS.dataset} {FLAGS.split}: {len(split)} examples in {info.num_shards} shards, "
        f"{info.num_bytes / len(split) / 1e3:.1f} KB an example; cnn from {os.path.dirname(tfds_stream.__file__)}")
  order = np.random.default_rng(0).permutation(len(split))
  for name, (function, fraction) in stages(split).items():
    count = min(len(split), max(1, int(FLAGS.examples * fraction)))
    for calls in map(int, FLAGS.calls):
      rate(split, function, calls, min(count, 200), order[::-1])  # Warm-up: tracing, file handles.
      rates, cpu_rates = zip(*(rate(split, function, calls, count, np.roll(order, r * count))
                               for r in range(FLAGS.repeats)))
      median = statistics.median(rates)
      print(f"{name:12s} {calls} call(s): {median:6.0f} records/s, {median / calls:5.0f} per core "
            f"(passes {min(rates):.0f}-{max(rates):.0f}); {statistics.median(cpu_rates):5.0f} per CPU-second; "
            f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  app.run(main)
