"""Every change between the loss's gradient and the new weights, in the order the train step makes them.

The train step (cnn/training/train_step.py) makes one `Chain` and calls, for each step:
  * `hold()`, in cross-replica context, before the update;
  * `apply(gradients)` on each replica, with that replica's gradients of the (scaled) loss;
  * `after_update(step, held)`, in cross-replica context.

In `apply`, on each replica (every replica computes the same values):
  1. Sum over replicas. The optimizer applies the sum, so what follows sees the gradient of the
     global batch: clipping measures its norm, the L2 term is added once, and every replica agrees
     (also on whether a float16 step is finite).
  2. Unscale (mixed_float16): divide by the loss scale, so that the transforms work in the loss's
     units. The global norm reported as `gradient_norm` (logged; the NaN guard checks it) is taken here.
  3. The transforms (`build_transforms`), in order:
       a. `clip_by_global_norm` (--clip_global_norm): first, so that the threshold bounds the loss's
          gradient and nothing added after it is clipped (PyTorch's `clip_grad_norm_` before `step`).
       b. `scale_by_variable` (--bn_bias_lr_scale): a per-variable factor, before the optimizer, so
          that with SGD it is a per-variable learning-rate factor (airbench).
       c. `coupled_l2` (--weight_decay_type=l2): + λ·w, after the scales so λ is not scaled, before
          the optimizer so it passes through momentum and Adam's scaling (PyTorch's SGD `weight_decay`).
     The gradient histograms record their result: the gradient the optimizer applies.
  4. The optimizer (Keras, cnn/optim.py), given the result (`_hand_over`): decoupled weight decay
     (--weight_decay_type=decoupled, AdamW; Keras decays the weights before its update, as PyTorch's
     AdamW does), the update (momentum, Adam), then the EMA (--ema_decay) of the weights and
     BatchNorm statistics. Under mixed_float16 a step whose gradient is not finite is skipped whole
     (update, decay and EMA alike) and the loss scale halves.

In `after_update` (cross-replica, in the compiled loop; the hooks are in cnn/weight_hooks.py):
  5. Freeze (--freeze_variables): frozen variables take back their value from before the update, so
     neither momentum nor decay moves them.
  6. Lookahead (--lookahead_every): after freezing, so the slow weights see the frozen value.

Caveat of this order: the EMA (4) runs inside Keras's update, before freezing (5), so the average of
a frozen variable follows the value the optimizer gave it, not the restored one.

A transform of your own is a function (gradients, variables) -> gradients on the summed, unscaled
gradients (`Transform`); add it to `build_transforms` at its place in the order.
"""

from typing import Callable, Optional, Sequence

import tensorflow as tf

from cnn import optim
from cnn.config import Config
from cnn.weight_hooks import WeightHooks

Transform = Callable[[Sequence[tf.Tensor], Sequence[tf.Variable]], list[tf.Tensor]]


def clip_by_global_norm(max_norm: float) -> Transform:
  """All gradients scaled by one factor so that their global norm is at most `max_norm`.

  A non-finite norm gives NaN gradients (`tf.clip_by_global_norm`), so a float16 step stays skipped.
  """

  def clip(gradients, variables):
    del variables
    return tf.clip_by_global_norm(gradients, max_norm)[0]

  return clip


def scale_by_variable(scales: dict[int, float]) -> Transform:
  """Each gradient multiplied by its variable's factor in `scales` (by the variable's `id`; absent: 1)."""

  def scale(gradients, variables):
    return [g * tf.cast(scales[id(v)], g.dtype) if id(v) in scales else g for g, v in zip(gradients, variables)]

  return scale


def coupled_l2(coefficients: dict[int, float]) -> Transform:
  """λ·w added to each gradient, λ its variable's coefficient in `coefficients` (by `id`; absent: none)."""

  def add_l2(gradients, variables):
    return [g + tf.cast(coefficients[id(v)], g.dtype) * tf.cast(v, g.dtype) if id(v) in coefficients else g
            for g, v in zip(gradients, variables)]

  return add_l2


