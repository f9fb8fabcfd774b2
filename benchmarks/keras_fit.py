"""The seeds' recipe, importable: the tutorial's Keras `Sequential`, compiled as the seeds compile it.

`benchmarks/seed_recipe.py` trains it with `model.fit` on numpy arrays, exactly as the seeds do;
`benchmarks/bench.py` times it against this project's trainer.
"""

from typing import Optional, Sequence

import tensorflow as tf


def tutorial_sequential(image_shape: Sequence[int] = (32, 32, 3),
                        num_classes: int = 10) -> tf.keras.Sequential:
  """The TensorFlow CNN tutorial's network as the seeds write it (167,562 parameters on CIFAR-10)."""
  return tf.keras.Sequential([
      tf.keras.Input(tuple(image_shape)),
      tf.keras.layers.Conv2D(32, (3, 3), activation="relu"),
      tf.keras.layers.MaxPooling2D((2, 2)),
      tf.keras.layers.Conv2D(64, (3, 3), activation="relu"),
      tf.keras.layers.MaxPooling2D((2, 2)),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(64, activation="relu"),
      tf.keras.layers.Dense(num_classes),
  ])


def compile_like_the_seeds(model: tf.keras.Model,
                           optimizer: Optional[tf.keras.optimizers.Optimizer] = None) -> tf.keras.Model:
  """`model.compile` as the seeds call it: Adam (defaults), logits cross-entropy, accuracy."""
  model.compile(optimizer=optimizer or "adam",
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
  return model
