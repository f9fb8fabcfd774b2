"""Training on the real CIFAR-10 in ../shared/tfds; skipped where that directory is absent."""

import json

import pytest

from cnn import data
from cnn import train
from conftest import SHARED_TFDS, requires_shared_tfds, run_cli


@requires_shared_tfds
def test_real_cifar10_info_has_class_names():
  info = data.dataset_info(data.get_builder("cifar10", str(SHARED_TFDS), download=False))
  assert info.class_names == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                              "ship", "truck")


@pytest.mark.e2e
@requires_shared_tfds
def test_tutorial_network_one_epoch_on_real_cifar10_reaches_50_percent(tmp_path):
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, ["--flagfile=experiments/cifar10_tutorial.cfg", "--epochs=1",
                                      f"--data_dir={SHARED_TFDS}", "--nodownload", f"--run_dir={run_dir}",
                                      "--log_every_steps=500"])
  assert code == 0, stderr[-2000:]
  results = json.loads((run_dir / "results.json").read_text())
  assert results["steps"] == 50_000 // 32 and results["epochs"] == 1
  assert results["eval_accuracy"] >= 0.50, results