def build_transforms(config: Config, variables: Sequence[tf.Variable]) -> list[Transform]:
  """The transforms `config` asks for, for the model's trainable `variables`, in the chain's order.

  Raises:
    UserError: for a bad --weight_decay_exclude pattern.
  """
  transforms = []
  if config.clip_global_norm:
    transforms.append(clip_by_global_norm(config.clip_global_norm))
  if config.bn_bias_lr_scale != 1.0:
    transforms.append(scale_by_variable({id(v): config.bn_bias_lr_scale for v in variables
                                         if optim.is_batch_norm_offset(v)}))
  if optim.weight_decay_type(config) == "l2" and config.weight_decay:
    transforms.append(coupled_l2({id(v): config.weight_decay
                                  for v in optim.decayed(variables, config.weight_decay_exclude)}))
  return transforms


def _loss_scale(optimizer: tf.keras.optimizers.Optimizer) -> Optional[tf.Variable]:
  if isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer):
    return optimizer.dynamic_scale
  return None


class Chain:
  """Steps 1-6 of the module docstring for one model and optimizer.

  Args:
    optimizer: the model's optimizer (a `LossScaleOptimizer` under mixed_float16).
    transforms: step 3 (`build_transforms`).
    weight_hooks: steps 5 and 6, if the run has them.
  """

  def __init__(self, optimizer: tf.keras.optimizers.Optimizer, transforms: Sequence[Transform] = (),
               weight_hooks: Optional[WeightHooks] = None):
    self.optimizer = optimizer
    self.transforms, self.weight_hooks = list(transforms), weight_hooks

  def hold(self) -> list[tf.Tensor]:
    """Before the update, cross-replica: the values step 5 puts back."""
    return self.weight_hooks.hold() if self.weight_hooks is not None else []

  def apply(self, gradients: Sequence[tf.Tensor],
            variables: Sequence[tf.Variable]) -> tuple[list[tf.Tensor], tf.Tensor]:
    """Steps 1-4 on one replica's gradients of the (scaled) loss with respect to `variables`.

    Returns:
      The gradients the optimizer applied, and the global norm of the summed, unscaled gradients.
    """
    context = tf.distribute.get_replica_context()
    if context.num_replicas_in_sync > 1:  # 1. (On one device, nothing to sum.)
      gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, list(gradients))
    scale = _loss_scale(self.optimizer)  # Read before the update, which may change it.
    if scale is not None:  # 2.
      gradients = [g / tf.cast(scale, g.dtype) for g in gradients]
    norm = tf.linalg.global_norm(gradients)
    for transform in self.transforms:  # 3.
      gradients = transform(gradients, variables)
    self._hand_over(gradients, variables, scale, context.num_replicas_in_sync)  # 4.
    return list(gradients), norm

  def _hand_over(self, gradients: Sequence[tf.Tensor], variables: Sequence[tf.Variable],
                 scale: Optional[tf.Variable], replicas: int) -> None:
    """Has the optimizer apply `gradients` (summed, unscaled) as they are.

    Keras's optimizer sums what each replica gives it, and a LossScaleOptimizer divides by the loss
    scale, so each replica gives gradients·scale/replicas. The loss scale only ever doubles or halves,
    so with a power-of-two replica count (1, 2, 4, 8, ...) the optimizer gets the gradients back bit
    for bit; with another count, to within a rounding.
    """
    factor = 1.0 / replicas if scale is None else tf.cast(scale, tf.float32) / replicas
    if scale is not None or replicas > 1:
      gradients = [g * tf.cast(factor, g.dtype) for g in gradients]
    self.optimizer.apply_gradients(zip(gradients, variables))

  def after_update(self, step: tf.Tensor, held: Sequence[tf.Tensor]) -> None:
    """Steps 5 and 6, cross-replica, after the update that completes `step` (counted from 1)."""
    if self.weight_hooks is not None:
      self.weight_hooks.freeze(step, held)  # 5.
      self.weight_hooks.lookahead(step)  # 6.
