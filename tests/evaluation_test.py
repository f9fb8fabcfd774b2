"""What a run reports at each evaluation: top-k accuracy, raw and EMA weights side by side, named eval
sets on their own cadence, metrics.csv, the N best checkpoints by a named metric, and the side-car
evaluator (`cnn.evaluate --watch`) beside a live trainer."""

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from cnn import train  # Before the other entry points: they share its flags.
from cnn import checkpoints
from cnn import durations
from cnn import evaluate
from cnn.config import Config
from cnn.errors import UserError
from cnn.training import controller
from cnn.training import eval_sets
from cnn.training import metrics_csv
from conftest import REPO, run_cli
from train_test import scalar_tags
import tiny_tfds

TINY = ["--conv_filters=8", "--dense_units=16", "--batch_size=8"]  # 12 steps an epoch.


def tiny_args(data_dir, run_dir, *extra):
  return [f"--dataset={tiny_tfds.NAME}", f"--data_dir={data_dir}", "--nodownload", *TINY, f"--run_dir={run_dir}",
          "--histogram_every_steps=0", "--summary_images=0", "--nowrite_graph", *extra]


def tiny_run(data_dir, run_dir, *extra):
  code, stderr = run_cli(train.main, tiny_args(data_dir, run_dir, *extra))
  assert code == 0, stderr
  return json.loads((run_dir / "results.json").read_text())


def scalar_events(event_dir, tag):
  events = event_accumulator.EventAccumulator(str(event_dir), size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  return events.Tensors(tag)


def csv_rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


# ------------------------------------------------------------------ Top-k accuracy.

@pytest.mark.e2e
def test_top5_accuracy_is_reported_where_there_are_more_than_10_classes(mock_tfds, tmp_path):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, ["--dataset=cifar100", "--train_split=train[:64]", "--eval_split=test[:64]",
                                      "--train_steps=4", "--batch_size=16", f"--run_dir={run_dir}",
                                      "--histogram_every_steps=0", "--nowrite_graph"])
  assert code == 0, stderr
  results = json.loads((run_dir / "results.json").read_text())
  assert results["eval_accuracy"] <= results["eval_top5_accuracy"] == results["eval/top5_accuracy"] <= 1
  assert set(scalar_tags(run_dir / "eval")) == {"loss", "accuracy", "top5_accuracy"}
  assert list(csv_rows(run_dir / "metrics.csv")[0]) == ["step", "epoch", "eval/loss", "eval/accuracy",
                                                        "eval/top5_accuracy"]
  code, stderr = run_cli(evaluate.main, [f"--run_dir={run_dir}"])
  assert code == 0, stderr
  assert json.loads((run_dir / "eval_test_64.json").read_text())["top5_accuracy"] == results["eval_top5_accuracy"]


def test_top_k_is_off_up_to_10_classes_and_available_on_request():
  assert eval_sets.top_k(Config(), 10) == 0 and eval_sets.top_k(Config(), 11) == 5
  assert eval_sets.top_k(Config(eval_top_k=2), 3) == 2 and eval_sets.top_k(Config(eval_top_k=1), 100) == 0
  with pytest.raises(UserError, match="--eval_top_k=4 is more than the dataset's 3 classes"):
    eval_sets.top_k(Config(eval_top_k=4), 3)


