"""Sweeps (`python -m cnn.sweep`): real trials on the tiny dataset, resuming, random search, Slurm, bad input.

The trials are real `python -m cnn.train` processes (their TensorFlow start-up dominates: a few
seconds each); the other tests plan sweeps in-process with --print_commands or --slurm_script,
which check and store a sweep without training.
"""

import csv
import json
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_accumulator

from checkpoints_test import assert_bitwise_equal, checkpoint_state
from cnn import sweep
from cnn.sweeps import slots as slots_lib
from conftest import REPO, run_cli
import tiny_tfds

# 12 steps an epoch (96 examples, batch 8); a checkpoint every 5 steps and at each epoch end.
TINY = ["--conv_filters=8", "--dense_units=16", "--batch_size=8", "--log_every_steps=100",
        "--checkpoint_every_steps=5", "--deterministic", "--summary_images=0", "--histogram_every_steps=0"]
GRID = "--grid=learning_rate=0.01,0.03;train_steps=12,24"


def tiny_args(data_dir, sweep_dir, *extra):
  return [f"--dataset={tiny_tfds.NAME}", f"--data_dir={data_dir}", "--nodownload", *TINY,
          f"--sweep_dir={sweep_dir}", *extra]


def sweep_subprocess(args, kill_at=None):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
  env.pop("CNN_TEST_SIGKILL_AT_STEP", None)
  if kill_at is not None:  # Inherited by every trial: each SIGKILLs itself after that step.
    env["CNN_TEST_SIGKILL_AT_STEP"] = str(kill_at)
  return subprocess.run([sys.executable, "-m", "cnn.sweep", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def trial_dirs(sweep_dir):
  return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name[:3].isdigit())


def final_checkpoint(run_dir):
  return checkpoint_state(max((run_dir / "checkpoints").glob("ckpt-*.index"),
                              key=lambda p: int(p.stem.split("-")[1])).with_suffix(""))


@pytest.fixture(scope="module")
def reference_sweep(tiny_data_dir, tmp_path_factory):
  """An uninterrupted 2×2 sweep, two trials at a time: (its directory, the process result)."""
  sweep_dir = tmp_path_factory.mktemp("sweeps") / "reference"
  return sweep_dir, sweep_subprocess(tiny_args(tiny_data_dir, sweep_dir, GRID, "--parallel=2"))


@pytest.mark.e2e
def test_a_2x2_grid_two_at_a_time_finishes_and_writes_the_table(reference_sweep):
  sweep_dir, result = reference_sweep
  assert result.returncode == 0, result.stderr[-2000:]
  trials = trial_dirs(sweep_dir)
  assert [t.name for t in trials] == [
      "000-learning_rate=0.01,train_steps=12", "001-learning_rate=0.01,train_steps=24",
      "002-learning_rate=0.03,train_steps=12", "003-learning_rate=0.03,train_steps=24"]
  for trial in trials:  # Ordinary runs, with their swept flags, results and HParams.
    flags_txt = (trial / "flags.txt").read_text()
    assert f"--run_dir={trial}\n" in flags_txt and "--batch_size=8\n" in flags_txt
    learning_rate, train_steps = (part.split("=")[1] for part in trial.name[4:].split(","))
    assert f"--learning_rate={learning_rate}\n" in flags_txt and f"--train_steps={train_steps}\n" in flags_txt
    assert json.loads((trial / "results.json").read_text())["steps"] == int(train_steps)
    events = event_accumulator.EventAccumulator(str(trial))
    events.Reload()
    assert "_hparams_/session_start_info" in events.Tags()["tensors"]
  assert "on core" in (sweep_dir / "logs" / f"{trials[0].name}.log").read_text()  # Pinned.

  with open(sweep_dir / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert sorted(row["trial"] for row in rows) == [t.name for t in trials]
  assert {"learning_rate", "train_steps", "eval_accuracy", "eval_loss", "wall_seconds"} <= set(rows[0])
  accuracies = [float(row["eval_accuracy"]) for row in rows]
  assert accuracies == sorted(accuracies, reverse=True)  # --metric=eval_accuracy, best first.
  for row in rows:
    trial = sweep_dir / row["trial"]
    assert float(row["eval_loss"]) == json.loads((trial / "results.json").read_text())["eval_loss"]
  table = json.loads((sweep_dir / "results.json").read_text())
  assert [row["trial"] for row in table["trials"]] == [row["trial"] for row in rows]
  assert "Results by eval_accuracy" in result.stdout and "learning_rate  train_steps" in result.stdout


@pytest.mark.e2e
def test_a_killed_sweep_resumes_to_the_checkpoints_of_an_uninterrupted_one(reference_sweep, tiny_data_dir,
                                                                            tmp_path):
  reference_dir, reference = reference_sweep
  assert reference.returncode == 0, reference.stderr[-2000:]
  sweep_dir = tmp_path / "killed"
  args = tiny_args(tiny_data_dir, sweep_dir, "--grid=learning_rate=0.01;train_steps=12,24", "--parallel=2")
  # Every trial SIGKILLs itself after step 17 (its last checkpoint at 15): the 12-step trial finishes
  # first, the 24-step one dies.
  result = sweep_subprocess(args, kill_at=17)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "1 of 2 trials failed: 001-learning_rate=0.01,train_steps=24 (killed by SIGKILL)" in result.stderr

  result = sweep_subprocess(args)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "2 trials: 1 finished (skipped), 1 to resume, 0 to start" in result.stdout
  killed = sweep_dir / "001-learning_rate=0.01,train_steps=24"
  assert "Resuming" in (sweep_dir / "logs" / f"{killed.name}.log").read_text()
  for trial in trial_dirs(sweep_dir):
    assert_bitwise_equal(final_checkpoint(trial), final_checkpoint(reference_dir / trial.name))

  # Idempotent: once all have finished, a re-run starts nothing and rewrites the table.
  files = {p: p.stat().st_mtime_ns for p in killed.rglob("*") if p.is_file()}
  result = sweep_subprocess(args)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "2 trials: 2 finished (skipped), 0 to resume, 0 to start" in result.stdout
  assert {p: p.stat().st_mtime_ns for p in killed.rglob("*") if p.is_file()} == files
  assert len(list(csv.DictReader(open(sweep_dir / "results.csv")))) == 2


def plan(tmp_path, *args, name="sweep"):
  """Plans (checks and stores, no training) a sweep in-process; returns (exit code, stderr, trials)."""
  sweep_dir = tmp_path / name
  code, stderr = run_cli(sweep.main, ["--batch_size=8", f"--sweep_dir={sweep_dir}", "--print_commands", *args])
  definition = sweep_dir / "sweep.json"
  trials = json.loads(definition.read_text())["trials"] if definition.exists() else None
  return code, stderr, trials


def test_a_random_sweep_is_reproducible_from_its_seed(tmp_path):
  space = ("--grid=learning_rate=loguniform(1e-4,1e-1);dropout=uniform(0,0.5);kernel_size=randint(2,5);"
           "optimizer=adam,sgd")
  code, stderr, trials = plan(tmp_path, space, "--random=6", "--seed=3", name="a")
  assert code == 0, stderr
  assert plan(tmp_path, space, "--random=6", "--seed=3", name="b")[2] == trials
  assert plan(tmp_path, space, "--random=6", "--seed=4", name="c")[2] != trials
  assert len(trials) == 6
  for trial in trials:
    flags = trial["flags"]
    assert 1e-4 <= float(flags["learning_rate"]) <= 1e-1 and 0 <= float(flags["dropout"]) <= 0.5
    assert flags["kernel_size"] in {"2", "3", "4", "5"} and flags["optimizer"] in {"adam", "sgd"}
  # Log-uniform: about as many draws per decade (20 draws, 3 decades; uniform would put ~90% in the last).
  many = plan(tmp_path, "--grid=learning_rate=loguniform(1e-4,1e-1)", "--random=20", "--seed=0", name="d")[2]
  assert sum(float(t["flags"]["learning_rate"]) < 1e-2 for t in many) >= 8

  # More draws with the same seed only add trials: the sweep directory accepts them, names kept.
  code, stderr, more = plan(tmp_path, space, "--random=9", "--seed=3", name="a")
  assert code == 0, stderr
  assert more[:6] == trials and len(more) == 9


def test_a_random_search_whose_draws_repeat_still_runs_n_distinct_trials(tmp_path):
  # 4 distinct trials, and 1e-3 is 0.001: six draws of seed 0 repeat, which used to leave fewer trials.
  space = "--grid=learning_rate=1e-3,0.001,0.01;kernel_size=randint(2,3)"
  code, stderr, trials = plan(tmp_path, space, "--random=4", "--seed=0", name="a")
  assert code == 0, stderr
  assert sorted((t["flags"]["learning_rate"], t["flags"]["kernel_size"]) for t in trials) == [
      ("0.001", "2"), ("0.001", "3"), ("0.01", "2"), ("0.01", "3")]
  # The first trials of a longer search are still the shorter one's.
  assert plan(tmp_path, space, "--random=3", "--seed=0", name="b")[2] == trials[:3]


def test_a_random_search_asking_for_more_trials_than_the_space_holds_says_so(tmp_path):
  code, stderr, _ = plan(tmp_path, "--grid=optimizer=adam,sgd;kernel_size=randint(2,3)", "--random=5")
  assert code == 2 and stderr.count("\n") == 1, stderr
  assert "--random=5: --grid holds 4 distinct trials; ask for at most 4" in stderr
  code, stderr, _ = plan(tmp_path, "--grid=learning_rate=1e-3,0.001,0.01", "--random=3")
  assert code == 2 and stderr.count("\n") == 1, stderr
  assert "--random=3: only 2 distinct trials in " in stderr
  assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "experiments").glob("*_sweep.cfg")))
