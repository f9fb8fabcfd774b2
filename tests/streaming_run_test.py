"""Streaming runs as a researcher starts them: bounded host memory, exact resume after SIGKILL, cheap resume.

Subprocess runs of `python -m cnn.train` on small generated folders of JPEGs with every split
streaming (`--data_memory_budget_mb=0`).
"""

import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from checkpoints_test import assert_bitwise_equal, checkpoint_state, train_subprocess
from cnn import data
from cnn.data import preprocess
from cnn.data import stream

CLASSES = ("a", "b", "c")


def write_jpegs(root, per_class, copies=1, val_per_class=4):
  """root/train/<class>/ of `per_class` JPEGs (64×48 noise, one channel brighter), `copies` times over by
  symlinks to the same files; root/val/ of `val_per_class` each."""
  rng = np.random.default_rng(0)
  for split, count in (("train", per_class), ("val", val_per_class)):
    for label, name in enumerate(CLASSES):
      (root / split / name).mkdir(parents=True)
      for i in range(count):
        image = rng.integers(0, 128, (48, 64, 3), np.uint8)
        image[..., label] += 100
        (root / split / name / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
        for copy in range(1, copies if split == "train" else 1):
          os.symlink(root / split / name / f"{i}.jpg", root / split / name / f"{i}_{copy}.jpg")
  return root


def folder_args(root, run_dir, *extra):
  # The tutorial network: these tests are about the data path, and it starts 4 s faster than resnet20.
  return [f"--dataset=folder:{root}", "--data_memory_budget_mb=0", "--model=simple_cnn", "--summary_images=0",
          "--nowrite_graph", "--histogram_every_steps=0", "--nodownload", f"--run_dir={run_dir}", *extra]


@pytest.mark.e2e
def test_host_memory_does_not_grow_with_a_streamed_dataset(tmp_path):
  # Decoded at 160 px the large folder is 6,000 × 75 KB = 440 MB: held in memory, it would show.
  small, large = write_jpegs(tmp_path / "small", 200), write_jpegs(tmp_path / "large", 200, copies=10)
  peaks = {}
  for root in (small, large):
    result = train_subprocess(folder_args(root, tmp_path / f"run_{root.name}", "--image_size=160",
                                          "--batch_size=8", "--train_steps=4", "--train_crop=random_resized",
                                          "--eval_batch_size=12"))
    assert result.returncode == 0, result.stderr[-2000:]
    peaks[root.name] = json.loads((tmp_path / f"run_{root.name}" / "results.json").read_text())["peak_host_memory_mb"]
  print(f"peak host memory: {peaks}")
  assert peaks["large"] - peaks["small"] < 300, peaks


@pytest.mark.e2e
def test_streaming_runs_killed_at_any_step_resume_bit_for_bit(tmp_path):
  root = write_jpegs(tmp_path / "jpegs", 16)  # 48 examples, batch 8: 6 steps an epoch.
  args = ["--image_size=24", "--batch_size=8", "--train_steps=14", "--checkpoint_every_steps=4", "--deterministic",
          "--train_crop=random_resized", "--augment=flip,cutout", "--cutout_size=6", "--normalization=standardize",
          "--log_every_steps=100", "--optimizer=sgd", "--learning_rate=0.05"]
  reference = tmp_path / "reference"
  result = train_subprocess(folder_args(root, reference, *args))
  assert result.returncode == 0, result.stderr[-2000:]
  run = tmp_path / "killed"
  for kill_at in (3, 6, 11):  # Mid-epoch, at an epoch's end, in the last epoch.
    result = train_subprocess(folder_args(root, run, *args), kill_at=kill_at)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
  result = train_subprocess(folder_args(root, run, *args))
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"Resuming {run} from step 8 " in result.stdout
  latest = tf.train.latest_checkpoint(str(reference / "checkpoints"))
  assert latest.endswith("ckpt-14")
  assert_bitwise_equal(checkpoint_state(run / "checkpoints" / "ckpt-14"), checkpoint_state(latest))


@pytest.mark.e2e
def test_a_resumed_pipeline_reads_no_example_before_its_step():
  # An ImageNet-size epoch (1,281,167 examples, batch 1024): the pipeline rebuilt at the epoch's last
  # step reads that step's examples, then the next epoch's from its start (a new permutation, in which
  # any example may come first), and nothing else. benchmarks/resume_cost.py times it.
  num_examples, batch_size, seed = 1_281_167, 1024, 5
  read = []
  pixel = tf.io.encode_png(tf.zeros((1, 1, 3), tf.uint8))

  def record(index):
    read.append(int(index))
    return pixel.numpy()

  def read_fn(key):
    encoded = tf.py_function(record, [key], tf.string)
    encoded.set_shape([])
    return encoded

  split = stream.StreamSplit(np.arange(num_examples, dtype=np.int64), np.zeros(num_examples, np.int32),
                             preprocess.Preprocessing(2, random_crop=False, center_crop=False), read_fn)
  last = num_examples // batch_size - 1
  batches = iter(data.train_dataset(split, batch_size, seed, start_step=last))
  next(batches), next(batches)  # The epoch's last step, then the next epoch's first.
  this_epoch, next_epoch = (tf.random.experimental.stateless_shuffle(tf.range(num_examples), seed=[seed, epoch])
                            .numpy() for epoch in (0, 1))
  last_step = set(this_epoch[last * batch_size:(last + 1) * batch_size])
  assert last_step <= set(read) and set(next_epoch[:batch_size]) <= set(read)
  # Whatever else was read (prefetched) comes from the next epoch's start, in its order.
  place_in_next_epoch = np.argsort(next_epoch)
  later = np.array([index for index in read if index not in last_step])
  assert place_in_next_epoch[later].max() < len(read)
