"""End-to-end tests of `python -m cnn.train`: real steps on TFDS mock data, and every bad input."""

import dataclasses
import errno
import json
import os
import subprocess
import sys
from unittest import mock

from absl import flags
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from cnn import checkpoints
from cnn import data
from cnn import run_dir as run_dir_lib
from cnn import train
from cnn.config import Config
from cnn.training import trainer
from conftest import REPO, run_cli, run_dir_files
import tiny_tfds

SMOKE = ["--flagfile=experiments/smoke.cfg", "--train_split=train", "--eval_split=test"]


def scalar_tags(event_dir):
  events = event_accumulator.EventAccumulator(str(event_dir), size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
          for tag in events.Tags()["tensors"] if events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"}


@pytest.mark.e2e
def test_smoke_run_writes_events_flags_and_results(mock_tfds, tmp_path):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [*SMOKE, f"--run_dir={run_dir}"])
  assert code == 0, stderr

  assert run_dir_files(run_dir) >= {"flags.txt", "results.json"}
  results = json.loads((run_dir / "results.json").read_text())
  assert results["steps"] == 40
  assert results["epochs"] == 40 / (256 // 32)
  assert 0.0 <= results["eval_accuracy"] <= 1.0 and results["eval_loss"] > 0
  assert results["train_seconds"] > 0 and results["images_per_second"] > 0
  assert results["step_seconds"] == pytest.approx(results["train_seconds"] / 40)
  assert results["flops_per_image"] == 8_159_114  # Hand-counted in speed_test.py.
  assert results["tflops"] == pytest.approx(results["images_per_second"] * results["train_flops_per_image"] / 1e12)
  assert "mfu" not in results and "time_to_accuracy_steps" not in results  # Neither asked for.
  assert results["peak_host_memory_mb"] > 100 and results["retraces"] == 0
  assert results["num_parameters"] == 167_562

  train_scalars = scalar_tags(run_dir / "train")
  assert set(train_scalars) == {"loss", "accuracy", "images_per_second", "step_seconds", "gradient_norm",
                                "weight_norm", "learning_rate", "tflops", "peak_host_memory_mb"}
  assert [step for step, _ in train_scalars["loss"]] == [10, 20, 30, 40]  # --log_every_steps=10
  eval_scalars = scalar_tags(run_dir / "eval")
  assert set(eval_scalars) == {"loss", "accuracy"}
  # One eval per epoch end: 40 steps of 8 per epoch end epochs at 8, 16, 24, 32 and 40.
  assert [step for step, _ in eval_scalars["accuracy"]] == [8, 16, 24, 32, 40]
  assert eval_scalars["accuracy"][-1][1] == pytest.approx(results["eval_accuracy"])


@pytest.mark.e2e
def test_steps_per_loop_keep_logs_evals_and_summaries_at_their_steps(mock_tfds, tmp_path):
  """7 steps per loop, logs every 10, epochs of 8: every call is cut at the next log or epoch end."""
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [*SMOKE, f"--run_dir={run_dir}", "--steps_per_loop=7",
                                      "--precision=mixed_float16", "--target_accuracy=0.01",
                                      "--peak_tflops=2"])
  assert code == 0, stderr
  results = json.loads((run_dir / "results.json").read_text())
  assert results["steps"] == 40 and results["retraces"] == 0
  assert results["mfu"] == pytest.approx(results["tflops"] / 2)
  assert results["target_accuracy"] == 0.01 and results["time_to_accuracy_steps"] == 8  # First eval.
  assert 0 < results["time_to_accuracy_seconds"] < results["wall_seconds"]
  train_scalars = scalar_tags(run_dir / "train")
  assert {"mfu", "loss_scale"} <= set(train_scalars)
  assert [step for step, _ in train_scalars["loss"]] == [10, 20, 30, 40]
  assert all(scale >= 1 for _, scale in train_scalars["loss_scale"])
  assert [step for step, _ in scalar_tags(run_dir / "eval")["accuracy"]] == [8, 16, 24, 32, 40]


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_the_model_is_built_at_the_runs_precision_and_the_global_policy_is_left_as_found(precision):
  # The global policy is process state: a run left at mixed precision would build the next run's or
  # a notebook's later models in it.
  info = data.DatasetInfo("tiny", (8, 8, 3), 3, ("a", "b", "c"))
  model, _ = trainer.build_model_in_scope(Config(precision=precision, conv_filters=(4,), dense_units=(8,)),
                                          info, tf.distribute.get_strategy())
  assert model.layers[0].compute_dtype == precision.removeprefix("mixed_")
  assert tf.keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.e2e
