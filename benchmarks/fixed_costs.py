"""A run's fixed costs: its timeline, and the whole process against the PyTorch reference loop, interleaved.

    python benchmarks/fixed_costs.py --data_dir=../shared/tfds --rounds=3 [--no_torch] [-- extra cnn.train flags]

Each round runs, one after the other, (A) `python -m cnn.train --flagfile=experiments/cifar10_tutorial.cfg
--epochs=1` as a whole process and (B) `benchmarks/torch_reference.py --epochs=1` (the same network,
recipe and data in a plain PyTorch eager loop), and times both from outside. It prints A's timeline
(from process start, read off its log lines: imports, data, model, first step, each log interval,
evaluation, exit), the medians of both, and the median of the per-round ratios B/A (above 1: this
codebase's whole process is faster). Both commands run warm: the rounds after the first find the
decoded data in their caches, as a researcher's second run does. The first round is a warm-up and
is not counted.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# absl's prefix: "I1201 07:25:36.151747 139780319165312 trainer.py:164] message".
_LOG_LINE = re.compile(r"^[IWE]\d{4} (\d\d:\d\d:\d\d\.\d+) +\d+ ([\w.]+):\d+\] (.*)$")
_MILESTONES = (  # (label, pattern of the first log line that marks it)
    ("model built", r"^Model "),
    ("data ready", r"train examples"),
    ("FLOPs counted", r"MFLOPs per image"),
    ("run directory ready", r"^Run directory"),
    ("first log step", r"^step \d+/"),
    ("evaluated", r"^epoch \d+/\d+ "),
)


def timed(command: list[str], log_path: str) -> tuple[float, float]:
  """Runs `command` with its output to `log_path`; returns (start wall clock, seconds)."""
  start_wall, start = time.time(), time.perf_counter()
  with open(log_path, "w") as log:
    subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
  return start_wall, time.perf_counter() - start


def timeline(log_path: str, start_wall: float, total: float) -> list[tuple[str, float]]:
  """Seconds from process start to each milestone and log step, read off the log's timestamps."""
  day = datetime.datetime.fromtimestamp(start_wall)
  events, seen = [], set()
  for line in open(log_path, errors="replace"):
    match = _LOG_LINE.match(line.strip())
    if not match:
      continue
    clock, message = match[1], match[3]
    at = datetime.datetime.combine(day.date(), datetime.time.fromisoformat(clock)).timestamp() - start_wall
    for label, pattern in _MILESTONES:
      if label not in seen and re.search(pattern, message):
        seen.add(label)
        events.append((label, at))
    step = re.match(r"^step (\d+)/", message)
    if step:
      events.append((f"step {step[1]}", at))
  return events + [("process exit", total)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--rounds", type=int, default=3, help="Counted rounds (after one warm-up round).")
  parser.add_argument("--no_torch", action="store_true", help="Only A's timeline (no PyTorch installed).")
  parser.add_argument("train_flags", nargs="*", help="Extra cnn.train flags, after --.")
  args = parser.parse_args()

  work = tempfile.mkdtemp(prefix="fixed_costs-")
  ours, theirs, ratios = [], [], []
  for round_index in range(args.rounds + 1):
    run_dir = os.path.join(work, f"run{round_index}")
    train = [sys.executable, "-m", "cnn.train", "--flagfile=experiments/cifar10_tutorial.cfg", "--epochs=1",
             f"--data_dir={args.data_dir}", "--nodownload", f"--run_dir={run_dir}", *args.train_flags]
    log_path = os.path.join(work, f"train{round_index}.log")
    start_wall, seconds = timed(train, log_path)
    if not args.no_torch:
      torch_seconds = timed([sys.executable, "benchmarks/torch_reference.py", f"--data_dir={args.data_dir}",
                             "--epochs=1"], os.path.join(work, f"torch{round_index}.log"))[1]
    if round_index == 0:
      continue  # Warm-up: fills the data caches.
    ours.append(seconds)
    if not args.no_torch:
      theirs.append(torch_seconds)
      ratios.append(torch_seconds / seconds)
    print(f"round {round_index}: cnn.train {seconds:.1f} s" +
          ("" if args.no_torch else f", PyTorch {torch_seconds:.1f} s, ratio {torch_seconds / seconds:.2f}"),
          flush=True)
    last_timeline = timeline(log_path, start_wall, seconds)
    results = json.load(open(os.path.join(run_dir, "results.json")))

  print("\ntimeline of the last cnn.train round (seconds from process start):")
  previous = 0.0
  for label, at in last_timeline:
    print(f"  {at:7.2f}  (+{at - previous:5.2f})  {label}")
    previous = at
  print(f"\nresults: train_seconds {results['train_seconds']:.1f}, images/s {results['images_per_second']:.0f}, "
        f"test accuracy {results['eval_accuracy']:.4f}")
  print(f"cnn.train whole process, median of {len(ours)}: {statistics.median(ours):.1f} s")
  if ratios:
    print(f"PyTorch reference, median: {statistics.median(theirs):.1f} s")
    print(f"speed ratio (PyTorch seconds / cnn seconds), median of per-round ratios: "
          f"{statistics.median(ratios):.2f}")


if __name__ == "__main__":
  main()
