"""metrics.csv: one row per evaluation (step, epoch, then each metric), as timm's summary.csv.

Rows are kept in step order and keyed by step: writing a step drops the rows of that step and after
(a resumed run evaluates again what a killed one had evaluated past its last checkpoint), and
`truncate` drops the rows after a resumed run's step; `merge` adds columns to a step's row. Columns are the union of every row's, in the
order they first appeared. The file is rewritten atomically: a reader never sees half of it.
"""

import csv
import io
import os
from typing import Any

FILE = "metrics.csv"


class MetricsCsv:
  """The table in `path` (read and written whole: a run has a row per evaluation, a few thousand at most)."""

  def __init__(self, path: str):
    self.path = path

  def rows(self) -> list[dict[str, str]]:
    """The rows as written (values as text); none if there is no file."""
    if not os.path.isfile(self.path):
      return []
    with open(self.path, newline="") as f:
      return list(csv.DictReader(f))

  def steps(self) -> set[int]:
    return {int(row["step"]) for row in self.rows()}

  def write(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
    """Adds the row of `step` (in `epoch`, fractions allowed), replacing the rows from that step on."""
    rows = [row for row in self.rows() if int(row["step"]) < step]
    rows.append({"step": step, "epoch": round(epoch, 4), **metrics})
    self._write_rows(rows)

  def merge(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
    """Adds `metrics` to the row of `step` (made if there is none), keeping every other row: the side-car
    evaluator's table, where each split it is run on adds its own columns."""
    rows = {int(row["step"]): row for row in self.rows()}
    rows.setdefault(step, {"step": step, "epoch": round(epoch, 4)}).update(metrics)
    self._write_rows([rows[s] for s in sorted(rows)])

  def truncate(self, step: int) -> None:
    """Drops the rows after `step` (a resumed run's restored step)."""
    rows = self.rows()
    kept = [row for row in rows if int(row["step"]) <= step]
    if len(kept) < len(rows):
      self._write_rows(kept)

  def _write_rows(self, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    with open(self.path + ".tmp", "w", newline="") as f:
      f.write(text.getvalue())
    os.replace(self.path + ".tmp", self.path)
