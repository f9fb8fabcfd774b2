"""Changes to the weights around each optimizer update, outside the optimizer.

Two, both from airbench94's recipe and useful beyond it:
  * freezing (`--freeze_variables`, `--freeze_after`): the trainable variables whose path
    matches are trained that long (a duration), then the optimizer no longer moves them, as PyTorch's
    `requires_grad = False` (airbench freezes its whitening bias after 3 epochs). Their value from
    before each update is put back after it, so the compiled step is not traced again.
  * lookahead averaging (`--lookahead_every=k`, Zhang et al. 2019, with airbench's schedule): every k
    steps the slow weights move toward the model's, slow = d·slow + (1−d)·weights, and the model takes
    them; d = lookahead_decay·(t/T)^power at step t of T (power 0: Zhang et al.'s constant α = 1−d). After
    the last step the model holds the slow weights. Which variables (`--lookahead_bn_stats`):
      - keep (default): the trainable ones, as Zhang et al.'s Lookahead and Ranger (RAdam + Lookahead,
        k=6, α=0.5), which wrap an optimizer and see only its parameters; BatchNorm's moving
        statistics stay as training leaves them.
      - average: every float variable, BatchNorm statistics included, as airbench averages its whole
        state dict.
    A frozen variable is averaged too (airbench's lookahead moves it).

The gradient chain (cnn/gradients.py, steps 5 and 6) calls `hold()` before each update, then
`freeze(step, held)` and `lookahead(step)` after it, in cross-replica context, inside the train step's
compiled loop: on every replica the same values.
"""

from typing import Optional, Sequence

import tensorflow as tf

from cnn import durations
from cnn import optim
from cnn.config import Config
from cnn.errors import UserError


class WeightHooks:
  """Freezing and lookahead for one model (see the module docstring).

  Create it under the strategy's scope: the slow weights are variables, saved with checkpoints.

  Args:
    model: the built model.
    frozen: trainable variables to freeze after `freeze_step` updates.
    freeze_step: updates they get.
    lookahead_every: steps between lookahead updates (0: none).
    lookahead_decay: d at the end of training.
    lookahead_decay_power: the exponent of d's ramp (0: constant d).
    total_steps: the run's length T.
    lookahead_bn_stats: "keep" (lookahead over the trainable variables) or "average" (every float
      variable, BatchNorm statistics too).
  """

  def __init__(self, model: tf.keras.Model, frozen: Sequence[tf.Variable] = (), freeze_step: int = 0,
               lookahead_every: int = 0, lookahead_decay: float = 0.0, lookahead_decay_power: float = 0.0,
               total_steps: int = 1, lookahead_bn_stats: str = "keep"):
    self.frozen, self.freeze_step = list(frozen), freeze_step
    self.lookahead_every, self.total_steps = lookahead_every, total_steps
    self.lookahead_decay, self.lookahead_decay_power = lookahead_decay, lookahead_decay_power
    self.averaged, self.slow = [], []
    if lookahead_every:
      every = model.variables if lookahead_bn_stats == "average" else model.trainable_variables
      self.averaged = [v for v in every if tf.as_dtype(v.dtype).is_floating]
      self.slow = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name="slow")
                   for v in self.averaged]

  def variables(self) -> list[tf.Variable]:
    """The lookahead's slow weights (for checkpoints)."""
    return list(self.slow)

  def hold(self) -> list[tf.Tensor]:
    """The frozen variables' values before an update."""
    return [tf.convert_to_tensor(v) for v in self.frozen]  # A read: a snapshot, not a reference.

  def freeze(self, step: tf.Tensor, held: Sequence[tf.Tensor]) -> None:
    """After the update that completes `step` (counted from 1): frozen variables take back `held`."""
    if self.frozen:
      tf.cond(tf.cast(step, tf.int64) > self.freeze_step, lambda: _assign(self.frozen, held), lambda: None)

  def lookahead(self, step: tf.Tensor) -> None:
    """After the update that completes `step` (counted from 1): on lookahead steps and the last one."""
    if self.lookahead_every:
      step = tf.cast(step, tf.int64)
      tf.cond((step % self.lookahead_every == 0) | (step == self.total_steps),
              lambda: self._lookahead(step), lambda: None)

  def _lookahead(self, step: tf.Tensor) -> None:
    progress = tf.cast(step, tf.float32) / self.total_steps
    decay = self.lookahead_decay * progress ** self.lookahead_decay_power
    # The last step, when it is not a lookahead step, only copies the slow weights in (decay 1).
    decay = tf.where(step % self.lookahead_every == 0, decay, 1.0)
    for slow, variable in zip(self.slow, self.averaged):
      slow.assign(decay * slow + (1 - decay) * tf.cast(variable, tf.float32))
    _assign(self.averaged, self.slow)


def _assign(variables: Sequence[tf.Variable], values: Sequence[tf.Tensor]) -> None:
  for variable, value in zip(variables, values):
    variable.assign(tf.cast(value, variable.dtype))


def build_weight_hooks(config: Config, model: tf.keras.Model, steps_per_epoch: int,
                       total_steps: int) -> Optional[WeightHooks]:
  """The hooks `config` asks for, or None (the step then has none of their ops).

  Raises:
    UserError: for a bad pattern, or one that matches no trainable variable.
  """
  frozen = optim.matching(model.trainable_variables, config.freeze_variables, "freeze_variables")
  if config.freeze_variables and not frozen:
    paths = ", ".join(v.path for v in model.trainable_variables[:4])
    raise UserError(f"--freeze_variables={config.freeze_variables} matches no trainable variable of "
                    f"--model={config.model} (paths look like: {paths}, ...)")
  if not frozen and not config.lookahead_every:
    return None
  return WeightHooks(model, frozen, durations.steps(config, "freeze_after", steps_per_epoch, total_steps),
                     config.lookahead_every, config.lookahead_decay, config.lookahead_decay_power,
                     total_steps, config.lookahead_bn_stats)
