"""Learning-rate schedules: values at chosen steps, and settings that cannot work."""

import re

import numpy as np
import pytest
import tensorflow as tf

from cnn import schedules
from cnn.config import Config
from cnn.errors import UserError


def values(config, steps_per_epoch, total_steps, at):
  schedule = schedules.build_schedule(config, steps_per_epoch, total_steps)
  return [float(schedule(step)) for step in at]


def test_constant():
  assert values(Config(learning_rate=0.3), 10, 100, [0, 50, 99]) == pytest.approx([0.3, 0.3, 0.3])


def test_piecewise_by_steps_is_the_resnet_recipe():
  config = Config(learning_rate=0.1, lr_schedule="piecewise", lr_boundaries=(32000, 48000))
  got = values(config, 390, 64000, [0, 32000, 32001, 48000, 48001, 63999])
  assert got == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_piecewise_by_epochs_with_warmup():
  config = Config(learning_rate=0.1, lr_schedule="piecewise", lr_boundaries=(2, 3), lr_boundary_unit="epochs",
                  lr_decay_factor=0.5, lr_warmup_epochs=1)
  got = values(config, 10, 40, [0, 5, 10, 20, 21, 30, 31])
  assert got == pytest.approx([0.0, 0.05, 0.1, 0.1, 0.05, 0.05, 0.025])


def test_cosine_decays_to_the_final_fraction_after_warmup():
  config = Config(learning_rate=1.0, lr_schedule="cosine", lr_warmup_epochs=1, lr_warmup_start_fraction=0.5,
                  lr_final_fraction=0.1)
  got = values(config, 10, 110, [0, 5, 10, 60, 110])
  assert got == pytest.approx([0.5, 0.75, 1.0, 0.1 + 0.9 * 0.5, 0.1], abs=1e-6)


def test_linear_with_warmup_is_airbenchs_piecewise_linear_schedule():
  config = Config(learning_rate=2.0, lr_schedule="linear", lr_warmup_epochs=2.3, lr_warmup_start_fraction=0.2,
                  lr_final_fraction=0.07)
  # 10 steps an epoch, 100 steps: 0.2 → 1 of the peak over 23 steps, then down to 0.07 at step 100.
  got = values(config, 10, 100, [0, 23, 23 + 77 // 2, 100])
  assert got == pytest.approx([0.4, 2.0, 2.0 * (1 - 0.93 * 38 / 77), 0.14], rel=1e-5)


@pytest.mark.parametrize("warmup_epochs, start_fraction", [(0, 0.0), (2.3, 0.0), (5, 0.25)])
def test_cosine_is_kerass_own_warmup_and_gives_the_values_of_our_warmup_before_kerass_cosine(
    warmup_epochs, start_fraction):
  config = Config(learning_rate=3e-3, lr_schedule="cosine", lr_warmup_epochs=warmup_epochs,
                  lr_warmup_start_fraction=start_fraction, lr_final_fraction=0.02)
  steps_per_epoch, total_steps = 10, 123
  warmup_steps = round(warmup_epochs * steps_per_epoch)
  ours = schedules.WarmupThen(tf.keras.optimizers.schedules.CosineDecay(3e-3, total_steps - warmup_steps, alpha=0.02),
                              3e-3, 3e-3 * start_fraction, warmup_steps, warmup_steps)
  assert isinstance(schedules.build_schedule(config, steps_per_epoch, total_steps),
                    tf.keras.optimizers.schedules.CosineDecay)
  at = range(total_steps + 3)
  got, expected = np.array(values(config, steps_per_epoch, total_steps, at)), np.array([float(ours(s)) for s in at])
  np.testing.assert_allclose(got, expected, rtol=2e-7)  # The warmup's arithmetic order: 1 float32 rounding.
  np.testing.assert_array_equal(got[warmup_steps:], expected[warmup_steps:])  # The decay: the same.


@pytest.mark.parametrize("decay", [
    lambda: tf.keras.optimizers.schedules.PolynomialDecay(1.0, 10, warmup_target=2.0, warmup_steps=5),
    lambda: tf.keras.optimizers.schedules.PiecewiseConstantDecay([5], [1.0, 0.1], warmup_steps=5)])
def test_keras_has_no_warmup_for_the_other_schedules_so_they_keep_ours(decay):
  # When this fails, Keras has one: use it in build_schedule, as for cosine.
  with pytest.raises(TypeError, match="warmup"):
    decay()


@pytest.mark.parametrize("schedule, middle", [("cosine", 0.1 + 0.9 * 0.5), ("linear", 0.1 + 0.9 * 0.5)])
def test_a_hold_keeps_the_peak_after_the_warmup_then_decays_over_the_rest(schedule, middle):
  # fast.ai's flat-cos, with a warmup: 10 steps up, 50 at the peak, 40 down to the final fraction.
  config = Config(learning_rate=1.0, lr_schedule=schedule, lr_warmup_epochs=1, lr_warmup_start_fraction=0.5,
                  lr_hold_epochs=5, lr_final_fraction=0.1)
  got = values(config, 10, 100, [0, 5, 10, 35, 59, 60, 80, 100])
  assert got == pytest.approx([0.5, 0.75, 1.0, 1.0, 1.0, 1.0, middle, 0.1], abs=1e-6)


@pytest.mark.parametrize("settings, message", [
    (dict(lr_hold_epochs=2), "--lr_schedule=constant does not decay over the run (use cosine or linear)"),
    (dict(lr_schedule="cosine", lr_warmup_epochs=3, lr_hold_epochs=7),
     "--lr_warmup_epochs and --lr_hold_epochs (30 + 70 steps) leave no steps of the 100 to decay over"),
    (dict(lr_warmup_epochs=10), "--lr_warmup_epochs=10 (100 steps) is not shorter than training (100 steps)"),
    (dict(lr_schedule="piecewise"), "--lr_schedule=piecewise needs --lr_boundaries"),
    (dict(lr_schedule="piecewise", lr_boundaries=(30, 20)), "--lr_boundaries=30,20 must increase"),
])
def test_settings_that_cannot_work(settings, message):
  with pytest.raises(UserError, match=re.escape(message)):
    schedules.build_schedule(Config(**settings), 10, 100)
