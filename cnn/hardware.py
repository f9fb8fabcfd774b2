"""What the host's CPU can do, where it changes which settings pay."""

from typing import Optional

CPUINFO = "/proc/cpuinfo"
BF16_INSTRUCTIONS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_instructions(cpuinfo: str = CPUINFO) -> Optional[list[str]]:
  """The CPU's bfloat16 instructions (possibly none), or None where `cpuinfo` cannot be read (not Linux).

  Without them oneDNN (TensorFlow's and PyTorch's) emulates bfloat16 convolutions, 3-5× slower than
  float32 ones on these machines (benchmarks/README.md, speed section).
  """
  try:
    with open(cpuinfo, encoding="utf-8") as file:
      flags = set(file.read().split())
  except OSError:
    return None
  return sorted(flags & set(BF16_INSTRUCTIONS))


def bf16_warning(precision: str, accelerators: int, cpuinfo: str = CPUINFO) -> Optional[str]:
  """A warning when `precision` computes in bfloat16 on a CPU that emulates it, else None."""
  if precision != "mixed_bfloat16" or accelerators:
    return None
  if cpu_bf16_instructions(cpuinfo) != []:
    return None
  return ("--precision=mixed_bfloat16 on a CPU without bfloat16 instructions (avx512_bf16, amx_bf16): its "
          "convolutions are emulated, several times slower than --precision=float32 here")
