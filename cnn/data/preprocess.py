"""ImageNet-style preprocessing of encoded or decoded images of any size, stateless.

Training: a random-resized crop (a window of `scale` of the image's area and `ratio` aspect ratio,
drawn by `tf.image.stateless_sample_distorted_bounding_box`, or as torchvision's `RandomResizedCrop` draws
it: `crop_sampler="torchvision"`), resized to `image_size` (a fixed-size
dataset without one: to its own size). For JPEG only
the window is decoded (`tf.io.decode_and_crop_jpeg`). Flips and the rest come after, on batches
(`--augment`). Evaluation: the centre square of side `crop_fraction` × the shorter side, resized to
`image_size` — the anchors' "resize the shorter side to image_size / crop_fraction, take the centre
image_size crop", done crop-first so that the resize touches only the window. `eval_resize="whole_image"`
is fastai's view instead: the whole image squashed to a square of image_size / crop_fraction, then the
centre image_size crop (crop-first too: the centre crop_fraction of each side, resized to a square).

Fixed-size datasets (`center_crop=False`) see the whole image, resized to `image_size` when it is
set, exactly as the in-memory back-end stores them. Outputs are uint8 [S, S, channels] (grayscale and
RGBA converted to `channels`), rounded as the in-memory back-end stores its images, so that both
back-ends feed the model alike. Resizing is bilinear; `antialias=True` widens the filter when it shrinks, as
PIL's (fastai's, torchvision's on PIL images) does.
"""

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Settings (flags --image_size, --train_crop, --crop_scale, --crop_ratio, --crop_sampler, --eval_crop_fraction,
  --eval_resize, --resize_antialias).

  `random_crop`: training views are random-resized crops; otherwise training sees the eval view.
  `center_crop`: the eval view is the centre crop (images of varying size); otherwise the whole
  image, resized to `image_size` unless it is 0 (fixed-size datasets, as they are stored in memory).
  """
  image_size: int
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  crop_fraction: float = 0.875
  eval_resize: str = "shorter_side"  # Or "whole_image" (fastai's validation view).
  random_crop: bool = True
  center_crop: bool = True
  channels: int = 3
  fixed_size: tuple[int, ...] = ()  # (H, W) of a fixed-size dataset's images, used when image_size is 0.
  crop_sampler: str = "tensorflow"  # Or "torchvision" (RandomResizedCrop's distribution, as fastai's too).
  antialias: bool = False  # Every resize, training and evaluation views alike.

  @property
  def shape(self) -> tuple[int, int, int]:
    """The shape of every view: [image_size, image_size, channels] (or the fixed size)."""
    return (*((self.image_size,) * 2 if self.image_size else self.fixed_size), self.channels)


def resize_to_uint8(image: tf.Tensor, size: "int | tuple[int, int]", antialias: bool = False) -> tf.Tensor:
  """`image` resized to `size` (a side, or (height, width)) and rounded to uint8; as it is for size 0.

  The one resize of every view, and of the in-memory back-end's `--image_size` (`splits.load_split`).
  """
  if not size:  # A fixed-size dataset at its own size.
    return image
  resized = tf.image.resize(image, (size, size) if isinstance(size, int) else size, antialias=antialias)  # Bilinear.
  return tf.saturate_cast(tf.round(resized), tf.uint8)


def _decode_window(encoded: tf.Tensor, window_fn, channels: int = 3) -> tf.Tensor:
  """Decodes the window `window_fn(shape [3]) -> (y, x, h, w)` of an encoded image, as uint8."""

  def jpeg():
    y, x, h, w = window_fn(tf.image.extract_jpeg_shape(encoded))
    return tf.io.decode_and_crop_jpeg(encoded, tf.stack([y, x, h, w]), channels=channels)

  def other():  # PNG, GIF (first frame), BMP: decoded whole, then cropped.
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    y, x, h, w = window_fn(tf.shape(image))
    return image[y:y + h, x:x + w]

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def random_window(shape: tf.Tensor, seed: tf.Tensor, scale, ratio,
                  sampler: str = "tensorflow") -> tuple[tf.Tensor, ...]:
  """(y, x, h, w) of a random-resized-crop window in an image of `shape` [H, W, C], a pure function of `seed`.

  `sampler="tensorflow"`: `tf.image.stateless_sample_distorted_bounding_box` (aspect ratio uniform, height
  uniform, windows clamped into the image; after 10 misses the whole image). `"torchvision"`:
  `torchvision_window`.
  """
  if sampler == "torchvision":
    return torchvision_window(shape, seed, scale, ratio)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.cast(shape, tf.int32), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=scale[0], aspect_ratio_range=ratio, area_range=scale, max_attempts=10,
      use_image_if_no_bounding_boxes=True)  # After 10 misses: the whole image, as the anchors do.
  return begin[0], begin[1], size[0], size[1]


def torchvision_window(shape: tf.Tensor, seed: tf.Tensor, scale, ratio, attempts: int = 10) -> tuple[tf.Tensor, ...]:
  """(y, x, h, w) drawn as torchvision's `RandomResizedCrop.get_params` draws it (fastai's too), statelessly.

  Each of `attempts` draws takes an area uniform in `scale` × the image's and an aspect ratio log-uniform in
  `ratio`; the first window that fits is placed uniformly. If none fits: the centre crop of the whole image,
  its aspect ratio clamped into `ratio`.
  """
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  area_seed, ratio_seed, place_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  area = height * width * tf.random.stateless_uniform([attempts], area_seed, scale[0], scale[1])
  log_ratio = tf.random.stateless_uniform([attempts], ratio_seed, math.log(ratio[0]), math.log(ratio[1]))
  aspect = tf.exp(log_ratio)
  w, h = tf.round(tf.sqrt(area * aspect)), tf.round(tf.sqrt(area / aspect))  # Half to even, as Python's round.
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  any_fits, first = tf.reduce_any(fits), tf.argmax(tf.cast(fits, tf.int32))  # The first that fits.
  in_ratio = width / height
  fallback_w = tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width)
  fallback_h = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
  h, w = tf.where(any_fits, h[first], fallback_h), tf.where(any_fits, w[first], fallback_w)
  offsets = tf.floor(tf.random.stateless_uniform([2], place_seed) * tf.stack([height - h + 1, width - w + 1]))
  offsets = tf.where(any_fits, offsets, tf.floor(tf.stack([height - h, width - w]) / 2))
  y, x, h, w = (tf.cast(v, tf.int32) for v in (offsets[0], offsets[1], h, w))
  return y, x, h, w


def center_window(shape: tf.Tensor, crop_fraction: float, eval_resize: str = "shorter_side") -> tuple[tf.Tensor, ...]:
  """(y, x, h, w) of the centre square of side crop_fraction × the shorter side ("shorter_side"), or of the
  centre crop_fraction of each side ("whole_image": the window that a squash-then-centre-crop keeps)."""
  height, width = tf.cast(shape[0], tf.int32), tf.cast(shape[1], tf.int32)

  def fraction_of(side):
    return tf.maximum(tf.cast(tf.round(crop_fraction * tf.cast(side, tf.float32)), tf.int32), 1)

  if eval_resize == "whole_image":
    h, w = fraction_of(height), fraction_of(width)
  else:
    h = w = fraction_of(tf.minimum(height, width))
  return (height - h) // 2, (width - w) // 2, h, w


def train_image(encoded: tf.Tensor, seed: tf.Tensor, settings: Preprocessing) -> tf.Tensor:
  """The training view of an encoded image: uint8 [S, S, C], a pure function of `seed` [2].

  A random-resized crop (`settings.random_crop`), else the evaluation view.
  """
  if not settings.random_crop:
    return eval_encoded(encoded, settings)
  window = _decode_window(encoded, lambda shape: random_window(shape, seed, settings.scale, settings.ratio,
                                                                      settings.crop_sampler), settings.channels)
  # A fixed-size dataset without --image_size: its own size.
  return resize_to_uint8(window, settings.shape[:2], settings.antialias)


def eval_encoded(encoded: tf.Tensor, settings: Preprocessing) -> tf.Tensor:
  """The evaluation view of an encoded image: uint8 [S, S, C].

  Decoded whole, not by window: a JPEG decoded by window differs at the window's edges (chroma
  upsampling), and evaluation must see what `eval_image` gives an exported model.
  """
  image = tf.io.decode_image(encoded, channels=settings.channels, expand_animations=False)
  if not settings.center_crop:
    return resize_to_uint8(image, settings.image_size, settings.antialias)
  return _eval_uint8(image, settings.image_size, settings.crop_fraction, settings.eval_resize, settings.antialias)


def _eval_uint8(image: tf.Tensor, image_size: int, crop_fraction: float, eval_resize: str,
                antialias: bool) -> tf.Tensor:
  y, x, h, w = center_window(tf.shape(image), crop_fraction, eval_resize)
  return resize_to_uint8(image[y:y + h, x:x + w], image_size, antialias)


def eval_image(image: tf.Tensor, image_size: int, crop_fraction: float = 0.875,
               eval_resize: str = "shorter_side", antialias: bool = False) -> tf.Tensor:
  """The evaluation view of a decoded uint8 image [H, W, C] of any size, float32 [S, S, 3] in [0, 1].

  What evaluation feeds the model for the same image (before standardisation): an exported model
  calls this on the decoded photo.
  """
  image = tf.convert_to_tensor(image)
  if image.shape[-1] == 1:
    image = tf.image.grayscale_to_rgb(image)
  return tf.cast(_eval_uint8(image[:, :, :3], image_size, crop_fraction, eval_resize, antialias),
                 tf.float32) / 255.0


def decoded_eval_view(image: tf.Tensor, settings: Preprocessing) -> tf.Tensor:
  """`eval_image` under a run's settings: what an exported model applies to a decoded uint8 photo.

  The centre crop for datasets of varying image size, else the whole image resized to
  `image_size` (when set), as training stored it. float32 [S, S, C] in [0, 1].
  """
  if settings.center_crop:
    return eval_image(image, settings.image_size, settings.crop_fraction, settings.eval_resize, settings.antialias)
  resized = resize_to_uint8(tf.convert_to_tensor(image), settings.image_size, settings.antialias)
  return tf.cast(resized, tf.float32) / 255.0