def test_every_sweep_file_in_experiments_plans(tmp_path, name):
  code, stderr, trials = plan(tmp_path, f"--flagfile=experiments/{name}")
  assert code == 0, stderr
  assert len(trials) >= 2


def test_the_slurm_script_is_valid_bash_and_runs_each_trial_once(tmp_path):
  script = tmp_path / "sweep.sh"
  sweep_dir = tmp_path / "sweep"
  code, stderr = run_cli(sweep.main, ["--batch_size=8", f"--sweep_dir={sweep_dir}", GRID, "--parallel=2",
                                      f"--slurm_script={script}"])
  assert code == 0, stderr
  text = script.read_text()
  assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
  trials = json.loads((sweep_dir / "sweep.json").read_text())["trials"]
  assert len(trials) == 4 and "#SBATCH --array=0-3%2" in text
  assert all(trial["name"] in text for trial in trials)

  def task(i):  # An array task, with `echo` standing in for Python.
    return subprocess.run(["bash", str(script)], env={**os.environ, "SLURM_ARRAY_TASK_ID": str(i),
                                                      "PYTHON": "echo"}, capture_output=True, text=True,
                          check=False)

  out = task(2).stdout
  assert f"--run_dir={sweep_dir / trials[2]['name']}" in out and "--learning_rate=0.03 --train_steps=12" in out
  assert f"--flagfile={sweep_dir / 'base_flags.txt'}" in out
  (sweep_dir / trials[2]["name"]).mkdir()
  (sweep_dir / trials[2]["name"] / "results.json").write_text("{}")
  assert task(2).stdout.startswith("finished already")
  assert task(4).returncode == 2


