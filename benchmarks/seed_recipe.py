"""The seed's own recipe, for comparison: Keras `Sequential` + `model.fit` on numpy arrays.

This is the TensorFlow CNN tutorial's code (batch 32, Adam, validation on the test set each
epoch; the network and `compile` are in `benchmarks/keras_fit.py`, shared with `benchmarks/bench.py`).
It prints test accuracy and training wall time in the same form as `cnn.train`'s
results. Run it back to back with the custom loop on the same machine:

    python benchmarks/seed_recipe.py --data_dir=../shared/tfds
    python -m cnn.train --flagfile=experiments/cifar10_tutorial.cfg --data_dir=../shared/tfds
"""

import json
import time

from absl import app
from absl import flags
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_fit  # benchmarks/keras_fit.py, beside this script.


_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory holding cifar10.")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Epochs.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")


def main(argv):
  del argv
  tf.keras.utils.set_random_seed(_SEED.value)
  (train_images, train_labels), (test_images, test_labels) = tfds.as_numpy(tfds.load(
      "cifar10", split=["train", "test"], batch_size=-1, as_supervised=True, data_dir=_DATA_DIR.value,
      download=False))
  train_images, test_images = train_images / 255.0, test_images / 255.0

  model = keras_fit.compile_like_the_seeds(keras_fit.tutorial_sequential((32, 32, 3), 10))
  start = time.perf_counter()
  model.fit(train_images, train_labels, epochs=_EPOCHS.value, batch_size=32,
            validation_data=(test_images, test_labels), verbose=2)
  wall_seconds = time.perf_counter() - start
  loss, accuracy = model.evaluate(test_images, test_labels, verbose=0)
  print(json.dumps({"recipe": "keras_fit", "eval_accuracy": accuracy, "eval_loss": loss,
                    "wall_seconds": wall_seconds, "epochs": _EPOCHS.value}))


if __name__ == "__main__":
  app.run(main)
