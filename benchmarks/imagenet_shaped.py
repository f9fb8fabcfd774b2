"""An ImageNet-shaped TFDS dataset made from a folder of photos (Imagewoof by default).

    python benchmarks/imagenet_shaped.py --data_dir=/tmp/imagenet_shaped [--source=../shared/imagewoof2-160]
        [--per_class=0] [--size=400x350] [--quality=90] [--shards=8]

ImageNet's JPEGs are about 400×350 on average, stored as TFDS TFRecord files in many shards (1,024
train, 64 validation); Imagewoof's are 160 px on the shorter side. This writes `imagenet_shaped` into
`--data_dir`: every image of `--source`'s `train/<class>/` and `val/<class>/` folders (the first
`--per_class` of each class, in name order, when given), scaled keeping its aspect ratio to the pixel
count of `--size` (bicubic; sizes vary as ImageNet's do), re-encoded as JPEG at `--quality` (grayscale
stays grayscale, as in ImageNet), in `--shards` shards per split (`train`, `validation`), with
`imagenet2012`'s features (image, label, file_name) and its split names. Train on it with
`--dataset=imagenet_shaped --data_dir=DIR` (TFDS reads it from its files: no code needed).

Never write it into the repository: the full set is ~13k images (about 0.4 GB).
"""

import dataclasses
import functools
import pathlib
import re

import tensorflow as tf
import tensorflow_datasets as tfds

from cnn.errors import UserError

NAME = "imagenet_shaped"
SPLIT_FOLDERS = {"train": "train", "validation": "val"}
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the dataset is made from `source` (see the module docstring)."""
  source: str = "../shared/imagewoof2-160"
  per_class: int = 0  # 0: every image.
  width: int = 400
  height: int = 350
  quality: int = 90


def parse_size(text: str) -> tuple[int, int]:
  """'400x350' -> (400, 350). Raises UserError."""
  match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", text)
  if not match or not all(int(v) > 0 for v in match.groups()):
    raise UserError(f"--size={text} must be WIDTHxHEIGHT in pixels, e.g. 400x350")
  return int(match.group(1)), int(match.group(2))


def list_images(source: pathlib.Path, split_folder: str, per_class: int) -> tuple[list[str], list[tuple[str, int]]]:
  """(class names, [(path, label)]) of `source/split_folder/<class>/*`, the first `per_class` per class."""
  root = source / split_folder
  if not root.is_dir():
    raise UserError(f"{root} is not a folder: --source needs train/<class>/ and val/<class>/ folders of images")
  classes = sorted(p.name for p in root.iterdir() if p.is_dir())
  examples = []
  for label, name in enumerate(classes):
    files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    examples += [(str(p), label) for p in (files[:per_class] if per_class else files)]
  if not examples:
    raise UserError(f"{root} holds no images (.jpeg, .jpg, .png) in class folders")
  return classes, examples


@tf.autograph.experimental.do_not_convert  # Plain TensorFlow ops: nothing to convert.
def rescaled_jpeg(path: tf.Tensor, pixels: int, quality: int) -> tf.Tensor:
  """The image at `path` scaled, keeping its aspect ratio, to about `pixels` pixels, as a JPEG."""
  image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
  size = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.sqrt(pixels / (size[0] * size[1]))
  new_size = tf.cast(tf.round(size * scale), tf.int32)
  resized = tf.image.resize(image, new_size, method="bicubic")
  return tf.io.encode_jpeg(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8), quality=quality)


class ImagenetShaped(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Imagewoof (or another folder of photos) at ImageNet's size and encoding, in ImageNet's TFDS layout.

  Not registered: `tfds.builder(NAME, data_dir=...)` reads the written files, in any process.
  """

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, settings: Settings = Settings(), **kwargs):
    self.settings = settings
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.settings
    classes, _ = list_images(pathlib.Path(s.source), "train", 1)
    return tfds.core.DatasetInfo(  # Not dataset_info_from_configs: it looks for a package's metadata files.
        builder=self, description=(f"{s.source} scaled to the pixel count of {s.width}x{s.height} (aspect kept), JPEG "
                     f"quality {s.quality}, {s.per_class or 'all'} images per class"),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=classes),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(folder) for split, folder in SPLIT_FOLDERS.items()}

  def _generate_examples(self, split_folder: str):
    s = self.settings
    classes, examples = list_images(pathlib.Path(s.source), split_folder, s.per_class)
    if classes != self.info.features["label"].names:
      raise UserError(f"{s.source}/{split_folder} has other class folders than {s.source}/train")
    paths = [path for path, _ in examples]
    # Decoding, resizing and encoding in a parallel tf.data map (in order): the writer gets bytes.
    jpegs = tf.data.Dataset.from_tensor_slices(paths).map(
        functools.partial(rescaled_jpeg, pixels=s.width * s.height, quality=s.quality),
        num_parallel_calls=tf.data.AUTOTUNE)
    for (path, label), jpeg in zip(examples, jpegs.as_numpy_iterator()):
      file_name = str(pathlib.Path(path).relative_to(pathlib.Path(s.source)))
      yield file_name, {"image": jpeg, "label": label, "file_name": file_name}


def build(data_dir: str, settings: Settings = Settings(), shards: int = 8) -> tfds.core.DatasetBuilder:
  """Writes (or finds already written) `imagenet_shaped` in `data_dir`, `shards` shards per split.

  Raises:
    UserError: for a missing or empty source, or fewer than 8 shards.
  """
  if shards < 8:
    raise UserError(f"--shards={shards}: ImageNet-shaped means several shards; give at least 8")
  if settings.per_class < 0 or not 1 <= settings.quality <= 100:
    raise UserError("--per_class must be >= 0 and --quality in 1..100")
  builder = ImagenetShaped(settings=settings, data_dir=data_dir)
  if builder.is_prepared():  # TFDS would silently reuse it, whatever it was made with.
    made = tfds.builder(NAME, data_dir=data_dir).info
    shard_counts = {split.num_shards for split in made.splits.values()}
    if made.description != builder.info.description or shard_counts != {shards}:
      raise UserError(f"{builder.data_dir} holds {NAME} made otherwise ({made.description}, "
                      f"{'/'.join(map(str, sorted(shard_counts)))} shards); choose another --data_dir or delete it")
    return builder
  # Each image is already a JPEG: the Image feature stores the bytes as given (no second encoding).
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=shards))
  return builder


def _define_flags() -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("data_dir", None, "TFDS data directory to write into (outside the repository).")
  flags.DEFINE_string("source", Settings.source, "Folder with train/<class>/ and val/<class>/ images.")
  flags.DEFINE_integer("per_class", 0, "Images per class and split (0: all).")
  flags.DEFINE_string("size", "400x350", "WIDTHxHEIGHT whose pixel count each image is scaled to.")
  flags.DEFINE_integer("quality", 90, "JPEG quality.")
  flags.DEFINE_integer("shards", 8, "Shards per split (at least 8).")


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel
  from cnn import cli  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  width, height = parse_size(f.size)
  builder = build(cli.required("data_dir"), Settings(f.source, f.per_class, width, height, f.quality), f.shards)
  for split, info in builder.info.splits.items():
    print(f"{split}: {info.num_examples} examples in {info.num_shards} shards, {info.num_bytes / 1e6:.0f} MB "
          f"({info.num_bytes / info.num_examples / 1e3:.0f} KB an example)")
  print(f"train with: --dataset={NAME} --data_dir={builder.data_dir_root}")


if __name__ == "__main__":
  from cnn import cli  # pylint: disable=ungrouped-imports
  _define_flags()
  cli.run(main)
