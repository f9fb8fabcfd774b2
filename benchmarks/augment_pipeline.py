"""Throughput of the training input pipeline with each augmentation chain, measured side by side.

    python benchmarks/augment_pipeline.py [--data_dir=../shared/tfds] [--batches=200]

Uses CIFAR-10's training split when --data_dir holds it, random uint8 images of the same shape
otherwise. Prints images/s of `data.train_dataset` for each --augment chain and its ratio to no
augmentation, so that an augmentation that stalls the train step shows up before a long run.
"""

import time

from absl import app
from absl import flags
import numpy as np

from cnn import augment
from cnn import data as data_lib
from cnn.config import Config

_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data directory holding cifar10 (empty: random images).")
_BATCHES = flags.DEFINE_integer("batches", 200, "Batches timed per chain (after 10 warm-up batches).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Batch size.")
CHAINS = ("", "crop,flip", "alternating_flip,crop", "crop,flip,cutout", "crop,flip,mixup", "crop,flip,cutmix")


def main(argv):
  del argv
  if _DATA_DIR.value:
    split = data_lib.load_split(data_lib.get_builder("cifar10", _DATA_DIR.value, download=False), "train")
  else:
    rng = np.random.default_rng(0)
    split = data_lib.Split(rng.integers(0, 256, (50_000, 32, 32, 3), np.uint8),
                           rng.integers(0, 10, 50_000).astype(np.int32))
  mean_std = data_lib.channel_stats(split)
  baseline = None
  for chain in CHAINS:
    config = Config(augment=chain)
    fn = augment.make_augment_fn(config, 10, len(split))
    iterator = iter(data_lib.train_dataset(split, _BATCH_SIZE.value, 0, augment_fn=fn, mean_std=mean_std))
    for _ in range(10):
      next(iterator)
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
      next(iterator)
    rate = _BATCHES.value * _BATCH_SIZE.value / (time.perf_counter() - start)
    baseline = baseline or rate
    print(f"{chain or '(none)':24s} {rate:9.0f} images/s  {rate / baseline:5.2f}× of no augmentation")


if __name__ == "__main__":
  app.run(main)
