"""Optimizers by name, with their schedule, decoupled weight decay and weight averaging (EMA).

The optimizer is step 4 of the gradient chain (cnn/gradients.py, which has the whole order and
the gradient transforms before it, coupled L2 among them). Weight decay comes in two kinds
(`--weight_decay_type`):
  * l2 (coupled): λ·w is added to the gradient before the update (`gradients.coupled_l2`), so it
    passes through momentum and Adam's scaling; the "weight decay" of He et al. and of PyTorch's SGD.
  * decoupled: w -= lr·λ·w, by Keras's `weight_decay` inside the optimizer (AdamW; note the learning
    rate factor, as PyTorch's AdamW).
Variables whose path matches one of `--weight_decay_exclude` (e.g. `bias,gamma,beta`) get neither.

Weight averaging (`--ema_decay`) is Keras's optimizer EMA of the trainable variables, extended to the
model's other float variables (BatchNorm moving statistics), as timm's ModelEmaV2 averages its
buffers: evaluation swaps all of them in (`averaged_weights`). The averages are optimizer variables,
updated on each applied step.

Step counts under mixed_float16 (`LossScaleOptimizer`, which skips a step whose gradients are not
finite): `optimizer.iterations` counts every step, skipped ones too, and drives the learning-rate
schedule, so the schedule follows the loop's step (as the weight hooks and logs do; PyTorch's
schedulers with GradScaler alike). The inner optimizer's `iterations` counts applied updates only:
it drives Adam's bias correction and the EMA's first step.

Conventions that differ from PyTorch's (tests/parity_test.py shows each, step for step):
  * SGD momentum: Keras folds the rate into the velocity (u ← μ·u − lr_t·g, w ← w + u), PyTorch
    applies the current rate to its buffer (b ← μ·b + g, w ← w − lr_t·b). The same updates at a
    constant rate; when the rate changes, Keras's velocity still carries the earlier rates. Keras's is
    the default; `--sgd_momentum=pytorch` is PyTorch's (`PyTorchSGD`), for recipes tuned in PyTorch.
  * Adam/AdamW: Keras adds ε to √v_t and rescales (ε of Kingma and Ba's "epsilon hat"), PyTorch's
    Adam/AdamW add it to √v̂_t: ε_torch = ε_keras/√(1−β2^t), negligible when ε ≪ √v̂. RAdam follows
    PyTorch's RAdam, which places ε as Keras does.
"""

import contextlib
from typing import Optional, Sequence

import tensorflow as tf

from cnn import schedules
from cnn.config import Config, variable_patterns
from cnn.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd", "nesterov", "radam")
DECOUPLED_BY_DEFAULT = ("adamw", "radam")  # --weight_decay_type=auto: decoupled for these, coupled L2 otherwise.


class _StatisticsAverage:
  """Mixin for a Keras optimizer with `use_ema`: also averages non-trainable float variables.

  Keras averages only the variables it updates; BatchNorm's moving statistics are averaged here with
  the same momentum and first-step rule, on the same (applied) steps.
  """

  def configure_averaged_statistics(self, statistics: Sequence[tf.Variable]) -> None:
    """The non-trainable variables to average too; before `build`."""
    self._statistics = list(statistics)

  def build(self, variables):
    if self.built:  # As Keras's own optimizers: building again is a no-op.
      return
    super().build(variables)
    statistics = getattr(self, "_statistics", []) if self.use_ema else []
    self._statistics_averages = [self.add_variable_from_reference(v, name="average") for v in statistics]

  def _update_model_variables_moving_average(self, trainable_variables):
    super()._update_model_variables_moving_average(trainable_variables)
    if self._statistics_averages:
      momentum = tf.where(tf.equal(self.iterations, 0), 0.0, self.ema_momentum)
      for statistic, average in zip(self._statistics, self._statistics_averages):
        average.assign(momentum * average + (1.0 - momentum) * statistic)


