"""Checkpoints: kill-and-resume bit for bit, SIGTERM, the flags check, a corrupt latest, the NaN guard.

Kill-and-resume runs `python -m cnn.train` in subprocesses on the tiny real-format TFDS dataset
(96 train examples, batch 8: 12 steps an epoch) and kills them with a real SIGKILL at an exact
step (`CNN_TEST_SIGKILL_AT_STEP`, read by cnn/training/preemption.py: the process signals itself).
"""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cnn import train
from conftest import REPO, run_cli
import tiny_tfds

TINY = ["--conv_filters=8", "--dense_units=16", "--batch_size=8"]
METRICS = ("eval_accuracy", "eval_loss", "train_accuracy", "train_loss", "steps", "epochs")


def tiny_args(data_dir, run_dir, *extra):
  return [f"--dataset={tiny_tfds.NAME}", f"--data_dir={data_dir}", "--nodownload", *TINY,
          f"--run_dir={run_dir}", *extra]


def env(kill_at=None):
  variables = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
  variables.pop("CNN_TEST_SIGKILL_AT_STEP", None)
  if kill_at is not None:
    variables["CNN_TEST_SIGKILL_AT_STEP"] = str(kill_at)
  return variables


def train_subprocess(args, kill_at=None):
  return subprocess.run([sys.executable, "-m", "cnn.train", *args], cwd=REPO, env=env(kill_at),
                        capture_output=True, text=True, timeout=300, check=False)


def checkpoint_state(path):
  """Every saved value but the iterator's buffers (their fill depends on timing), the save count and the
  run state (the training clock: seconds)."""
  reader = tf.train.load_checkpoint(str(path))
  return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
          if not key.startswith(("iterator/", "save_counter/", "run_state/", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def assert_bitwise_equal(state, expected):
  assert sorted(state) == sorted(expected)
  for key, value in expected.items():
    assert state[key].dtype == value.dtype and state[key].tobytes() == value.tobytes(), key


@pytest.mark.e2e
def test_runs_killed_at_any_step_resume_bit_for_bit(tiny_data_dir, tmp_path):
  # 30 steps = 2.5 epochs, dropout and every kind of augmentation on (random crops, flips, cutout,
  # label mixing), Ranger (RAdam, rectified from step 6, with decoupled decay, and lookahead) and a
  # variable frozen after step 18, a checkpoint every 5 steps and at each epoch end (12, 24).
  args = ["--train_steps=30", "--checkpoint_every_steps=5", "--dropout=0.5", "--deterministic",
          "--optimizer=radam", "--weight_decay=0.01",
          "--log_every_steps=100", "--augment=crop,flip,cutout,mixup", "--lookahead_every=3",
          "--freeze_variables=logits/bias", "--freeze_after_epochs=1.5"]
  reference = tmp_path / "reference"
  result = train_subprocess(tiny_args(tiny_data_dir, reference, *args))
  assert result.returncode == 0, result.stderr[-2000:]

  run = tmp_path / "killed"
  # (kill after step, then resumed from): mid-epoch; at an epoch's last step before its eval and
  # save, so that the next resume crosses the epoch boundary; and in the last, partial epoch.
  for kill_at, resumed_from in [(7, None), (12, 5), (26, 10)]:
    result = train_subprocess(tiny_args(tiny_data_dir, run, *args), kill_at=kill_at)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    if resumed_from:
      assert f"Resuming {run} from step {resumed_from} " in result.stdout
  result = train_subprocess(tiny_args(tiny_data_dir, run, *args))
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"Resuming {run} from step 25 (epoch 3) of 30" in result.stdout

  expected = json.loads((reference / "results.json").read_text())
  resumed = json.loads((run / "results.json").read_text())
  assert {k: resumed[k] for k in METRICS} == {k: expected[k] for k in METRICS}
  latest = tf.train.latest_checkpoint(str(reference / "checkpoints"))
  assert latest.endswith("ckpt-30")
  assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-30")
  assert_bitwise_equal(checkpoint_state(run / "checkpoints" / "ckpt-30"), checkpoint_state(latest))
  best = tf.train.latest_checkpoint(str(reference / "checkpoints" / "best"))
  assert os.path.basename(tf.train.latest_checkpoint(str(run / "checkpoints" / "best"))) == os.path.basename(best)
  assert any(key.startswith("weight_hooks/") for key in checkpoint_state(latest))  # The slow weights.
  # The dropout seed state is in the checkpoint and moved: without it a resumed run would differ.
  seed_state = [v for k, v in checkpoint_state(latest).items() if "seed_generator_state" in k]
  assert len(seed_state) == 1 and seed_state[0][1] > 0


@pytest.mark.e2e
def test_a_float16_run_with_averaged_batch_norm_statistics_resumes_bit_for_bit(tiny_data_dir, tmp_path):
  # --ema_decay on a model with BatchNorm (tests/outside_bn_net.py) under mixed_float16: the averages
  # of the weights and statistics, the loss scale and both step counts are in the checkpoint.
  args = ["--train_steps=18", "--deterministic", "--log_every_steps=100", "--ema_decay=0.9",
          "--precision=mixed_float16", "--extra_modules=outside_bn_net", "--model=outside_bn_net",
          "--optimizer=adam", "--learning_rate=0.01", "--lr_schedule=cosine"]
  reference, run = tmp_path / "reference", tmp_path / "killed"
  assert train_subprocess(tiny_args(tiny_data_dir, reference, *args)).returncode == 0
  result = train_subprocess(tiny_args(tiny_data_dir, run, *args), kill_at=14)
  assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
  result = train_subprocess(tiny_args(tiny_data_dir, run, *args))
  assert result.returncode == 0 and f"Resuming {run} from step 12 " in result.stdout, result.stderr[-2000:]
  expected = checkpoint_state(reference / "checkpoints" / "ckpt-18")
  assert_bitwise_equal(checkpoint_state(run / "checkpoints" / "ckpt-18"), expected)
  # (The checkpoint escapes "/" in a key as ".S".)
  assert {"averages/bn_net.Sbn.Smoving_mean/.ATTRIBUTES/VARIABLE_VALUE",
          "averages/bn_net.Sconv.Skernel/.ATTRIBUTES/VARIABLE_VALUE"} <= set(expected)


@pytest.mark.e2e
def test_sigterm_finishes_the_step_saves_and_exits_saying_how_to_resume(tiny_data_dir, tmp_path, capsys):
  run = tmp_path / "run"
  args = tiny_args(tiny_data_dir, run, "--train_steps=100000", "--checkpoint_every_steps=0",
                   "--log_every_steps=10")
  process = subprocess.Popen([sys.executable, "-m", "cnn.train", *args], cwd=REPO, env=env(),
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  try:
    for line in process.stderr:
      if "step 20/100000" in line:
        process.send_signal(signal.SIGTERM)
        break
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
  finally:
    process.kill()
  last = stderr.strip().splitlines()[-1]
  match = re.fullmatch(rf"stopped by SIGTERM after step (\d+); saved {run}/checkpoints/ckpt-(\d+)\. Resume "
                       rf"with: python -m cnn.train --flagfile={run}/flags.txt", last)
  assert match and match[1] == match[2] and int(match[1]) >= 20, last
  step = int(match[1])
  assert int(tf.train.load_checkpoint(str(run / "checkpoints" / f"ckpt-{step}")).get_tensor(
      "step/.ATTRIBUTES/VARIABLE_VALUE")) == step

  # The same flags but a shorter --train_steps (it may change) resume and finish.
  args[args.index("--train_steps=100000")] = f"--train_steps={step + 3}"
  code, stderr = run_cli(train.main, args)
  assert code == 0, stderr
  assert f"Resuming {run} from step {step} " in capsys.readouterr().out
  assert json.loads((run / "results.json").read_text())["steps"] == step + 3


@pytest.mark.e2e
def test_a_run_dir_resumes_only_with_flags_that_do_not_change_the_run(tiny_data_dir, tmp_path, capsys):
  run = tmp_path / "run"
  assert run_cli(train.main, tiny_args(tiny_data_dir, run, "--train_steps=4", "--checkpoint_every_steps=2"))[0] == 0
  capsys.readouterr()

  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, run, "--train_steps=6", "--learning_rate=0.01",
                                               "--seed=3", "--dropout=0.1"))
  assert code == 2
  assert stderr.strip() == (
      f"error: --run_dir={run} holds a run with other settings: --dropout=0.1 (the run has 0.0), "
      "--learning_rate=0.01 (the run has 0.001), --seed=3 (the run has 0); resume it with "
      f"--flagfile={run}/flags.txt, choose another --run_dir, or pass --overwrite to delete it and start afresh")

  # Length, logging and checkpoint cadence may change: the run resumes and is extended.
  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, run, "--train_steps=6", "--log_every_steps=3",
                                               "--checkpoint_every_steps=3", "--keep_checkpoints=1"))
  assert code == 0, stderr
  assert f"Resuming {run} from step 4 (epoch 1) of 6" in capsys.readouterr().out
  assert json.loads((run / "results.json").read_text())["steps"] == 6
  assert "--train_steps=6" in (run / "flags.txt").read_text()

  # --overwrite starts afresh: the old checkpoints are gone.
  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, run, "--train_steps=2", "--seed=3", "--overwrite"))
  assert code == 0, stderr
  assert "Resuming" not in capsys.readouterr().out
  assert sorted(p for p in os.listdir(run / "checkpoints") if p.endswith(".index")) == ["ckpt-2.index"]


