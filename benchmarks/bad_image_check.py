"""What the streaming pipeline's check for cut-short image files costs, per image, in CPU time.

Every streamed image goes through `bad_images.check_encoded` before it is decoded (cnn/data/bad_images.py
says what it checks and why). This times, on Imagewoof JPEGs held in memory (no disk), one thread,
interleaved in rounds so that load from other processes hits all alike, the CPU time per image that each
adds to a bare pass over the encoded images:

  check     `check_encoded` (empty, JPEG end marker, PNG IEND)
  decode    `tf.io.decode_jpeg`, for scale

Run from the repository root:

    python benchmarks/bad_image_check.py [--images=1000] [--rounds=3]
"""

import pathlib
import time

from absl import app
from absl import flags
import tensorflow as tf

from cnn.data import bad_images

flags.DEFINE_integer("images", 1000, "How many Imagewoof JPEGs to time.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds; each variant's best is kept.")
FLAGS = flags.FLAGS
_IMAGEWOOF = pathlib.Path(__file__).resolve().parents[2] / "shared" / "imagewoof2-160" / "train"


def cpu_microseconds(examples: tf.data.Dataset, fn, count: int) -> float:
  """CPU time of the process per element for one pass of `examples.map(fn)`, one thread, in µs."""
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.autotune.enabled = False
  batches = examples.map(fn).batch(count).with_options(options)
  start = time.process_time()
  for _ in batches:
    pass
  return (time.process_time() - start) / count * 1e6


def main(argv):
  del argv
  paths = sorted(str(p) for p in _IMAGEWOOF.glob("*/*.JPEG"))[:FLAGS.images]
  if not paths:
    raise SystemExit(f"no JPEGs under {_IMAGEWOOF}")
  encoded = [pathlib.Path(p).read_bytes() for p in paths]
  examples = tf.data.Dataset.from_tensor_slices((paths, encoded)).cache()
  variants = {
      "bare": lambda key, data: tf.strings.length(data),
      "check": lambda key, data: tf.strings.length(bad_images.check_encoded(key, data)),
      "decode": lambda key, data: tf.shape(tf.io.decode_jpeg(data))[0],
  }
  best = {name: float("inf") for name in variants}
  for _ in range(FLAGS.rounds):
    for name, fn in variants.items():
      best[name] = min(best[name], cpu_microseconds(examples, fn, len(paths)))
  print(f"{len(paths)} Imagewoof JPEGs, CPU µs per image added to a bare pass ({best['bare']:.0f} µs): "
        f"check {best['check'] - best['bare']:.0f}, decode {best['decode'] - best['bare']:.0f}")


if __name__ == "__main__":
  app.run(main)
