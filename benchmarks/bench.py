"""Is the custom loop worth it? `PYTHONPATH=. python benchmarks/bench.py --data_dir=../shared/tfds` times, side by side:

  A  the seeds' recipe: Keras `Sequential`, `compile`, `model.fit` on numpy arrays;
  B  the same `model.fit` on this project's `tf.data` pipeline;
  C  this project's trainer as configured (at its defaults: float32, `--steps_per_loop=20`, no XLA);
  D  this project's trainer at the fastest settings for this machine: precision, steps per loop and
     XLA are chosen by a short measured search first, and the table says which won.

Same network (the flags' model; for the tutorial network A and B use the seeds' own `Sequential`),
data, batch size and optimizer. Each contender is built once; then, for `--rounds` rounds, each in
turn (A B C D A B C D ...) runs `--lead_in_steps` untimed steps and `--bench_steps` timed ones, so
that load from other processes falls on all of them alike. The table reports medians, ratios to A,
and accuracy on the first `--eval_examples` of `--eval_split` after all rounds (every contender
has trained the same number of steps by then).

Also measured each round: the input pipeline alone (images/s), and C and D fed one cached batch
instead of the pipeline; their ratio says how input-bound the trainer is
(input-bound fraction = 1 - fed-by-pipeline / fed-cached images/s).

Every Config flag works here too (--dataset, --model, --batch_size, ...). The data are opened as a run
opens them: a TFDS dataset or a folder of images, each split in memory or streaming
(--data_memory_budget_mb); A reads the examples each measurement needs into arrays first, untimed.
"""

import dataclasses
import datetime
import itertools
import json
import os
import statistics
import time
from typing import Any, Optional, Sequence

from absl import flags as absl_flags
from absl import logging
import numpy as np
import tensorflow as tf

from cnn import cli
from cnn import data as data_lib
from cnn import flags
from cnn import models
from cnn import optim
from cnn.config import Config
from cnn.data import stream
from cnn.errors import UserError
from cnn.training import evaluator
from cnn.training import trainer
import keras_fit  # benchmarks/keras_fit.py, beside this script.

flags.define_config_flags()
_EVAL_EXAMPLES = absl_flags.DEFINE_integer("eval_examples", 2000, "Evaluate on the first N examples of "
                                           "--eval_split (accuracy after a few hundred steps is a check).",
                                           lower_bound=1)
_STEPS = absl_flags.DEFINE_integer("bench_steps", 150, "Timed train steps per measurement.", lower_bound=1)
_LEAD_IN = absl_flags.DEFINE_integer("lead_in_steps", 10, "Untimed steps before each measurement.",
                                     lower_bound=1)
_ROUNDS = absl_flags.DEFINE_integer("rounds", 5, "Interleaved rounds of A B C D.", lower_bound=1)
_SEARCH_ROUNDS = absl_flags.DEFINE_integer("search_rounds", 3, "Interleaved rounds per stage of the search "
                                           "for D.", lower_bound=1)
_SEARCH_STEPS = absl_flags.DEFINE_integer("search_steps", 60, "Timed steps per measurement when choosing D.",
                                          lower_bound=1)
_SEARCH_PRECISIONS = absl_flags.DEFINE_list(
    "search_precisions", ["float32", "mixed_bfloat16", "mixed_float16"], "Precisions D may use.")
_SEARCH_STEPS_PER_LOOP = absl_flags.DEFINE_list("search_steps_per_loop", ["1", "25"],
                                                "Steps per loop D may use.")
_SEARCH_JIT = absl_flags.DEFINE_list("search_jit_compile", ["false", "true"], "XLA settings D may use.")
_OUTPUT = absl_flags.DEFINE_string("output", "", "The JSON file (empty: runs/bench-<time>.json).")

# Model fields that define the network; at their defaults they are the tutorial's.
_NETWORK_FIELDS = ("model", "conv_filters", "kernel_size", "strides", "padding", "pool_size", "dense_units",
                   "activation", "dropout")


@dataclasses.dataclass
class Data:
  """The dataset's info and splits, each in memory or streaming (as a run opens them)."""
  info: data_lib.DatasetInfo
  train: "data_lib.Split | stream.StreamSplit"
  eval: "data_lib.Split | stream.StreamSplit"


