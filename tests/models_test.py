"""Model tests: parameter counts, output shapes, and errors for impossible settings."""

import numpy as np
import pytest
import tensorflow as tf

from cnn import models
from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.errors import UserError

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
                     "resnet50, resnet56, simple_cnn, or keras:<name>$"):
    build(model="resnet9")
  with pytest.raises(UserError, match="unknown --activation=rectify; e.g. relu"):
    build(activation="rectify")