@pytest.mark.e2e
def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tiny_data_dir, tmp_path, capsys, caplog):
  run = tmp_path / "run"
  args = tiny_args(tiny_data_dir, run, "--checkpoint_every_steps=5")
  assert run_cli(train.main, [*args, "--train_steps=10"])[0] == 0
  data = run / "checkpoints" / "ckpt-10.data-00000-of-00001"
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])  # Truncated, as by a full disk.
  capsys.readouterr()

  code, stderr = run_cli(train.main, [*args, "--train_steps=11"])
  assert code == 0, stderr
  assert f"Resuming {run} from step 5 " in capsys.readouterr().out
  assert any(f"Checkpoint {run}/checkpoints/ckpt-10 cannot be read" in r.getMessage() for r in caplog.records)
  assert json.loads((run / "results.json").read_text())["steps"] == 11


@pytest.mark.e2e
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tiny_data_dir, tmp_path):
  run = tmp_path / "run"
  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, run, "--train_steps=20", "--optimizer=sgd",
                                               "--learning_rate=1e30", "--checkpoint_every_steps=1"))
  assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
  match = re.fullmatch(r"error: non-finite training at step (\d+) \(loss \S+, gradient_norm \S+\); the last "
                       rf"good checkpoint is {run}/checkpoints/ckpt-(\d+) \(step \d+\); try a lower "
                       r"--learning_rate", stderr.strip())
  assert match, stderr
  bad, good = int(match[1]), int(match[2])
  assert good == bad - 1
  assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith(f"ckpt-{good}")
  state = checkpoint_state(run / "checkpoints" / f"ckpt-{good}")
  assert all(np.isfinite(v).all() for k, v in state.items() if v.dtype.kind == "f")
  assert not (run / "results.json").exists()
