"""Folders of images (`PATH/<split>/<class>/<image>`) as random-access splits for streaming.

A split is the sorted list of its files and their labels (class = the sub-folder's index among the
train split's sorted class folders): example `i` is file `i`, so the pipeline reads any example by
index, and host memory holds paths, not pixels. Every file's header is checked when the folder is
listed, so a file that is not an image fails the run at once with its name, not mid-epoch.

What a new user's folders hold is checked too, each in one line naming the folder or file: class
folders whose names differ only in case, an empty training class, a class folder in another split
that training lacks (refused: its images could not be scored, and leaving them out would change the
accuracy reported for the split without a word). Hidden files (`.DS_Store`, macOS's `._x.jpg`) and
files that are not images by name (`.txt`, `.tif`) are left out and counted in the log.

A listing is cached (`cnn.data.cache`), keyed by the folder, the split, the classes and the
modification times of the split and class folders (adding, removing or renaming a file changes its
folder's), so a folder of a million files is not listed again at every start.
"""

import collections
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

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8")  # And WebP's RIFF....WEBP (`image_format`).
FORMATS = "JPEG, PNG, BMP, GIF or WebP"
_CLASSES_SPLIT = "train"  # The split folder whose class folders are the classes.
LISTING_VERSION = 2  # Keys cached listings and splits decoded from them; 2: hidden files left out, WebP listed.


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


def class_names(root: pathlib.Path, train_split: str = _CLASSES_SPLIT) -> tuple[str, ...]:
  """The class folders of the training split, sorted: label i is the i-th. Raises UserError for none, or
  for names that differ only in case (two classes of one, on a case-sensitive file system)."""
  names = tuple(sorted(p.name for p in (root / train_split).iterdir() if p.is_dir() and not _hidden(p)))
  if not names:
    raise UserError(f"{root / train_split} has no class folders: put each class's images in "
                    f"{root / train_split}/<class>/")
  by_case = collections.defaultdict(list)
  for name in names:
    by_case[name.casefold()].append(name)
  for same in by_case.values():
    if len(same) > 1:
      raise UserError(f"class folders {' and '.join(f'{root / train_split}/{n}' for n in same)} differ only in "
                      "case: merge them into one, or rename one if they are different classes")
  return names


def _hidden(path: pathlib.Path) -> bool:
  return path.name.startswith(".")  # .DS_Store, .ipynb_checkpoints, macOS's ._photo.jpg


def image_format(head: bytes) -> str:
  """The format (JPEG, PNG, BMP, GIF, WebP) a file's first 12 bytes announce; '' for none of them."""
  for magic, name in zip(_MAGIC, ("JPEG", "PNG", "BMP", "GIF")):
    if head.startswith(magic):
      return name
  return "WebP" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else ""


def _header_problem(path: pathlib.Path) -> str:
  """'' if `path` starts as an image does; else what it is instead."""
  if path.is_dir():
    return "is a folder named like an image: move it out of the class folder"
  if path.is_symlink() and not path.exists():
    return "is a broken symbolic link: point it at its image, or remove it"
  try:
    with open(path, "rb") as f:
      head = f.read(12)
  except PermissionError:
    return "cannot be read (permission denied): give this user read access, or remove it"
  except OSError as e:
    return f"cannot be read ({e.strerror}): remove it or replace it"
  if not head:
    return "is empty (0 bytes): remove it or replace it"
  if not image_format(head):
    return f"is not a {FORMATS} image by its contents: remove it or convert it"
  return ""


def _check_header(path: pathlib.Path) -> None:
  problem = _header_problem(path)
  if problem:
    raise UserError(f"{path} {problem} (or pass --skip_bad_images to leave out, and count, such files)")


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
  if split != _CLASSES_SPLIT:
    _refuse_extra_classes(root_path / split, classes)
  folders = [root_path / split, *(root_path / split / name for name in classes)]
  entry = cache_dir and cache.key(listing=str(root_path.resolve()), split=split, classes=classes,
                                      skip_bad=decodable is not None, version=LISTING_VERSION,
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
  _check_counts(root_path / split, classes, np.bincount(labels[~bad], minlength=len(classes)), decodable is not None)
  return FileSplit(paths[~bad], labels[~bad])


def _refuse_extra_classes(split_dir: pathlib.Path, classes: tuple[str, ...]) -> None:
  """Raises UserError for a class folder of `split_dir` with images that the training split lacks.

  Refused rather than mapped or left out: the model has no output for such a class, so its images
  could only be scored wrong or left out, and either would change the accuracy reported for the split
  without a word. It is most often a class renamed, or misspelt, in one split.
  """
  known = {name.casefold(): name for name in classes}
  for extra in sorted(p for p in split_dir.iterdir() if p.is_dir() and not _hidden(p) and p.name not in classes):
    if any(p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p) for p in extra.iterdir()):
      train_dir = split_dir.parent / _CLASSES_SPLIT
      same = known.get(extra.name.casefold())
      hint = (f"{train_dir}/{same} differs only in case: rename one" if same else
              f"rename it to one of {train_dir}'s classes, add {train_dir}/{extra.name}/, or move it out")
      raise UserError(f"class folder {extra} is not a class of the training split {train_dir} (the model "
                      f"has no output for it, so its images cannot be scored); {hint}")


def _check_counts(split_dir: pathlib.Path, classes: tuple[str, ...], counts: np.ndarray, skipping: bool) -> None:
  """Raises UserError for a training class without images; logs the classes another split lacks."""
  empty = [name for name, count in zip(classes, counts) if not count]
  if empty and split_dir.name == _CLASSES_SPLIT:
    raise UserError(f"class folder {split_dir / empty[0]} has no images{' that decode' if skipping else ''}"
                    f"{f' (nor have {len(empty) - 1} other classes)' if len(empty) > 1 else ''}: add its images, "
                    "or remove the folder (the classes are the training split's class folders)")
  if empty:
    logging.warning("%s has no images of %d classes (%s): its accuracy is over the other classes", split_dir,
                    len(empty), ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else ""))


def _list(split_dir: pathlib.Path, classes: tuple[str, ...],
          decodable: Optional[Callable[[np.ndarray], np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """(paths [N] bytes, labels [N] int32, -1 for a file left out by `decodable`) of a split folder."""
  paths, labels, ignored = [], [], collections.Counter()
  for label, name in enumerate(classes):
    for path in sorted((split_dir / name).glob("*")):
      if _hidden(path):
        ignored["hidden"] += 1
      elif path.suffix.lower() not in IMAGE_SUFFIXES:
        ignored[path.suffix.lower() or "no suffix"] += 1
      else:
        if decodable is None:
          _check_header(path)
        paths.append(bytes(path))
        labels.append(label if decodable is None or not _header_problem(path) else -1)
  loose = sum(p.is_file() and not _hidden(p) for p in split_dir.iterdir())
  if ignored or loose:
    kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(ignored.items()))
    said = [f"{sum(ignored.values())} files that are not images by name or are hidden ({kinds})"] if ignored else []
    said += [f"{loose} file{'s' if loose > 1 else ''} outside the class folders"] if loose else []
    logging.warning("%s: left out %s; images are read from <class>/ folders with suffixes %s", split_dir,
                    " and ".join(said), ", ".join(IMAGE_SUFFIXES))
  paths, labels = np.array(paths, dtype=np.bytes_), np.array(labels, np.int32)
  if decodable is not None and (labels >= 0).any():
    labels[labels >= 0] = np.where(decodable(paths[labels >= 0]), labels[labels >= 0], -1)
  return paths, labels
