"""The model zoo: parameter counts of every registered model, and each one learns."""

import numpy as np
import pytest
import tensorflow as tf

from cnn import models
from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.models.airbench import Airbench94
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib
from imagenet_models_test import PUBLISHED, head_parameters
from xresnet_test import expected_counts

CIFAR10 = DatasetInfo("cifar10", (32, 32, 3), 10, tuple(f"c{i}" for i in range(10)))
TINY = DatasetInfo("tiny", (16, 16, 3), 4, ("a", "b", "c", "d"))

# Trainable parameters on CIFAR-10 classes. ResNets: option-A shortcuts (no parameters), as He et al.
TRAINABLE = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    # 24 whitening biases + convs 24·64·9, 64·64·9, 64·256·9, 256·256·9 ×3 + BN offsets + head 256·10.
    "airbench94": 24 + 9 * (24 * 64 + 64 * 64 + 64 * 256 + 3 * 256 * 256) + 2 * (64 + 256 + 256) + 2560,
    "simple_cnn": 4 * 4 * 64 * 64 + 64 + 650 + 896 + 18_496,  # --padding=same on 16×16: 4×4×64 features.
}
# ImageNet ResNets: the published counts (1000 classes) with a 10-class head instead.
TRAINABLE.update({name: count - head_parameters(name, 1000) + head_parameters(name, 10)
                  for name, count in PUBLISHED.items()})
TRAINABLE.update(expected_counts(10))  # fast.ai's xresnets and the leaderboard's separable_resnet.
SIDE = {"separable_resnet": 48, "xresnet50_sa_maxblur": 48, "xse_resnext50_sa_maxblur": 48}  # Blur pools need 3 pixels; the others build on 16.


def trainable_count(model):
  return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_every_registered_model_has_a_checked_parameter_count():
  assert set(models.names()) == set(TRAINABLE)


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(TRAINABLE))  # One case each: pytest's processes share them out.
def test_the_parameter_count_of(name):
  side = SIDE.get(name, 16)  # Counts do not depend on the size.
  small = DatasetInfo("cifar10", (side, side, 3), 10, CIFAR10.class_names)
  model = models.build_model(Config(model=name, padding="same"), small)
  logits = model(tf.zeros((2, side, side, 3)))
  assert trainable_count(model) == TRAINABLE[name]
  assert logits.shape == (2, 10) and logits.dtype == tf.float32


# resnet32 … resnet110 are the resnet20 class with more blocks (their counts are checked above);
# compiling their train steps costs minutes on 2 cores, so only resnet20 trains here.
@pytest.mark.e2e
@pytest.mark.parametrize("name", ["simple_cnn", "resnet20", "airbench94"])
def test_each_model_trains_a_few_steps_and_the_loss_falls(name):
  tf.keras.utils.set_random_seed(0)
  images = tf.random.uniform((8, *TINY.image_shape))
  labels = tf.constant(np.arange(8) % TINY.num_classes, tf.int32)
  model = models.build_model(Config(model=name, padding="same"), TINY)
  model(images[:1])
  if hasattr(model, "initialize_from_data"):
    model.initialize_from_data(images)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  optimizer = tf.keras.optimizers.Adam(3e-3)
  optimizer.build(model.trainable_variables)
  train_step = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics_lib.Metrics("train"),
                                              tf.distribute.get_strategy(), global_batch_size=8)
  before = float(tf.reduce_mean(loss_fn(labels, model(images, training=False))))
  iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
  for _ in range(10):
    train_step(iterator)
  after = float(tf.reduce_mean(loss_fn(labels, model(images, training=True))))
  assert after < 0.7 * before, (before, after)


def test_airbench_whitening_is_frozen_and_whitens_training_patches():
  rng = np.random.default_rng(0)
  base = rng.normal(size=(64, 32, 32, 1))
  images = np.concatenate([base, 0.5 * base + 0.1 * rng.normal(size=base.shape), rng.normal(size=base.shape)],
                          axis=-1).astype(np.float32)  # Correlated channels.
  model = Airbench94(10)
  model(images[:1])
  assert model.whiten.kernel.path not in {v.path for v in model.trainable_variables}
  assert model.whiten.bias.path in {v.path for v in model.trainable_variables}
  model.initialize_from_data(images)
  kernel = model.whiten.kernel.numpy()
  np.testing.assert_allclose(kernel[..., 12:], -kernel[..., :12])  # Eigenvectors and their negatives.
  responses = (model.whiten(images).numpy() - model.whiten.bias.numpy()).reshape(-1, 24)[:, :12]
  covariance = np.cov(responses.T)
  # The leading directions come out with unit variance and uncorrelated (eps damps the smallest).
  np.testing.assert_allclose(np.diag(covariance)[:6], 1.0, atol=0.02)
  assert np.abs(covariance[:6, :6] - np.diag(np.diag(covariance[:6, :6]))).max() < 0.02


def test_airbench_convs_start_as_identity():
  model = Airbench94(10)
  model(tf.zeros((1, 32, 32, 3)))
  kernel = model.groups[1].conv1.kernel.numpy()  # 64 → 256: the first 64 filters are the identity.
  np.testing.assert_array_equal(kernel[1, 1, :, :64], np.eye(64))
  assert np.abs(kernel[0, 0, :, :64]).max() == 0.0  # Only the centre tap.
  assert np.abs(kernel[..., 64:]).max() > 0.0  # The other filters are random.


def test_airbench_head_starts_as_pytorchs_linear():
  # Before: Keras's Glorot, U(±0.150) at 256 → 10, where the reference code's nn.Linear is U(±1/16).
  model = Airbench94(10)
  model(tf.zeros((1, 32, 32, 3)))
  kernel, bound = model.head.kernel.numpy(), 256 ** -0.5
  assert np.abs(kernel).max() <= bound
  np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.1)  # Uniform's; Glorot's is 2.4× wider.
