"""--target_accuracy: the training seconds and steps to the target, evaluation left out, across resumes."""

import json

import pytest
import tensorflow as tf

from cnn import checkpoints
from cnn import train
from cnn.training import actions
from checkpoints_test import tiny_args
from conftest import run_cli


def event(step, accuracy):
  return actions.EvalEvent(step, 1, {"accuracy": accuracy, "loss": 1.0}, {}, seconds=float("nan"))


@pytest.fixture
def clock(monkeypatch):
  """time.perf_counter as the actions see it, set by the test."""
  now = [0.0]
  monkeypatch.setattr(actions.time, "perf_counter", lambda: now[0])
  return now


def test_evaluation_time_is_not_counted(clock):
  reached = actions.TimeToAccuracy(0.6)
  reached.start()
  clock[0] = 10.0
  reached.after_step(5, {})  # 10 s of training.
  clock[0] = 25.0
  reached(event(5, 0.5))  # 15 s of evaluation: not training.
  clock[0] = 35.0
  reached.after_step(10, {})  # 10 s more.
  clock[0] = 50.0
  reached(event(10, 0.7))
  assert reached.results() == {"run_train_seconds": 20.0, "target_accuracy": 0.6, "time_to_accuracy_seconds": 20.0,
                               "time_to_accuracy_steps": 10}


def test_the_count_and_a_reached_target_are_carried_by_the_checkpoint(clock, tmp_path):
  before = actions.TimeToAccuracy(0.6)
  before.start()
  clock[0] = 7.0
  before.after_step(5, {})
  path = tf.train.Checkpoint(**before.variables()).write(str(tmp_path / "ckpt"))
  resumed = actions.TimeToAccuracy(0.6)
  tf.train.Checkpoint(**resumed.variables()).read(path).assert_consumed()
  clock[0] = 100.0  # The time between the runs is not training.
  resumed.start()
  clock[0] = 103.0
  resumed.after_step(10, {})
  resumed(event(10, 0.7))
  assert resumed.results()["time_to_accuracy_seconds"] == 10.0  # 7 s before the resume, 3 s after.
  path = tf.train.Checkpoint(**resumed.variables()).write(str(tmp_path / "ckpt-2"))
  again = actions.TimeToAccuracy(0.6)
  tf.train.Checkpoint(**again.variables()).read(path).assert_consumed()
  again(event(15, 0.9))  # Reached before: kept.
  assert again.results() == {"run_train_seconds": 10.0, "target_accuracy": 0.6, "time_to_accuracy_seconds": 10.0,
                             "time_to_accuracy_steps": 10}


@pytest.mark.e2e
def test_a_resumed_run_keeps_the_step_its_first_part_reached_the_target_at(tiny_data_dir, tmp_path):
  run_dir = tmp_path / "run"  # 12 steps an epoch; 1% accuracy is reached at the first eval.
  assert run_cli(train.main, tiny_args(tiny_data_dir, run_dir, "--train_steps=12", "--target_accuracy=0.01"))[0] == 0
  first = json.loads((run_dir / "results.json").read_text())
  assert first["time_to_accuracy_steps"] == 12 and 0 < first["time_to_accuracy_seconds"] <= first["train_seconds"]
  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, run_dir, "--train_steps=24", "--target_accuracy=0.01"))
  assert code == 0, stderr
  resumed = json.loads((run_dir / "results.json").read_text())
  assert resumed["steps"] == 24 and resumed["time_to_accuracy_steps"] == 12
  assert resumed["time_to_accuracy_seconds"] == first["time_to_accuracy_seconds"]
  # train_seconds is this process's; run_train_seconds counts on from the first process's.
  assert resumed["run_train_seconds"] > resumed["train_seconds"]
  assert resumed["run_train_seconds"] > first["run_train_seconds"] > 0


def test_a_checkpoint_from_before_the_run_state_was_saved_still_resumes(tmp_path):
  model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(3)])
  old = checkpoints.Checkpointer(str(tmp_path), model, tf.keras.optimizers.SGD(0.1), [], keep=2)
  old.save(4, 1)
  state = actions.TimeToAccuracy(0.5)
  new = checkpoints.Checkpointer(str(tmp_path), model, tf.keras.optimizers.SGD(0.1), [], keep=2,
                                 run_state=state.variables())
  assert new.restore() == 4
  assert float(state.variables()["train_seconds"]) == 0.0
