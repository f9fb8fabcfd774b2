"""Config.validate: settings that do not fit together are refused in one line, naming the flags."""

import pathlib

import pytest

from cnn import flags as cnn_flags
from cnn import models  # pylint: disable=unused-import  # Registers the models.
from cnn.config import Config
from cnn.errors import UserError
from cnn.models import registry

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


@pytest.mark.parametrize("settings, message", [
    # Silently ignored before: the statistics were computed from the training split regardless.
    (dict(normalization="standardize", normalization_std=(0.2, 0.2, 0.2)),
     "--normalization_std needs --normalization_mean"),
    (dict(normalization_mean=(0.5, 0.5, 0.5), normalization_std=(0.2, 0.2, 0.2)),
     "--normalization_mean and --normalization_std need --normalization=standardize"),
    (dict(normalization="standardize", normalization_mean=(0.5,), normalization_std=(0.2, 0.2)),
     "--normalization_mean and --normalization_std need one value per channel each"),
])
def test_normalization_statistics_that_would_be_ignored_are_refused(settings, message):
  with pytest.raises(UserError, match=message):
    Config(**settings).validate()


def test_a_multi_worker_run_names_its_directory():
  # Each worker would have made its own runs/<dataset>-<model>-<time>, and resumed from none of the chief's.
  with pytest.raises(UserError, match="^--strategy=multi_worker_mirrored needs --run_dir: every worker must name"):
    Config(strategy="multi_worker_mirrored").validate()
  Config(strategy="multi_worker_mirrored", run_dir="runs/shared").validate()


def test_normalization_statistics_given_together_or_not_at_all_are_valid():
  Config(normalization="standardize").validate()
  Config(normalization="standardize", normalization_mean=(0.5,) * 3, normalization_std=(0.2,) * 3).validate()


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.cfg")
                                        if not p.name.endswith("_sweep.cfg")))  # Sweeps: sweep_test plans them.
def test_every_recipe_in_experiments_parses_to_a_valid_config(name):
  config = cnn_flags.config_from_flagfile(str(EXPERIMENTS / name))  # Unknown flags and bad values raise.
  config.validate()
  assert config.model in registry.names() or config.model.startswith("keras:"), config.model
