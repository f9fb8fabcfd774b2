"""Folders of images (`PATH/<split>/<class>/<image>`) as random-access splits for streaming.

A split is the sorted list of its files and their labels (class = the sub-folder's index among the
train split's sorted class folders): example `i` is file `i`, so the pipeline reads any example by
index, and host memory holds paths, not pixels. Every file's header is checked when the folder is
listed, so a file that is not an image fails the run at once with its name, not mid-epoch.
"""

import dataclasses
import pathlib

import numpy as np

from cnn.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8")


@dataclasses.dataclass(frozen=True)
class FileSplit:
  """One split on disk: file paths [N] (str) and int32 labels [N], read and decoded per example."""
  paths: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


def split_names(root: pathlib.Path) -> list[str]:
  """The split folders under `root` (sorted)."""
  return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def class_names(root: pathlib.Path, train_split: str = "train") -> tuple[str, ...]:
  """The class folders of the training split, sorted: label i is the i-th."""
  return tuple(sorted(p.name for p in (root / train_split).iterdir() if p.is_dir()))


def _check_header(path: pathlib.Path) -> None:
  try:
    with open(path, "rb") as f:
      head = f.read(8)
  except OSError as e:
    raise UserError(f"cannot read image {path}: {e.strerror}") from None
  if not head.startswith(_MAGIC):
    raise UserError(f"{path} is not a JPEG, PNG, BMP or GIF image (remove it or convert it)")


def list_split(root: str, split: str, classes: tuple[str, ...]) -> FileSplit:
  """The files of `root/split/<class>/*` in sorted order, headers checked. Raises UserError."""
  root_path = pathlib.Path(root).expanduser()
  if not (root_path / split).is_dir():
    found = split_names(root_path)
    raise UserError(f"split '{split}' not found in {root_path} (splits there: "
                    f"{', '.join(found) if found else 'none'})")
  paths, labels = [], []
  for label, name in enumerate(classes):
    for path in sorted((root_path / split / name).glob("*")):
      if path.suffix.lower() in IMAGE_SUFFIXES:
        _check_header(path)
        paths.append(str(path))
        labels.append(label)
  if not paths:
    raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root_path / split}/<class>/ for classes "
                    f"{', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}")
  return FileSplit(np.array(paths), np.array(labels, np.int32))
