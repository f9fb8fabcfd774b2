"""The sweep's results table: sorted best first, each metric in its own direction."""

import pytest

from cnn.sweeps import table


def finished(name, **results):
  return {"trial": name, "status": "finished", **results}


@pytest.mark.parametrize("metric", ["eval_loss", "wall_seconds", "step_seconds", "peak_host_memory_mb", "retraces",
                                    "time_to_accuracy_steps", "time_to_accuracy_seconds"])
def test_costs_sort_lowest_first(metric):
  rows = [finished("000-a", **{metric: 3.0}), finished("001-b", **{metric: 1.0}), finished("002-c", **{metric: 2.0}),
          {"trial": "003-d", "status": "not finished"}]
  assert [row["trial"] for row in table.sort(rows, metric)] == ["001-b", "002-c", "000-a", "003-d"]
  assert table.lower_is_better(metric)


@pytest.mark.parametrize("metric", ["eval_accuracy", "test_accuracy", "images_per_second", "mfu", "tflops"])
def test_scores_sort_highest_first(metric):
  rows = [finished("000-a", **{metric: 1.0}), finished("001-b", **{metric: 3.0})]
  assert [row["trial"] for row in table.sort(rows, metric)] == ["001-b", "000-a"]
  assert not table.lower_is_better(metric)