def test_mfu_divides_by_the_peak_of_every_replica(mock_tfds, tmp_path):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [*SMOKE, f"--run_dir={run_dir}", "--train_steps=4", "--log_every_steps=2",
                                      "--strategy=mirrored", "--cpu_devices=2", "--peak_tflops=2"])
  assert code == 0, stderr
  results = json.loads((run_dir / "results.json").read_text())
  assert results["mfu"] == pytest.approx(results["tflops"] / (2 * 2))  # 2 replicas of 2 TFLOP/s each.
  for (_, mfu), (_, tflops) in zip(scalar_tags(run_dir / "train")["mfu"], scalar_tags(run_dir / "train")["tflops"]):
    assert mfu == pytest.approx(tflops / 4)


@pytest.mark.e2e
def test_flags_txt_reproduces_the_config(tiny_data_dir, tmp_path):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [*SMOKE, f"--run_dir={run_dir}", "--dropout=0.25",
                                      "--conv_filters=16,32", f"--dataset={tiny_tfds.NAME}",
                                      f"--data_dir={tiny_data_dir}", "--nodownload"])
  assert code == 0, stderr
  saved = (run_dir / "flags.txt").read_text()
  parsed = flags.FlagValues()
  from cnn import flags as cnn_flags  # pylint: disable=import-outside-toplevel
  cnn_flags.define_config_flags(parsed)
  parsed(["prog", f"--flagfile={run_dir / 'flags.txt'}"])
  config = cnn_flags.config_from_flags(parsed)
  assert config.to_flagfile() == saved
  assert config.dropout == 0.25 and config.conv_filters == (16, 32) and not config.download
  assert config.dataset == tiny_tfds.NAME and config.data_dir == tiny_data_dir
  assert config.train_steps == 40 and config.run_dir == str(run_dir)


@pytest.mark.e2e
def test_a_run_in_the_default_directory_resumes_from_its_flags_txt(mock_tfds, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # The default is runs/<dataset>-<model>-<time>, under the working directory.
  assert run_cli(train.main, ["--train_steps=2", "--batch_size=16"])[0] == 0
  [run_dir] = (tmp_path / "runs").iterdir()
  flags_txt = f"runs/{run_dir.name}/flags.txt"
  # Failed before: flags.txt said --run_dir= (empty), so this started another run in a new directory.
  assert f"--run_dir=runs/{run_dir.name}\n" in (tmp_path / flags_txt).read_text()
  code, stderr = run_cli(train.main, [f"--flagfile={flags_txt}", "--train_steps=4"])
  assert code == 0, stderr
  assert list((tmp_path / "runs").iterdir()) == [run_dir]
  assert json.loads((run_dir / "results.json").read_text())["steps"] == 4
  assert sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*.index")) == ["ckpt-2.index", "ckpt-4.index"]


def test_runs_started_in_the_same_second_get_their_own_default_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  # Failed before: both were runs/cifar10-simple_cnn-<the same second>, so the second run (another seed)
  # was refused, or with the same settings resumed the first one's directory while it ran.
  with mock.patch.object(run_dir_lib.datetime, "datetime", wraps=run_dir_lib.datetime.datetime) as clock:
    clock.now.return_value = run_dir_lib.datetime.datetime(2026, 12, 6, 21, 30, 5)
    paths = [run_dir_lib.default_run_dir(Config(seed=seed)) for seed in (0, 1, 2)]
  assert paths == ["runs/cifar10-simple_cnn-20261206-213005", "runs/cifar10-simple_cnn-20261206-213005-2",
                   "runs/cifar10-simple_cnn-20261206-213005-3"]
  assert all((tmp_path / path).is_dir() for path in paths)


@pytest.mark.e2e
def test_train_steps_wins_over_epochs(mock_tfds, tmp_path):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, ["--epochs=3", "--train_steps=5", "--batch_size=16",
                                      f"--run_dir={run_dir}"])
  assert code == 0, stderr
  assert json.loads((run_dir / "results.json").read_text())["steps"] == 5


