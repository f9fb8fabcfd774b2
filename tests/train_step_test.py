"""The train step learns (it drives one fixed batch to 100% training accuracy) and clips its gradients."""

import numpy as np
import pytest
import tensorflow as tf

from cnn import gradients
from cnn.models.simple_cnn import SimpleCNN
from cnn.training import evaluator as evaluator_lib
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib


@pytest.mark.e2e
def test_train_step_fits_one_fixed_batch():
  tf.keras.utils.set_random_seed(0)
  images = tf.random.uniform((32, 32, 32, 3))
  labels = tf.random.uniform((32,), maxval=10, dtype=tf.int32)
  model = SimpleCNN(num_classes=10)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  train_metrics, eval_metrics = metrics_lib.Metrics("train"), metrics_lib.Metrics("eval")
  strategy = tf.distribute.get_strategy()
  train_step = train_step_lib.make_train_loop(model, tf.keras.optimizers.Adam(1e-3), loss_fn, train_metrics, strategy,
                                              global_batch_size=32)
  eval_step = evaluator_lib.make_eval_step(model, loss_fn, eval_metrics, strategy)

  eval_step((images, labels, tf.range(32)))
  before = eval_metrics.result()
  iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
  for _ in range(100):
    train_step(iterator)
  eval_metrics.reset()
  eval_step((images, labels, tf.range(32)))
  after = eval_metrics.result()

  assert before["accuracy"] < 0.5
  assert after["accuracy"] == 1.0
  assert after["loss"] < 0.1 * before["loss"]
  # Train metrics average over every step since the last reset.
  assert 0.0 < train_metrics.result()["accuracy"] < 1.0


def test_train_step_clips_the_gradients_to_their_global_norm():
  tf.keras.utils.set_random_seed(0)
  images, labels = tf.random.uniform((8, 16, 16, 3)), tf.range(8) % 3
  model = SimpleCNN(num_classes=3, conv_filters=(4,), pool_sizes=(2,), dense_units=(8,), dropout=0.0)
  model(images)
  before = [v.numpy() for v in model.trainable_variables]
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  train_step = train_step_lib.make_train_loop(model, tf.keras.optimizers.SGD(1.0), loss_fn,
                                              metrics_lib.Metrics("train"), tf.distribute.get_strategy(),
                                              global_batch_size=8, transforms=[gradients.clip_by_global_norm(1e-3)])
  outputs = train_step(iter(tf.data.Dataset.from_tensors((images, labels)).repeat()))
  moved = np.sqrt(sum(np.sum((b - v.numpy())**2) for b, v in zip(before, model.trainable_variables)))
  assert float(outputs["gradient_norm"]) > 1e-2  # The norm before clipping is reported ...
  assert moved == pytest.approx(1e-3, rel=1e-4)  # ... and the update is clipped to 1e-3 (learning rate 1).
