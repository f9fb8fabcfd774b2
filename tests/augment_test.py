"""Augmentations keep shapes and label sums, are deterministic per seed, and do what they say."""

import json

import numpy as np
import pytest
import tensorflow as tf

from cnn import augment
from cnn import data as data_lib
from cnn import losses
from cnn import train
from cnn.config import Config
from cnn.errors import UserError
from conftest import run_cli
import tiny_tfds

NUM_CLASSES = 10  # More than the batch: every example has its own class.


def batch(n=8, size=12):
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(0.1, 1.0, (n, size, size, 3)), tf.float32)  # No zeros of their own.
  return images, tf.constant(np.arange(n) % NUM_CLASSES, tf.int32)


def run(spec, seed=0, epoch=0, step=0, **settings):
  images, labels = batch()
  fn = augment.make_augment_fn(Config(augment=spec, seed=seed, **settings), NUM_CLASSES, num_examples=8)
  out_images, out_labels = fn(images, labels, tf.constant(epoch, tf.int64), tf.constant(step, tf.int64),
                              tf.range(8))
  return out_images.numpy(), out_labels.numpy()


@pytest.mark.parametrize("spec", ["crop", "flip", "alternating_flip", "cutout", "mixup", "cutmix",
                                  "crop,flip,cutout,mixup"])
def test_shapes_label_sums_and_determinism_per_seed(spec):
  images, labels = run(spec)
  assert images.shape == (8, 12, 12, 3) and images.dtype == np.float32
  if augment.needs_soft_labels(spec):
    assert labels.shape == (8, NUM_CLASSES)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
  else:
    np.testing.assert_array_equal(labels, np.arange(8) % NUM_CLASSES)
  again = run(spec)
  np.testing.assert_array_equal(images, again[0])
  np.testing.assert_array_equal(labels, again[1])
  if spec != "alternating_flip":  # That one is fixed per example and epoch, not per step.
    assert not np.array_equal(images, run(spec, step=1)[0])
  assert not np.array_equal(images, run(spec, seed=1)[0])


def test_crop_translates_with_zero_padding():
  images, _ = run("crop", crop_padding=2)
  original = batch()[0].numpy()
  for out, src in zip(images, original):
    found = False
    for dy in range(-2, 3):
      for dx in range(-2, 3):
        padded = np.pad(src, [(2, 2), (2, 2), (0, 0)])
        found |= np.array_equal(out, padded[2 + dy:14 + dy, 2 + dx:14 + dx])
    assert found


def test_flips_mirror_whole_images_and_alternate_over_epochs():
  original = batch()[0].numpy()
  mirrored = original[:, :, ::-1]

  def flipped(images):
    result = []
    for out, src, mir in zip(images, original, mirrored):
      assert np.array_equal(out, src) or np.array_equal(out, mir)
      result.append(np.array_equal(out, mir))
    return np.array(result)

  random_flips = flipped(run("flip")[0])
  assert 0 < random_flips.sum() < 8
  epoch0, epoch1, epoch2 = (flipped(run("alternating_flip", epoch=e)[0]) for e in range(3))
  np.testing.assert_array_equal(epoch1, ~epoch0)  # Each example is flipped every other epoch.
  np.testing.assert_array_equal(epoch2, epoch0)


def test_cutout_zeroes_one_square_per_image():
  images, _ = run("cutout", cutout_size=4)
  zeroed = (images == 0).all(axis=-1)
  for mask in zeroed:
    assert 0 < mask.sum() <= 16
    rows, cols = np.nonzero(mask)
    assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # A (clipped) rectangle.


def test_mixup_and_cutmix_mix_with_the_neighbour_example():
  original, labels = batch()
  neighbour = np.arange(8) ^ 1  # 0<->1, 2<->3, ...
  onehot = tf.one_hot(labels, NUM_CLASSES).numpy()
  images, mixed = run("mixup", mixup_alpha=1.0)
  lam = mixed[np.arange(8), labels.numpy()]
  expected = lam[:, None, None, None] * original + (1 - lam[:, None, None, None]) * original.numpy()[neighbour]
  np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mixed, lam[:, None] * onehot + (1 - lam[:, None]) * onehot[neighbour], atol=1e-6)
  images, mixed = run("cutmix")
  pasted = (images == original.numpy()[neighbour]).all(axis=-1) & (images != original.numpy()).any(axis=-1)
  np.testing.assert_allclose(mixed[np.arange(8), labels.numpy()[neighbour]], pasted.mean(axis=(1, 2)), atol=1e-6)


def test_unknown_names_list_the_registered_ones():
  with pytest.raises(UserError, match="unknown augmentation 'rotate' in --augment; registered: alternating_flip, "
                     "crop, cutmix, cutout, flip, mixup"):
    augment.parse("crop,rotate")


@pytest.mark.e2e
def test_the_training_pipeline_is_reproducible_and_resumable_with_augmentation():
  images = np.random.default_rng(1).integers(0, 256, (40, 8, 8, 3), np.uint8)
  split = data_lib.Split(images, np.arange(40, dtype=np.int32) % NUM_CLASSES)
  config = Config(augment="crop,alternating_flip,cutmix", seed=3)

  def pipeline(start_step=0):
    fn = augment.make_augment_fn(config, NUM_CLASSES, len(split))
    return data_lib.train_dataset(split, 8, 3, start_step=start_step, augment_fn=fn,
                                  mean_std=([0.5] * 3, [0.25] * 3))

  first = [b for _, b in zip(range(12), pipeline())]
  second = [b for _, b in zip(range(12), pipeline())]
  for (a_images, a_labels), (b_images, b_labels) in zip(first, second):
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
  # A resumed run builds the pipeline at its step (5 batches an epoch: step 7 is mid-epoch 2).
  resumed = iter(pipeline(start_step=7))
  for expected_images, expected_labels in first[7:]:
    images, labels = next(resumed)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


