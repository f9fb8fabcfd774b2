"""What a dataset is: `--dataset` (a TFDS name, or folder:PATH) opened as a `DataSource`.

A TFDS dataset is prepared first when it is not (downloading it, after a quick check that its host
answers); a folder of images is checked for its train/ split and its classes. The source holds the
dataset's `DatasetInfo` (what the model needs), its builder or folder, the run's `Preprocessing` and
the data cache directory; `cnn.data.splits` opens its splits.
"""

import dataclasses
import difflib
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import tensorflow_datasets as tfds

from cnn.config import Config
from cnn.data import cache
from cnn.data import folder
from cnn.data import preprocess
from cnn.errors import UserError

_TFDS_GCS = "https://storage.googleapis.com/"  # Where TFDS looks for prepared copies first.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the loop need to know about a dataset, taken from TFDS's info."""
  name: str
  image_shape: tuple[int, int, int]
  num_classes: int
  class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class DataSource:
  """A dataset opened for a run: what it is, where its splits come from, how its examples are viewed."""
  info: DatasetInfo
  builder: Optional[tfds.core.DatasetBuilder]  # None for a folder of images.
  root: Optional[pathlib.Path]  # The folder of --dataset=folder:PATH.
  preprocessing: preprocess.Preprocessing
  cache_dir: Optional[pathlib.Path]
  skip_bad_images: bool = False  # Folders: leave out (and count) the files that do not decode.


def open_dataset(config: Config) -> DataSource:
  """The run's dataset (`--dataset`: TFDS name or folder:PATH) and its preprocessing flags. Raises UserError."""
  if config.dataset.startswith("folder:"):
    root = pathlib.Path(config.dataset[len("folder:"):]).expanduser()
    if not (root / "train").is_dir():
      found = folder.split_names(root)
      raise UserError(f"--dataset={config.dataset} needs a sub-folder train/ (and val/ or test/), each with one "
                      f"folder of images per class ({'found: ' + ', '.join(found) if found else 'none found'})")
    if not config.image_size:
      raise UserError(f"--dataset={config.dataset} has images of varying size; resize them with --image_size=N")
    classes = folder.class_names(root)
    builder, varying = None, True
    info = DatasetInfo(root.resolve().name, (config.image_size, config.image_size, 3), len(classes), classes)
  else:
    builder, root = get_builder(config.dataset, config.data_dir, config.download), None
    info = dataset_info(builder, config.image_size)
    varying = None in tuple(builder.info.features[builder.info.supervised_keys[0]].shape)[:2]
  settings = preprocess.Preprocessing(
      config.image_size, tuple(config.crop_scale), tuple(config.crop_ratio), config.eval_crop_fraction,
      config.eval_resize, random_crop=config.train_crop == "random_resized", center_crop=varying,
      channels=info.image_shape[2], fixed_size=info.image_shape[:2], crop_sampler=config.crop_sampler,
      antialias=config.resize_antialias)
  return DataSource(info, builder, root, settings, cache.resolve_dir(config.data_cache_dir),
                    config.skip_bad_images)


def get_builder(name: str, data_dir: str = "", download: bool = True) -> tfds.core.DatasetBuilder:
  """A prepared TFDS builder for `name` (a folder of images is opened by `open_dataset`, not here).

  Raises UserError if it is unknown or cannot be prepared.
  """
  data_dir = data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(name, tfds.list_builders(), n=5, cutoff=0.5)
    hint = ", ".join(close or ["cifar10", "cifar100", "mnist", "fashion_mnist"])
    raise UserError(f"unknown dataset '{name}'; did you mean one of: {hint}?") from None
  if builder.is_prepared():
    return builder
  where = builder.data_dir_root
  how = (f"prepare it with `tfds build {name} --data_dir={where}` on a machine with internet, "
         "or point --data_dir at a TFDS data directory that holds it")
  if not download:
    raise UserError(f"dataset '{name}' is not prepared in {where} and --nodownload is set; {how}")
  unreachable = probe_download_hosts(list(builder.url_infos or ()) or [_TFDS_GCS])
  if unreachable:
    raise UserError(f"dataset '{name}' is not prepared in {where} and its download host is unreachable "
                    f"({unreachable}); {how}, or pass --nodownload")
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except  # Network and archive errors vary widely.
    raise UserError(f"dataset '{name}' is not prepared in {where} and downloading it failed "
                    f"({type(e).__name__}); {how}") from None
  return builder


def probe_download_hosts(urls: list[str], timeout: float = 4.0, max_hosts: int = 2) -> str:
  """'' if the hosts of `urls` answer HTTP within `timeout` s each, else what failed (e.g. 'host: reason').

  TFDS retries a failing download with back-off for minutes; a compute node without internet should
  hear so in seconds. Any HTTP answer, an error status included, counts as reachable. Proxies from
  the environment (HTTPS_PROXY, ...) are used as the download would use them.
  """
  hosts = list(dict.fromkeys(f"{u.scheme}://{u.netloc}/" for u in map(urllib.parse.urlsplit, urls)))
  for host in hosts[:max_hosts]:
    try:
      urllib.request.urlopen(urllib.request.Request(host, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
      pass  # The host answered.
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections, bad proxy URLs.
      return f"{urllib.parse.urlsplit(host).netloc}: {getattr(e, 'reason', e)}"
  return ""


def dataset_info(builder: tfds.core.DatasetBuilder, image_size: int = 0) -> DatasetInfo:
  """Image shape, number of classes and class names from the builder's features.

  `image_size` > 0 replaces the height and width (images are resized to it when loaded).
  """
  name = builder.info.name
  if not builder.info.supervised_keys:
    raise UserError(f"dataset '{name}' has no (image, label) supervised keys; it is not an image "
                    "classification dataset")
  image_key, label_key = builder.info.supervised_keys
  image, label = builder.info.features[image_key], builder.info.features[label_key]
  shape = tuple(image.shape)
  if image_size and len(shape) == 3:
    shape = (image_size, image_size, shape[2])
  if len(shape) == 3 and None in shape[:2] and shape[2] is not None:
    raise UserError(f"dataset '{name}' has images of varying size; resize them with --image_size=N")
  if not isinstance(label, tfds.features.ClassLabel) or len(shape) != 3 or None in shape:
    raise UserError(f"dataset '{name}' is not fixed-size image classification "
                    f"(image shape {image.shape}, label {type(label).__name__})")
  return DatasetInfo(name=name, image_shape=shape, num_classes=label.num_classes,
                     class_names=tuple(label.names))