@pytest.mark.parametrize("args, message", [
    (["--grid=lerning_rate=0.1"], "--grid: unknown flag lerning_rate"),
    (["--grid=learning_rate=0.1,-1;batch_size=8"],
     "trial 1 (learning_rate=-1, batch_size=8): --learning_rate=-1.0 must be greater than 0.0"),
    (["--grid=batch_size=8,eight"], "trial 1 (batch_size=eight): flag --batch_size=eight: invalid literal"),
    (["--grid=pool_size=2|2,2,2"], "trial 1 (pool_size=2,2,2): --pool_size has 3 values for 2 conv layers"),
    (["--grid=;"], "--grid is empty"),
    (["--grid=learning_rate="], "--grid: learning_rate has no values"),
    ([], "--grid is required"),
    (["--grid=learning_rate=loguniform(1e-4,1e-1)"], "learning_rate is a range: give --random=N"),
    (["--grid=learning_rate=loguniform(0,1)", "--random=2"], "needs LOW < HIGH, LOW > 0"),
    (["--grid=batch_size=uniform(8,64)", "--random=2"], "batch_size takes integers: use randint"),
    (["--grid=learning_rate=0.1", "--run_dir=x"], "--run_dir has no meaning in a sweep"),
    (["--grid=learning_rate=0.1", "--parallel=0"], "--parallel=0 must be at least 1"),
    (["--grid=learning_rate=0.1", "--random=-1"], "--random=-1 must be at least 0"),
    (["--grid=run_dir=a,b"], "run_dir cannot be swept"),
])
def test_bad_sweeps_are_refused_in_one_line_before_anything_is_written(tmp_path, args, message):
  code, stderr, _ = plan(tmp_path, *args)
  assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
  assert message in stderr
  assert not (tmp_path / "sweep").exists()