def open_data(config: Config, eval_examples: int) -> Data:
  """The run's dataset (TFDS or folder) and splits, opened as a run opens them (in memory within
  --data_memory_budget_mb, else streaming), the eval split cut to its first `eval_examples`."""
  source = data_lib.open_dataset(config)
  train, evaluation = data_lib.open_splits(source, [config.train_split, config.eval_split],
                                           config.data_memory_budget_mb)
  if isinstance(evaluation, stream.StreamSplit):
    evaluation = dataclasses.replace(evaluation, keys=evaluation.keys[:eval_examples],
                                     labels=evaluation.labels[:eval_examples])
  else:
    evaluation = data_lib.Split(evaluation.images[:eval_examples], evaluation.labels[:eval_examples])
  return Data(source.info, train, evaluation)


class Contender:
  """One line of the table, built once; `seconds(steps)` trains it `steps` more steps, timed.

  Each timing starts with `lead_in` untimed steps (the first ones trace and compile; later ones
  re-warm caches after the other contenders ran), so every contender is timed alike.
  """
  what: str = ""

  def seconds(self, steps: int, lead_in: int) -> float:
    raise NotImplementedError

  def accuracy(self) -> Optional[float]:
    return None


# ------------------------------------------------------------------ A and B: Keras compile + fit.
def _keras_model(config: Config, info: data_lib.DatasetInfo) -> tf.keras.Model:
  """The seeds' Sequential for the tutorial network, else the registry's model; compiled as the seeds do."""
  tf.keras.mixed_precision.set_global_policy("float32")  # A and B are the seeds' float32 recipe.
  tf.keras.utils.set_random_seed(config.seed)
  if all(getattr(config, name) == getattr(Config(), name) for name in _NETWORK_FIELDS):
    model = keras_fit.tutorial_sequential(info.image_shape, info.num_classes)
  else:
    model = models.build_model(config, info)
  optimizer = optim.build_optimizer(dataclasses.replace(config, precision="float32"))
  return keras_fit.compile_like_the_seeds(model, optimizer)


class _StepClock(tf.keras.callbacks.Callback):
  """Wall time from the end of batch `lead_in - 1` to the end of the last batch of a `fit`."""

  def __init__(self, lead_in: int):
    super().__init__()
    self.lead_in, self.start, self.end = lead_in, 0.0, 0.0

  def on_train_batch_end(self, batch, logs=None):
    if batch == self.lead_in - 1:
      self.start = time.perf_counter()
    self.end = time.perf_counter()


class KerasFit(Contender):
  """A (`numpy=True`): `fit` on float64 numpy images / 255, as the seeds do, on a fresh random draw of
  the examples the steps need. B: `fit` on this project's tf.data pipeline (a new seed each call)."""

  def __init__(self, config: Config, data: Data, numpy: bool):
    self.config, self.data, self.numpy, self.calls = config, data, numpy, 0
    self.model = _keras_model(config, data.info)
    self.what = ("Keras compile + fit on numpy arrays (the seeds' recipe)" if numpy else
                 "Keras compile + fit on cnn.data's tf.data pipeline")

  def seconds(self, steps: int, lead_in: int) -> float:
    clock, batch_size, self.calls = _StepClock(lead_in), self.config.batch_size, self.calls + 1
    if self.numpy:
      n = (lead_in + steps) * batch_size
      index = np.random.default_rng([self.config.seed, self.calls]).choice(
          len(self.data.train), n, replace=n > len(self.data.train))
      self.model.fit(data_lib.images_at(self.data.train, index) / 255.0, self.data.train.labels[index],
                     batch_size=batch_size, epochs=1, verbose=0, callbacks=[clock])
    else:
      dataset = data_lib.train_dataset(self.data.train, batch_size, self.config.seed + self.calls)
      self.model.fit(dataset, epochs=1, steps_per_epoch=lead_in + steps, shuffle=False, verbose=0,
                     callbacks=[clock])
    return clock.end - clock.start

  def accuracy(self) -> float:
    if self.numpy:
      images = data_lib.images_at(self.data.eval, np.arange(len(self.data.eval)))
      return self.model.evaluate(images / 255.0, self.data.eval.labels,
                                 batch_size=self.config.eval_batch_size, verbose=0)[1]
    dataset = data_lib.eval_dataset(self.data.eval, self.config.eval_batch_size)
    return self.model.evaluate(dataset.map(lambda images, labels, index: (images, labels)), verbose=0)[1]