class SGD(_StatisticsAverage, tf.keras.optimizers.SGD):
  """Keras's SGD (momentum, Nesterov), whose EMA also averages BatchNorm statistics."""


class PyTorchSGD(SGD):
  """SGD with PyTorch's momentum (`--sgd_momentum=pytorch`): the current rate applied to the buffer.

      b ← μ·b + g;    w ← w − lr_t·b    (Nesterov: w ← w − lr_t·(g + μ·b))

  as `torch.optim.SGD` with dampening 0. Keras's SGD keeps u = −Σ lr_s·μ^(t−s)·g_s instead, so the two
  differ only while the rate changes (warm-up, decay). The same slot variables as Keras's SGD.
  """

  def update_step(self, gradient, variable, learning_rate):
    lr = tf.cast(learning_rate, variable.dtype)
    gradient = tf.cast(gradient, variable.dtype)
    if self.momentum == 0:
      self.assign_sub(variable, lr * gradient)
      return
    buffer = self.momentums[self._get_variable_index(variable)]
    momentum = tf.cast(self.momentum, variable.dtype)
    self.assign(buffer, momentum * buffer + gradient)
    self.assign_sub(variable, lr * (gradient + momentum * buffer if self.nesterov else buffer))


class Adam(_StatisticsAverage, tf.keras.optimizers.Adam):
  """Keras's Adam, whose EMA also averages BatchNorm statistics."""


class AdamW(_StatisticsAverage, tf.keras.optimizers.AdamW):
  """Keras's AdamW, whose EMA also averages BatchNorm statistics."""


class RAdam(_StatisticsAverage, tf.keras.optimizers.Adam):
  """Rectified Adam (Liu et al. 2019, "On the Variance of the Adaptive Learning Rate and Beyond").

  Adam whose adaptive step is switched on only once the variance of its second-moment estimate is
  tractable, and then scaled by the rectification r_t. At step t (from 1), gradient g:

      m_t = β1·m_{t−1} + (1−β1)·g          v_t = β2·v_{t−1} + (1−β2)·g²          m̂_t = m_t / (1−β1^t)
      ρ∞ = 2/(1−β2) − 1                     ρ_t = ρ∞ − 2t·β2^t / (1−β2^t)
      if ρ_t > 5:  r_t = √((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t)),   l_t = √(1−β2^t) / (√v_t + ε)
                   w ← w − lr·r_t·l_t·m̂_t
      else:        w ← w − lr·m̂_t          (momentum SGD for the first steps: 5 with β2 = 0.999)

  The paper's algorithm 2 switches at ρ_t > 4; the threshold 5 and ε added to √v_t (Keras Adam's
  "epsilon hat") are those of the authors' code and `torch.optim.RAdam`, which tests/parity_test.py
  matches step for step. Weight decay is Keras's (`weight_decay`, decoupled as AdamW: w −= lr·λ·w
  before the update), or coupled L2 in the gradient chain.
  """

  def update_step(self, gradient, variable, learning_rate):
    dtype = variable.dtype
    lr, gradient = tf.cast(learning_rate, dtype), tf.cast(gradient, dtype)
    m = self._momentums[self._get_variable_index(variable)]
    v = self._velocities[self._get_variable_index(variable)]
    self.assign(m, self.beta_1 * m + (1 - self.beta_1) * gradient)
    self.assign(v, self.beta_2 * v + (1 - self.beta_2) * tf.square(gradient))
    # The step's scalars in float64: ρ_t is a difference of numbers near ρ∞ (1999 for β2 = 0.999),
    # which float32 would get wrong by a few parts in 1000 of r_t in the first rectified steps.
    t = tf.cast(self.iterations + 1, tf.float64)
    beta_1, beta_2 = tf.constant(self.beta_1, tf.float64), tf.constant(self.beta_2, tf.float64)
    rho_inf = 2 / (1 - beta_2) - 1
    rho_t = rho_inf - 2 * t * beta_2**t / (1 - beta_2**t)
    rectified = rho_t > 5
    rho_t = tf.where(rectified, rho_t, 5.0)  # r_t is not real for ρ_t ≤ 4; unused there anyway.
    r_t = tf.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    m_hat = m / tf.cast(1 - beta_1**t, dtype)
    l_t = tf.cast(tf.sqrt(1 - beta_2**t), dtype) / (tf.sqrt(v) + tf.cast(self.epsilon, dtype))
    step = tf.where(rectified, tf.cast(r_t, dtype) * l_t, 1.0)
    self.assign_sub(variable, lr * m_hat * step)


