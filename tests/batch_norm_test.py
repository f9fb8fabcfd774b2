"""The fused BatchNormalization (cnn/models/batch_norm.py) computes what Keras's layer computes.

Outputs, gradients and moving statistics in every precision, the same variables (old checkpoints
restore), the cases left to Keras's layer, and whole training steps (EMA, lookahead, MirroredStrategy)
against models built with Keras's layer.
"""

import contextlib

import numpy as np
import pytest
import tensorflow as tf

from cnn import distribute
from cnn import models
from cnn import optim
from cnn.checkpoints import model_variables
from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.models import batch_norm
from cnn.training import trainer

SMALL = DatasetInfo("small", (16, 16, 3), 5, tuple(f"c{i}" for i in range(5)))
# bfloat16 keeps 8 bits of mantissa, float16 11: outputs agree to their rounding.
TOLERANCE = {"float32": 1e-5, "mixed_bfloat16": 2e-2, "mixed_float16": 2e-3}


@contextlib.contextmanager
def keras_layers():
  """Models built inside use Keras's own BatchNormalization (what checkpoints of earlier runs hold)."""
  batch_norm.FUSED = False
  try:
    yield
  finally:
    batch_norm.FUSED = True


def paired_layers(precision, **settings):
  """Keras's layer and the fused one, built on [4, 6, 5, 8] inputs with the same random non-default values."""
  with models.precision_policy(precision):
    keras_bn = tf.keras.layers.BatchNormalization(name="bn", **settings)
    fused_bn = batch_norm.FusedBatchNormalization(name="bn", **settings)
  rng = np.random.default_rng(0)
  for layer in (keras_bn, fused_bn):
    layer.build((4, 6, 5, 8))
  for keras_variable, fused_variable in zip(keras_bn.weights, fused_bn.weights):
    value = rng.uniform(0.5, 1.5, keras_variable.shape).astype(np.float32)
    keras_variable.assign(value)
    fused_variable.assign(value)
  return keras_bn, fused_bn


def forward_backward(layer, x, training):
  """Outputs, gradients (inputs, then trainable weights) and the moving statistics after a call."""
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, training=training)
    # A different weight for each value: the gradient of a per-channel sum through BN is 0.
    loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.random.stateless_normal(x.shape, seed=(9, 9)))
  grads = tape.gradient(loss, [x, *layer.trainable_weights])
  return [y, *grads, *[tf.identity(v) for v in layer.non_trainable_weights]]


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("settings", [
    dict(momentum=0.9, epsilon=1e-5),  # The ResNets'.
    dict(momentum=0.4, epsilon=1e-12, scale=False),  # airbench94's.
    dict(momentum=0.99, epsilon=1e-3, center=False),  # Keras's defaults, no beta.
])
def test_outputs_gradients_and_moving_statistics_match_keras(precision, settings):
  keras_bn, fused_bn = paired_layers(precision, **settings)
  x = tf.random.stateless_normal((4, 6, 5, 8), seed=(1, 2), mean=3.0, stddev=2.0)
  x = tf.cast(x, keras_bn.compute_dtype)
  for training in (True, True, False):  # Two updates of the moving statistics, then inference.
    expected = forward_backward(keras_bn, x, training)
    got = forward_backward(fused_bn, x, training)
    assert got[0].dtype == expected[0].dtype
    for e, g in zip(expected, got):
      e, g = tf.cast(e, tf.float32).numpy(), tf.cast(g, tf.float32).numpy()
      np.testing.assert_allclose(g, e, rtol=TOLERANCE[precision], atol=TOLERANCE[precision] * np.abs(e).max())
  # The moving variance is the biased one, as Keras's (the op's own is n / (n - 1) larger).
  np.testing.assert_allclose(fused_bn.moving_variance.numpy(), keras_bn.moving_variance.numpy(), rtol=1e-5)


def test_the_fused_kernel_runs_for_4d_channels_last():
  _, fused_bn = paired_layers("float32", momentum=0.9, epsilon=1e-5)
  graph = tf.function(lambda x: fused_bn(x, training=True)).get_concrete_function(
      tf.TensorSpec((4, 6, 5, 8))).graph
  op_types = {op.type for op in graph.get_operations()}
  assert "FusedBatchNormV3" in op_types and "Mean" not in op_types


