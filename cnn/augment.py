"""Training augmentations by name (`--augment=crop,flip,cutout`), stateless-seeded and batched.

Each augmentation maps a batch of float images [B, H, W, C] in [0, 1] (before normalisation) and its
labels to new ones. Its randomness comes only from `ctx.seed`, derived from (--seed, epoch, step, the
augmentation's position), through stateless random ops: a run's augmented batches are a pure function
of the seed, the same after a restart, and the tf.data iterator stays checkpointable (no
`tf.py_function`, no stateful `tf.image.random_*`).

Under tf.distribute each replica augments its own slice of the global batch. An example's draws are
the row of its place in the *global* batch (`ctx.positions`): draw for the whole global batch and keep
this slice's rows with `ctx.per_example(...)`, so that any number of replicas and workers gives the
one-device run.

Augmentations marked `soft_labels` (mixup, cutmix) mix labels: the pipeline then gives one-hot float
labels [B, num_classes] to the whole chain and to the loss. They pair neighbours of the global batch
(examples 2k and 2k+1, `partners`): the batch order is a random permutation, and a pair never spans two
replicas as long as the per-replica batch is even (`check_pairing`).

Register your own in a module loaded with --extra_modules:

    @augment.register("invert")
    def invert(images, labels, ctx):
      flip = ctx.per_example(tf.random.stateless_uniform([ctx.global_batch_size], ctx.seed)) < 0.5
      return tf.where(flip[:, None, None, None], 1.0 - images, images), labels
"""

import dataclasses
from typing import Callable

import tensorflow as tf

from cnn.config import Config
from cnn.errors import UserError


@dataclasses.dataclass(frozen=True)
class Context:
  """What an augmentation may use besides the batch.

  Attributes:
    seed: int64 [2] stateless seed, unique to (run seed, epoch, step, augmentation position).
    run_seed: --seed (for per-example randomness fixed over the run, e.g. alternating flips).
    epoch: int64 scalar, the epoch the batch belongs to (0-based).
    indices: int32 [B], the batch's example indices in the training split.
    num_examples: size of the training split.
    config: the run's settings (augmentation parameters).
    positions: int32 [B], each example's place in the global batch (this replica's slice of it).
    global_batch_size: int32 scalar, the global batch size (all replicas of all workers).
  """
  seed: tf.Tensor
  run_seed: int
  epoch: tf.Tensor
  indices: tf.Tensor
  num_examples: int
  config: Config
  positions: tf.Tensor
  global_batch_size: tf.Tensor

  def per_example(self, draws: tf.Tensor) -> tf.Tensor:
    """This batch's rows of `draws` [global_batch_size, ...], drawn for the whole global batch."""
    return tf.gather(draws, self.positions)


Augmentation = Callable[[tf.Tensor, tf.Tensor, Context], tuple[tf.Tensor, tf.Tensor]]


@dataclasses.dataclass(frozen=True)
class _Entry:
  fn: Augmentation
  soft_labels: bool


_AUGMENTATIONS: dict[str, _Entry] = {}


def register(name: str, soft_labels: bool = False) -> Callable[[Augmentation], Augmentation]:
  """Decorator: `@register("name")` on `fn(images, labels, ctx) -> (images, labels)`.

  Args:
    name: the name --augment uses.
    soft_labels: whether `fn` mixes labels (it then gets and returns one-hot float labels).
  """

  def decorator(fn: Augmentation) -> Augmentation:
    if name in _AUGMENTATIONS:
      raise ValueError(f"augmentation '{name}' is registered twice")
    _AUGMENTATIONS[name] = _Entry(fn, soft_labels)
    return fn

  return decorator


def names() -> list[str]:
  """Registered augmentation names, sorted."""
  return sorted(_AUGMENTATIONS)


def parse(spec: str) -> list[str]:
  """The names in a comma-separated --augment value. Raises UserError for an unknown one."""
  chosen = [n.strip() for n in spec.split(",") if n.strip()]
  for name in chosen:
    if name not in _AUGMENTATIONS:
      raise UserError(f"unknown augmentation '{name}' in --augment; registered: {', '.join(names())}")
  return chosen


