"""The NaN guard: a non-finite training loss or gradient norm stops the run at that step.

The trainer calls `check` after every step, before anything is saved, so the last checkpoint
is always a finite state. The step's update has been applied in memory (the run stops right
after it); it never reaches a checkpoint.
"""

import math

import tensorflow as tf

from cnn.errors import UserError


def check(step: int, outputs: dict[str, tf.Tensor], last_checkpoint: str) -> None:
  """Raises UserError if step `step`'s loss or gradient norm is NaN or infinite.

  Args:
    step: the step just taken (1-based).
    outputs: the train step's `loss` and `gradient_norm`.
    last_checkpoint: a clause naming the last good checkpoint (`Checkpointer.describe_last`).
  """
  loss, gradient_norm = float(outputs["loss"]), float(outputs["gradient_norm"])
  if math.isfinite(loss) and math.isfinite(gradient_norm):
    return
  # With mixed-float16 loss scaling, a non-finite gradient norm alongside a finite loss is the loss
  # scale's business: LossScaleOptimizer skips that update and halves the scale. This is the place to
  # let it have its chances: return here while the scale is above its floor (or for a bounded number of
  # consecutive skipped steps), and stop only on a non-finite loss or once the scale has run out.
  raise UserError(f"non-finite training at step {step} (loss {loss}, gradient_norm {gradient_norm}); "
                  f"{last_checkpoint}; try a lower --learning_rate")
