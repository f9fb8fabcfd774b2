"""Optimizers and the gradient chain: weight decay where it should be and nowhere else, gradient scales, EMA."""

import numpy as np
import pytest
import tensorflow as tf

from cnn import gradients
from cnn import optim
from cnn.config import Config
from cnn.errors import UserError
from cnn.training import evaluator as evaluator_lib
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib


class Net(tf.keras.Model):
  """A conv with bias, a BatchNorm and a dense layer: kernels, biases, gamma and beta."""

  def __init__(self):
    super().__init__(name="net")
    self.conv = tf.keras.layers.Conv2D(2, 3, name="conv")
    self.bn = tf.keras.layers.BatchNormalization(name="bn")
    self.pool = tf.keras.layers.GlobalAveragePooling2D()
    self.logits = tf.keras.layers.Dense(3, name="logits")

  def call(self, images, training=False):
    return self.logits(self.pool(self.bn(self.conv(images), training=training)))


def built_net():
  tf.keras.utils.set_random_seed(0)
  model = Net()
  model(tf.zeros((1, 8, 8, 3)))
  for variable in model.trainable_variables:  # Non-zero everywhere, so that decay shows.
    variable.assign(tf.ones_like(variable))
  return model


def apply_through_the_chain(config, model, gradients_of):
  """One update of `model` through the gradient chain `config` asks for, with `gradients_of(variable)`."""
  variables = model.trainable_variables
  optimizer = optim.build_optimizer(config, variables)
  chain = gradients.Chain(optimizer, gradients.build_transforms(config, variables))
  chain.apply([gradients_of(v) for v in variables], variables)


def step_with_zero_gradients(config):
  """One update with all-zero gradients: any change is weight decay. Returns {path: new value}."""
  model = built_net()
  apply_through_the_chain(config, model, tf.zeros_like)
  return {v.path: v.numpy() for v in model.trainable_variables}


@pytest.mark.parametrize("optimizer, kind", [("sgd", "l2"), ("nesterov", "l2"), ("adam", "l2"),
                                             ("sgd", "decoupled"), ("adamw", "auto")])
def test_weight_decay_skips_excluded_variables(optimizer, kind):
  config = Config(optimizer=optimizer, learning_rate=0.1, weight_decay=0.5, weight_decay_type=kind,
                  weight_decay_exclude="bias,gamma,beta")
  after = step_with_zero_gradients(config)
  for path, value in after.items():
    if path.endswith(("bias", "gamma", "beta")):
      np.testing.assert_array_equal(value, 1.0, err_msg=path)
    else:
      assert (value < 1.0).all(), path
  assert set(after) == {"net/conv/kernel", "net/conv/bias", "net/bn/gamma", "net/bn/beta",
                        "net/logits/kernel", "net/logits/bias"}


@pytest.mark.parametrize("flag", ["weight_decay_exclude", "freeze_variables"])
@pytest.mark.parametrize("other", [{}, {"weight_decay": 0.1}, {"optimizer": "adamw", "weight_decay": 0.1}])
def test_a_bad_variable_pattern_is_refused_whatever_the_other_settings(flag, other):
  # Refused by the config itself, not only where (and if) the pattern is used.
  with pytest.raises(UserError, match=f"^--{flag}: bad regular expression"):
    Config(**{flag: "bias,(", **other}).validate()
  Config(**{flag: "bias,gamma", **other}).validate()


def test_coupled_l2_is_added_to_the_gradient_and_decoupled_is_scaled_by_the_rate():
  # SGD without momentum, lr 0.1, λ 0.5 on w = 1: coupled w -= 0.1·(0 + 0.5·1); decoupled w -= 0.1·0.5·1.
  for kind in ("l2", "decoupled"):
    after = step_with_zero_gradients(Config(optimizer="sgd", momentum=0.0, learning_rate=0.1, weight_decay=0.5,
                                            weight_decay_type=kind))
    np.testing.assert_allclose(after["net/conv/kernel"], 0.95, rtol=1e-6)
  with pytest.raises(UserError, match="--optimizer=adamw decays weights decoupled"):
    optim.build_optimizer(Config(optimizer="adamw", weight_decay=0.1, weight_decay_type="l2"))


