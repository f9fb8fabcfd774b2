"""The results table: one row per trial (its swept flags, its results.json), sorted by a metric.

Written to <sweep_dir>/results.csv and results.json, and printed with the main columns.
"""

import csv
import json
import math
import os
from typing import Any, Optional, Sequence

from cnn.errors import UserError
from cnn.sweeps import store

CSV_FILE = "results.csv"
JSON_FILE = "results.json"
# Printed after the swept flags (every metric is in the files).
_PRINTED = ("eval_accuracy", "eval_loss", "train_accuracy", "train_loss", "steps", "wall_seconds")


# Costs, minimised: losses, times, memory, retraces, steps to the target accuracy. The rest (accuracies,
# images/s, MFU) is maximised.
_LOWER_IS_BETTER_ENDINGS = ("loss", "seconds", "_mb", "retraces", "time_to_accuracy_steps")


def lower_is_better(metric: str) -> bool:
  """Whether `metric` is a cost (loss, time, memory, retraces: minimised) rather than a score."""
  return metric.endswith(_LOWER_IS_BETTER_ENDINGS)


def rows(sweep_dir: str, trials: Sequence[store.Trial], failures: dict[str, str]) -> list[dict[str, Any]]:
  """One row per trial: trial, status, its swept flags, then every entry of its results.json."""
  table = []
  for trial in trials:
    results = store.results(sweep_dir, trial)
    status = "finished" if results is not None else failures.get(trial.name, "not finished")
    table.append({"trial": trial.name, "status": status, **trial.flags, **(results or {})})
  return table


def sort(table: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
  """Best first by `metric`; trials without it (not finished) last. Raises UserError for an unknown metric."""
  finished = [row for row in table if row["status"] == "finished"]
  if finished and not any(metric in row for row in finished):
    known = sorted(k for k, v in finished[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    raise UserError(f"--metric={metric} is not in the trials' results.json; one of: {', '.join(known)}")
  sign = 1 if lower_is_better(metric) else -1

  def key(row):
    value = row.get(metric)
    missing = not isinstance(value, (int, float)) or math.isnan(value)
    return (missing, 0.0 if missing else sign * value)

  return sorted(table, key=key)


def write(sweep_dir: str, table: Sequence[dict[str, Any]], metric: str) -> None:
  """results.csv (a column per swept flag and per result) and results.json (the rows, best first)."""
  columns = list(dict.fromkeys(key for row in table for key in row))
  with open(os.path.join(sweep_dir, CSV_FILE), "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(table)
  with open(os.path.join(sweep_dir, JSON_FILE), "w") as f:
    json.dump({"metric": metric, "lower_is_better": lower_is_better(metric), "trials": list(table)}, f, indent=2)
    f.write("\n")


def format_table(table: Sequence[dict[str, Any]], swept: Sequence[str], metric: Optional[str] = None) -> str:
  """An aligned text table: trial number, swept flags, the main metrics (and `metric`), status."""
  metrics = list(_PRINTED) + ([metric] if metric and metric not in _PRINTED else [])
  columns = ["trial", *swept, *metrics, "status"]
  cells = [columns] + [[row["trial"].split("-")[0]] + [_cell(row.get(column, "")) for column in columns[1:]]
                       for row in table]
  widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
  return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
  return str(value)
