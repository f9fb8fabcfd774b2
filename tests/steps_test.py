"""The train step learns: it drives one fixed batch to 100% training accuracy."""

import tensorflow as tf

from cnn import steps
from cnn.models.simple_cnn import SimpleCNN


def test_train_step_fits_one_fixed_batch():
  tf.keras.utils.set_random_seed(0)
  images = tf.random.uniform((32, 32, 32, 3))
  labels = tf.random.uniform((32,), maxval=10, dtype=tf.int32)
  model = SimpleCNN(num_classes=10)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  train_metrics, eval_metrics = steps.Metrics("train"), steps.Metrics("eval")
  strategy = tf.distribute.get_strategy()
  train_step = steps.make_train_step(model, tf.keras.optimizers.Adam(1e-3), loss_fn, train_metrics, strategy,
                                     global_batch_size=32)
  eval_step = steps.make_eval_step(model, loss_fn, eval_metrics, strategy)

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
