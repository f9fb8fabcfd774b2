"""The gradient chain (cnn/gradients.py): its order, and exact hand-over to Keras's optimizer."""

import numpy as np
import pytest
import tensorflow as tf

from cnn import distribute
from cnn import gradients
from cnn import optim
from cnn.config import Config
from cnn.models.simple_cnn import SimpleCNN
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib
from optim_test import built_net


def test_clipping_comes_before_the_scales_and_coupled_l2_which_it_leaves_whole():
  # SGD, lr 1, no momentum, w = 1 everywhere; gradient 3 everywhere, clipped to a global norm of 1e-3.
  config = Config(optimizer="sgd", momentum=0.0, learning_rate=1.0, clip_global_norm=1e-3, bn_bias_lr_scale=4.0,
                  weight_decay=0.5, weight_decay_type="l2", weight_decay_exclude="bias,gamma")
  model = built_net()
  variables = model.trainable_variables
  chain = gradients.Chain(optim.build_optimizer(config, variables), gradients.build_transforms(config, variables))
  applied, norm = chain.apply([tf.fill(v.shape, 3.0) for v in variables], variables)
  size = sum(int(np.prod(v.shape)) for v in variables)
  assert float(norm) == pytest.approx(3.0 * np.sqrt(size))  # Measured before clipping.
  clipped = 1e-3 / np.sqrt(size)  # Each entry after clipping.
  expected = {"net/conv/kernel": clipped + 0.5, "net/conv/bias": clipped, "net/bn/gamma": clipped,
              "net/bn/beta": 4.0 * clipped + 0.5,  # Scaled, then decayed: λ is not scaled.
              "net/logits/kernel": clipped + 0.5, "net/logits/bias": clipped}
  for variable, gradient in zip(variables, applied):
    np.testing.assert_allclose(gradient.numpy(), expected[variable.path], rtol=1e-5, err_msg=variable.path)
    np.testing.assert_allclose(variable.numpy(), 1.0 - expected[variable.path], rtol=1e-5, err_msg=variable.path)


def test_the_optimizer_gets_the_unscaled_gradient_bit_for_bit_under_float16():
  model = built_net()
  variables = model.trainable_variables
  optimizer = optim.build_optimizer(Config(optimizer="sgd", momentum=0.0, learning_rate=1.0, precision="mixed_float16"))
  optimizer.build(variables)
  rng = np.random.default_rng(0)
  wanted = [tf.constant(rng.normal(size=v.shape), tf.float32) for v in variables]
  scale = float(optimizer.dynamic_scale)
  applied, _ = gradients.Chain(optimizer).apply([g * scale for g in wanted], variables)
  for variable, gradient, g in zip(variables, applied, wanted):
    np.testing.assert_array_equal(gradient.numpy(), g.numpy())
    np.testing.assert_array_equal(variable.numpy(), (1.0 - g).numpy())  # w - lr·g, exactly.


def read(variable):
  """A (mirrored) variable's value: float() and .numpy() fail on it under tf.distribute."""
  return tf.convert_to_tensor(variable).numpy()


@pytest.mark.e2e
def test_a_float16_step_non_finite_on_one_replica_only_is_skipped_on_all():
  # Keras's LossScaleOptimizer checks the first replica's share for finiteness; the chain checks the sum.
  strategy = distribute.make_strategy(Config(strategy="mirrored", cpu_devices=2))
  tf.keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    tf.keras.utils.set_random_seed(0)
    images = tf.random.uniform((8, 12, 12, 3)).numpy()
    images[4:] = np.inf  # The second replica's half of the batch.
    labels = tf.range(8) % 3
    with strategy.scope():
      model = SimpleCNN(num_classes=3, conv_filters=(4,), pool_sizes=(2,), dense_units=(8,), dropout=0.0)
      model(images[:1])
      optimizer = optim.build_optimizer(Config(optimizer="sgd", learning_rate=0.1, precision="mixed_float16"))
      optimizer.build(model.trainable_variables)
      metrics = metrics_lib.Metrics("train")
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  train_step = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics, strategy, global_batch_size=8)
  before, scale = [read(v) for v in model.trainable_variables], read(optimizer.dynamic_scale)
  train_step(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, labels)))))
  assert read(optimizer.dynamic_scale) == scale / 2
  assert read(optimizer.inner_optimizer.iterations) == 0
  for variable, value in zip(model.trainable_variables, before):
    np.testing.assert_array_equal(read(variable), value, err_msg=variable.path)
