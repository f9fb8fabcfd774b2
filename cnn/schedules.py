"""Learning-rate schedules by name, built on `keras.optimizers.schedules`.

Every schedule peaks at `--learning_rate` (times `--batch_size / --lr_reference_batch` when that is
given: `peak_learning_rate`); an optional linear warmup (`--lr_warmup`, a duration: cnn/durations.py)
climbs to it from `--lr_warmup_start_fraction` of it. After the warmup:
  * constant: stays at the peak;
  * piecewise: multiplied by `--lr_decay_factor` at each of `--lr_boundaries` (steps or epochs,
    counted from the start of training);
  * cosine / linear: decays to `--lr_final_fraction` of the peak at the last step. Linear decay after
    a warmup is the one-cycle (piecewise-linear) schedule of airbench and fast CIFAR training.
    `--lr_hold` keeps the peak that long before the decay starts (fast.ai's flat-cos).

The cosine schedule is Keras's `CosineDecay` with its own warmup (`warmup_target`, `warmup_steps`);
Keras has no warmup for the others, so `WarmupThen` adds one to them (schedules_test shows both).
"""

from absl import logging
import tensorflow as tf

from cnn import durations
from cnn.config import Config
from cnn.errors import UserError

SCHEDULES = ("constant", "piecewise", "cosine", "linear")
Schedule = tf.keras.optimizers.schedules.LearningRateSchedule


class Constant(Schedule):
  """The same rate at every step."""

  def __init__(self, learning_rate: float):
    self.learning_rate = learning_rate

  def __call__(self, step):
    return tf.constant(self.learning_rate, tf.float32)

  def get_config(self):
    return {"learning_rate": self.learning_rate}


class HoldThen(Schedule):
  """`peak` for `hold_steps` steps, then `after(step - hold_steps)`."""

  def __init__(self, after: Schedule, peak: float, hold_steps: int):
    self.after, self.peak, self.hold_steps = after, peak, hold_steps

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    return tf.where(step < self.hold_steps, self.peak, self.after(tf.maximum(step - self.hold_steps, 0.0)))

  def get_config(self):
    return {"peak": self.peak, "hold_steps": self.hold_steps}


class WarmupThen(Schedule):
  """Linear warmup from `start` to `peak` over `warmup_steps`, then `after(step - offset)`.

  For the schedules Keras gives no warmup (constant, piecewise, linear); cosine uses Keras's own.

  Args:
    after: the schedule after the warmup.
    peak: the rate at the end of the warmup.
    start: the rate at step 0.
    warmup_steps: length of the warmup (0: none).
    offset: subtracted from the step before calling `after` (the warmup length for schedules that
      decay over the steps after it, 0 for boundaries counted from the start).
  """

  def __init__(self, after: Schedule, peak: float, start: float, warmup_steps: int, offset: int):
    self.after, self.peak, self.start = after, peak, start
    self.warmup_steps, self.offset = warmup_steps, offset

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    if not self.warmup_steps:
      return self.after(step)
    warm = self.start + (self.peak - self.start) * step / self.warmup_steps
    return tf.where(step < self.warmup_steps, warm, self.after(tf.maximum(step - self.offset, 0.0)))

  def get_config(self):
    return {"peak": self.peak, "start": self.start, "warmup_steps": self.warmup_steps, "offset": self.offset}


def peak_learning_rate(config: Config) -> float:
  """The schedule's peak: --learning_rate, scaled by --batch_size / --lr_reference_batch when that is given."""
  if not config.lr_reference_batch:
    return config.learning_rate
  return config.learning_rate * config.batch_size / config.lr_reference_batch


def build_schedule(config: Config, steps_per_epoch: int, total_steps: int) -> Schedule:
  """The schedule `config.lr_schedule` names for a run of `total_steps`. Raises UserError."""
  peak = peak_learning_rate(config)
  if config.lr_reference_batch:
    logging.info("Learning rate %.6g: --learning_rate=%g for a batch of --lr_reference_batch=%d, scaled to "
                 "--batch_size=%d", peak, config.learning_rate, config.lr_reference_batch, config.batch_size)
  warmup, hold = durations.of(config, "lr_warmup"), durations.of(config, "lr_hold")
  warmup_steps, hold_steps = warmup.steps(steps_per_epoch, total_steps), hold.steps(steps_per_epoch, total_steps)
  if warmup_steps >= total_steps and warmup.value:
    raise UserError(f"{warmup.flag} ({warmup_steps} steps) is not shorter than training ({total_steps} steps); "
                    "shorten the warmup or train longer")
  if hold_steps and config.lr_schedule not in ("cosine", "linear"):
    raise UserError(f"{hold.flag_name} holds the peak before a decay; --lr_schedule={config.lr_schedule} "
                    "does not decay over the run (use cosine or linear)")
  if warmup_steps + hold_steps >= total_steps and hold_steps:
    raise UserError(f"{warmup.flag_name} and {hold.flag_name} ({warmup_steps} + {hold_steps} steps) leave no "
                    f"steps of the {total_steps} to decay over")
  decay_steps = total_steps - warmup_steps - hold_steps
  offset = warmup_steps
  if config.lr_schedule == "constant":
    after = Constant(peak)
  elif config.lr_schedule == "piecewise":
    if not config.lr_boundaries:
      raise UserError("--lr_schedule=piecewise needs --lr_boundaries, e.g. --lr_boundaries=32000,48000")
    per = steps_per_epoch if config.lr_boundary_unit == "epochs" else 1
    boundaries = [b * per for b in config.lr_boundaries]
    if boundaries != sorted(set(boundaries)):
      raise UserError(f"--lr_boundaries={','.join(map(str, config.lr_boundaries))} must increase")
    values = [peak * config.lr_decay_factor**i for i in range(len(boundaries) + 1)]
    after, offset = tf.keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values), 0
  elif config.lr_schedule == "cosine" and hold_steps:
    after = HoldThen(tf.keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=config.lr_final_fraction),
                     peak, hold_steps)
  elif config.lr_schedule == "cosine":  # Keras's warmup, from the start rate to the peak.
    return tf.keras.optimizers.schedules.CosineDecay(peak * config.lr_warmup_start_fraction, decay_steps,
                                                     alpha=config.lr_final_fraction, warmup_target=peak,
                                                     warmup_steps=warmup_steps)
  elif config.lr_schedule == "linear":
    after = tf.keras.optimizers.schedules.PolynomialDecay(peak, decay_steps,
                                                          end_learning_rate=peak * config.lr_final_fraction)
    after = HoldThen(after, peak, hold_steps) if hold_steps else after
  else:
    raise UserError(f"unknown --lr_schedule={config.lr_schedule}; choose one of: {', '.join(SCHEDULES)}")
  return WarmupThen(after, peak, peak * config.lr_warmup_start_fraction, warmup_steps, offset)

