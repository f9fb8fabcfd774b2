"""A side-car evaluator: `python -m cnn.evaluate --run_dir=R --watch` (Orbit's `evaluate_continuously`).

It evaluates each checkpoint of a running (or finished) run as it appears in `R/checkpoints/`, in
step order, and writes what it finds into `R/watch/`: TensorBoard scalars in `watch/<prefix>/`
(`eval`, or `eval_ema` for a run with --ema_decay, whose averages it evaluates; cnn/training/eval_sets.py)
and a row per checkpoint in `watch/metrics.csv`. It stops when the run has ended (its results.json
exists) and every checkpoint listed then is evaluated, or after `timeout_seconds` without a new one.

It never gets in the trainer's way: it only reads the run (flags.txt, the `checkpoint` file the
trainer replaces atomically after each save, the checkpoints it lists) and writes only under
`watch/`. A checkpoint deleted under it (--keep_checkpoints rotation) or not readable is skipped
with a line; a watcher started again skips the steps its metrics.csv has for its split.
"""

import dataclasses
import os
import time
from typing import Optional

from absl import logging
import tensorflow as tf

from cnn import checkpoints
from cnn import inference
from cnn import run_dir as run_dir_lib
from cnn.errors import UserError
from cnn.training import eval_sets
from cnn.training import evaluator
from cnn.training import metrics_csv

WATCH_DIR = "watch"


def listed_checkpoints(run_dir: str) -> list[str]:
  """The paths of the checkpoints the run's `checkpoint` file lists now (oldest first); none if there is none yet."""
  try:
    state = tf.train.get_checkpoint_state(os.path.join(run_dir, checkpoints.CHECKPOINTS_DIR))
  except (tf.errors.OpError, ValueError):  # Not there yet, or (never seen) caught mid-replace.
    return []
  return list(state.all_model_checkpoint_paths) if state else []


@dataclasses.dataclass
class Watcher:
  """What `watch` keeps between checkpoints: the model and split, opened at the first one, and its outputs."""
  run_dir: str
  split: str
  data_dir: str
  dataset: str
  top_k: int
  evaluation: Optional[evaluator.SplitEvaluation] = None
  writer: Optional[tf.summary.SummaryWriter] = None
  prefix: str = ""

  def __post_init__(self):
    self.table = metrics_csv.MetricsCsv(os.path.join(self.run_dir, WATCH_DIR, metrics_csv.FILE))
    self.done: set[int] = set()

  def start(self) -> bool:
    """Once the run has its flags.txt: its metrics' prefix, and the steps watch/metrics.csv has for it."""
    if not self.prefix and os.path.isfile(os.path.join(self.run_dir, run_dir_lib.FLAGS_FILE)):
      config = run_dir_lib.read_config(self.run_dir)
      name = eval_sets.split_name(self.split) if self.split else eval_sets.PRIMARY
      self.prefix = eval_sets.reported_prefix(name, bool(config.ema_decay))  # restore_model gives the averages.
      self.done = {int(row["step"]) for row in self.table.rows() if row.get(f"{self.prefix}/accuracy")}
    return bool(self.prefix)

  def restore(self, path: str) -> Optional[int]:
    """Loads checkpoint `path` into the model (opening model and split at the first); returns its epoch,
    or None if it was deleted or cannot be read (it is then skipped)."""
    try:
      if self.evaluation is None:
        trained = inference.load_trained_model(self.run_dir, path, self.data_dir, self.dataset)
        self.open(evaluator.SplitEvaluation.open(trained, self.split, self.top_k))
      else:
        inference.restore_model(self.evaluation.trained.model, path)
      return int(tf.train.load_variable(path, "epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    except (UserError, *checkpoints.READ_ERRORS) as e:
      message = checkpoints.first_line(e)
      if (isinstance(e, UserError) and tf.io.gfile.exists(path + ".index")
          and not message.startswith("cannot read checkpoint")):
        raise  # Another model's checkpoint, a missing dataset: not a race with the trainer.
      logging.warning("Skipping checkpoint %s: it was deleted or cannot be read (%s)", path, message)
      self.done.add(checkpoints.checkpoint_step(path))  # Not retried.
      return None

  def open(self, evaluation: evaluator.SplitEvaluation) -> None:
    self.evaluation = evaluation
    self.writer = tf.summary.create_file_writer(os.path.join(self.run_dir, WATCH_DIR, self.prefix))

  def evaluate(self, path: str, epoch: int) -> None:
    """Evaluates checkpoint `path` (restored; of `epoch`) and writes its scalars and its row."""
    step = checkpoints.checkpoint_step(path)
    results, _ = self.evaluation.evaluate()
    with self.writer.as_default(step=step):
      for name, value in results.items():
        tf.summary.scalar(name, value)
    self.writer.flush()
    self.table.merge(step, epoch, {f"{self.prefix}/{name}": value for name, value in results.items()})
    self.done.add(step)
    print(f"step {step}: {self.evaluation.split} " + "  ".join(f"{k} {v:.4f}" for k, v in results.items()),
          flush=True)


def watch(run_dir: str, split: str = "", data_dir: str = "", dataset: str = "", top_k: int = 0,
          timeout_seconds: float = 3600.0, poll_seconds: float = 5.0) -> int:
  """Evaluates each new checkpoint of the run in `run_dir` until the run ends; returns how many it evaluated.

  Args:
    run_dir: the run directory (it may hold no checkpoint yet).
    split: the split to evaluate (empty: the run's --eval_split).
    data_dir, dataset: where the data is on this machine, as for `evaluate.evaluate_checkpoint`.
    top_k: also report top-k accuracy (0: as the run).
    timeout_seconds: stop after this long without a new checkpoint (0: never).
    poll_seconds: how often to look for checkpoints.

  Raises:
    UserError: a missing run directory, a checkpoint of another model, a missing dataset.
  """
  if not os.path.isdir(run_dir):
    raise UserError(f"--run_dir={run_dir} does not exist")
  watcher, evaluated, last_new = Watcher(run_dir, split, data_dir, dataset, top_k), 0, time.monotonic()
  print(f"watching {run_dir} for checkpoints", flush=True)
  while True:
    ended = os.path.isfile(os.path.join(run_dir, run_dir_lib.RESULTS_FILE))  # Before listing: then all are listed.
    for path in sorted(listed_checkpoints(run_dir) if watcher.start() else [], key=checkpoints.checkpoint_step):
      if checkpoints.checkpoint_step(path) in watcher.done:
        continue
      last_new = time.monotonic()
      epoch = watcher.restore(path)
      if epoch is not None:
        watcher.evaluate(path, epoch)
        evaluated += 1
    if ended:
      print(f"{run_dir} has ended; {evaluated} checkpoint(s) evaluated, in {os.path.join(run_dir, WATCH_DIR)}")
      return evaluated
    if timeout_seconds and time.monotonic() - last_new > timeout_seconds:
      logging.warning("No new checkpoint in %s for %.0f s; stopping", run_dir, timeout_seconds)
      return evaluated
    time.sleep(poll_seconds)
