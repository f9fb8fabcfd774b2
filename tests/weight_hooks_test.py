"""Freezing and lookahead (cnn/weight_hooks.py): the values they give, inside the real train step."""

import numpy as np
import pytest
import tensorflow as tf

from cnn import weight_hooks
from cnn.config import Config
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib
from optim_test import Net


def values(variables):
  return [np.array(tf.convert_to_tensor(v)) for v in variables]


def built_net():
  tf.keras.utils.set_random_seed(0)
  model = Net()
  model(tf.zeros((1, 8, 8, 3)))
  return model


def shift(model, amount):
  """Moves every float variable (BatchNorm statistics included), as a training step might."""
  for variable in model.variables:
    variable.assign(variable + amount)


def test_lookahead_moves_slow_weights_on_its_steps_and_the_model_takes_them():
  model = built_net()
  start = values(model.variables)
  hooks = weight_hooks.WeightHooks(model, lookahead_every=2, lookahead_decay=0.5, lookahead_decay_power=1.0,
                                   total_steps=5, lookahead_bn_stats="average")
  assert len(hooks.variables()) == len(model.variables) == 8  # BatchNorm's moving mean and variance too.

  shift(model, 1.0)
  hooks.lookahead(tf.constant(1))  # Not a lookahead step: nothing changes.
  for got, initial in zip(values(model.variables), start):
    np.testing.assert_allclose(got, initial + 1.0)
  shift(model, 1.0)  # The weights are now start + 2.
  hooks.lookahead(tf.constant(2))  # d = 0.5·(2/5): slow = d·start + (1 − d)·(start + 2).
  for got, slow, initial in zip(values(model.variables), values(hooks.variables()), start):
    np.testing.assert_allclose(slow, initial + 0.8 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(got, slow)
  shift(model, 1.0)
  hooks.lookahead(tf.constant(4))  # d = 0.5·(4/5) = 0.4: slow = 0.4·(s + 1.6) + 0.6·(s + 2.6).
  for got, initial in zip(values(model.variables), start):
    np.testing.assert_allclose(got, initial + 2.2, rtol=1e-6)
  shift(model, 1.0)
  hooks.lookahead(tf.constant(5))  # The last step, not a lookahead step: the model takes slow as is.
  for got, initial in zip(values(model.variables), start):
    np.testing.assert_allclose(got, initial + 2.2, rtol=1e-6)


def test_lookahead_keeps_batch_norm_statistics_by_default_as_ranger():
  # Ranger's Lookahead wraps the optimizer: it sees the trainable weights, not BatchNorm's buffers.
  model = built_net()
  start = values(model.variables)
  hooks = weight_hooks.build_weight_hooks(Config(lookahead_every=2, lookahead_decay=0.5, lookahead_decay_power=0),
                                          model, steps_per_epoch=4, total_steps=8)
  assert [v.path for v in hooks.averaged] == [v.path for v in model.trainable_variables]
  shift(model, 1.0)
  shift(model, 1.0)
  hooks.lookahead(tf.constant(2))  # α = 0.5: slow = start + 0.5·2 for the weights; statistics untouched.
  for variable, initial in zip(model.variables, start):
    expected = initial + (1.0 if variable.trainable else 2.0)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, err_msg=variable.path)
  assert len(hooks.variables()) == len(model.trainable_variables) == 6


def train_tiny(config, num_steps, steps_per_loop=1):
  """Weights of Net after `num_steps` SGD steps on random data, with the config's weight hooks."""
  model = built_net()
  images = tf.random.stateless_uniform((64, 8, 8, 3), seed=(1, 2))
  labels = tf.random.stateless_uniform((64,), seed=(3, 4), maxval=3, dtype=tf.int32)
  iterator = iter(tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).repeat())
  strategy = tf.distribute.get_strategy()
  optimizer = tf.keras.optimizers.SGD(0.1, momentum=0.9)
  optimizer.build(model.trainable_variables)
  hooks = weight_hooks.build_weight_hooks(config, model, steps_per_epoch=4, total_steps=num_steps)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  train_step = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics_lib.Metrics("train"), strategy, 8,
                                              weight_hooks=hooks)
  for step in range(0, num_steps, steps_per_loop):
    train_step(iterator, min(steps_per_loop, num_steps - step), step)
  return {v.path: v.numpy() for v in model.variables}


@pytest.mark.e2e
def test_frozen_variables_keep_their_value_from_the_freeze_step_on():
  config = Config(freeze_variables="logits/bias", freeze_after_epochs=0.5)  # 2 steps of 4 an epoch.
  at_freeze, later, unfrozen = (train_tiny(config, 2), train_tiny(config, 9),
                                train_tiny(Config(), 9))
  np.testing.assert_array_equal(later["net/logits/bias"], at_freeze["net/logits/bias"])
  assert not np.allclose(unfrozen["net/logits/bias"], at_freeze["net/logits/bias"])
  # Everything else trains on; the momentum built up before the freeze does not move the bias.
  assert not np.allclose(later["net/logits/kernel"], at_freeze["net/logits/kernel"])


@pytest.mark.e2e
@pytest.mark.parametrize("bn_stats", ["keep", "average"])
def test_weight_hooks_give_the_same_run_whatever_the_steps_per_loop(bn_stats):
  config = Config(lookahead_every=3, lookahead_bn_stats=bn_stats, freeze_variables="conv/bias", freeze_after_epochs=1.0)
  one_at_a_time, in_loops = train_tiny(config, 11), train_tiny(config, 11, steps_per_loop=4)
  without = train_tiny(Config(), 11)
  for path, value in one_at_a_time.items():
    np.testing.assert_allclose(in_loops[path], value, rtol=1e-6, atol=1e-7)
  assert not np.allclose(without["net/logits/kernel"], one_at_a_time["net/logits/kernel"])


def test_no_hooks_without_the_flags_so_the_step_has_none_of_their_ops():
  assert weight_hooks.build_weight_hooks(Config(), built_net(), 4, 10) is None