class _LossScaleOptimizer(tf.keras.optimizers.LossScaleOptimizer):
  """A LossScaleOptimizer whose `iterations` counts every step, skipped ones too (see the module docstring).

  Keras's wrapper reports its inner optimizer's count, which a skipped step does not advance. Its own
  `iterations` variable, otherwise unused, is saved with it.
  """

  def apply(self, grads, trainable_variables=None):
    super().apply(grads, trainable_variables)
    self._iterations.assign_add(1)

  @property
  def iterations(self):
    return self._iterations


class _AtStep(schedules.Schedule):
  """`schedule` at `step()` whatever step the optimizer passes (its own count can lag the loop's)."""

  def __init__(self, schedule: schedules.Schedule, step):
    self.schedule, self.step = schedule, step

  def __call__(self, step):
    del step  # The inner optimizer's count of applied updates.
    return self.schedule(self.step())

  def get_config(self):
    return self.schedule.get_config()


def matching(variables: Sequence[tf.Variable], patterns: str, flag: str) -> list[tf.Variable]:
  """The variables whose path matches one of the comma-separated regular expressions `patterns`.

  Raises:
    UserError: naming `flag` for a bad regular expression.
  """
  compiled = variable_patterns(patterns, flag)
  return [v for v in variables if any(p.search(v.path) for p in compiled)]


def decayed(variables: Sequence[tf.Variable], exclude: str) -> list[tf.Variable]:
  """The variables that get weight decay: those whose path matches none of the comma-separated regexes."""
  excluded = {id(v) for v in matching(variables, exclude, "weight_decay_exclude")}
  return [v for v in variables if id(v) not in excluded]


def weight_decay_type(config: Config) -> str:
  """"l2" (coupled) or "decoupled": --weight_decay_type with "auto" resolved (decoupled for adamw, radam).

  Raises:
    UserError: for an unknown optimizer, or coupled L2 asked of adamw.
  """
  if config.optimizer not in OPTIMIZERS:
    raise UserError(f"unknown --optimizer={config.optimizer}; choose one of: {', '.join(OPTIMIZERS)}")
  kind = config.weight_decay_type
  if kind == "auto":
    kind = "decoupled" if config.optimizer in DECOUPLED_BY_DEFAULT else "l2"
  if config.optimizer == "adamw" and kind == "l2" and config.weight_decay:
    raise UserError("--optimizer=adamw decays weights decoupled; use --weight_decay_type=decoupled, or "
                    "--optimizer=adam for coupled L2")
  return kind


