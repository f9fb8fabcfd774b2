"""A run's eval sets and the names of their metrics (big_vision's evaluators, by name).

Every evaluation evaluates each eval set: `--eval_split` under the name `eval`, then each of
`--eval_splits` under its own name. A set's metrics are `<prefix>/<metric>`: the prefix is its name
for the model's own weights and `<name>_ema` for the moving averages (--ema_decay evaluates both,
side by side, as timm does); the metrics are `loss`, `accuracy` and `top<k>_accuracy` (--eval_top_k).
The prefix is also the set's TensorBoard directory in the run directory (`eval/`, `eval_ema/`, `val/`).
"""

import re

from cnn.config import Config
from cnn.errors import UserError
from cnn.training import metrics as metrics_lib

PRIMARY = "eval"  # The name of --eval_split's set.
EMA_SUFFIX = "_ema"
# Names a set cannot take: the run directory's other folders, and what an _ema prefix would shadow.
_RESERVED = {"train", "checkpoints", "watch", PRIMARY, PRIMARY + EMA_SUFFIX}


def default_top_k(num_classes: int) -> int:
  """--eval_top_k=0: top-5 accuracy where there are more than 10 classes."""
  return 5 if num_classes > 10 else 0


def top_k(config: Config, num_classes: int) -> int:
  """The k of the reported top-k accuracy (0: none). Raises UserError for a k above the class count."""
  k = config.eval_top_k or default_top_k(num_classes)
  if k > num_classes:
    raise UserError(f"--eval_top_k={k} is more than the dataset's {num_classes} classes")
  return k if k > 1 else 0


def split_name(split: str) -> str:
  """A split as a name: test[:5000] → test_5000, train[90%:] → train_90."""
  return re.sub(r"[^A-Za-z0-9]+", "_", split).strip("_") or "split"


def named_splits(eval_splits: str) -> list[tuple[str, str]]:
  """(name, split) of each of --eval_splits ("[NAME=]SPLIT,..."). Raises UserError for a bad or repeated name."""
  named = []
  for item in (part.strip() for part in eval_splits.split(",")):
    if not item:
      continue
    name, split = item.split("=", 1) if "=" in item else (split_name(item), item)
    name, split = name.strip(), split.strip()
    if not split or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
      raise UserError(f"--eval_splits: {item!r} is not [NAME=]SPLIT (a NAME of letters, digits, _ . -)")
    if name in _RESERVED or name.endswith(EMA_SUFFIX) or name in dict(named):
      raise UserError(f"--eval_splits: the name {name!r} is taken; name the set another way (NAME=SPLIT)")
    named.append((name, split))
  return named


def prefixes(name: str, averaged: bool) -> list[str]:
  """The metric prefixes of the set `name`: its own weights', then the averages' with --ema_decay."""
  return [name, name + EMA_SUFFIX] if averaged else [name]


def reported_prefix(name: str, averaged: bool) -> str:
  """The prefix of the weights the run reports (results.json's eval_*, cnn.evaluate, export)."""
  return prefixes(name, averaged)[-1]


def metric_names(config: Config, num_classes: int) -> list[str]:
  """Every `<prefix>/<metric>` an evaluation of the run reports, in metrics.csv's order."""
  k = top_k(config, num_classes)
  metrics = ["loss", "accuracy"] + ([metrics_lib.top_k_name(k)] if k else [])
  names = [PRIMARY] + [name for name, _ in named_splits(config.eval_splits)]
  return [f"{prefix}/{metric}" for name in names for prefix in prefixes(name, bool(config.ema_decay))
          for metric in metrics]


def best_metric(config: Config, num_classes: int) -> str:
  """--best_metric, or its default: the reported weights' accuracy on --eval_split. Raises UserError."""
  metric = config.best_metric or f"{reported_prefix(PRIMARY, bool(config.ema_decay))}/accuracy"
  names = metric_names(config, num_classes)
  if metric not in names:
    raise UserError(f"--best_metric={metric} is not a metric of this run; one of: {', '.join(names)}")
  return metric


def lower_is_better(metric: str) -> bool:
  return metric.endswith("loss")
