"""The NaN guard: a non-finite training loss or gradient norm stops the run at that step.

The trainer calls `check` after every step, before anything is saved, so the last checkpoint
is always a finite state. The step's update has been applied in memory (the run stops right
after it); it never reaches a checkpoint.
"""

import math

import tensorflow as tf

from cnn.errors import UserError


# A loss scale that has been halved down to this has had its chances (from 2**15: 15 skipped steps).
MIN_LOSS_SCALE = 1.0


def check(step: int, outputs: dict[str, tf.Tensor], last_checkpoint: str,
          optimizer: tf.keras.optimizers.Optimizer) -> None:
  """Raises UserError if step `step`'s loss or gradient norm is NaN or infinite.

  With mixed-float16 loss scaling, a non-finite gradient norm alongside a finite loss is the loss
  scale's business: LossScaleOptimizer has skipped that update and halved the scale. The run goes
  on while the scale is above MIN_LOSS_SCALE, and stops once it has run out.

  Args:
    step: the step just taken (1-based; with several steps per loop, the loop's last).
    outputs: the train step's `loss` and `gradient_norm`.
    last_checkpoint: a clause naming the last good checkpoint (`Checkpointer.describe_last`).
    optimizer: the run's optimizer (a LossScaleOptimizer under mixed_float16).
  """
  loss, gradient_norm = float(outputs["loss"]), float(outputs["gradient_norm"])
  if math.isfinite(loss) and math.isfinite(gradient_norm):
    return
  if (math.isfinite(loss) and isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer) and
      float(tf.convert_to_tensor(optimizer.dynamic_scale)) > MIN_LOSS_SCALE):
    return  # A skipped update; the scale was halved.
  raise UserError(f"non-finite training at step {step} (loss {loss}, gradient_norm {gradient_norm}); "
                  f"{last_checkpoint}; try a lower --learning_rate")
