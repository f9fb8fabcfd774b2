"""Canaries: each Keras internal that cnn relies on (listed in cnn/keras_internals.py) is still there and
still does what cnn expects. A failure names the entry: a new Keras moved or changed it."""

import importlib

import numpy as np
import tensorflow as tf

from cnn import keras_internals


def test_global_state_still_holds_the_layer_name_counter():
  module = importlib.import_module("keras.src.backend.common.global_state")
  assert hasattr(module, "get_global_attribute") and hasattr(module, "set_global_attribute"), (
      "Keras moved keras.src.backend.common.global_state's accessors: see cnn/keras_internals.py")
  tf.keras.layers.Dense(1)  # Any auto-named layer counts in it.
  counter = module.get_global_attribute(keras_internals.NAME_COUNTER)
  assert counter is not None and counter["dense"] >= 1, (
      f"Keras no longer counts auto-generated names in global attribute {keras_internals.NAME_COUNTER!r}: "
      "see cnn/keras_internals.py")


def test_fresh_layer_names_count_from_zero_whatever_was_built_before():
  for _ in range(3):
    tf.keras.layers.Conv2D(1, 1)
  with keras_internals.fresh_layer_names():
    first, second = tf.keras.layers.Conv2D(1, 1), tf.keras.layers.Conv2D(1, 1)
  assert (first.name, second.name) == ("conv2d", "conv2d_1"), "fresh_layer_names no longer resets Keras's names"
  assert tf.keras.layers.Conv2D(1, 1).name not in ("conv2d", "conv2d_1")  # The process's counter is back.


def one_ema_step(optimizer_class):
  """An optimizer of `optimizer_class` with use_ema after one update of one variable; the variable."""
  variable = tf.Variable([1.0, 2.0])
  optimizer = optimizer_class(learning_rate=0.5, use_ema=True, ema_momentum=0.9)
  optimizer.build([variable])
  optimizer.apply_gradients([(tf.constant([1.0, 1.0]), variable)])
  return optimizer, variable


def test_the_ema_averages_are_where_optim_moving_averages_reads_them():
  optimizer, variable = one_ema_step(tf.keras.optimizers.SGD)
  assert hasattr(optimizer, "_model_variables_moving_average") and hasattr(optimizer, "_get_variable_index"), (
      "Keras renamed Optimizer._model_variables_moving_average or _get_variable_index: see cnn/keras_internals.py")
  average = optimizer._model_variables_moving_average[optimizer._get_variable_index(variable)]  # pylint: disable=protected-access
  # The first update sets the average to the weights (Keras's first-step rule, as cnn/optim.py assumes).
  np.testing.assert_allclose(average.numpy(), variable.numpy(), err_msg="Keras changed its EMA's first step")


def test_apply_still_calls_the_moving_average_update_that_optim_overrides():
  calls = []

  class Counting(tf.keras.optimizers.SGD):

    def _update_model_variables_moving_average(self, trainable_variables):
      calls.append(len(trainable_variables))
      super()._update_model_variables_moving_average(trainable_variables)

  one_ema_step(Counting)
  assert calls == [1], ("Keras no longer calls Optimizer._update_model_variables_moving_average from apply: "
                        "cnn/optim.py's BatchNorm-statistics averaging would silently stop (cnn/keras_internals.py)")


def test_the_loss_scale_optimizer_still_has_an_iterations_variable_of_its_own():
  wrapper = tf.keras.optimizers.LossScaleOptimizer(tf.keras.optimizers.SGD(0.1))
  own = getattr(wrapper, "_iterations", None)
  assert own is not None and own is not wrapper.inner_optimizer.iterations, (
      "Keras's LossScaleOptimizer has no _iterations of its own any more: see cnn/keras_internals.py")


def test_adam_still_keeps_its_moments_where_radam_reads_them():
  variable = tf.Variable([1.0, 2.0])
  optimizer = tf.keras.optimizers.Adam(learning_rate=0.1, beta_1=0.5, beta_2=0.5)
  optimizer.build([variable])
  optimizer.apply_gradients([(tf.constant([2.0, 4.0]), variable)])
  index = optimizer._get_variable_index(variable)  # pylint: disable=protected-access
  moments = optimizer._momentums[index], optimizer._velocities[index]  # pylint: disable=protected-access
  np.testing.assert_allclose(moments[0].numpy(), [1.0, 2.0], err_msg="Adam._momentums moved: see cnn/keras_internals.py")
  np.testing.assert_allclose(moments[1].numpy(), [2.0, 8.0], err_msg="Adam._velocities moved: see cnn/keras_internals.py")


def test_sgd_still_keeps_its_momentum_slots_where_pytorch_sgd_reads_them():
  variable = tf.Variable([1.0, 2.0])
  optimizer = tf.keras.optimizers.SGD(learning_rate=0.5, momentum=0.9)
  optimizer.build([variable])
  optimizer.apply_gradients([(tf.constant([2.0, 4.0]), variable)])
  slot = optimizer.momentums[optimizer._get_variable_index(variable)]  # pylint: disable=protected-access
  np.testing.assert_allclose(slot.numpy(), [-1.0, -2.0], err_msg="SGD.momentums moved: see cnn/keras_internals.py")
