"""A disk cache of decoded splits, so that a second run does not decode its data again.

A split decoded into memory (uint8 images [N, H, W, C], int32 labels [N]) is saved as two `.npy`
files in a cache directory of its own (data directories may be read-only), under a key made of
everything the decoded arrays depend on: the dataset's name and version, the split (slicing
included), the preprocessing (`image_size`), and a fingerprint of the source files (names, sizes and
modification times). A changed dataset therefore gets a new key and is never served stale. Files
are written to a temporary name and renamed (a reader sees a whole file or none), and read
memory-mapped: a warm load costs a page-cache copy, not a decode.
"""

import hashlib
import json
import os
import pathlib
import tempfile
from typing import Optional

import numpy as np

_FORMAT = 2  # Bump when what is cached changes (2: multi-shard TFDS splits in file order, right labels).


def default_dir() -> pathlib.Path:
  """$XDG_CACHE_HOME/cnn, or ~/.cache/cnn."""
  return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "cnn"


def resolve_dir(flag: str) -> Optional[pathlib.Path]:
  """The cache directory a --data_cache_dir value names: '' the default, 'none' no cache."""
  if flag == "none":
    return None
  return pathlib.Path(flag).expanduser() if flag else default_dir()


def files_fingerprint(root: os.PathLike) -> list[tuple[str, int, int]]:
  """(relative path, size, mtime in ns) of every file under `root`, sorted."""
  root = pathlib.Path(root)
  entries = []
  for path in sorted(root.rglob("*")):
    if path.is_file():
      stat = path.stat()
      entries.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
  return entries


def key(**parts) -> str:
  """A short hash of `parts` (JSON-serialisable), the cache entry's name."""
  text = json.dumps({"format": _FORMAT, **parts}, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:24]


def load(cache_dir: pathlib.Path, entry: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """(images, labels) memory-mapped from the cache, or None when the entry is absent."""
  images, labels = cache_dir / f"{entry}.images.npy", cache_dir / f"{entry}.labels.npy"
  if not (images.is_file() and labels.is_file()):
    return None
  try:
    return np.load(images, mmap_mode="r"), np.load(labels)
  except (OSError, ValueError):  # A damaged entry is rebuilt, not trusted.
    return None


def save(cache_dir: pathlib.Path, entry: str, images: np.ndarray, labels: np.ndarray) -> bool:
  """Writes an entry atomically (labels first, images last). False if the directory is not writable."""
  try:
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, array in (("labels", labels), ("images", images)):
      with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".tmp", delete=False) as f:
        try:
          np.save(f, array)
        except BaseException:
          os.unlink(f.name)
          raise
      os.replace(f.name, cache_dir / f"{entry}.{name}.npy")
  except OSError:
    return False  # A read-only or full cache disk costs the next run a decode, not this run.
  return True
