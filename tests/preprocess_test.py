"""ImageNet-style crops on datasets of fixed size: random-resized crops come back at the dataset's size."""

import numpy as np
import pytest
import tensorflow as tf

from cnn import data
from cnn import train
from cnn.config import Config
from cnn.data import preprocess
from cnn.data import stream
from conftest import run_cli
import tiny_tfds


def test_random_resized_crops_of_a_fixed_size_dataset_keep_its_size_without_image_size(tiny_data_dir):
  source = data.open_dataset(Config(dataset=tiny_tfds.NAME, data_dir=tiny_data_dir, download=False,
                                    train_crop="random_resized", crop_scale=(0.25, 0.5)))
  assert source.info.image_shape == tiny_tfds.IMAGE_SHAPE
  (crops,), (held,) = data.open_splits(source, ["train"], -1), data.open_splits(source, ["train"], 1, train_first=False)
  assert isinstance(crops, stream.StreamSplit) and isinstance(held, data.Split)  # Crops stream within any budget.
  images, labels = next(iter(data.train_dataset(crops, 8, seed=0)))
  assert images.shape == (8, *tiny_tfds.IMAGE_SHAPE)
  # Crops of a quarter to half the area, enlarged: neighbouring pixels repeat more than in the originals.
  whole, whole_labels = next(iter(data.train_dataset(held, 8, seed=0)))
  assert _smoothness(images.numpy()) < 0.8 * _smoothness(whole.numpy())
  np.testing.assert_array_equal(labels.numpy(), whole_labels.numpy())  # The same examples, cropped.


def _smoothness(images: np.ndarray) -> float:
  """Mean absolute difference of horizontally neighbouring pixels."""
  return float(np.abs(np.diff(images, axis=2)).mean())


@pytest.mark.e2e
def test_a_run_with_random_resized_crops_on_a_fixed_size_tfds_dataset_trains(tiny_data_dir, tmp_path):
  code, stderr = run_cli(train.main, [f"--dataset={tiny_tfds.NAME}", f"--data_dir={tiny_data_dir}", "--nodownload",
                                      "--train_crop=random_resized", "--batch_size=16", "--train_steps=2",
                                      "--summary_images=0", "--nowrite_graph", f"--run_dir={tmp_path / 'run'}"])
  assert code == 0, stderr[-2000:]


def _windows(shape, sampler, scale, ratio=(3 / 4, 4 / 3), draws=1000):
  """`draws` windows (y, x, h, w) of one sampler, seeds [5, 0..draws-1]."""
  seeds = tf.stack([tf.fill([draws], 5), tf.range(draws)], axis=1)
  window = tf.function(lambda s: tf.stack(preprocess.random_window(tf.constant(shape), s, scale, ratio, sampler)))
  return tf.map_fn(window, tf.cast(seeds, tf.int64), fn_output_signature=tf.int32).numpy().T


@pytest.mark.parametrize("sampler", ["tensorflow", "torchvision"])
def test_torchvision_crop_sampler_draws_area_uniform_and_aspect_ratio_log_uniform(sampler):
  # A square image and areas up to half of it: every draw fits, so the distributions show plainly.
  y, x, h, w = _windows([400, 400, 3], sampler, (0.08, 0.5))
  assert (y >= 0).all() and (x >= 0).all() and (y + h <= 400).all() and (x + w <= 400).all()
  area_mean, portrait = (h * w / 400**2).mean(), (w < h).mean()
  torchvision_like = abs(area_mean - 0.29) < 0.015 and abs(portrait - 0.5) < 0.05  # Uniform area; log(ratio) about 0.
  assert torchvision_like == (sampler == "torchvision"), (area_mean, portrait)  # TF's: height and ratio uniform.
  assert abs((x / np.maximum(400 - w, 1)).mean() - 0.5) < 0.03  # Placed uniformly.


def test_torchvision_crop_sampler_falls_back_to_a_centre_crop_clamped_to_the_ratio_range():
  # A 10×1000 strip: no window of half its area or more has an aspect ratio in [3/4, 4/3].
  window = preprocess.torchvision_window(tf.constant([10, 1000, 3]), tf.constant([1, 2], tf.int64), (0.5, 1.0),
                                         (3 / 4, 4 / 3))
  assert [int(v) for v in window] == [0, 493, 10, 13]  # Height 10, width round(10 × 4/3), centred.
  tall = preprocess.torchvision_window(tf.constant([1000, 10, 3]), tf.constant([1, 2], tf.int64), (0.5, 1.0),
                                       (3 / 4, 4 / 3))
  assert [int(v) for v in tall] == [493, 0, 13, 10]


def test_the_crop_sampler_flag_reaches_the_training_views(tiny_data_dir):
  views = {}
  for sampler in ("tensorflow", "torchvision"):
    source = data.open_dataset(Config(dataset=tiny_tfds.NAME, data_dir=tiny_data_dir, download=False,
                                      train_crop="random_resized", crop_scale=(0.25, 0.5), crop_sampler=sampler))
    (split,) = data.open_splits(source, ["train"], -1)
    views[sampler] = [next(iter(data.train_dataset(split, 8, seed=0)))[0].numpy() for _ in range(2)]
    np.testing.assert_array_equal(*views[sampler])  # Each sampler is a pure function of the seed.
  assert not np.array_equal(views["tensorflow"][0], views["torchvision"][0])


def _checkerboard_png(side=64):
  board = (np.indices((side, side)).sum(axis=0) % 2 * 255).astype(np.uint8)
  return tf.io.encode_png(np.repeat(board[..., None], 3, axis=-1))


def test_antialiased_views_average_what_they_shrink_and_exports_see_the_same():
  # A one-pixel checkerboard shrunk 64 → 13: plain bilinear samples it (stark aliasing, std 42), antialiasing
  # averages it to grey, as PIL's resize does. Training views (a whole-image window) and evaluation views alike.
  encoded = _checkerboard_png()
  for antialias, grey in ((False, False), (True, True)):
    settings = preprocess.Preprocessing(13, scale=(1.0, 1.0), ratio=(1.0, 1.0), crop_fraction=1.0, antialias=antialias)
    views = [preprocess.eval_encoded(encoded, settings), preprocess.train_image(encoded, tf.constant([1, 2]), settings)]
    for view in views:
      assert view.shape == (13, 13, 3) and (np.std(view.numpy()) < 10) == grey, np.std(view.numpy())
    exported = preprocess.decoded_eval_view(tf.io.decode_png(encoded, channels=3), settings)
    np.testing.assert_allclose(exported * 255, views[0].numpy().astype(np.float32), atol=1e-3)


def test_antialiased_fixed_size_images_are_resized_alike_in_memory_and_streaming(tiny_data_dir, tmp_path):
  images = {}
  for antialias in (False, True):
    source = data.open_dataset(Config(dataset=tiny_tfds.NAME, data_dir=tiny_data_dir, download=False, image_size=7,
                                      resize_antialias=antialias, data_cache_dir=str(tmp_path / "cache")))
    (held,), (streamed,) = data.open_splits(source, ["test"], -1), data.open_splits(source, ["test"], 0)
    assert isinstance(held, data.Split) and isinstance(streamed, stream.StreamSplit)
    np.testing.assert_array_equal(held.images, stream.decode_all(streamed))
    images[antialias] = held.images
  assert images[True].shape == (len(images[True]), 7, 7, 3)
  assert not np.array_equal(images[False], images[True])  # Not one cache entry for both.
