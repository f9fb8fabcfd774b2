"""Optimizers by name, with their schedule, weight decay and weight averaging (EMA).

Weight decay comes in two kinds (`--weight_decay_type`):
  * l2 (coupled): λ·w is added to the gradient before the update, so it passes through momentum and
    Adam's scaling; this is the "weight decay" of He et al. and of PyTorch's SGD.
  * decoupled: after the update, w -= lr·λ·w (Keras's `weight_decay`, AdamW; note the learning rate
    factor, as PyTorch's AdamW).
Variables whose path matches one of `--weight_decay_exclude` (e.g. `bias,gamma,beta`) get neither.
"""

import contextlib
import re
from typing import Sequence

import tensorflow as tf

from cnn import schedules
from cnn.config import Config
from cnn.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd", "nesterov")


class _GradientTransform:
  """Mixin for a Keras optimizer: coupled L2 and per-variable gradient scales before each update.

  It overrides `apply`, which `apply_gradients` (and a LossScaleOptimizer wrapping this one, after
  unscaling) calls with the raw gradients.
  """

  def configure_gradients(self, l2: dict[int, float], scales: dict[int, float]) -> None:
    """Per-variable (by `id`) coupled L2 coefficients and gradient scales; absent means none."""
    self._l2_by_id, self._scale_by_id = l2, scales

  def apply(self, grads, trainable_variables=None):
    if trainable_variables is not None:
      trainable_variables = list(trainable_variables)
      # Under tf.distribute this runs on each replica's share of the gradient, before Keras sums the
      # shares: each replica adds its share of the L2 term, so that the sum holds it once.
      context = tf.distribute.get_replica_context()
      replicas = context.num_replicas_in_sync if context else 1
      grads = [g if g is None else self._transform(g, v, replicas) for g, v in zip(grads, trainable_variables)]
    return super().apply(grads, trainable_variables)

  def _transform(self, gradient: tf.Tensor, variable: tf.Variable, replicas: int) -> tf.Tensor:
    scale, l2 = self._scale_by_id.get(id(variable), 1.0), self._l2_by_id.get(id(variable), 0.0)
    if scale != 1.0:
      gradient = gradient * scale
    if l2:
      gradient = gradient + tf.cast(l2 / replicas, gradient.dtype) * tf.cast(variable, gradient.dtype)
    return gradient


def _with_transform(cls: type) -> type:
  return type(cls.__name__, (_GradientTransform, cls), {})


def matching(variables: Sequence[tf.Variable], patterns: str, flag: str) -> list[tf.Variable]:
  """The variables whose path matches one of the comma-separated regular expressions `patterns`.

  Raises:
    UserError: naming `flag` for a bad regular expression.
  """
  try:
    compiled = [re.compile(p.strip()) for p in patterns.split(",") if p.strip()]
  except re.error as e:
    raise UserError(f"--{flag}: bad regular expression ({e})") from None
  return [v for v in variables if any(p.search(v.path) for p in compiled)]


def decayed(variables: Sequence[tf.Variable], exclude: str) -> list[tf.Variable]:
  """The variables that get weight decay: those whose path matches none of the comma-separated regexes."""
  excluded = {id(v) for v in matching(variables, exclude, "weight_decay_exclude")}
  return [v for v in variables if id(v) not in excluded]


def build_optimizer(config: Config, variables: Sequence[tf.Variable] = (), steps_per_epoch: int = 1,
                    total_steps: int = 1) -> tf.keras.optimizers.Optimizer:
  """The optimizer `config.optimizer` names, for the model's trainable `variables`.

  Args:
    config: the run's settings (optimizer, schedule, weight decay, EMA).
    variables: the model's trainable variables (for weight-decay exclusions and gradient scales).
    steps_per_epoch: steps in one epoch (for schedules given in epochs).
    total_steps: the run's length (for decaying schedules).

  Raises:
    UserError: for an unknown name or settings that do not fit together.
  """
  if config.optimizer not in OPTIMIZERS:
    raise UserError(f"unknown --optimizer={config.optimizer}; choose one of: {', '.join(OPTIMIZERS)}")
  kind = config.weight_decay_type
  if kind == "auto":
    kind = "decoupled" if config.optimizer == "adamw" else "l2"
  if config.optimizer == "adamw" and kind == "l2" and config.weight_decay:
    raise UserError("--optimizer=adamw decays weights decoupled; use --weight_decay_type=decoupled, or "
                    "--optimizer=adam for coupled L2")
  learning_rate = schedules.build_schedule(config, steps_per_epoch, total_steps)
  # No `global_clipnorm`: Keras clips each replica's gradients before summing them, so the train step
  # clips instead, by the norm of the summed gradients (cnn/steps.py).
  common = dict(learning_rate=learning_rate, use_ema=bool(config.ema_decay),
                ema_momentum=config.ema_decay or 0.99)
  if kind == "decoupled" and config.weight_decay:
    common["weight_decay"] = config.weight_decay
  if config.optimizer in ("adam", "adamw"):
    cls, extra = (tf.keras.optimizers.AdamW if config.optimizer == "adamw" else tf.keras.optimizers.Adam), {}
    if config.optimizer == "adamw":
      extra["weight_decay"] = common.pop("weight_decay", 0.0)
  else:
    cls = tf.keras.optimizers.SGD
    extra = dict(momentum=config.momentum, nesterov=config.nesterov or config.optimizer == "nesterov")
  optimizer = _with_transform(cls)(**common, **extra)

  with_decay = {id(v) for v in decayed(variables, config.weight_decay_exclude)}
  if kind == "decoupled" and config.weight_decay:
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if id(v) not in with_decay])
  l2 = {id(v): config.weight_decay for v in variables
        if kind == "l2" and config.weight_decay and id(v) in with_decay}
  scales = {id(v): config.bn_bias_lr_scale for v in variables
            if config.bn_bias_lr_scale != 1.0 and _is_batch_norm_offset(v)}
  optimizer.configure_gradients(l2, scales)
  if config.precision == "mixed_float16":
    # Dynamic loss scaling (float16 gradients would underflow otherwise). The wrapper is the optimizer
    # the run holds, so its loss scale is saved with it; it unscales before the transforms above.
    optimizer = tf.keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def _is_batch_norm_offset(variable: tf.Variable) -> bool:
  return variable.path.endswith("/beta")


@contextlib.contextmanager
def averaged_weights(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer):
  """Within the block the model holds the optimizer's moving averages (--ema_decay); then its own weights.

  A no-op for an optimizer without EMA. The averages are optimizer variables, so a checkpoint of the
  optimizer saves them.
  """
  if not optimizer.use_ema or not optimizer.built:
    yield
    return
  variables = model.trainable_variables
  raw = [tf.identity(v) for v in variables]
  optimizer.finalize_variable_values(variables)  # Copies the averages into the model.
  try:
    yield
  finally:
    for variable, value in zip(variables, raw):
      variable.assign(value)