def test_batch_norm_offsets_get_a_scaled_gradient():
  model = built_net()
  apply_through_the_chain(Config(optimizer="sgd", momentum=0.0, learning_rate=0.1, bn_bias_lr_scale=64), model,
                          tf.ones_like)
  got = {v.path: v.numpy() for v in model.trainable_variables}
  np.testing.assert_allclose(got["net/bn/beta"], 1.0 - 6.4, rtol=1e-6)
  np.testing.assert_allclose(got["net/bn/gamma"], 0.9, rtol=1e-6)
  np.testing.assert_allclose(got["net/logits/bias"], 0.9, rtol=1e-6)


@pytest.mark.e2e
def test_eval_uses_the_moving_average_and_training_keeps_the_raw_weights():
  tf.keras.utils.set_random_seed(0)
  model = Net()
  images = tf.random.uniform((8, 8, 8, 3))
  labels = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
  model(images)
  optimizer = optim.build_optimizer(Config(optimizer="sgd", learning_rate=0.1, ema_decay=0.9),
                                    model.trainable_variables)
  optimizer.build(model.trainable_variables)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  strategy = tf.distribute.get_strategy()
  train_step = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics_lib.Metrics("train"), strategy, 8)
  iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
  for _ in range(5):
    train_step(iterator)
  raw = [v.numpy() for v in model.trainable_variables]
  averages = [optimizer._model_variables_moving_average[optimizer._get_variable_index(v)].numpy()  # pylint: disable=protected-access
              for v in model.trainable_variables]
  assert any(not np.allclose(r, a) for r, a in zip(raw, averages))

  eval_metrics = metrics_lib.Metrics("eval")
  eval_step = evaluator_lib.make_eval_step(model, loss_fn, eval_metrics, strategy)
  with optim.averaged_weights(model, optimizer):
    for variable, average in zip(model.trainable_variables, averages):
      np.testing.assert_array_equal(variable.numpy(), average)
    eval_step((images, labels, tf.range(8)))
    expected = float(tf.reduce_mean(loss_fn(labels, model(images))))
  assert eval_metrics.result()["loss"] == pytest.approx(expected, rel=1e-6)
  for variable, value in zip(model.trainable_variables, raw):  # Raw weights are back for training.
    np.testing.assert_array_equal(variable.numpy(), value)
  assert any("average" in v.path for v in optimizer.variables)  # Saved with the optimizer's checkpoint.


def train_net(config, steps_count=4):
  """`steps_count` train steps of Net under `config.precision`; returns (model, optimizer, images, labels)."""
  tf.keras.mixed_precision.set_global_policy(config.precision)
  try:
    tf.keras.utils.set_random_seed(0)
    model = Net()
    images = tf.random.uniform((8, 8, 8, 3))
    labels = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
    model(images)
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  optimizer = optim.build_optimizer(config, model.trainable_variables, statistics=optim.averaged_statistics(model))
  optimizer.build(model.trainable_variables)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  train_step = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics_lib.Metrics("train"),
                                              tf.distribute.get_strategy(), 8)
  iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
  statistics = []  # The BatchNorm statistics after each step.
  for _ in range(steps_count):
    train_step(iterator)
    statistics.append([v.numpy() for v in optim.averaged_statistics(model)])
  return model, optimizer, statistics


@pytest.mark.e2e
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_the_moving_average_is_swapped_in_under_every_precision(precision):
  model, optimizer, _ = train_net(Config(optimizer="sgd", learning_rate=0.1, ema_decay=0.5, precision=precision))
  averages = {id(v): a for v, a in optim.moving_averages(model, optimizer)}
  raw = [v.numpy() for v in model.variables]
  with optim.averaged_weights(model, optimizer):
    for variable in model.trainable_variables:
      np.testing.assert_array_equal(variable.numpy(), averages[id(variable)].numpy(), err_msg=variable.path)
    assert any(not np.array_equal(v.numpy(), r) for v, r in zip(model.variables, raw))
  for variable, value in zip(model.variables, raw):
    np.testing.assert_array_equal(variable.numpy(), value)