@pytest.mark.parametrize("settings, shape", [
    (dict(), (6, 8)),  # 2-D.
    (dict(axis=1), (4, 8, 5, 6)),  # Channels first.
    (dict(renorm=True), (4, 6, 5, 8)),
    (dict(synchronized=True), (4, 6, 5, 8)),
])
def test_what_the_fused_kernel_does_not_do_is_left_to_keras(settings, shape):
  keras_bn = tf.keras.layers.BatchNormalization(**settings)
  fused_bn = batch_norm.FusedBatchNormalization(**settings)
  x = tf.random.stateless_normal(shape, seed=(3, 4))
  for layer in (keras_bn, fused_bn):
    layer(x, training=True)
  np.testing.assert_array_equal(fused_bn(x, training=True), keras_bn(x, training=True))
  for e, g in zip(keras_bn.weights, fused_bn.weights):
    np.testing.assert_array_equal(g.numpy(), e.numpy())


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["resnet18", "resnet20", "airbench94"])
def test_checkpoints_of_keras_layers_restore_into_fused_layers(name, tmp_path):
  info = SMALL
  with keras_layers():
    old = models.build_model(Config(model=name), info)
  old(tf.zeros((2, *info.image_shape)))
  images = tf.random.stateless_uniform((4, *info.image_shape), seed=(5, 6))
  old(images, training=True)  # Moves the moving statistics off their initial values.
  path = tf.train.Checkpoint(model=model_variables(old)).save(str(tmp_path / "ckpt"))
  new = models.build_model(Config(model=name), info)
  new(tf.zeros((2, *info.image_shape)))  # Built before restoring (TF_NOTES 3).
  assert any(isinstance(layer, batch_norm.FusedBatchNormalization) for layer in new._flatten_layers())
  assert [v.path for v in new.variables] == [v.path for v in old.variables]
  tf.train.Checkpoint(model=model_variables(new)).restore(path).assert_consumed()
  np.testing.assert_allclose(new(images, training=False), old(images, training=False), rtol=1e-4, atol=1e-4)


def train(config, strategy, steps=2):
  """Model variables, EMA averages and lookahead slow weights after `steps` train steps of `config`."""
  tf.keras.utils.set_random_seed(0)
  model, _ = trainer.build_model_in_scope(config, SMALL, strategy)
  training = trainer.build_training(config, model, strategy, steps_per_epoch=10, total_steps=100)
  images = tf.random.stateless_uniform((config.batch_size, *SMALL.image_shape), seed=(7, 8))
  labels = tf.range(config.batch_size) % SMALL.num_classes
  dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(dataset))
  for step in range(steps):
    training.train_loop(iterator, 1, step)
  averages = [average for _, average in optim.moving_averages(model, training.optimizer)]
  return {"model": model.variables, "ema": averages, "lookahead": training.weight_hooks.slow}


@pytest.mark.e2e
@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_training_steps_with_ema_and_lookahead_match_keras_layers(strategy_name):
  config = Config(model="resnet20", batch_size=8, optimizer="sgd", learning_rate=0.1, ema_decay=0.5,
                  lookahead_every=2, lookahead_decay=0.5, strategy=strategy_name, cpu_devices=2)
  strategy = distribute.make_strategy(config)
  with keras_layers():
    expected = train(config, strategy)
  got = train(config, strategy)
  statistics = [v.path for v in got["model"] if "moving_" in v.path]
  assert len(statistics) == 2 * 19  # resnet20: 19 BatchNorms, each averaged by EMA and lookahead.
  assert len(got["ema"]) == len(expected["ema"]) and len(got["lookahead"]) == len(expected["lookahead"])
  for kind, variables in expected.items():
    for e, g in zip(variables, got[kind]):
      # To the rounding of float32 sums taken in another order (Keras's moments, oneDNN's kernel).
      name = getattr(e, "path", e.name)  # Lookahead's slow weights are plain tf.Variables.
      np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"{kind} {name}")
