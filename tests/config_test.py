"""Config.validate: settings that do not fit together are refused in one line, naming the flags."""

import pytest

from cnn.config import Config
from cnn.errors import UserError


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


def test_normalization_statistics_given_together_or_not_at_all_are_valid():
  Config(normalization="standardize").validate()
  Config(normalization="standardize", normalization_mean=(0.5,) * 3, normalization_std=(0.2,) * 3).validate()
