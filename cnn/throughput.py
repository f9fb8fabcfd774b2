"""Throughput accounting: images/s, step time, achieved FLOP/s and MFU, peak host memory, and
warnings when a compiled function retraces.

The controller reports these in its progress lines, its TensorBoard train scalars and
results.json; `benchmarks/bench.py` compares them with Keras `fit`. FLOPs come from cnn/flops.py.
"""

import dataclasses
import resource
from typing import Any, Optional

from absl import logging


def peak_host_memory_mb() -> float:
  """The process's peak resident memory so far, in MiB (Linux reports ru_maxrss in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclasses.dataclass(frozen=True)
class Throughput:
  """Turns (steps, seconds) into images/s, step time, achieved FLOP/s and MFU.

  `batch_size` is the global batch, so images/s and FLOP/s are those of all `devices` together
  (every replica on every worker), and MFU = achieved FLOP/s / (`peak_tflops` × `devices`).
  """
  batch_size: int
  train_flops_per_image: float
  peak_tflops: float = 0.0  # Of one device; 0: unknown, so no MFU.
  devices: int = 1
  flops_per_image: float = 0.0  # Forward, for the results.

  def rates(self, steps: int, seconds: float) -> dict[str, float]:
    """images_per_second, step_seconds, and (when FLOPs were counted) tflops and (with a peak) mfu."""
    images_per_second = steps * self.batch_size / seconds
    rates = {"images_per_second": images_per_second, "step_seconds": seconds / steps}
    if self.train_flops_per_image:
      rates["tflops"] = images_per_second * self.train_flops_per_image / 1e12
      if self.peak_tflops:
        rates["mfu"] = rates["tflops"] / (self.peak_tflops * self.devices)
    return rates

  @staticmethod
  def describe(rates: dict[str, float]) -> str:
    """'1510 images/s  21.2 ms/step  0.041 TFLOP/s  MFU 1.2%' (what is known)."""
    text = f"{rates['images_per_second']:.0f} images/s  {rates['step_seconds'] * 1e3:.1f} ms/step"
    text += f"  {rates['tflops']:.3f} TFLOP/s" if "tflops" in rates else ""
    return text + (f"  MFU {rates['mfu']:.1%}" if "mfu" in rates else "")


class RetraceWatch:
  """Logs a warning when a compiled function is traced again after its warm-up.

  The first `check()` takes the function's tracing count as the warm-up's (the train loop traces
  once; the eval step twice, for its full and its smaller last batch). Every later `check()` warns
  if the count has grown: a retrace costs a new trace (and, with XLA, a new compile) and usually
  means a shape or a Python value changed between calls.
  """

  def __init__(self, name: str, function: Any):
    self.name = name
    self._count = function.experimental_get_tracing_count
    self._seen: Optional[int] = None
    self.retraces = 0

  def check(self) -> None:
    count = self._count()
    if self._seen is not None and count > self._seen:
      self.retraces += count - self._seen
      logging.warning("%s was traced again (%d traces in all): a retrace after warm-up costs time; an "
                      "input shape or a Python argument changed between calls", self.name, count)
    self._seen = count
