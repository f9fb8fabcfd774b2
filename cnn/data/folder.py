"""Folders of images (`PATH/<split>/<class>/<image>`) as random-access splits for streaming.

A split is the sorted list of its files and their labels (class = the sub-folder's index among the
train split's sorted class folders): example `i` is file `i`, so the pipeline reads any example by
index, and host memory holds paths, not pixels. Every file's header is checked when the folder is
listed, so a file that is not an image fails the run at once with its name, not mid-epoch.

A listing is cached (`cnn.data.cache`), keyed by the folder, the split, the classes and the
modification times of the split and class folders (adding, removing or renaming a file changes its
folder's), so a folder of a million files is not listed again at every start.
"""

import dataclasses
import hashlib
import pathlib
import types
from typing import Callable, Optional

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from cnn.data import cache
from cnn.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8")


@dataclasses.dataclass(frozen=True)
class FileSplit:
  """One split on disk: file paths [N] (bytes) and int32 labels [N], read and decoded per example."""
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


def _header_ok(path: pathlib.Path) -> bool:
  try:
    with open(path, "rb") as f:
      return f.read(8).startswith(_MAGIC)
  except OSError:
    return False


def _check_header(path: pathlib.Path) -> None:
  if not _header_ok(path):
    raise UserError(f"{path} is not a readable JPEG, PNG, BMP or GIF image (remove it or convert it, or pass "
                    "--skip_bad_images)")


def split_folders(spec: str) -> list[str]:
  """The split folders a split (`train`, `train[:90%]`, `train+val`) reads, sorted."""
  return sorted({part.split("[")[0].strip() for part in spec.split("+")})


def list_split(root: str, spec: str, classes: tuple[str, ...], cache_dir: Optional[pathlib.Path] = None,
               decodable: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> FileSplit:
  """The files of split `spec`: a split folder's name or a TFDS-style selection of them. Raises UserError.

  Args:
    root: the folder of split folders.
    spec: `train`, or a selection such as `train[:90%]`, `train[-1000:]`, `train+val` (module docstring).
    classes: the class folders (label order).
    cache_dir: where listings are cached (None: not cached).
    decodable: `paths -> bool mask` of the files that decode (--skip_bad_images); the others, and
      files with a bad header, are left out and counted in the log instead of failing the run.
  """
  root_path = pathlib.Path(root).expanduser()
  listed = {name: _list_folder(root_path, name, classes, cache_dir, decodable) for name in split_folders(spec)}
  if spec in listed:
    return listed[spec]
  try:
    instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
        {name: types.SimpleNamespace(num_examples=len(files)) for name, files in listed.items()})
  except (ValueError, AssertionError) as e:
    raise UserError(f"split '{spec}': {str(e).splitlines()[-1]}") from None
  chosen = []
  for instruction in instructions:
    files = listed[instruction.splitname]
    picked = np.sort(_hash_order(files.paths)[instruction.from_:instruction.to])
    chosen.append((files.paths[picked], files.labels[picked]))
  return FileSplit(np.concatenate([p for p, _ in chosen]), np.concatenate([l for _, l in chosen]))


def _hash_order(paths: np.ndarray) -> np.ndarray:
  """Positions of `paths` ordered by a hash of `<class>/<file name>`: the order slices are taken in."""
  digests = [hashlib.md5(b"/".join(p.split(b"/")[-2:])).digest() for p in paths]
  return np.array(sorted(range(len(paths)), key=digests.__getitem__), dtype=np.int64)


def _list_folder(root_path: pathlib.Path, split: str, classes: tuple[str, ...], cache_dir: Optional[pathlib.Path],
                 decodable: Optional[Callable[[np.ndarray], np.ndarray]]) -> FileSplit:
  """The files of `root_path/split/<class>/*` in sorted order, headers checked, the listing cached."""
  if not (root_path / split).is_dir():
    found = split_names(root_path)
    raise UserError(f"split '{split}' not found in {root_path} (splits there: "
                    f"{', '.join(found) if found else 'none'})")
  folders = [root_path / split, *(root_path / split / name for name in classes)]
  entry = cache_dir and cache.key(listing=str(root_path.resolve()), split=split, classes=classes,
                                      skip_bad=decodable is not None,
                                      mtimes=[p.stat().st_mtime_ns if p.is_dir() else 0 for p in folders])
  cached = cache.load(cache_dir, entry) if cache_dir else None
  paths, labels = (np.asarray(cached[0]), cached[1]) if cached else _list(root_path / split, classes, decodable)
  if cache_dir and not cached:
    cache.save(cache_dir, entry, paths, labels)
  bad = labels < 0  # Files left out by --skip_bad_images, kept in the listing to be counted.
  if bad.any():
    logging.warning("--skip_bad_images: left out %d of %d files of %s that do not decode, e.g. %s", bad.sum(),
                    len(paths), root_path / split, ", ".join(p.decode() for p in paths[bad][:3]))
  if bad.all():
    raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root_path / split}/<class>/ for classes "
                    f"{', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}")
  return FileSplit(paths[~bad], labels[~bad])


def _list(split_dir: pathlib.Path, classes: tuple[str, ...],
          decodable: Optional[Callable[[np.ndarray], np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """(paths [N] bytes, labels [N] int32, -1 for a file left out by `decodable`) of a split folder."""
  paths, labels = [], []
  for label, name in enumerate(classes):
    for path in sorted((split_dir / name).glob("*")):
      if path.suffix.lower() in IMAGE_SUFFIXES:
        if decodable is None:
          _check_header(path)
        paths.append(bytes(path))
        labels.append(label if decodable is None or _header_ok(path) else -1)
  paths, labels = np.array(paths, dtype=np.bytes_), np.array(labels, np.int32)
  if decodable is not None and (labels >= 0).any():
    labels[labels >= 0] = np.where(decodable(paths[labels >= 0]), labels[labels >= 0], -1)
  return paths, labels