def test_top_k_metric_counts_a_label_within_the_k_highest_logits():
  from cnn.training import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  metrics = metrics_lib.Metrics("eval", top_k=2)
  logits = tf.constant([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
  metrics.update(tf.zeros([3]), tf.constant([0, 1, 2]), logits)
  assert metrics.result() == pytest.approx({"loss": 0.0, "accuracy": 1 / 3, "top2_accuracy": 2 / 3})


# ------------------------------------------------------------------ Raw and EMA, named sets, cadence, best.

@pytest.fixture(scope="module")
def ema_run(tiny_data_dir, tmp_path_factory):
  """24 steps with EMA, evaluated at step 0 and every 5 steps on the eval split and two named sets."""
  run_dir = tmp_path_factory.mktemp("ema") / "run"
  results = tiny_run(tiny_data_dir, run_dir, "--train_steps=24", "--ema_decay=0.9", "--eval_every_steps=5",
                     "--eval_at_start", "--eval_splits=val=train[:30],test[:10]", "--eval_top_k=2",
                     "--keep_best=2", "--best_metric=eval/loss", "--checkpoint_every_steps=0")
  return run_dir, results


@pytest.mark.e2e
def test_ema_runs_report_raw_and_averaged_weights_side_by_side(ema_run):
  run_dir, results = ema_run
  for prefix in ("eval", "eval_ema", "val", "val_ema", "test_10", "test_10_ema"):
    assert set(scalar_tags(run_dir / prefix)) == {"loss", "accuracy", "top2_accuracy"}, prefix
  raw, ema = scalar_tags(run_dir / "eval")["loss"], scalar_tags(run_dir / "eval_ema")["loss"]
  assert [s for s, _ in raw] == [s for s, _ in ema] == [0, 5, 10, 15, 20, 24]
  assert raw[-1][1] != ema[-1][1]  # Not the same weights.
  # results.json's eval_* are the reported weights (the averages), as before; every metric by name too.
  assert (results["eval_loss"], results["eval_accuracy"]) == (results["eval_ema/loss"], results["eval_ema/accuracy"])
  assert results["eval/loss"] == pytest.approx(raw[-1][1]) and results["eval_ema/loss"] == pytest.approx(ema[-1][1])
  assert results["val/accuracy"] >= 0 and "test_10_ema/top2_accuracy" in results


@pytest.mark.e2e
def test_evaluations_follow_their_own_cadence_and_metrics_csv_has_a_row_each(ema_run):
  run_dir, _ = ema_run
  rows = csv_rows(run_dir / "metrics.csv")
  assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20, 24]
  assert [float(r["epoch"]) for r in rows] == pytest.approx([0, 5 / 12, 10 / 12, 15 / 12, 20 / 12, 2], abs=1e-4)
  assert list(rows[0])[:5] == ["step", "epoch", "eval/loss", "eval/accuracy", "eval/top2_accuracy"]
  assert {"val_ema/accuracy", "test_10/loss"} <= set(rows[0])
  assert float(rows[-1]["eval_ema/loss"]) == pytest.approx(scalar_tags(run_dir / "eval_ema")["loss"][-1][1])


@pytest.mark.e2e
def test_the_n_best_checkpoints_by_the_named_metric_are_kept(ema_run):
  run_dir, _ = ema_run
  losses = {int(r["step"]): float(r["eval/loss"]) for r in csv_rows(run_dir / "metrics.csv")}
  best_two = sorted(losses, key=lambda step: (losses[step], step))[:2]
  best = json.loads((run_dir / "checkpoints" / "best" / "best.json").read_text())
  assert [e["step"] for e in best] == best_two and {e["metric"] for e in best} == {"eval/loss"}
  assert [e["value"] for e in best] == pytest.approx([losses[s] for s in best_two])
  files = {checkpoints.checkpoint_step(p) for p in os.listdir(run_dir / "checkpoints" / "best") if "ckpt-" in p}
  assert files == set(best_two)
  assert tf.train.latest_checkpoint(str(run_dir / "checkpoints" / "best")).endswith(f"ckpt-{best_two[0]}")


def test_best_checkpoints_rank_by_the_metric_and_survive_a_restart(tmp_path):
  variable = tf.Variable(0.0)
  checkpoint = tf.train.Checkpoint(v=variable)
  best = checkpoints.BestCheckpoints(checkpoint, str(tmp_path), keep=2, metric="eval/accuracy")
  for step, accuracy in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.4), (5, 0.6)]:
    if best.admits(accuracy):
      variable.assign(step)
      best.save(step, accuracy)
  assert [(e["step"], e["value"]) for e in best.entries] == [(2, 0.7), (3, 0.6)]  # A tie with the last stays out.
  assert sorted(os.listdir(tmp_path)) == ["best.json", "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
                                          "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
  assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-2")
  restarted = checkpoints.BestCheckpoints(checkpoint, str(tmp_path), keep=2, metric="eval/accuracy")
  restarted.load(step=2, legacy_best=-1)  # Resumed before step 3: its entry and files go.
  assert [e["step"] for e in restarted.entries] == [2] and not (tmp_path / "ckpt-3.index").exists()
  loss = checkpoints.BestCheckpoints(checkpoint, str(tmp_path / "loss"), keep=1, metric="val/loss")
  assert loss.admits(3.0) and loss.save(1, 3.0) and not loss.admits(3.5) and loss.admits(2.0)


def test_metrics_csv_keeps_one_row_per_step_across_a_resume(tmp_path):
  table = metrics_csv.MetricsCsv(str(tmp_path / "metrics.csv"))
  table.write(5, 0.5, {"eval/accuracy": 0.1})
  table.write(10, 1.0, {"eval/accuracy": 0.2})
  table.write(15, 1.5, {"eval/accuracy": 0.3})  # Then killed before the checkpoint at 15.
  table.truncate(10)  # Resumed at 10.
  table.write(15, 1.5, {"eval/accuracy": 0.35, "val/accuracy": 0.4})
  table.write(15, 1.5, {"eval/accuracy": 0.36, "val/accuracy": 0.4})
  rows = csv_rows(tmp_path / "metrics.csv")
  assert [(r["step"], r["eval/accuracy"], r["val/accuracy"]) for r in rows] == [
      ("5", "0.1", ""), ("10", "0.2", ""), ("15", "0.36", "0.4")]


@pytest.mark.e2e
def test_a_resumed_run_appends_to_metrics_csv_without_duplicates(tiny_data_dir, tmp_path):
  run_dir = tmp_path / "run"
  tiny_run(tiny_data_dir, run_dir, "--train_steps=12", "--eval_every_steps=6")
  with open(run_dir / "metrics.csv", "a") as f:
    f.write("18,1.5,9,0.99\n")  # An evaluation a killed process made past its last checkpoint.
  tiny_run(tiny_data_dir, run_dir, "--train_steps=24", "--eval_every_steps=6")
  assert [int(r["step"]) for r in csv_rows(run_dir / "metrics.csv")] == [6, 12, 18, 24]
  assert float(csv_rows(run_dir / "metrics.csv")[2]["eval/loss"]) != 9


def test_evaluations_cut_the_train_loop_calls_at_their_steps():
  config = Config(eval_every_steps=5, steps_per_loop=20, log_every_steps=100, checkpoint_every_steps=0,
                  histogram_every_steps=0)
  cadence = durations.cadence(config, 12, 100)
  assert cadence.eval_every == 5
  assert durations.cadence(Config(eval_every_epochs=0.5), 12, 100).eval_every == 6
  assert durations.cadence(Config(), 12, 100).eval_every == 12
  assert controller.next_call(0, 12, config, cadence, [5 - 0 % 5]) == (5, False)


@pytest.mark.parametrize("flags, message", [
    (["--best_metric=eval_ema/accuracy"], "--best_metric=eval_ema/accuracy is not a metric of this run; one of: "
     "eval/loss, eval/accuracy"),
    (["--eval_splits=eval=train[:10]"], "--eval_splits: the name 'eval' is taken"),
    (["--eval_splits=a b=train"], "--eval_splits: 'a b=train' is not [NAME=]SPLIT"),
    (["--eval_top_k=4"], "--eval_top_k=4 is more than the dataset's 3 classes"),
])
def test_bad_evaluation_flags_are_one_line_and_write_nothing(tiny_data_dir, tmp_path, flags, message):
  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, tmp_path / "run", "--train_steps=1", *flags))
  assert code == 2 and len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
  assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ The side-car evaluator.

