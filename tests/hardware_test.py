"""cnn/hardware.py: bfloat16 on a CPU that emulates it is named at the start of a run."""

from cnn import hardware


def cpuinfo(tmp_path, flags):
  path = tmp_path / f"cpuinfo-{flags.replace(' ', '-')}"
  path.write_text(f"processor\t: 0\nflags\t\t: fpu sse avx512f {flags}\n")
  return str(path)


def test_bf16_instructions_are_read_from_cpuinfo(tmp_path):
  assert hardware.cpu_bf16_instructions(cpuinfo(tmp_path, "avx512_vnni")) == []
  assert hardware.cpu_bf16_instructions(cpuinfo(tmp_path, "avx512_bf16 amx_bf16")) == ["amx_bf16", "avx512_bf16"]
  assert hardware.cpu_bf16_instructions(str(tmp_path / "missing")) is None


def test_only_bf16_on_a_cpu_without_its_instructions_warns(tmp_path):
  without, with_bf16 = cpuinfo(tmp_path, "avx512_vnni"), cpuinfo(tmp_path, "avx512_bf16")
  assert "emulated" in hardware.bf16_warning("mixed_bfloat16", 0, without)
  assert hardware.bf16_warning("mixed_bfloat16", 0, with_bf16) is None
  assert hardware.bf16_warning("mixed_bfloat16", 1, without) is None  # A GPU or TPU does the bf16 work.
  assert hardware.bf16_warning("float32", 0, without) is None
  assert hardware.bf16_warning("mixed_bfloat16", 0, str(tmp_path / "missing")) is None  # Unknown: no guess.