def test_a_sweep_dir_holding_something_else_or_another_sweep_is_refused(tmp_path):
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  code, stderr, _ = plan(tmp_path, "--grid=learning_rate=0.1", name="other")
  assert code == 2 and "is not empty and holds no sweep" in stderr
  assert os.listdir(tmp_path / "other") == ["notes.txt"]

  grid = "--grid=learning_rate=0.1,0.2;weight_decay=0,1e-4"
  code, stderr, trials = plan(tmp_path, grid)
  assert code == 0, stderr
  for changed, message in [
      (["--grid=learning_rate=0.1;weight_decay=0,1e-4"], "2 of its trials are not in this one"),
      ([grid, "--batch_size=16"], "with other flags: --batch_size=16 (it has 8)"),
      (["--grid=learning_rate=0.1,0.2;weight_decay=0,1e-4;dropout=0.5"], "4 of its trials are not in this one")]:
    code, stderr, _ = plan(tmp_path, *changed)
    assert code == 2 and "holds another sweep" in stderr and message in stderr, stderr
  # Adding values, rewriting one (1e-4 is 0.0001) or changing where it logs is the same sweep, or more.
  code, stderr, more = plan(tmp_path, "--grid=learning_rate=0.1,0.2,0.4;weight_decay=0.0,0.0001",
                            "--log_every_steps=7")
  assert code == 0, stderr
  assert more[:4] == trials and [t["name"] for t in more[4:]] == [
      "004-learning_rate=0.4,weight_decay=0.0", "005-learning_rate=0.4,weight_decay=0.0001"]


def test_slots_split_the_machine_and_clamp_to_it():
  slots, note = slots_lib.make_slots(4, cores=[0, 1, 2, 3, 4, 5, 6], gpus=[])
  assert [s.cores for s in slots] == [(0, 1), (2, 3), (4, 5), (6,)] and note is None
  slots, note = slots_lib.make_slots(3, cores=[0, 1], gpus=[])
  assert len(slots) == 2 and note == "--parallel=3 clamped to 2: this machine has 2 CPU cores (one trial each at most)"
  slots, note = slots_lib.make_slots(4, cores=list(range(8)), gpus=["0", "3"])
  assert [(s.cores, s.gpu) for s in slots] == [((0, 1, 2, 3), "0"), ((4, 5, 6, 7), "3")]
  assert "2 GPUs" in note
  env = slots[1].environment({})
  assert env == {"TF_NUM_INTRAOP_THREADS": "4", "TF_NUM_INTEROP_THREADS": "2", "OMP_NUM_THREADS": "4",
                 "CUDA_VISIBLE_DEVICES": "3"}


def test_a_slot_pins_its_process_to_its_cores():
  core = sorted(os.sched_getaffinity(0))[-1]
  slot = slots_lib.Slot((core,))
  out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)), "
                        "os.environ['TF_NUM_INTRAOP_THREADS'])"], env=slot.environment(dict(os.environ)),
                       preexec_fn=slot.pin, capture_output=True, text=True, check=True).stdout
  assert out.split() == [f"[{core}]", "1"]
