"""Input pipeline tests, on TFDS mock data (random examples of the real shapes)."""

import os
import pathlib
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn import data
from cnn.errors import UserError
import tiny_tfds


def load(name, split, **kwargs):
  builder = data.get_builder(name, **kwargs)
  return data.dataset_info(builder), data.load_split(builder, split)


def test_dataset_info_comes_from_tfds(mock_tfds):
  cifar10, split = load("cifar10", "train")
  assert cifar10.image_shape == (32, 32, 3) and cifar10.num_classes == 10
  assert len(cifar10.class_names) == 10  # Mock metadata has no names; real_data_test checks them.
  assert split.images.shape == (256, 32, 32, 3) and split.images.dtype == np.uint8
  assert split.labels.dtype == np.int32 and split.labels.max() < 10
  mnist, split = load("mnist", "test")
  assert mnist.image_shape == (28, 28, 1) and split.images.shape[1:] == (28, 28, 1)
  cifar100, _ = load("cifar100", "test")
  assert cifar100.num_classes == 100 and len(cifar100.class_names) == 100


def test_real_tfds_files_with_slicing(tiny_data_dir):
  info, split = load(tiny_tfds.NAME, "train[:25%]", data_dir=tiny_data_dir, download=False)
  assert info == data.DatasetInfo(tiny_tfds.NAME, tiny_tfds.IMAGE_SHAPE, 3, tiny_tfds.CLASS_NAMES)
  assert len(split) == 24
  _, first = load(tiny_tfds.NAME, "train[:10]", data_dir=tiny_data_dir)
  _, rest = load(tiny_tfds.NAME, "train[10:]", data_dir=tiny_data_dir)
  _, whole = load(tiny_tfds.NAME, "train", data_dir=tiny_data_dir)
  np.testing.assert_array_equal(np.concatenate([first.images, rest.images]), whole.images)
  np.testing.assert_array_equal(np.bincount(whole.labels), [32, 32, 32])


def test_train_batches_are_float_images_in_unit_range(mock_tfds):
  _, split = load("cifar10", "train")
  images, labels = next(iter(data.train_dataset(split, batch_size=32, seed=0)))
  assert images.shape == (32, 32, 32, 3) and images.dtype == tf.float32
  assert labels.shape == (32,) and labels.dtype == tf.int32
  assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
  assert float(tf.reduce_max(images)) > 0.5  # Scaled by 1/255, not twice.


def test_each_epoch_is_a_seeded_permutation_without_the_remainder():
  split = data.Split(images=np.zeros((50, 2, 2, 1), np.uint8), labels=np.arange(50, dtype=np.int32))
  stream = [labels.numpy() for _, labels in data.train_dataset(split, batch_size=8, seed=3).take(12)]
  epoch1, epoch2 = np.concatenate(stream[:6]), np.concatenate(stream[6:])
  assert len(set(epoch1)) == 48 and len(set(epoch2)) == 48  # 6 full batches, 2 examples dropped.
  assert not np.array_equal(epoch1, epoch2)  # A fresh order each epoch.
  again = [labels.numpy() for _, labels in data.train_dataset(split, batch_size=8, seed=3).take(12)]
  np.testing.assert_array_equal(np.concatenate(stream), np.concatenate(again))
  other = [labels.numpy() for _, labels in data.train_dataset(split, batch_size=8, seed=4).take(6)]
  assert not np.array_equal(epoch1, np.concatenate(other))


def test_eval_covers_the_split_once_in_order():
  split = data.Split(images=np.full((10, 2, 2, 1), 255, np.uint8), labels=np.arange(10, dtype=np.int32))
  batches = list(data.eval_dataset(split, batch_size=4))
  assert [len(labels) for _, labels, _ in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([labels for _, labels, _ in batches]), np.arange(10))
  np.testing.assert_array_equal(np.concatenate([index for _, _, index in batches]), np.arange(10))
  assert all(float(tf.reduce_min(images)) == 1.0 for images, _, _ in batches)


def test_unknown_dataset_suggests_names():
  with pytest.raises(UserError, match=r"unknown dataset 'cifar1'; did you mean one of: .*cifar10"):
    data.get_builder("cifar1")


def test_dataset_missing_offline_says_how_to_prepare_it(tmp_path):
  with pytest.raises(UserError, match=r"not prepared in .* --nodownload is set; prepare it with `tfds build"):
    data.get_builder("cifar10", data_dir=str(tmp_path), download=False)


