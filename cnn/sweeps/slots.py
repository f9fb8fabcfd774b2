"""Parallel slots: each running trial's share of the machine (CPU cores, and one GPU on a GPU host).

A trial is pinned to its slot's cores (sched_setaffinity, inherited by every thread it starts) and
told to size TensorFlow's thread pools to them (TF_NUM_INTRAOP_THREADS, TF_NUM_INTEROP_THREADS;
tf.data sizes its own pool from the affinity), so that K trials do not fight over the cores.
"""

import dataclasses
import os
import shutil
import subprocess
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Slot:
  """Where one trial runs: these CPU cores, and this GPU (None on a CPU host)."""
  cores: tuple[int, ...]
  gpu: Optional[str] = None

  def environment(self, base: dict[str, str]) -> dict[str, str]:
    """`base` with the thread counts of this slot's cores and, on a GPU host, its one GPU."""
    env = {**base, "TF_NUM_INTRAOP_THREADS": str(len(self.cores)),
           "TF_NUM_INTEROP_THREADS": str(min(2, len(self.cores))), "OMP_NUM_THREADS": str(len(self.cores))}
    if self.gpu is not None:
      env["CUDA_VISIBLE_DEVICES"] = self.gpu
    return env

  def pin(self) -> None:
    """Pins the calling process to the slot's cores (run in the child, before it execs)."""
    os.sched_setaffinity(0, self.cores)

  def describe(self) -> str:
    cores = f"core{'s' if len(self.cores) > 1 else ''} {','.join(map(str, self.cores))}"
    return f"{cores}, GPU {self.gpu}" if self.gpu is not None else cores


def visible_gpus() -> list[str]:
  """The GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else those `nvidia-smi -L` lists."""
  if "CUDA_VISIBLE_DEVICES" in os.environ:
    ids = [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    return [] if ids in ([], ["-1"]) else ids
  if not shutil.which("nvidia-smi"):
    return []
  try:
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(i) for i, line in enumerate(l for l in listing.splitlines() if l.startswith("GPU "))]


def make_slots(parallel: int, cores: Optional[list[int]] = None,
               gpus: Optional[list[str]] = None) -> tuple[list[Slot], Optional[str]]:
  """`parallel` slots (fewer if the machine cannot hold them) and a note saying why, if clamped.

  A GPU host holds one trial per GPU, a CPU host one per core; the cores are split into contiguous
  shares (a slot's threads share caches), the first shares a core larger when they do not divide.
  """
  cores = sorted(os.sched_getaffinity(0)) if cores is None else cores
  gpus = visible_gpus() if gpus is None else gpus
  capacity = min(len(gpus), len(cores)) if gpus else len(cores)
  note = None
  if parallel > capacity:
    what = f"{len(gpus)} GPUs" if gpus else f"{len(cores)} CPU cores"
    note = f"--parallel={parallel} clamped to {capacity}: this machine has {what} (one trial each at most)"
    parallel = capacity
  share, extra = divmod(len(cores), parallel)
  slots, start = [], 0
  for i in range(parallel):
    size = share + (i < extra)
    slots.append(Slot(tuple(cores[start:start + size]), gpus[i] if gpus else None))
    start += size
  return slots, note