def needs_soft_labels(spec: str) -> bool:
  """Whether any augmentation in `spec` mixes labels."""
  return any(_AUGMENTATIONS[name].soft_labels for name in parse(spec))


def check_pairing(spec: str, per_replica_batch: int, global_batch: int) -> None:
  """Raises UserError if a label-mixing augmentation's pairs would span replicas (odd replica batch)."""
  if needs_soft_labels(spec) and per_replica_batch != global_batch and per_replica_batch % 2:
    raise UserError(f"--augment={spec} mixes neighbouring examples (2k, 2k+1) of the global batch; the "
                    f"per-replica batch ({per_replica_batch}) must be even")


def make_augment_fn(config: Config, num_classes: int, num_examples: int):
  """The chain `config.augment` names, or None if empty.

  As `fn(images, labels, epoch, step, indices, positions=None, global_batch_size=None)`: `positions`
  [B] are the examples' places in the global batch of `global_batch_size` (default: the batch is the
  whole global batch).
  """
  chain = parse(config.augment)
  if not chain:
    return None
  soft = needs_soft_labels(config.augment)

  def augment(images, labels, epoch, step, indices, positions=None, global_batch_size=None):
    if positions is None:
      positions, global_batch_size = tf.range(tf.shape(images)[0]), tf.shape(images)[0]
    batch_seed = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(config.seed, tf.int64), tf.cast(epoch, tf.int64)]), tf.cast(step, tf.int64))
    if soft:
      labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
    for position, name in enumerate(chain):
      ctx = Context(tf.random.experimental.stateless_fold_in(batch_seed, position), config.seed, epoch,
                    indices, num_examples, config, tf.cast(positions, tf.int32),
                    tf.cast(global_batch_size, tf.int32))
      images, labels = _AUGMENTATIONS[name].fn(images, labels, ctx)
    return images, labels

  return augment


def partners(batch_size: tf.Tensor) -> tf.Tensor:
  """The local index each example mixes with: its neighbour 2k <-> 2k+1 (an odd last one, itself)."""
  neighbours = tf.bitwise.bitwise_xor(tf.range(batch_size), 1)
  return tf.minimum(neighbours, batch_size - 1)


def _uniform(ctx: Context, shape, seed, minval=0, maxval=None, dtype=tf.float32) -> tf.Tensor:
  """Stateless uniform draws [B, *shape], a row per example by its place in the global batch."""
  full_shape = tf.concat([[ctx.global_batch_size], tf.constant(shape, tf.int32)], 0)
  draws = tf.random.stateless_uniform(full_shape, seed, minval, maxval, dtype)
  return ctx.per_example(draws)


