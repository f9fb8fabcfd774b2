"""Shared fixtures: mock TFDS data, the real-data directory, and running the CLI in-process."""

import io
import os
import pathlib
import sys
from contextlib import redirect_stderr
from unittest import mock

from absl import flags
from absl.testing import flagsaver
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_TFDS = REPO.parent / "shared" / "tfds"

# Two logical CPU devices, so that MirroredStrategy has two replicas in-process. It must happen
# before TensorFlow starts its runtime; single-device code keeps using the first one.
TEST_CPU_DEVICES = 2
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * TEST_CPU_DEVICES)

requires_shared_tfds = pytest.mark.skipif(
    not (SHARED_TFDS / "cifar10").is_dir(),
    reason=f"real data not found at {SHARED_TFDS} (a prepared TFDS data_dir with cifar10)")


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
  # Flagfiles include each other by paths relative to the repository root, as documented.
  monkeypatch.chdir(REPO)


@pytest.fixture(autouse=True)
def _data_cache_in_tmp(monkeypatch, tmp_path):
  # Runs cache decoded splits under $XDG_CACHE_HOME/cnn: keep each test's cache its own.
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))


@pytest.fixture
def mock_tfds():
  """TFDS returns random examples of the right shapes and dtypes instead of reading files."""
  from cnn import data  # pylint: disable=import-outside-toplevel
  # Mock "downloads" need no network: skip the download-host probe.
  with (tfds.testing.mock_data(num_examples=256),
        mock.patch.object(data.sources, "probe_download_hosts", lambda urls: "")):
    yield


def run_cli(main, argv: list[str], takes_arguments: bool = False) -> tuple[int, str]:
  """Runs an entry point's `main` through `cnn.cli.run` as the command line would.

  Returns:
    (exit code, what it printed on stderr).
  """
  from cnn import cli  # pylint: disable=import-outside-toplevel
  stderr = io.StringIO()
  with flagsaver.flagsaver(), mock.patch.object(sys, "argv", ["prog", *argv]), redirect_stderr(stderr):
    flags.FLAGS.unparse_flags()
    try:
      cli.run(main, takes_arguments)  # absl's app.run always ends in sys.exit.
    except SystemExit as e:
      code = e.code or 0
  return code, stderr.getvalue()


def run_dir_files(run_dir: os.PathLike) -> set[str]:
  """Paths of every file under `run_dir`, relative to it."""
  root = pathlib.Path(run_dir)
  return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding the prepared `cnn_tiny_images` dataset (see tiny_tfds.py)."""
  import tiny_tfds  # pylint: disable=import-outside-toplevel  # Registers the builder.
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder(tiny_tfds.NAME, data_dir=data_dir).download_and_prepare()
  return data_dir
