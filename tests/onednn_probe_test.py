"""benchmarks/onednn_conv_probe.py: it reads oneDNN's verbose log of a conv's training step right."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PROBE = REPO / "benchmarks" / "onednn_conv_probe.py"
# benchmarks/ is not a package: loaded from its file, as tests/resnet_twins_test.py loads the twins.
_SPEC = importlib.util.spec_from_file_location("onednn_conv_probe", PROBE)
onednn_conv_probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(onednn_conv_probe)

# oneDNN 3's verbose lines as TensorFlow 2.21 prints them (one forward, one backward weights, a reorder).
LOG = """onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:cdba::f0 dst:f32::blocked:Acdb32a::f0,,,64x64x3x3,0.02
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,src:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,mb2_ic64oc64_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1,0.5
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,src:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,mb2_ic64oc64_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1,0.25
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,backward_weights,src:f32::blocked:acdb::f0,,alg:convolution_direct,mb2_ic64oc64_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1,1.5
onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit:avx512_core,backward_weights,src:f32::blocked:acdb::f0,,alg:convolution_direct,mb2,9.0
"""


def test_conv_calls_keeps_each_pass_kernel_and_call_times():
  calls = onednn_conv_probe.conv_calls(LOG)
  assert calls == {"forward_training": ("brg_conv_fwd:avx512_core", [0.5, 0.25]),
                   "backward_weights": ("jit:avx512_core", [1.5])}


@pytest.mark.e2e
def test_tensorflow_side_logs_the_three_passes_of_a_conv():
  """The probe's premise on this TensorFlow: each training step runs oneDNN's three conv passes."""
  env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, str(PROBE), "--side=tensorflow", "--shapes=2x8x16", "--steps=3",
                           "--precision=f32"], env=env, capture_output=True, text=True, check=True, timeout=300)
  calls = onednn_conv_probe.conv_calls(result.stdout)
  if not calls:
    pytest.skip("TensorFlow runs without oneDNN here (TF_ENABLE_ONEDNN_OPTS=0 or a non-x86 build)")
  assert set(calls) == {"forward_training", "backward_data", "backward_weights"}
  assert all(len(times) == 3 and min(times) > 0 for _, times in calls.values())
