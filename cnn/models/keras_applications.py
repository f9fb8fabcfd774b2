"""Every architecture of `tf.keras.applications` by name: `--model=keras:EfficientNetV2B0`.

Randomly initialised (`weights=None`) for the dataset's image shape, without the application's own
top (`include_top=False`, global average pooling) and with this codebase's head: a float32 dense
`logits` layer of the dataset's class count (so the applications' top dropout is not there).

Inputs: applications get what the pipeline gives every model, [0, 1] floats (or standardised ones
with --normalization=standardize). Those with built-in preprocessing get it turned off
(`include_preprocessing=False`: ConvNeXt, EfficientNetV2, MobileNetV3); EfficientNetB0-B7 cannot turn
it off and divide by 255 inside, so they get their input ×255, which gives them back our range.
"""

import difflib
import inspect

import tensorflow as tf

from cnn import keras_internals
from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.errors import UserError
from cnn.models import registry

PREFIX = "keras:"


def application_names() -> list[str]:
  """The architectures of `tf.keras.applications` (ResNet50, EfficientNetV2B0, ...), sorted."""
  return sorted(name for name in dir(tf.keras.applications)
                if name[0].isupper() and callable(getattr(tf.keras.applications, name)))


class KerasApplication(tf.keras.Model):
  """A `tf.keras.applications` backbone and a float32 logits layer.

  Args:
    application: the name in `tf.keras.applications`, e.g. "ResNet50".
    image_shape: the input shape [H, W, C].
    num_classes: size of the logits layer.
  """

  def __init__(self, application: str, image_shape, num_classes: int):
    super().__init__(name=f"keras_{application}")
    constructor = getattr(tf.keras.applications, application)
    options = {"include_preprocessing": False} if "include_preprocessing" in inspect.signature(
        constructor).parameters else {}
    try:
      with keras_internals.fresh_layer_names():
        self.backbone = constructor(include_top=False, weights=None, input_shape=tuple(image_shape),
                                    pooling="avg", **options)
    except ValueError as e:  # E.g. "Input size must be at least 75x75".
      raise UserError(f"--model={PREFIX}{application} cannot take {'×'.join(map(str, image_shape))} "
                      f"images: {str(e).strip().splitlines()[0]}") from None
    # EfficientNetB0-B7 start with Rescaling(1/255), which cannot be switched off.
    first = self.backbone.layers[1]
    self.input_scale = 255.0 if isinstance(first, tf.keras.layers.Rescaling) and abs(
        float(first.scale) - 1 / 255) < 1e-9 else 1.0
    self.logits = tf.keras.layers.Dense(num_classes, name="logits", dtype="float32")

  def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    if self.input_scale != 1.0:
      images = images * self.input_scale
    return self.logits(self.backbone(images, training=training))


def build(application: str, config: Config, info: DatasetInfo) -> KerasApplication:
  """`--model=keras:NAME`: the application NAME for the dataset.

  Raises:
    UserError: for an unknown name, or a model flag the application would ignore (`_refuse_model_flags`).
  """
  names = application_names()
  if application not in names:
    close = difflib.get_close_matches(application, names, n=5, cutoff=0.5)
    close += [n for n in names if n.lower() == application.lower() and n not in close]
    raise UserError(f"unknown --model={PREFIX}{application}; "
                    + (f"close matches: {', '.join(PREFIX + n for n in close)}" if close else
                       f"tf.keras.applications has: {', '.join(names)}"))
  _refuse_model_flags(application, config)
  return KerasApplication(application, info.image_shape, info.num_classes)


def _refuse_model_flags(application: str, config: Config) -> None:
  """The architecture is in the name: the flags that change other families' layers cannot apply."""
  given = [f"--activation={config.activation}"] if config.activation != Config.activation else []
  given += [f"--{name}" for name in ("resnet_d", "zero_init_residual") if getattr(config, name)]
  if given:
    raise UserError(f"--model={PREFIX}{application} takes no {', '.join(given)}: an application's "
                    "architecture is fixed by its name (pick another keras: model, or a resnet)")


registry.register_family(PREFIX, build)