@pytest.mark.e2e
def test_epochs_set_the_length_when_no_train_steps(mock_tfds, tmp_path):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, ["--epochs=2", "--batch_size=64", f"--run_dir={run_dir}",
                                      "--log_every_steps=1"])
  assert code == 0, stderr
  results = json.loads((run_dir / "results.json").read_text())
  assert results["steps"] == 8 and results["epochs"] == 2
  assert len(scalar_tags(run_dir / "eval")["loss"]) == 2


def test_every_experiment_flagfile_parses_and_validates():
  from cnn import flags as cnn_flags  # pylint: disable=import-outside-toplevel
  configs = {}
  for name in sorted(os.listdir(REPO / "experiments")):
    if name.endswith("_sweep.cfg"):
      continue  # Flagfiles of `cnn.sweep` (--grid): tests/sweep_test.py plans them.
    parsed = flags.FlagValues()
    cnn_flags.define_config_flags(parsed)
    parsed(["prog", f"--flagfile=experiments/{name}"])
    configs[name] = cnn_flags.config_from_flags(parsed)
  tutorial = configs["cifar10_tutorial.cfg"]
  assert (tutorial.epochs, tutorial.batch_size, tutorial.optimizer, tutorial.learning_rate) == (5, 32, "adam", 1e-3)
  assert configs["cifar10_blog.cfg"] == Config(**{**vars(tutorial), "epochs": 10})
  assert configs["smoke.cfg"].train_steps == 40


@pytest.mark.e2e
def test_a_run_dir_that_holds_another_run_is_refused_then_replaced_with_overwrite(mock_tfds, tmp_path):
  run_dir = tmp_path / "run"
  args = ["--train_steps=2", "--batch_size=16", f"--run_dir={run_dir}"]
  assert run_cli(train.main, args)[0] == 0
  before = (run_dir / "results.json").read_text()

  code, stderr = run_cli(train.main, [*args, "--batch_size=32"])
  assert code == 2
  assert stderr.strip() == (f"error: --run_dir={run_dir} holds a run with other settings: --batch_size=32 "
                            f"(the run has 16); resume it with --flagfile={run_dir}/flags.txt, choose another "
                            "--run_dir, or pass --overwrite to delete it and start afresh")
  assert (run_dir / "results.json").read_text() == before

  assert run_cli(train.main, [*args, "--batch_size=32", "--overwrite"])[0] == 0
  assert "--batch_size=32" in (run_dir / "flags.txt").read_text()


def test_overwrite_never_deletes_a_directory_that_is_not_a_run(mock_tfds, tmp_path):
  (tmp_path / "notes.txt").write_text("precious")
  code, stderr = run_cli(train.main, ["--train_steps=2", f"--run_dir={tmp_path}", "--overwrite"])
  assert code == 2 and "is not empty and holds no run" in stderr
  assert (tmp_path / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize("argv, message", [
    (["--dataset=cifar1"], "unknown dataset 'cifar1'; did you mean one of: "),
    (["--optimizer=adagrad"], "unknown --optimizer=adagrad; choose one of: adam, adamw, sgd, nesterov"),
    (["--activation=rectify"], "unknown --activation=rectify"),
    (["--model=resnet9"], "unknown --model=resnet9; registered models: airbench94, resnet101, resnet110"),
    (["--padding=full"], "--padding=full is not one of: valid, same"),
    (["--batch_size=0"], "--batch_size=0 must be at least 1"),
    (["--epochs=0"], "--epochs=0 must be at least 1"),
    (["--train_steps=-5"], "--train_steps=-5 must be at least 0"),
    (["--learning_rate=0"], "--learning_rate=0.0 must be greater than 0.0"),
    (["--learning_rate=fast"], "flag --learning_rate=fast: could not convert string to float"),
    (["--dropout=1"], "--dropout=1.0 must be less than 1.0"),
    (["--conv_filters=32,x"], "--conv_filters=32,x: expected comma-separated integers"),
    (["--pool_size=2,2,2"], "--pool_size has 3 values for 2 conv layers"),
    (["--conv_filters=32,64,64,64"], "layer conv4 shrinks the image below 1×1"),
    (["--batch_size=512"], "--batch_size=512 is larger than the training split (256 examples)"),
    (["--flagfile=experiments/nope.cfg"], "experiments/nope.cfg"),
    (["--learning_rat=0.1"], "Unknown command line flag 'learning_rat'"),
    (["extra"], "unexpected arguments: extra"),
])
def test_bad_input_is_one_line_without_a_traceback_and_writes_nothing(mock_tfds, tmp_path, argv, message):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [f"--run_dir={run_dir}", *argv])
  assert code == 2
  assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: "), stderr
  assert message in stderr
  assert not run_dir.exists()


