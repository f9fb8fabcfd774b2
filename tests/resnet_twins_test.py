"""benchmarks/resnet_twins.py: the PyTorch twins resnet_speed.py measures ours against are our networks."""

import importlib.util
import pathlib

import pytest

torch = pytest.importorskip("torch", reason="PyTorch builds the twins: pip install -e '.[parity]'")

from imagenet_models_test import PUBLISHED  # pylint: disable=wrong-import-position
from zoo_test import TRAINABLE  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_twins() -> dict:
  """resnet_twins.TWINS (benchmarks/ is not a package: loaded from its file)."""
  spec = importlib.util.spec_from_file_location("resnet_twins", REPO / "benchmarks" / "resnet_twins.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.TWINS


TWINS = _load_twins()


def parameter_count(model) -> int:
  return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18", "resnet26", "resnet34", "resnet50", "resnet101"])
def test_the_imagenet_twins_have_our_and_torchvisions_parameter_counts(name):
  # PUBLISHED is torchvision's count, which ours matches (imagenet_models_test, zoo_test).
  assert parameter_count(TWINS[name](num_classes=1000)) == PUBLISHED[name]


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"])
def test_the_cifar_twins_have_our_parameter_counts(name):
  assert parameter_count(TWINS[name](num_classes=10)) == TRAINABLE[name]  # Option A: no parameters.


def test_a_cifar_twin_has_our_shapes():
  twin = TWINS["resnet20"](num_classes=10)
  assert twin(torch.zeros(2, 3, 32, 32).to(memory_format=torch.channels_last)).shape == (2, 10)
  assert twin[:-3](torch.zeros(1, 3, 32, 32)).shape == (1, 64, 8, 8)  # The last stage: 8×8, 64 channels, as ours.


def test_the_cifar_twins_refuse_the_options_our_cifar_resnets_lack():
  with pytest.raises(ValueError, match="take no --activation, --resnet_d or --zero_init_residual"):
    TWINS["resnet20"](num_classes=10, activation="mish")
