"""Durations: one syntax for every cadence and length (steps, epochs, a fraction of the run), the
per-unit flags as aliases, and old runs' flags.txt still resuming."""

import csv
import os
import re

import pytest

from cnn import durations
from cnn import schedules
from cnn import train
from cnn.config import Config
from cnn.errors import UserError
from conftest import run_cli
import tiny_tfds

TINY = ["--conv_filters=8", "--dense_units=16", "--batch_size=8"]  # 96 examples: 12 steps an epoch.


@pytest.mark.parametrize("text, value, unit, canonical, steps", [
    ("500", 500, "steps", "500", 500),
    ("0", 0, "steps", "0", 0),
    ("2ep", 2, "epochs", "2ep", 24),
    ("2.5ep", 2.5, "epochs", "2.5ep", 30),
    ("0.25ep", 0.25, "epochs", "0.25ep", 3),
    (".5ep", 0.5, "epochs", "0.5ep", 6),
    ("0.25run", 0.25, "run", "0.25run", 25),
    ("1run", 1, "run", "1run", 100),
    ("0.0001run", 0.0001, "run", "0.0001run", 0),
])
def test_a_duration_is_steps_epochs_or_a_fraction_of_the_run(text, value, unit, canonical, steps):
  duration = durations.parse(text, "eval_every")
  assert (duration.value, duration.unit, str(duration)) == (value, unit, canonical)
  assert duration.steps(steps_per_epoch=12, total_steps=100) == steps
  again = durations.parse(str(duration))  # The canonical text reads back as the same duration.
  assert (again.value, again.unit) == (duration.value, duration.unit)


@pytest.mark.parametrize("text, message", [
    ("2x", "--eval_every=2x is not a duration: give STEPS (500), EPOCHS with ep (2ep, 2.5ep) or a fraction of the "
     "run with run (0.25run)"),
    ("-5", "--eval_every=-5 is not a duration"),
    ("ep", "--eval_every=ep is not a duration"),
    ("2 weeks", "--eval_every=2 weeks is not a duration"),
    ("2.5", "--eval_every=2.5: steps are whole numbers (for epochs write 2.5ep)"),
    ("1.5run", "--eval_every=1.5run: a fraction of the run is at most 1run"),
])
def test_a_bad_duration_is_one_line_naming_the_flag(text, message):
  with pytest.raises(UserError, match=re.escape(message)):
    Config(eval_every=text).validate()


def test_the_per_unit_flags_are_aliases_and_the_duration_flag_wins():
  assert durations.cadence(Config(), 12, 100) == durations.Cadence(100, 500, 500, 12)  # The defaults, as before.
  assert durations.cadence(Config(eval_every_steps=5), 12, 100).eval_every == 5
  assert durations.cadence(Config(eval_every_epochs=0.5), 12, 100).eval_every == 6
  assert durations.cadence(Config(eval_every="0.1run", eval_every_steps=5), 12, 100).eval_every == 10
  assert durations.cadence(Config(eval_every_epochs=0.01), 12, 100).eval_every == 1  # A cadence: at least a step.
  none = durations.cadence(Config(checkpoint_every="0", histogram_every="0"), 12, 100)
  assert (none.checkpoint_every, none.histogram_every) == (0, 0)
  with pytest.raises(UserError, match=r"^--log_every=0: needs a positive duration"):
    Config(log_every="0").validate()  # Refused with the settings, before anything is built.
  with pytest.raises(UserError, match=r"^--eval_every=0run: needs a positive duration"):
    Config(eval_every="0run").validate()
  assert str(durations.of(Config(lr_warmup_epochs=2.3), "lr_warmup")) == "2.3ep"
  assert durations.of(Config(lr_warmup="50", lr_warmup_epochs=2.3), "lr_warmup").steps(12, 100) == 50


def test_warmup_and_hold_given_in_any_unit_make_the_same_schedule():
  def rates(**durations_given):
    schedule = schedules.build_schedule(Config(lr_schedule="cosine", learning_rate=1.0, **durations_given), 12, 120)
    return [float(schedule(step)) for step in range(0, 120, 6)]

  legacy = rates(lr_warmup_epochs=2, lr_hold_epochs=3)  # 24 and 36 steps.
  assert rates(lr_warmup="24", lr_hold="36") == rates(lr_warmup="2ep", lr_hold="3ep") == legacy
  assert rates(lr_warmup="0.2run", lr_hold="0.3run") == legacy
  assert legacy[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0]) and legacy[4:11] == [1.0] * 7  # Warm-up, hold.
  with pytest.raises(UserError, match=re.escape("--lr_warmup=1run (120 steps) is not shorter than training")):
    schedules.build_schedule(Config(lr_warmup="1run"), 12, 120)


