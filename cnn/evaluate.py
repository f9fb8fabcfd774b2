"""Evaluates a run's checkpoint: `python -m cnn.evaluate --run_dir=DIR [--checkpoint=best] [--split=test]`.

Prints loss, accuracy, top-k accuracy, per-class accuracy and the confusion matrix, and writes them
to `<run_dir>/eval_<split>.json`. The model and data settings come from the run's flags.txt. With
`--watch` it evaluates each checkpoint of a running job as it appears (cnn/watch.py).
"""

import dataclasses
import json
import os
import re
from typing import Any, Sequence

from absl import flags
import numpy as np
import tensorflow as tf

from cnn import cli
from cnn import inference
from cnn import watch
from cnn.training import evaluator

FLAGS = flags.FLAGS
cli.define_flag(flags.DEFINE_string, "run_dir", "", "The run directory to evaluate (required).")
cli.define_flag(flags.DEFINE_string, "checkpoint", "latest", "Checkpoint: latest, best, or a checkpoint path.")
cli.define_data_location_flags()
cli.define_flag(flags.DEFINE_string, "split", "", "TFDS split to evaluate on (empty: the run's --eval_split).")
cli.define_flag(flags.DEFINE_integer, "eval_top_k", 0, "Also report top-k accuracy (0: as the run; 1: none).",
                lower_bound=0)
cli.define_flag(flags.DEFINE_bool, "watch", False,
                "Side-car evaluator: evaluate each new checkpoint of the run as it appears, into "
                "<run_dir>/watch/ (summaries and metrics.csv), until the run ends (cnn/watch.py).")
cli.define_flag(flags.DEFINE_float, "watch_timeout_seconds", 3600.0,
                "--watch: stop after this long without a new checkpoint (0: never).", lower_bound=0.0)
cli.define_flag(flags.DEFINE_float, "watch_poll_seconds", 5.0, "--watch: seconds between looks for checkpoints.",
                lower_bound=0.0)
cli.define_flag(flags.DEFINE_boolean, "skip_bad_images", False, "A folder dataset: leave out (and count, in the "
                "log) the split's images that do not decode, as the run's own --skip_bad_images would.")

_MAX_MATRIX_CLASSES = 20  # A larger confusion matrix is only written to the JSON file.


def evaluate_checkpoint(run_dir: str, checkpoint: str = "latest", split: str = "", data_dir: str = "",
                        dataset: str = "", top_k: int = 0, skip_bad_images: bool = False) -> dict[str, Any]:
  """Loss, accuracy, top-k accuracy, per-class accuracy and confusion matrix of a run's checkpoint on a split.

  The model and its inputs are the run's evaluations' (`evaluator.SplitEvaluation`), so the run's eval split
  gives the numbers the run logged for the checkpoint.

  Args:
    run_dir: the run directory.
    checkpoint: "latest", "best", or a checkpoint path.
    split: a TFDS split (slicing allowed) or a folder dataset's split folder; empty for the run's eval split.
    data_dir: the dataset's location on this machine, if not the run's --data_dir.
    dataset: for a run on `folder:PATH`, the folder on this machine (`folder:OTHER_PATH`).
    top_k: also report top-k accuracy (0: as the run, --eval_top_k; 1: none).
    skip_bad_images: leave out the folder split's files that do not decode (else the run's setting).

  Returns:
    The contents of `<run_dir>/eval_<split>.json`; `confusion_matrix[i][j]` counts examples of
    class i predicted as class j.
  """
  trained = inference.load_trained_model(run_dir, checkpoint, data_dir, dataset)
  if skip_bad_images:
    trained.source = dataclasses.replace(trained.source, skip_bad_images=True)
  evaluation = evaluator.SplitEvaluation.open(trained, split, top_k)
  split, examples = evaluation.split, evaluation.examples
  eval_results, outputs = evaluation.evaluate()
  matrix = tf.math.confusion_matrix(examples.labels, outputs["predictions"],
                                    num_classes=trained.info.num_classes).numpy()
  per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
  results = {
      "checkpoint": trained.checkpoint,
      "split": split,
      "num_examples": int(matrix.sum()),
      **eval_results,
      "class_names": list(trained.info.class_names),
      "per_class_accuracy": {name: float(a) for name, a in zip(trained.info.class_names, per_class)},
      "confusion_matrix": matrix.tolist(),
  }
  path = os.path.join(run_dir, f"eval_{re.sub(r'[^A-Za-z0-9_.-]+', '_', split).strip('_')}.json")
  with open(path + ".tmp", "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
  os.replace(path + ".tmp", path)
  results["path"] = path
  return results


def format_table(results: dict[str, Any]) -> str:
  """The results as text: a summary line, per-class accuracy, and the confusion matrix."""
  names, matrix = results["class_names"], np.array(results["confusion_matrix"])
  width = max(len(n) for n in names)
  top_k = "".join(f", {key.replace('_', ' ')} {value:.4f}" for key, value in results.items()
                  if re.fullmatch(r"top\d+_accuracy", key))
  lines = [f"{results['split']}: {results['num_examples']} examples, loss {results['loss']:.4f}, "
           f"accuracy {results['accuracy']:.4f}{top_k}  ({results['checkpoint']})", "",
           f"{'class':<{width}}  {'examples':>8}  accuracy"]
  for i, name in enumerate(names):
    lines.append(f"{name:<{width}}  {matrix[i].sum():>8}  {results['per_class_accuracy'][name]:.4f}")
  if len(names) <= _MAX_MATRIX_CLASSES:
    cell = max(len(str(matrix.max())), len(str(len(names) - 1))) + 1
    lines += ["", "confusion matrix (rows: true class, columns: predicted class id)",
              f"{'':<{width}} " + "".join(f"{j:>{cell}}" for j in range(len(names)))]
    lines += [f"{name:<{width}} " + "".join(f"{v:>{cell}}" for v in matrix[i]) for i, name in enumerate(names)]
  else:
    lines += ["", f"confusion matrix: {len(names)} classes, see {results['path']}"]
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  del argv  # Unused: cli.run rejects positional arguments.
  if FLAGS.watch:
    watch.watch(cli.required("run_dir"), FLAGS.split, *cli.data_location(), top_k=FLAGS.eval_top_k,
                timeout_seconds=FLAGS.watch_timeout_seconds, poll_seconds=FLAGS.watch_poll_seconds)
    return
  results = evaluate_checkpoint(cli.required("run_dir"), FLAGS.checkpoint, FLAGS.split, *cli.data_location(),
                                top_k=FLAGS.eval_top_k, skip_bad_images=FLAGS.skip_bad_images)
  print(format_table(results))
  print(f"\nwritten to {results['path']}")


if __name__ == "__main__":
  cli.run(main)