@pytest.mark.e2e
@pytest.mark.parametrize("spec", ["crop,flip,cutout", "crop,alternating_flip,cutmix", "crop,flip,cutout,mixup"])
def test_augmented_batches_do_not_depend_on_the_replica_and_worker_layout(spec):
  # Each input pipeline's per-replica slices, put back together, are the one-device global batch:
  # an example's crop, flip, cutout and λ follow its place in the global batch, not in its slice.
  images = np.random.default_rng(2).integers(0, 256, (48, 8, 8, 3), np.uint8)
  split = data_lib.Split(images, np.arange(48, dtype=np.int32) % NUM_CLASSES)
  fn = augment.make_augment_fn(Config(augment=spec, seed=5, crop_padding=2, cutout_size=3), NUM_CLASSES, 48)

  def batches(context=None, count=8):
    return [b for _, b in zip(range(count), data_lib.train_dataset(split, 8, 5, context, augment_fn=fn))]

  one_device = batches()
  for pipelines, replicas in ((1, 2), (2, 4), (4, 4)):
    shares = [batches(tf.distribute.InputContext(pipelines, p, replicas), count=8 * replicas // pipelines)
              for p in range(pipelines)]
    per_step = replicas // pipelines
    for step, (expected_images, expected_labels) in enumerate(one_device):
      parts = [share[step * per_step + r] for share in shares for r in range(per_step)]
      np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), expected_images, atol=1e-6)
      np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), expected_labels, atol=1e-6)


def test_tensorflows_own_stateless_flip_would_depend_on_the_replica_layout():
  # Why `flip` does not use tf.image.stateless_random_flip_left_right: it draws one value per image
  # of the batch it is given, so a replica's half of the global batch gets the draws of the first
  # half, whatever its place. `flip` draws for the whole global batch and keeps its slice's rows.
  images = tf.constant(np.random.default_rng(3).uniform(size=(16, 4, 4, 3)), tf.float32)
  seed = tf.constant([7, 11], tf.int64)
  whole = tf.image.stateless_random_flip_left_right(images, seed)
  halves = tf.concat([tf.image.stateless_random_flip_left_right(images[:8], seed),
                      tf.image.stateless_random_flip_left_right(images[8:], seed)], 0)
  assert not np.array_equal(whole.numpy(), halves.numpy())

  def ours(positions):
    ctx = augment.Context(seed, 0, tf.constant(0, tf.int64), positions, 16, Config(), positions, 16)
    return augment.flip(tf.gather(images, positions), None, ctx)[0]

  np.testing.assert_array_equal(ours(tf.range(16)).numpy(),
                                tf.concat([ours(tf.range(8)), ours(tf.range(8, 16))], 0).numpy())


def test_label_mixing_refuses_pairs_that_would_span_replicas():
  augment.check_pairing("crop,mixup", per_replica_batch=4, global_batch=8)
  augment.check_pairing("crop,mixup", per_replica_batch=7, global_batch=7)  # One replica: no pair spans.
  augment.check_pairing("crop,flip", per_replica_batch=3, global_batch=6)
  with pytest.raises(UserError, match=r"the per-replica batch \(3\) must be even"):
    augment.check_pairing("cutmix", per_replica_batch=3, global_batch=6)


@pytest.mark.e2e
def test_mirrored_training_with_augmentation_matches_one_device(tiny_data_dir, tmp_path):
  args = [f"--dataset={tiny_tfds.NAME}", f"--data_dir={tiny_data_dir}", "--train_steps=12", "--batch_size=16",
          "--optimizer=sgd", "--learning_rate=0.1", "--log_every_steps=6", "--augment=crop,flip,cutout,mixup",
          "--crop_padding=2", "--cutout_size=3", "--conv_filters=8", "--dense_units=16", "--eval_batch_size=10",
          "--deterministic", "--cpu_devices=2"]
  results = {}
  for name in ("default", "mirrored"):
    code, stderr = run_cli(train.main, [*args, f"--strategy={name}", f"--run_dir={tmp_path / name}"])
    assert code == 0, stderr
    results[name] = json.loads((tmp_path / name / "results.json").read_text())
  for key in ("eval_accuracy", "eval_loss", "train_loss"):
    assert results["mirrored"][key] == pytest.approx(results["default"][key], rel=1e-5), key


def test_soft_cross_entropy_smooths_and_matches_sparse_without_smoothing():
  logits = tf.constant([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
  labels = tf.constant([0, 2])
  sparse = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")(labels, logits)
  np.testing.assert_allclose(losses.SoftCrossEntropy()(labels, logits), sparse, rtol=1e-6)  # Per example.
  smoothed = losses.SoftCrossEntropy(0.3)(labels, logits)
  log_p = tf.nn.log_softmax(logits).numpy()
  targets = np.full((2, 3), 0.1)
  targets[[0, 1], [0, 2]] += 0.7
  np.testing.assert_allclose(smoothed, -(targets * log_p).sum(axis=1), rtol=1e-6)
  assert isinstance(losses.build_loss(Config(), soft_labels=False), tf.keras.losses.SparseCategoricalCrossentropy)
  assert isinstance(losses.build_loss(Config(), soft_labels=True), losses.SoftCrossEntropy)


def test_flip_tta_averages_the_logits_of_image_and_mirror():
  model = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])
  images = batch()[0]
  expected = 0.5 * (model(images) + model(images[:, :, ::-1]))
  np.testing.assert_allclose(augment.with_tta(model, "flip")(images), expected, rtol=1e-5)
  assert augment.with_tta(model, "flip_translate")(images).shape == (8, 3)
  assert augment.with_tta(model, "none") is model
