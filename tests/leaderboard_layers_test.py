"""SimpleSelfAttention and MaxBlurPool against numpy and their authors' definitions (tests/leaderboard_twins.py)."""

import numpy as np
import pytest
import tensorflow as tf

from cnn.models.blur_pool import MaxBlurPool
from cnn.models.self_attention import SimpleSelfAttention


def numpy_max_blur_pool(x: np.ndarray) -> np.ndarray:
  """[N, H, W, C]: max over 3×3 (padding never wins), 5×5 binomial blur on a reflected border, 2×2 means."""
  n, h, w, c = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  maxima = np.max([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)
  reflected = np.pad(maxima, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
  taps = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
  blurred = sum(taps[i] * taps[j] * reflected[:, i:i + h, j:j + w] for i in range(5) for j in range(5))
  blurred = blurred[:, :h // 2 * 2, :w // 2 * 2]
  return blurred.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 10, 2)])
def test_max_blur_pool_is_max_then_binomial_blur_then_halving(shape):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  got = MaxBlurPool()(tf.constant(x)).numpy()
  assert got.shape == (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
  np.testing.assert_allclose(got, numpy_max_blur_pool(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_max_blur_pool_is_kornias_as_the_leaderboard_ran_it():
  twins = pytest.importorskip("leaderboard_twins", reason="PyTorch measures this: pip install -e '.[parity]'")
  x = np.random.default_rng(1).normal(size=(2, 9, 12, 4)).astype(np.float32)
  theirs = twins.max_blur_pool(twins.torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(MaxBlurPool()(tf.constant(x)).numpy(), theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [False, True])
def test_self_attention_starts_as_the_identity(training):
  x = tf.random.normal((2, 5, 6, 16))
  layer = SimpleSelfAttention()
  np.testing.assert_array_equal(layer(x, training=training).numpy(), x.numpy())
  assert float(layer.gamma[0]) == 0.0 and layer.kernel.shape == (16, 16)
  assert [v.name for v in layer.trainable_variables] == ["kernel", "gamma"]


def test_symmetric_self_attention_uses_the_symmetric_part_of_its_kernel():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  layer = SimpleSelfAttention(symmetric=True, spectral_norm=False)
  layer(tf.constant(x))
  kernel = rng.normal(size=(5, 5)).astype(np.float32)
  layer.kernel.assign(kernel)
  layer.gamma.assign([0.3])
  flat = x.reshape(2, 12, 5).astype(np.float64)
  symmetric = (kernel + kernel.T) / 2
  expected = 0.3 * (flat @ symmetric) @ (flat.transpose(0, 2, 1) @ flat) + flat
  np.testing.assert_allclose(layer(tf.constant(x)).numpy(), expected.reshape(x.shape), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_self_attention_computes_fastais_values(training):
  twins = pytest.importorskip("leaderboard_twins", reason="PyTorch measures this: pip install -e '.[parity]'")
  torch = twins.torch
  torch.manual_seed(0)
  theirs = twins.SelfAttention(8)
  with torch.no_grad():
    theirs.gamma.fill_(0.05)
  theirs.train(training)
  x = np.random.default_rng(3).normal(size=(2, 8, 5, 3)).astype(np.float32)  # NCHW, 15 positions.
  ours = SimpleSelfAttention()
  ours(tf.constant(x.transpose(0, 2, 3, 1)))
  conv = theirs.conv
  ours.kernel.assign(conv.weight_orig.detach().numpy()[:, :, 0].T)
  ours.gamma.assign(theirs.gamma.detach().numpy())
  ours.u.assign(conv.weight_u.numpy())
  ours.v.assign(conv.weight_v.numpy())
  expected = theirs(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
  got = ours(tf.constant(x.transpose(0, 2, 3, 1)), training=training).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert np.abs(got - x.transpose(0, 2, 3, 1)).max() > 1e-2  # Gamma 0.05 moves it.
  np.testing.assert_allclose(ours.u.numpy(), conv.weight_u.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ours.v.numpy(), conv.weight_v.numpy(), rtol=1e-5, atol=1e-6)