def subprocess_env():
  return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


@pytest.mark.e2e
def test_the_watcher_evaluates_each_checkpoint_of_a_live_run_and_exits_when_it_ends(tiny_data_dir, tmp_path):
  """The watcher, then a trainer in a subprocess beside it (slowed to 0.1 s a step) saving every 4 steps and
  keeping 2."""
  run_dir = tmp_path / "run"
  run_dir.mkdir()  # An empty run directory: the job is queued.
  watcher = subprocess.Popen([sys.executable, "-m", "cnn.evaluate", f"--run_dir={run_dir}", "--watch",
                              "--watch_poll_seconds=0.1", "--watch_timeout_seconds=120"],
                             cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert watcher.stdout.readline().startswith(f"watching {run_dir}")
  trainer = subprocess.run(
      [sys.executable, "-m", "cnn.train", *tiny_args(tiny_data_dir, run_dir, "--train_steps=120",
                                                     "--checkpoint_every_steps=4", "--keep_checkpoints=2",
                                                     "--steps_per_loop=1", "--extra_modules=slow_trainer")],
      cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False)
  assert trainer.returncode == 0, trainer.stderr
  watcher_output, watcher_errors = watcher.communicate(timeout=300)
  assert watcher.returncode == 0, watcher_errors
  assert "has ended" in watcher_output
  rows = csv_rows(run_dir / "watch" / "metrics.csv")
  steps = [int(r["step"]) for r in rows]
  assert steps == sorted(set(steps)) and steps[-1] == 120 and all(s % 4 == 0 for s in steps)
  assert len(steps) > 2, steps  # It evaluated checkpoints that rotation deleted later: while training ran.
  first_watched = scalar_events(run_dir / "watch" / "eval", "accuracy")[0].wall_time
  assert first_watched < os.path.getmtime(run_dir / "results.json") - 2
  # The final checkpoint gives what the trainer logged at its last evaluation.
  results = json.loads((run_dir / "results.json").read_text())
  assert float(rows[-1]["eval/accuracy"]) == pytest.approx(results["eval_accuracy"])
  assert float(rows[-1]["eval/loss"]) == pytest.approx(results["eval_loss"], rel=1e-5)
  assert [s for s, _ in scalar_tags(run_dir / "watch" / "eval")["accuracy"]] == steps
  assert [s for s, _ in scalar_tags(run_dir / "eval")["accuracy"]] == list(range(12, 121, 12))  # The trainer's.
  # Started again on the finished run: nothing left to evaluate.
  again = subprocess.run([sys.executable, "-m", "cnn.evaluate", f"--run_dir={run_dir}", "--watch"], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False)
  assert again.returncode == 0 and "0 checkpoint(s) evaluated" in again.stdout, again.stderr


@pytest.mark.e2e
def test_the_watcher_skips_a_checkpoint_deleted_under_it(tiny_data_dir, tmp_path, monkeypatch):
  from cnn import watch  # pylint: disable=import-outside-toplevel
  run_dir = tmp_path / "run"
  tiny_run(tiny_data_dir, run_dir, "--train_steps=24", "--checkpoint_every_steps=6", "--keep_checkpoints=5")
  listed = watch.listed_checkpoints(str(run_dir))
  assert [checkpoints.checkpoint_step(p) for p in listed] == [6, 12, 18, 24]
  for name in os.listdir(run_dir / "checkpoints"):
    if name.startswith("ckpt-12."):  # Rotated away after the watcher listed it.
      os.remove(run_dir / "checkpoints" / name)
  monkeypatch.setattr(watch, "listed_checkpoints", lambda _: listed)
  assert watch.watch(str(run_dir), timeout_seconds=1, poll_seconds=0) == 3
  assert [int(r["step"]) for r in csv_rows(run_dir / "watch" / "metrics.csv")] == [6, 18, 24]
  assert watch.watch(str(run_dir), timeout_seconds=1, poll_seconds=0) == 0  # Done already.
  assert watch.watch(str(run_dir), split="train[:12]", timeout_seconds=1, poll_seconds=0) == 3  # Another split.
  rows = csv_rows(run_dir / "watch" / "metrics.csv")
  assert [r["train_12/accuracy"] != "" for r in rows] == [True] * 3 and list(rows[0])[2] == "eval/loss"


def test_the_watcher_of_a_run_without_checkpoints_stops_at_its_timeout(tiny_data_dir, tmp_path):
  from cnn import watch  # pylint: disable=import-outside-toplevel
  (tmp_path / "run").mkdir()
  started = time.monotonic()
  assert watch.watch(str(tmp_path / "run"), timeout_seconds=0.5, poll_seconds=0.1) == 0
  assert time.monotonic() - started < 5
  with pytest.raises(UserError, match="does not exist"):
    watch.watch(str(tmp_path / "none"))
