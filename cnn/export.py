"""Exports a run's checkpoint as a SavedModel: `python -m cnn.export --run_dir=DIR --export_dir=DIR`.

The serving signature takes uint8 images `[N, H, W, C]` at the model's size (scaled inside, as in
training); for a dataset of images of varying size, `[N, None, None, C]`: images of any (one) size,
each given the evaluation's view inside (`preprocess.decoded_eval_view`, the centre crop). It
returns `probabilities` `[N, num_classes]` and `class_ids` `[N]`. The class names travel with it:
`assets/class_names.txt` (one a line) and the `class_names` variable of the loaded object. It
loads with plain TensorFlow, no project code:

    loaded = tf.saved_model.load(export_dir)
    outputs = loaded.signatures["serving_default"](images=uint8_images)
"""

import os
import shutil
import tempfile
from typing import Sequence

from absl import flags
import tensorflow as tf

from cnn import augment
from cnn import cli
from cnn import inference
from cnn.errors import UserError

FLAGS = flags.FLAGS
cli.define_flag(flags.DEFINE_string, "run_dir", "", "The run directory to export from (required).")
cli.define_flag(flags.DEFINE_string, "checkpoint", "latest", "Checkpoint: latest, best, or a checkpoint path.")
cli.define_data_location_flags()
cli.define_flag(flags.DEFINE_string, "export_dir", "", "Directory to write the SavedModel to (required).")
cli.define_flag(flags.DEFINE_boolean, "overwrite", False, "Replace an existing export in --export_dir.")

CLASS_NAMES_FILE = "class_names.txt"


class Classifier(tf.Module):
  """What is exported: the model behind a uint8-in, named-outputs-out serving function."""

  def __init__(self, trained: inference.TrainedModel, class_names_path: str):
    super().__init__(name="classifier")
    model, info = trained.model, trained.info
    self.model = model
    # uint8 → the model's inputs, as evaluation makes them.
    self._preprocess = trained.preprocess_photos if trained.takes_any_size else trained.preprocess
    self._predict = augment.with_tta(model, trained.config.tta)
    # Tracked explicitly: a Keras 3 model's layers kept in Python lists are not tracked for saving.
    self.model_variables = list(model.variables)
    self.class_names = tf.Variable(list(info.class_names), trainable=False, name="class_names")
    self.class_names_file = tf.saved_model.Asset(class_names_path)
    shape = (None, None, info.image_shape[2]) if trained.takes_any_size else info.image_shape
    self.serve = tf.function(self._serve, input_signature=[tf.TensorSpec((None, *shape), tf.uint8, name="images")])

  def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
    logits = self._predict(self._preprocess(images), training=False)
    return {"probabilities": tf.nn.softmax(logits), "class_ids": tf.argmax(logits, -1, output_type=tf.int32)}


def export_run(run_dir: str, export_dir: str, checkpoint: str = "latest", overwrite: bool = False,
               data_dir: str = "", dataset: str = "") -> str:
  """Writes the SavedModel of a run's checkpoint to `export_dir`; returns the checkpoint path used.

  It ships the weights the run evaluated (the moving averages under --ema_decay), at the run's
  precision. `data_dir` and `dataset` locate the dataset on this machine, as for
  `inference.load_trained_model`.

  Raises:
    UserError: a missing run or checkpoint, or an `export_dir` that exists (without `overwrite`, or
      that is not an export: then it is never deleted).
  """
  export_dir = os.path.normpath(export_dir)
  if os.path.exists(export_dir):
    if not overwrite:
      raise UserError(f"--export_dir={export_dir} exists; choose another, or pass --overwrite to replace it")
    if os.path.isfile(export_dir) or (os.listdir(export_dir) and
                                      not os.path.exists(os.path.join(export_dir, "saved_model.pb"))):
      raise UserError(f"--export_dir={export_dir} is not a SavedModel directory; it is not replaced")
  trained = inference.load_trained_model(run_dir, checkpoint, data_dir, dataset)
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  # Written next to the target, then moved into place: an interrupted export leaves no half model.
  staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
  try:
    names_path = os.path.join(staging, CLASS_NAMES_FILE)
    with open(names_path, "w") as f:
      f.write("\n".join(trained.info.class_names) + "\n")
    classifier = Classifier(trained, names_path)
    model_dir = os.path.join(staging, "model")
    tf.saved_model.save(classifier, model_dir, signatures={"serving_default": classifier.serve})
    if os.path.exists(export_dir):
      shutil.rmtree(export_dir)
    os.replace(model_dir, export_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return trained.checkpoint


def main(argv: Sequence[str]) -> None:
  del argv  # Unused: cli.run rejects positional arguments.
  run_dir, export_dir = cli.required("run_dir"), cli.required("export_dir")
  path = export_run(run_dir, export_dir, FLAGS.checkpoint, FLAGS.overwrite, *cli.data_location())
  print(f"exported {path} to {export_dir} (serving signature: uint8 images -> probabilities, class_ids)")


if __name__ == "__main__":
  cli.run(main)