@pytest.mark.e2e
def test_command_line_error_exits_non_zero_in_one_line(tmp_path):
  """The real entry point, in a subprocess: one line on stderr, no traceback."""
  result = subprocess.run([sys.executable, "-m", "cnn.train", "--flagfile=experiments/smoke.cfg",
                           f"--data_dir={tmp_path}", "--nodownload", f"--run_dir={tmp_path / 'run'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: dataset 'cifar10' is not prepared in") and "tfds build cifar10" in last
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()


def _help(module: str) -> str:
  result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


@pytest.mark.e2e
def test_help_lists_the_config_flags_by_section_with_their_choices_and_ranges():
  text = _help("cnn.train")
  headings = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
  assert headings == ["Data", "Model", "Optimisation", "Research toolkit", "Run", "TensorBoard", "Distribution",
                      "Checkpoints", "Speed", "Evaluation"]
  optimisation = text[text.index("\nOptimisation:"):text.index("\nResearch toolkit:")]
  assert "--learning_rate: Learning rate.\n    (default: '0.001')\n    (a number > 0.0)" in optimisation
  assert "--strategy: <default|one_device|mirrored|multi_worker_mirrored|tpu>:" in text  # An enum's choices.
  assert "--dropout: Dropout rate after each hidden dense layer.\n    (default: '0.0')\n    (a number in [0.0, 1.0))" in text
  assert "(comma-separated integers, each >= 1)" in text  # --conv_filters
  assert text.count("\n  --") == len(dataclasses.fields(Config))  # Every field, once.


@pytest.mark.e2e
def test_help_of_the_other_entry_points_lists_their_own_flags():
  text = _help("cnn.evaluate")
  assert "--run_dir: The run directory to evaluate (required)." in text and "--checkpoint:" in text


def file_states(run_dir):
  """Every file under `run_dir` with its bytes and modification time."""
  return {path: ((run_dir / path).read_bytes(), (run_dir / path).stat().st_mtime_ns)
          for path in run_dir_files(run_dir)}


@pytest.mark.e2e
@pytest.mark.parametrize("train_steps", [12, 16])  # 1.5 epochs of 8 steps, and a whole 2.
def test_a_finished_run_run_again_says_so_and_changes_nothing(mock_tfds, tmp_path, capsys, train_steps):
  run_dir = tmp_path / "run"
  args = [f"--train_steps={train_steps}", "--batch_size=32", "--log_every_steps=4", f"--run_dir={run_dir}"]
  assert run_cli(train.main, args)[0] == 0
  before = file_states(run_dir)
  results = json.loads((run_dir / "results.json").read_text())
  capsys.readouterr()

  # Again, and with a length it has already trained (--epochs is ignored beside --train_steps).
  for again in (args, [*args, "--epochs=1"]):
    code, stderr = run_cli(train.main, again)
    assert code == 0, stderr
    assert capsys.readouterr().out.strip() == (
        f"{run_dir} holds this run finished ({train_steps} steps, test accuracy {results['eval_accuracy']:.4f}); "
        "nothing to do (a larger --train_steps or --epochs extends it)")
    assert file_states(run_dir) == before


@pytest.mark.e2e
@pytest.mark.parametrize("schedule, dependency", [
    (["--lr_schedule=cosine"], "--lr_schedule=cosine decays over it"),
    (["--lr_schedule=linear", "--lr_warmup_epochs=0.5"], "--lr_schedule=linear decays over it"),
    (["--lookahead_every=2"], "--lookahead_every ramps its decay over it and ends with the slow weights"),
])
def test_a_schedule_spread_over_the_run_refuses_a_new_length(mock_tfds, tmp_path, schedule, dependency):
  run_dir = tmp_path / "run"
  args = ["--batch_size=32", "--checkpoint_every_steps=2", f"--run_dir={run_dir}", *schedule]
  assert run_cli(train.main, [*args, "--train_steps=6", "--epochs=3"])[0] == 0
  os.remove(run_dir / "results.json")  # As if killed after the last checkpoint: not finished.
  before = file_states(run_dir)
  for length in ["--train_steps=10", "--train_steps=4"]:  # Longer or shorter.
    code, stderr = run_cli(train.main, [*args, "--epochs=3", length])
    assert code == 2
    steps = length.split("=")[1]
    assert stderr.strip() == (
        f"error: --run_dir={run_dir} is a run of 6 steps and cannot be resumed as one of {steps}: {dependency}; "
        "resume it with its own --train_steps/--epochs, or start afresh (another --run_dir, or --overwrite)")
    assert file_states(run_dir) == before
  # The same length, given in epochs of 8 steps (here 6 → 8: refused), or in steps: resumes and finishes.
  assert run_cli(train.main, [*args, "--train_steps=0", "--epochs=1"])[0] == 2
  assert run_cli(train.main, [*args, "--train_steps=6", "--epochs=1"])[0] == 0
  assert json.loads((run_dir / "results.json").read_text())["steps"] == 6


@pytest.mark.e2e
@pytest.mark.parametrize("owner, name, error, message", [
    (trainer, "build_training",
     tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[64,32]"),
     "error: out of memory with --batch_size=16, --eval_batch_size=256, the dataset's image size (--image_size): "
     "OOM when allocating tensor with shape[64,32]; try a smaller batch or image size, or "
     "--precision=mixed_bfloat16 / mixed_float16"),
    (run_dir_lib, "write_flags", OSError(errno.ENOSPC, "No space left on device", "runs/x/flags.txt"),
     "error: No space left on device: runs/x/flags.txt; free some space, or choose another --run_dir; the "
     "checkpoints saved before are intact"),
    (checkpoints.Checkpointer, "save", tf.errors.ResourceExhaustedError(
        None, None, "runs/x/checkpoints/ckpt-2_temp/part-0; No space left on device"),
     "error: disk full: runs/x/checkpoints/ckpt-2_temp/part-0; No space left on device; free some space, or "
     "choose another --run_dir; the checkpoints saved before are intact"),
    (run_dir_lib, "prepare", PermissionError(errno.EACCES, "Permission denied", "runs/x"),
     "error: Permission denied: runs/x; choose a --run_dir this user can write to"),
    (checkpoints.Checkpointer, "save", tf.errors.PermissionDeniedError(None, None, "runs/x/checkpoints; denied"),
     "error: permission denied: runs/x/checkpoints; denied; choose a --run_dir this user can write to"),
    (data.splits, "load_split", KeyboardInterrupt(),
     "stopped by SIGINT (Ctrl-C); nothing was saved at this point"),
])
def test_system_errors_and_ctrl_c_in_set_up_are_one_line(mock_tfds, tmp_path, owner, name, error, message):
  with mock.patch.object(owner, name, side_effect=error):
    code, stderr = run_cli(train.main, ["--train_steps=2", "--batch_size=16", f"--run_dir={tmp_path / 'run'}"])
  assert (code, stderr.strip()) == (130 if isinstance(error, KeyboardInterrupt) else 2, message)


def test_a_run_dir_under_a_file_is_one_line(mock_tfds, tmp_path):
  # Tests run as root, whom no permission bit stops: a path under a regular file cannot be made by anyone.
  (tmp_path / "file").write_text("")
  code, stderr = run_cli(train.main, ["--train_steps=2", f"--run_dir={tmp_path / 'file' / 'run'}"])
  assert (code, stderr.strip()) == (2, f"error: Not a directory: {tmp_path / 'file' / 'run'}")


def test_flags_txt_is_replaced_atomically(tmp_path):
  config = Config(train_steps=3)
  run_dir_lib.write_flags(str(tmp_path), config)
  with mock.patch.object(Config, "to_flagfile", side_effect=RuntimeError("killed")), pytest.raises(RuntimeError):
    run_dir_lib.write_flags(str(tmp_path), Config(train_steps=4))
  assert (tmp_path / "flags.txt").read_text() == config.to_flagfile()
  assert os.listdir(tmp_path) == ["flags.txt"]
