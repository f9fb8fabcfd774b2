"""Model tests: parameter counts, output shapes, and errors for impossible settings."""

import numpy as np
import pytest
import tensorflow as tf

from cnn import distribute
from cnn import models
from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.errors import UserError
from cnn.models import activations

CIFAR10 = DatasetInfo("cifar10", (32, 32, 3), 10, tuple(f"c{i}" for i in range(10)))
MNIST = DatasetInfo("mnist", (28, 28, 1), 10, tuple(str(i) for i in range(10)))
CIFAR100 = DatasetInfo("cifar100", (32, 32, 3), 100, tuple(f"c{i}" for i in range(100)))


def build(info=CIFAR10, **settings):
  model = models.build_model(Config(**settings), info)
  return model, model(tf.zeros((2, *info.image_shape)))


def test_tutorial_network_has_the_tutorials_parameter_count_and_logits():
  model, logits = build()
  assert model.count_params() == 167_562
  assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 167_562
  assert logits.shape == (2, 10) and logits.dtype == tf.float32
  assert [layer.name for layer in model.features] == ["conv1", "pool1", "conv2", "pool2"]


def test_tf_docs_variant_with_a_third_unpooled_conv():
  model, _ = build(conv_filters=(32, 64, 64), pool_size=(2, 2, 0))
  assert model.count_params() == 122_570


def test_grayscale_input_and_hundred_classes():
  model, logits = build(MNIST)
  # 28→26→13→11→5: 5*5*64 features into Dense64.
  assert model.count_params() == 320 + 18_496 + (1600 * 64 + 64) + 650
  assert logits.shape == (2, 10)
  _, logits = build(CIFAR100)
  assert logits.shape == (2, 100)


def test_flags_shape_the_network():
  model, logits = build(conv_filters=(8,), kernel_size=5, strides=2, padding="same", pool_size=(0,),
                        dense_units=(16, 8), activation="tanh")
  # 32→16 (same, stride 2), no pool: 16*16*8 features → 16 → 8 → 10.
  assert model.count_params() == (5 * 5 * 3 * 8 + 8) + (2048 * 16 + 16) + (16 * 8 + 8) + (8 * 10 + 10)
  assert logits.shape == (2, 10)
  assert model.hidden[0].activation is tf.keras.activations.tanh


def test_dropout_acts_only_in_training():
  model, _ = build(dropout=0.5)
  images = tf.random.uniform((4, 32, 32, 3))
  np.testing.assert_array_equal(model(images), model(images))
  assert not np.array_equal(model(images, training=True), model(images, training=True))


def test_a_stack_that_shrinks_the_image_below_1x1_names_the_layer():
  # 32 →conv 30 →pool 15 →conv 13 →pool 6 →conv 4 →pool 2 →conv 3×3 valid: nothing left.
  with pytest.raises(UserError, match="layer conv4 shrinks the image below 1×1"):
    build(conv_filters=(32, 64, 64, 64))
  with pytest.raises(UserError, match="layer pool3 shrinks"):
    build(MNIST, conv_filters=(8, 8, 8), pool_size=(2, 2, 4))


def test_unknown_names_list_the_valid_ones():
  with pytest.raises(UserError, match="unknown --model=resnet9; registered models: airbench94, resnet101, "
                     "resnet110, resnet152, resnet18, resnet20, resnet26, resnet32, resnet34, resnet44, "
                     "resnet50, resnet56, separable_resnet, simple_cnn, xresnet101, xresnet152, xresnet18, "
                     "xresnet18_sa, xresnet34, xresnet34_sa, xresnet50, xresnet50_sa, xresnet50_sa_maxblur, "
                     "xresnet50_sa_maxpool, xse_resnext50, xse_resnext50_sa, xse_resnext50_sa_maxblur, "
                     "xse_resnext50_sa_maxpool, or keras:<name>$"):
    build(model="resnet9")
  with pytest.raises(UserError, match="unknown --activation=rectify; e.g. relu"):
    build(activation="rectify")


def reference_mish(x):
  return x * tf.math.tanh(tf.math.softplus(x))


@pytest.mark.parametrize("dtype, gradient_tolerance", [
    (tf.float32, 1e-5),
    # Keras's gradient rounds each of its five ops to bfloat16; ours rounds once: one bfloat16 step apart.
    (tf.bfloat16, 2 ** -6),
])
def test_fast_mish_has_keras_values_and_gradients(dtype, gradient_tolerance):
  assert activations.get("mish") is activations.mish
  x = tf.cast(tf.concat([tf.linspace(-90.0, 90.0, 20001), tf.random.stateless_normal([1000], (1, 2))], 0), dtype)
  results = []
  for mish in (reference_mish, tf.keras.activations.mish, activations.mish):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = mish(x)
    gradient = tape.gradient(y, x)
    assert y.dtype == gradient.dtype == dtype
    results.append((tf.cast(y, tf.float32).numpy(), tf.cast(gradient, tf.float32).numpy()))
  (expected_y, expected_gradient), (keras_y, _), (y, gradient) = results
  np.testing.assert_array_equal(keras_y, expected_y)  # Keras's formula is the reference.
  np.testing.assert_array_equal(y, expected_y)
  assert np.isfinite(gradient).all()
  np.testing.assert_allclose(gradient, expected_gradient, rtol=gradient_tolerance, atol=gradient_tolerance)


def test_fast_mish_in_a_compiled_step_and_under_a_mirrored_strategy():
  x = tf.random.stateless_normal((4, 8, 8, 16), (3, 4))
  strategy = distribute.make_strategy(Config(strategy="mirrored", cpu_devices=2))  # One per process.

  @tf.function
  def gradients(x):
    def replica(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(activations.mish(x) * x)
      return tape.gradient(loss, x)
    return strategy.run(replica, args=(x,))

  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(reference_mish(x) * x)
  expected = tape.gradient(loss, x)
  replicas = strategy.experimental_local_results(gradients(x))
  assert len(replicas) == 2
  for gradient in replicas:
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-6)