# ------------------------------------------------------------------ C and D: this project's trainer.
class Trainer(Contender):
  """`trainer.build_training`'s train loop, fed by the pipeline or by one cached batch."""

  def __init__(self, config: Config, data: Data, what: str, cached: bool = False):
    self.config, self.data, self.what, self.cached = config, data, what, cached
    tf.keras.utils.set_random_seed(config.seed)
    strategy, steps_per_epoch = tf.distribute.get_strategy(), data_lib.steps_per_epoch(data.train, config.batch_size)
    self.training = trainer.build_training(config, trainer.build_model_in_scope(config, data.info, strategy)[0], strategy,
                                           steps_per_epoch, config.epochs * steps_per_epoch)
    dataset = data_lib.train_dataset(data.train, config.batch_size, config.seed)
    if cached:  # The same batch again and again, already in memory: the step with free input.
      dataset = tf.data.Dataset.from_tensors(next(iter(dataset))).repeat()
    self.iterator = iter(dataset)

  def _run(self, num_steps: int) -> None:
    for start in range(0, num_steps, self.config.steps_per_loop):
      self.training.train_loop(self.iterator, min(self.config.steps_per_loop, num_steps - start))

  def seconds(self, steps: int, lead_in: int) -> float:
    self._run(lead_in)
    start = time.perf_counter()
    self._run(steps)
    return time.perf_counter() - start

  def accuracy(self) -> Optional[float]:
    if self.cached:
      return None
    metrics, _ = evaluator.evaluate_pass(self.training.eval_step,
                                  data_lib.eval_dataset(self.data.eval, self.config.eval_batch_size),
                                  self.training.eval_metrics)
    return metrics["accuracy"]


class Pipeline(Contender):
  """The train pipeline alone: batches produced with nothing consuming them."""
  what = "cnn.data train pipeline alone"

  def __init__(self, config: Config, data: Data):
    self.iterator = iter(data_lib.train_dataset(data.train, config.batch_size, config.seed))

  def seconds(self, steps: int, lead_in: int) -> float:
    for _ in range(lead_in):
      next(self.iterator)
    start = time.perf_counter()
    for _ in range(steps):
      next(self.iterator)
    return time.perf_counter() - start


def interleave(contenders: dict[str, Contender], rounds: int, steps: int, lead_in: int,
               batch_size: int) -> dict[str, list[float]]:
  """images/s of each contender in each round, timed in turn: A B C ... A B C ..."""
  measured = {name: [] for name in contenders}
  for round_index, (name, contender) in itertools.product(range(rounds), contenders.items()):
    measured[name].append(steps * batch_size / contender.seconds(steps, lead_in))
    logging.info("round %d %s: %.0f images/s", round_index + 1, name, measured[name][-1])
  return measured


def search_fastest(config: Config, data: Data, rounds: int, steps: int,
                   lead_in: int) -> tuple[Config, list[dict[str, Any]]]:
  """D's settings, by measurement, one setting at a time: the precision (at the first steps per loop
  and XLA values), then steps per loop, then XLA, each keeping the fastest so far; the candidates
  of a stage are timed interleaved, `rounds` times, and compared by their medians."""
  loops = [int(k) for k in _SEARCH_STEPS_PER_LOOP.value]
  jits = [v.lower() in ("true", "1", "yes") for v in _SEARCH_JIT.value]
  best = dataclasses.replace(config, precision=_SEARCH_PRECISIONS.value[0], steps_per_loop=loops[0],
                             jit_compile=jits[0])
  trials = []
  for field, values in (("precision", _SEARCH_PRECISIONS.value), ("steps_per_loop", loops),
                        ("jit_compile", jits)):
    candidates = [dataclasses.replace(best, **{field: value}).validate() for value in values]
    contenders = {_settings(c): Trainer(c, data, _settings(c)) for c in candidates}
    measured = interleave(contenders, rounds, max([steps] + loops), lead_in, config.batch_size)
    medians = {name: statistics.median(speeds) for name, speeds in measured.items()}
    trials += [{"choosing": field, "settings": name, "images_per_second": speed}
               for name, speed in medians.items()]
    best = max(candidates, key=lambda c: medians[_settings(c)])
  return best, trials


def _settings(config: Config) -> str:
  return (f"{config.precision}, {config.steps_per_loop} step{'s' if config.steps_per_loop > 1 else ''} "
          f"per loop, XLA {'on' if config.jit_compile else 'off'}")