def build_optimizer(config: Config, variables: Sequence[tf.Variable] = (), steps_per_epoch: int = 1,
                    total_steps: int = 1, statistics: Sequence[tf.Variable] = (),
                    schedule: Optional[schedules.Schedule] = None) -> tf.keras.optimizers.Optimizer:
  """The optimizer `config.optimizer` names, for the model's trainable `variables`.

  Coupled L2 and gradient scales are not the optimizer's: they are gradient transforms
  (`gradients.build_transforms`).

  Args:
    config: the run's settings (optimizer, schedule, weight decay, EMA).
    variables: the model's trainable variables (for decoupled weight-decay exclusions).
    steps_per_epoch: steps in one epoch (for schedules given in epochs).
    total_steps: the run's length (for decaying schedules).
    statistics: the model's non-trainable float variables, averaged with the weights under
      --ema_decay (`averaged_statistics(model)`).
    schedule: the learning-rate schedule, if already built (`schedules.build_schedule`; else built here).

  Raises:
    UserError: for an unknown name or settings that do not fit together.
  """
  kind = weight_decay_type(config)
  learning_rate = schedule if schedule is not None else schedules.build_schedule(config, steps_per_epoch, total_steps)
  # No `global_clipnorm`: Keras clips each replica's gradients before summing them, so the gradient
  # chain clips instead, by the norm of the summed gradients (cnn/gradients.py).
  common = dict(learning_rate=learning_rate, use_ema=bool(config.ema_decay),
                ema_momentum=config.ema_decay or 0.99)
  if kind == "decoupled" and config.weight_decay:
    common["weight_decay"] = config.weight_decay
  if config.optimizer in ("adam", "adamw", "radam"):
    cls = {"adam": Adam, "adamw": AdamW, "radam": RAdam}[config.optimizer]
    extra = dict(beta_1=config.momentum, beta_2=config.adam_beta2, epsilon=config.adam_epsilon)
    if config.optimizer == "adamw":
      extra["weight_decay"] = common.pop("weight_decay", 0.0)
  else:
    cls = PyTorchSGD if config.sgd_momentum == "pytorch" else SGD
    extra = dict(momentum=config.momentum, nesterov=config.nesterov or config.optimizer == "nesterov")
  optimizer = cls(**common, **extra)
  if kind == "decoupled" and config.weight_decay:
    with_decay = {id(v) for v in decayed(variables, config.weight_decay_exclude)}
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if id(v) not in with_decay])
  optimizer.configure_averaged_statistics(statistics)
  if config.precision == "mixed_float16":
    # Dynamic loss scaling (float16 gradients would underflow otherwise). The wrapper is the optimizer
    # the run holds, so its loss scale is saved with it.
    optimizer = _LossScaleOptimizer(optimizer)
    optimizer.learning_rate = _AtStep(learning_rate, lambda: optimizer.iterations)
  return optimizer


def averaged_statistics(model: tf.keras.Model) -> list[tf.Variable]:
  """The model's non-trainable float variables (BatchNorm moving statistics): averaged with the weights."""
  return [v for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]


def is_batch_norm_offset(variable: tf.Variable) -> bool:
  """A BatchNorm beta (--bn_bias_lr_scale)."""
  return variable.path.endswith("/beta")


def moving_averages(model: tf.keras.Model,
                    optimizer: tf.keras.optimizers.Optimizer) -> list[tuple[tf.Variable, tf.Variable]]:
  """(model variable, its moving average) for each averaged variable; empty without --ema_decay.

  Through a LossScaleOptimizer, the inner optimizer's: the wrapper has an EMA setting of its own,
  always off.
  """
  ema = getattr(optimizer, "inner_optimizer", optimizer)
  if not ema.use_ema or not ema.built:
    return []
  # Keras has no public accessor for its averages; they are in the order of the variables it was built on.
  averages, index = ema._model_variables_moving_average, ema._get_variable_index  # pylint: disable=protected-access
  pairs = [(v, averages[index(v)]) for v in model.trainable_variables]
  return pairs + list(zip(getattr(ema, "_statistics", []), getattr(ema, "_statistics_averages", [])))


@contextlib.contextmanager
def averaged_weights(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer):
  """Within the block the model holds the optimizer's moving averages (--ema_decay); then its own values.

  Weights and BatchNorm statistics alike. A no-op for an optimizer without EMA. The averages are
  optimizer variables, so a checkpoint of the optimizer saves them.
  """
  pairs = moving_averages(model, optimizer)
  raw = [tf.convert_to_tensor(variable) for variable, _ in pairs]
  for variable, average in pairs:
    variable.assign(average)
  try:
    yield
  finally:
    for (variable, _), value in zip(pairs, raw):
      variable.assign(value)
