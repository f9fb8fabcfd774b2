"""Kills a training run with SIGKILL after every step in turn, resumes it, and checks it bit for bit.

    python benchmarks/kill_sweep.py --data_dir=DIR --dataset=NAME --train_steps=30 [train flags...]
    python benchmarks/kill_sweep.py --external=N --data_dir=DIR ... [train flags...]

For each kill point K in 1..train_steps-1: a fresh run is SIGKILLed right after step K (the process
signals itself: CNN_TEST_SIGKILL_AT_STEP, see cnn/training/preemption.py), restarted with the same command,
and its final checkpoint (every value) and final metrics are
compared bitwise with an uninterrupted run. With `--external=N`, N runs are instead SIGKILLed from
outside at a random moment after their first checkpoint (so also in the middle of a step, an eval
or a checkpoint write). Prints one line per kill and a summary.
"""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

import tensorflow as tf

REPO = pathlib.Path(__file__).resolve().parents[1]
METRICS = ("eval_accuracy", "eval_loss", "train_accuracy", "train_loss", "steps", "epochs")


def train(args, run_dir, kill_at=None):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
  env.pop("CNN_TEST_SIGKILL_AT_STEP", None)
  if kill_at is not None:
    env["CNN_TEST_SIGKILL_AT_STEP"] = str(kill_at)
  return subprocess.run([sys.executable, "-m", "cnn.train", *args, f"--run_dir={run_dir}"], cwd=REPO,
                        env=env, capture_output=True, text=True, check=False)


def final_state(run_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")))
  state = {k: reader.get_tensor(k).tobytes() for k in reader.get_variable_to_shape_map()
           if not k.startswith(("iterator/", "save_counter/", "run_state/", "_CHECKPOINTABLE"))}
  results = json.loads(pathlib.Path(run_dir, "results.json").read_text())
  return state, {k: results[k] for k in METRICS}


def kill_from_outside(args, run_dir, rng):
  """Starts a run and SIGKILLs it at a random moment after its first checkpoint; returns a description."""
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
  env.pop("CNN_TEST_SIGKILL_AT_STEP", None)
  process = subprocess.Popen([sys.executable, "-m", "cnn.train", *args, f"--run_dir={run_dir}"], cwd=REPO,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  state_file = os.path.join(run_dir, "checkpoints", "checkpoint")
  while not os.path.exists(state_file) and process.poll() is None:
    time.sleep(0.01)
  time.sleep(rng.uniform(0, 2.0))
  process.send_signal(signal.SIGKILL)
  code = process.wait()
  saved = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  return code, f"latest on disk {os.path.basename(saved) if saved else None}"


def main(args):
  external = int(next((a.split("=")[1] for a in args if a.startswith("--external=")), 0))
  args = [a for a in args if not a.startswith("--external=")]
  steps = int(next(a.split("=")[1] for a in args if a.startswith("--train_steps=")))
  root = tempfile.mkdtemp(prefix="kill_sweep-")
  result = train(args, os.path.join(root, "reference"))
  assert result.returncode == 0, result.stderr[-3000:]
  expected = final_state(os.path.join(root, "reference"))
  matched = 0
  if external:
    rng = random.Random(0)
    for i in range(external):
      run_dir = os.path.join(root, f"external{i}")
      code, where = kill_from_outside(args, run_dir, rng)
      resumed = train(args, run_dir)
      line = next((l for l in resumed.stdout.splitlines() if l.startswith("Resuming")), "started afresh")
      same = resumed.returncode == 0 and final_state(run_dir) == expected
      matched += same
      print(f"external kill {i}: exit {code}, {where}, {line.split(': ')[0]}: "
            f"{'bitwise identical' if same else 'DIFFERENT'}", flush=True)
    print(f"{matched}/{external} externally killed runs matched the uninterrupted run bit for bit")
    return
  for kill_at in range(1, steps):
    run_dir = os.path.join(root, f"kill{kill_at}")
    killed = train(args, run_dir, kill_at)
    resumed = train(args, run_dir)
    line = next((l for l in resumed.stdout.splitlines() if l.startswith("Resuming")), "started afresh")
    same = killed.returncode == -9 and resumed.returncode == 0 and final_state(run_dir) == expected
    matched += same
    print(f"kill after step {kill_at:3d}: exit {killed.returncode}, {line.split(': ')[0]}: "
          f"{'bitwise identical' if same else 'DIFFERENT'}", flush=True)
  print(f"{matched}/{steps - 1} kill points matched the uninterrupted run bit for bit")


if __name__ == "__main__":
  main(sys.argv[1:])