# ------------------------------------------------------------------ The benchmark.
def run_benchmark(config: Config, rounds: int, steps: int, lead_in: int, search_rounds: int,
                  search_steps: int, eval_examples: int) -> dict[str, Any]:
  """Loads the data once, chooses D, times the interleaved rounds; returns the report."""
  data = open_data(config, eval_examples)
  fastest, trials = search_fastest(config, data, search_rounds, search_steps, lead_in)
  logging.info("D: %s", _settings(fastest))
  contenders = {
      "A": KerasFit(config, data, numpy=True),
      "B": KerasFit(config, data, numpy=False),
      "C": Trainer(config, data, f"cnn trainer as configured ({_settings(config)})"),
      "D": Trainer(fastest, data, f"cnn trainer, fastest found ({_settings(fastest)})"),
      "C_cached": Trainer(config, data, "C fed one cached batch", cached=True),
      "D_cached": Trainer(fastest, data, "D fed one cached batch", cached=True),
      "pipeline": Pipeline(config, data),
  }
  measured = interleave(contenders, rounds, max(steps, fastest.steps_per_loop), lead_in, config.batch_size)
  tf.keras.mixed_precision.set_global_policy("float32")
  speed = {name: statistics.median(speeds) for name, speeds in measured.items()}
  return {
      "dataset": config.dataset, "model": config.model, "batch_size": config.batch_size,
      "optimizer": config.optimizer, "train_examples": len(data.train), "eval_split": config.eval_split,
      "eval_examples": len(data.eval), "rounds": rounds, "bench_steps": steps, "lead_in_steps": lead_in,
      "runs": {name: {"what": c.what, "images_per_second": speed[name], "measured": measured[name],
                      "ratio_to_A": speed[name] / speed["A"], "accuracy": c.accuracy()}
               for name, c in contenders.items()},
      "fastest": {"precision": fastest.precision, "steps_per_loop": fastest.steps_per_loop,
                  "jit_compile": fastest.jit_compile},
      "search": trials,
      "pipeline_images_per_second": speed["pipeline"],
      "fed_by_pipeline_over_cached": {name: speed[name] / speed[f"{name}_cached"] for name in ("C", "D")},
      "input_bound_fraction": {name: max(0.0, 1 - speed[name] / speed[f"{name}_cached"])
                               for name in ("C", "D")},
      # The targets for this machine (tutorial recipe, batch 32).
      "targets_met": {
          "C >= 1.0 x A": speed["C"] >= speed["A"],
          "D >= 1.3 x A": speed["D"] >= 1.3 * speed["A"],
          "C fed by the pipeline >= 0.95 x fed a cached batch": speed["C"] >= 0.95 * speed["C_cached"],
      },
  }


def table(report: dict[str, Any]) -> str:
  """The report as a Markdown table and a few lines under it."""
  lines = [f"{report['dataset']}, {report['model']}, batch {report['batch_size']}, {report['optimizer']}: "
           f"medians of {report['rounds']} interleaved rounds of {report['bench_steps']} timed steps each; "
           f"accuracy on {report['eval_examples']} examples of {report['eval_split']} after all rounds "
           f"({report['rounds'] * (report['bench_steps'] + report['lead_in_steps'])} steps)", "",
           "| run | what | images/s | × A | accuracy |", "| --- | --- | ---: | ---: | ---: |"]
  for name in ("A", "B", "C", "D"):
    run = report["runs"][name]
    lines.append(f"| {name} | {run['what']} | {run['images_per_second']:.0f} | {run['ratio_to_A']:.2f} | "
                 f"{run['accuracy']:.3f} |")
  lines.append("")
  lines.append(f"Pipeline alone: {report['pipeline_images_per_second']:.0f} images/s.")
  for name in ("C", "D"):
    cached = report["runs"][f"{name}_cached"]["images_per_second"]
    lines.append(f"{name} fed by the pipeline / fed one cached batch ({cached:.0f} images/s): "
                 f"{report['fed_by_pipeline_over_cached'][name]:.3f}; input-bound fraction "
                 f"{report['input_bound_fraction'][name]:.3f}.")
  lines.append("Targets: " + "; ".join(f"{name}: {'met' if met else 'NOT met'}"
                                       for name, met in report["targets_met"].items()) + ".")
  lines.append("D was chosen by timing, one setting at a time (median images/s): " + "; ".join(
      f"{t['settings']}: {t['images_per_second']:.0f}" for t in report["search"]) + ".")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  del argv
  config = flags.config_from_flags()
  output = _OUTPUT.value or os.path.join("runs", f"bench-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
  if os.path.isdir(output):
    raise UserError(f"--output={output} is a directory; give a file name")
  report = run_benchmark(config, _ROUNDS.value, _STEPS.value, _LEAD_IN.value, _SEARCH_ROUNDS.value,
                         _SEARCH_STEPS.value, _EVAL_EXAMPLES.value)
  os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
  with open(output, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
  print(table(report))
  print(f"\nJSON: {output}")


if __name__ == "__main__":
  cli.run(main)