def test_a_resumed_run_compares_durations_by_value_whichever_flag_gives_them():
  assert Config(lr_warmup="2ep").differences(Config(lr_warmup_epochs=2)) == []
  assert Config(lr_warmup="2.0ep").differences(Config(lr_warmup_epochs=2)) == []
  assert Config(lr_warmup="24").differences(Config(lr_warmup_epochs=2)) == ["--lr_warmup=24 (the run has 2ep)"]
  assert Config(eval_every="3ep").differences(Config()) == []  # A cadence may change on resume.


def test_freezing_names_the_flag_that_gave_its_duration():
  with pytest.raises(UserError, match=r"^--freeze_after needs --freeze_variables"):
    Config(freeze_after="3ep").validate()
  with pytest.raises(UserError, match=r"^--freeze_after_epochs needs --freeze_variables"):
    Config(freeze_after_epochs=3).validate()


def test_a_bad_duration_on_the_command_line_is_one_line_and_trains_nothing(tmp_path):
  code, stderr = run_cli(train.main, ["--eval_every=3days", f"--run_dir={tmp_path / 'run'}"])
  assert code == 2
  assert stderr.strip().splitlines() == ["error: --eval_every=3days is not a duration: give STEPS (500), EPOCHS "
                                         "with ep (2ep, 2.5ep) or a fraction of the run with run (0.25run)"]
  assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ Real runs.

def tiny_run(data_dir, run_dir, *extra):
  code, stderr = run_cli(train.main, [f"--dataset={tiny_tfds.NAME}", f"--data_dir={data_dir}", "--nodownload",
                                      *TINY, f"--run_dir={run_dir}", "--histogram_every_steps=0",
                                      "--summary_images=0", "--nowrite_graph", *extra])
  assert code == 0, stderr
  return stderr


def saved_and_evaluated_steps(run_dir):
  with open(run_dir / "metrics.csv", newline="") as f:
    evaluated = [int(row["step"]) for row in csv.DictReader(f)]
  saved = sorted(int(m.group(1)) for name in os.listdir(run_dir / "checkpoints")
                 if (m := re.fullmatch(r"ckpt-(\d+)\.index", name)))
  return saved, evaluated


@pytest.mark.e2e
def test_cadences_in_steps_epochs_and_run_fractions_land_on_the_same_steps(tiny_data_dir, tmp_path):
  # 24 steps of 12 an epoch: every 6 steps = 0.5ep = 0.25run; every 3 steps = 0.25ep = 0.125run.
  ways = {"steps": ["--eval_every=6", "--checkpoint_every=3"],
          "epochs": ["--eval_every=0.5ep", "--checkpoint_every=0.25ep"],
          "run": ["--eval_every=0.25run", "--checkpoint_every=0.125run"],
          "aliases": ["--eval_every_epochs=0.5", "--checkpoint_every_steps=3"]}
  got = {}
  for name, flags in ways.items():
    tiny_run(tiny_data_dir, tmp_path / name, "--train_steps=24", "--keep_checkpoints=20", "--log_every=0.5ep",
             *flags)
    got[name] = saved_and_evaluated_steps(tmp_path / name)
  assert got["steps"] == ([3, 6, 9, 12, 15, 18, 21, 24], [6, 12, 18, 24])
  assert got["epochs"] == got["run"] == got["aliases"] == got["steps"]


@pytest.mark.e2e
def test_a_run_whose_flags_txt_predates_the_duration_flags_resumes(tiny_data_dir, tmp_path):
  run_dir = tmp_path / "run"
  old = ["--lr_warmup_epochs=0.5", "--eval_every_epochs=0.5"]
  tiny_run(tiny_data_dir, run_dir, "--train_steps=12", *old)
  flags_txt = run_dir / "flags.txt"  # As written before the duration flags existed: none of their lines.
  new_flags = "|".join(durations.DURATION_FLAGS)
  flags_txt.write_text(re.sub(rf"^--({new_flags})=.*\n", "", flags_txt.read_text(), flags=re.M))
  assert "--lr_warmup=" not in flags_txt.read_text() and "--lr_warmup_epochs=0.5" in flags_txt.read_text()

  code, stderr = run_cli(train.main, [f"--flagfile={flags_txt}", "--train_steps=24", "--lr_warmup=1ep"])
  assert code == 2 and "--lr_warmup=1ep (the run has 0.5ep)" in stderr  # Another warm-up: refused.
  tiny_run(tiny_data_dir, run_dir, "--train_steps=24", "--lr_warmup=0.5ep", "--eval_every=6")  # The same, newly said.
  assert saved_and_evaluated_steps(run_dir)[1] == [6, 12, 18, 24]  # Resumed at 12: the rows before are the run's.