def test_bad_split_is_a_user_error(tiny_data_dir):
  with pytest.raises(UserError, match=f"bad split 'trian' for {tiny_tfds.NAME}: .*splits: train, test"):
    load(tiny_tfds.NAME, "trian", data_dir=tiny_data_dir)


def test_batch_larger_than_the_split_is_a_user_error():
  split = data.Split(images=np.zeros((4, 2, 2, 1), np.uint8), labels=np.arange(4, dtype=np.int32))
  with pytest.raises(UserError, match="--batch_size=8 is larger than the training split"):
    data.train_dataset(split, batch_size=8, seed=0)


@pytest.mark.e2e
def test_a_pipeline_started_at_a_step_continues_the_stream_exactly():
  split = data.Split(images=np.zeros((50, 2, 2, 1), np.uint8), labels=np.arange(50, dtype=np.int32))
  stream = [labels.numpy() for _, labels in data.train_dataset(split, batch_size=8, seed=3).take(20)]
  for start in (1, 5, 6, 13):  # Mid-epoch, last step of an epoch, an epoch start, a later epoch.
    resumed = [labels.numpy() for _, labels in
               data.train_dataset(split, batch_size=8, seed=3, start_step=start).take(20 - start)]
    np.testing.assert_array_equal(np.stack(resumed), np.stack(stream[start:]))


@pytest.mark.parametrize("offline", ["bogus_proxy", "probe_fails"])
def test_offline_download_fails_fast_with_a_one_line_hint(tmp_path, monkeypatch, offline):
  # Offline, TFDS would retry the download with back-off for minutes (TF_NOTES.md item 14).
  attempts = []
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda *a, **k: attempts.append(a))
  if offline == "bogus_proxy":  # Nothing listens on port 9 of loopback: the connection is refused.
    for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
      monkeypatch.setenv(key, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
  else:
    monkeypatch.setattr(data.sources, "probe_download_hosts", lambda urls: "www.cs.toronto.edu: timed out")
  start = time.monotonic()
  with pytest.raises(UserError) as error:
    data.get_builder("cifar10", data_dir=str(tmp_path))
  assert time.monotonic() - start < 10
  message = str(error.value)
  assert len(message.splitlines()) == 1 and "unreachable" in message, message
  assert f"tfds build cifar10 --data_dir={tmp_path}" in message and "--nodownload" in message
  assert not attempts


def test_download_probe_accepts_any_http_answer(monkeypatch):
  def answer(request, timeout):
    raise urllib.error.HTTPError(request.full_url, 405, "Method Not Allowed", {}, None)
  monkeypatch.setattr(urllib.request, "urlopen", answer)
  assert data.sources.probe_download_hosts(["https://example.org/a.tar.gz"]) == ""


def test_a_decoded_split_is_cached_and_a_warm_load_reads_no_source_file(tiny_data_dir, tmp_path, monkeypatch):
  cache = tmp_path / "cache"
  builder = data.get_builder(tiny_tfds.NAME, tiny_data_dir, download=False)
  cold = data.load_split(builder, "train[:40]", cache_dir=cache)
  assert sorted(p.name.split(".", 1)[1] for p in cache.iterdir()) == ["images.npy", "labels.npy"]  # No temp left.

  class SourceRead(Exception):
    pass

  def no_reads(*args, **kwargs):
    raise SourceRead("the warm load read the source files")

  monkeypatch.setattr(type(builder), "as_dataset", no_reads)
  warm = data.load_split(builder, "train[:40]", cache_dir=cache)
  assert isinstance(warm.images, np.memmap)
  np.testing.assert_array_equal(warm.images, cold.images)
  np.testing.assert_array_equal(warm.labels, cold.labels)
  # Another split, another preprocessing or changed source files are never served from the entry.
  for split, image_size in (("train[:20]", 0), ("train[:40]", 4)):
    with pytest.raises(SourceRead):
      data.load_split(builder, split, image_size, cache_dir=cache)
  shard = next(p for p in pathlib.Path(builder.data_dir).iterdir() if "train.tfrecord" in p.name)
  times = shard.stat().st_atime_ns, shard.stat().st_mtime_ns
  os.utime(shard, ns=(times[0], times[1] + 10**9))
  try:
    with pytest.raises(SourceRead):
      data.load_split(builder, "train[:40]", cache_dir=cache)
  finally:
    os.utime(shard, ns=times)


def test_an_unwritable_cache_dir_costs_a_decode_not_the_run(tiny_data_dir, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  builder = data.get_builder(tiny_tfds.NAME, tiny_data_dir, download=False)
  assert len(data.load_split(builder, "train[:8]", cache_dir=blocker / "cache")) == 8