def _flip_where(flip: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
  return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def _beta(shape, alpha: float, seed: tf.Tensor) -> tf.Tensor:
  """Beta(alpha, alpha) samples as G1 / (G1 + G2) of two stateless Gamma(alpha) draws."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  g1 = tf.random.stateless_gamma(shape, seeds[0], alpha=alpha)
  g2 = tf.random.stateless_gamma(shape, seeds[1], alpha=alpha)
  return g1 / (g1 + g2)


def _box_mask(height: int, width: int, center: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """[B, H, W, 1] float mask, 1 inside boxes of `size` [B, 2] centred at `center` [B, 2] (clipped)."""
  top = center[:, 0] - size[:, 0] // 2
  left = center[:, 1] - size[:, 1] // 2
  rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
  in_rows = (rows >= top[:, None]) & (rows < (top + size[:, 0])[:, None])  # [B, H]
  in_cols = (cols >= left[:, None]) & (cols < (left + size[:, 1])[:, None])  # [B, W]
  return tf.cast(in_rows[:, :, None, None] & in_cols[:, None, :, None], tf.float32)


@register("crop")
def crop(images, labels, ctx):
  """Pads each side by --crop_padding (zeros or reflection) and crops back at a random offset."""
  pad = ctx.config.crop_padding
  if not pad:
    return images, labels
  height, width = images.shape[1], images.shape[2]
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode=ctx.config.crop_pad_mode.upper())
  offsets = _uniform(ctx, [2], ctx.seed, 0, 2 * pad + 1, tf.int32)
  rows = offsets[:, :1] + tf.range(height)[None, :]  # [B, H]
  cols = offsets[:, 1:] + tf.range(width)[None, :]  # [B, W]
  images = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(images, cols, axis=2, batch_dims=1), labels


@register("flip")
def flip(images, labels, ctx):
  """Mirrors each image left-right with probability 1/2."""
  return _flip_where(_uniform(ctx, [], ctx.seed) < 0.5, images), labels


@register("alternating_flip")
def alternating_flip(images, labels, ctx):
  """airbench's flips: a random half of the examples in even epochs, the other half in odd ones."""
  first = tf.random.stateless_uniform([ctx.num_examples], [ctx.run_seed, 0x5F11]) < 0.5  # Fixed per run.
  odd_epoch = tf.math.floormod(ctx.epoch, 2) == 1
  return _flip_where(tf.not_equal(tf.gather(first, ctx.indices), odd_epoch), images), labels


@register("cutout")
def cutout(images, labels, ctx):
  """Zeroes a --cutout_size square at a random centre (clipped at the borders) in each image."""
  height, width = images.shape[1], images.shape[2]
  batch = tf.shape(images)[0]
  center = _uniform(ctx, [2], ctx.seed, 0, tf.int32.max, tf.int32) % [height, width]
  size = tf.fill([batch, 2], ctx.config.cutout_size)
  return images * (1.0 - _box_mask(height, width, center, size)), labels


@register("mixup", soft_labels=True)
def mixup(images, labels, ctx):
  """Blends each example with its neighbour (`partners`) by λ ~ Beta(--mixup_alpha)."""
  lam = ctx.per_example(_beta([ctx.global_batch_size], ctx.config.mixup_alpha, ctx.seed))
  other = partners(tf.shape(images)[0])
  other_images, other_labels = tf.gather(images, other), tf.gather(labels, other)
  images = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * other_images
  return images, lam[:, None] * labels + (1.0 - lam[:, None]) * other_labels


@register("cutmix", soft_labels=True)
def cutmix(images, labels, ctx):
  """Pastes a box of the neighbour (`partners`), area 1-λ with λ ~ Beta(--cutmix_alpha); labels by area."""
  height, width = images.shape[1], images.shape[2]
  lam_seed, center_seed = tf.unstack(tf.random.experimental.stateless_split(ctx.seed, 2))
  lam = ctx.per_example(_beta([ctx.global_batch_size], ctx.config.cutmix_alpha, lam_seed))
  ratio = tf.sqrt(1.0 - lam)
  size = tf.cast(tf.round(tf.stack([ratio * height, ratio * width], axis=1)), tf.int32)
  center = _uniform(ctx, [2], center_seed, 0, tf.int32.max, tf.int32) % [height, width]
  mask = _box_mask(height, width, center, size)
  other = partners(tf.shape(images)[0])
  images = (1.0 - mask) * images + mask * tf.gather(images, other)
  area = tf.reduce_mean(mask, axis=[1, 2, 3])[:, None]  # The pasted fraction, after clipping.
  return images, (1.0 - area) * labels + area * tf.gather(labels, other)


def with_tta(model: tf.keras.Model, mode: str) -> Callable:
  """`model` as an eval-time function that averages logits over flips (and ±1-pixel translations).

  flip_translate is airbench's level-2 TTA: half the weight on the image and its mirror, half on the
  two diagonal 1-pixel translations (reflect-padded) of each.
  """
  if mode == "none":
    return model

  def mirror(images, training=False):
    return 0.5 * (model(images, training=training) + model(tf.reverse(images, [2]), training=training))

  if mode == "flip":
    return mirror

  def mirror_translate(images, training=False):
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    shifted = 0.5 * (mirror(padded[:, :height, :width], training) + mirror(padded[:, 2:, 2:], training))
    return 0.5 * mirror(images, training) + 0.5 * shifted

  return mirror_translate