def test_batch_norm_statistics_are_averaged_as_the_weights():
  decay = 0.5
  model, optimizer, history = train_net(Config(optimizer="sgd", learning_rate=0.1, ema_decay=decay), 4)
  expected = history[0]  # The first step takes the values (Keras's rule for the weights too).
  for values in history[1:]:
    expected = [decay * e + (1 - decay) * v for e, v in zip(expected, values)]
  statistics = optim.averaged_statistics(model)
  assert [v.path for v in statistics] == ["net/bn/moving_mean", "net/bn/moving_variance"]
  with optim.averaged_weights(model, optimizer):
    for variable, value in zip(statistics, expected):
      np.testing.assert_allclose(variable.numpy(), value, rtol=1e-6, err_msg=variable.path)
  np.testing.assert_array_equal(statistics[0].numpy(), history[-1][0])  # Training keeps the raw ones.
  count = len(optimizer.variables)
  optimizer.build(model.trainable_variables)  # As the Checkpointer does: building again adds nothing.
  assert len(optimizer.variables) == count


def test_a_skipped_float16_step_advances_the_schedule_and_not_adams_count():
  # Linear decay from 1.0 over 10 steps: the rate says which step the schedule saw.
  config = Config(optimizer="adam", learning_rate=1.0, lr_schedule="linear", lr_final_fraction=0.0,
                  precision="mixed_float16")
  model = built_net()
  optimizer = optim.build_optimizer(config, model.trainable_variables, total_steps=10)
  optimizer.build(model.trainable_variables)
  finite = [tf.ones_like(v) for v in model.trainable_variables]
  for gradients in (finite, [g * np.inf for g in finite], finite):  # The loop's steps 1, 2 (skipped), 3.
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
  assert float(optimizer.dynamic_scale) == 2.0**14  # Step 2 was skipped: the scale halved.
  assert int(optimizer.iterations) == 3  # The loop's step: it drives the schedule ...
  assert float(optimizer.learning_rate) == pytest.approx(0.7)
  assert int(optimizer.inner_optimizer.iterations) == 2  # ... and Adam's bias correction counts updates.


@pytest.mark.parametrize("name", ["adam", "adamw", "radam"])
def test_adams_moment_decays_and_epsilon_are_the_flags(name):
  optimizer = optim.build_optimizer(Config(optimizer=name, momentum=0.95, adam_beta2=0.99, adam_epsilon=1e-6))
  assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.95, 0.99, 1e-6)
  default = optim.build_optimizer(Config(optimizer=name))
  assert (default.beta_1, default.beta_2, default.epsilon) == (0.9, 0.999, 1e-7)  # Keras's defaults.


def test_radam_is_momentum_sgd_for_five_steps_then_rectified_adam():
  # A constant gradient 1 on w = 1: m̂_t = 1, √v̂_t = 1. For t ≤ 5 (ρ_t ≤ 5 with β2 = 0.999) the step is
  # lr·m̂; from t = 6 it is lr·r_t·m̂/√v̂ (ε aside), r_t the rectification (0.0258 at t = 6, 0.0327 at t = 7).
  optimizer = optim.build_optimizer(Config(optimizer="radam", learning_rate=0.1, adam_epsilon=1e-12))
  assert isinstance(optimizer, optim.RAdam) and optimizer.beta_2 == 0.999
  variable = tf.Variable([1.0])
  optimizer.build([variable])
  moves = []
  for _ in range(7):
    before = float(variable[0])
    optimizer.apply_gradients([(tf.ones_like(variable), variable)])
    moves.append(before - float(variable[0]))
  np.testing.assert_allclose(moves, [0.1] * 5 + [0.1 * 0.0258211, 0.1 * 0.0327388], rtol=1e-4)


def test_radam_decays_decoupled_by_default_and_takes_coupled_l2_when_asked():
  assert optim.weight_decay_type(Config(optimizer="radam", weight_decay=0.1)) == "decoupled"
  assert optim.weight_decay_type(Config(optimizer="radam", weight_decay=0.1, weight_decay_type="l2")) == "l2"
  after = step_with_zero_gradients(Config(optimizer="radam", learning_rate=0.1, weight_decay=0.5,
                                          weight_decay_exclude="bias,gamma,beta"))
  np.testing.assert_allclose(after["net/conv/kernel"], 0.95, rtol=1e-6)  # w −= lr·λ·w; the zero gradient moves nothing.
  np.testing.assert_array_equal(after["net/conv/bias"], 1.0)
