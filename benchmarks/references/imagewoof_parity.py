"""Runs the Imagewoof ResNet-18 recipe on both sides, seed by seed, alternating, and prints the parity table.

    python benchmarks/references/imagewoof_parity.py --seeds=0,1,2            # ours s0, torch s0, ours s1, ...
    python benchmarks/references/imagewoof_parity.py --table                  # the table of what has finished
    python benchmarks/references/imagewoof_parity.py --sides=torch --variant=keras_sgd --seeds=0,1,2

Ours is `python -m cnn.train --flagfile=benchmarks/references/imagewoof_resnet18.cfg --seed=S`, the
reference `benchmarks/references/imagewoof_resnet_torch.py --seed=S [--variant=V]`. One run at a time,
each logged to OUT/<side>[_<variant>]_s<S>.log (ours' run directory beside it); every result is appended
to OUT/imagewoof.jsonl, and a run already there is not run again. Run from the repository root.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OURS_CFG = os.path.join(HERE, "imagewoof_resnet18.cfg")
TORCH_SCRIPT = os.path.join(HERE, "imagewoof_resnet_torch.py")
# Our progress line at an epoch's last step holds that epoch's running mean loss (reset each epoch).
OURS_PROGRESS = re.compile(r"step (\d+)/(\d+)\s+epoch (\d+)\s+loss ([\d.]+).*?(\d[\d,]*) images/s")


def side_name(side: str, variant: str) -> str:
  return f"{side}_{variant.replace(',', '+')}" if variant else side


def run_ours(seed: int, out: str, log: str) -> dict:
  run_dir = os.path.join(out, f"ours_s{seed}")
  with open(log, "w") as f:
    subprocess.run([sys.executable, "-m", "cnn.train", f"--flagfile={OURS_CFG}", f"--seed={seed}",
                    f"--run_dir={run_dir}", "--overwrite"], stdout=f, stderr=subprocess.STDOUT, check=True)
  with open(os.path.join(run_dir, "results.json")) as f:
    results = json.load(f)
  steps_per_epoch, losses = None, {}
  with open(log) as f:
    for step, _, epoch, loss, _ in OURS_PROGRESS.findall(f.read()):
      losses[int(epoch)] = (int(step), float(loss))  # The last line of each epoch wins.
  return {"val_accuracy": results["eval_accuracy"], "train_loss_per_epoch": [losses[e][1] for e in sorted(losses)],
          "train_images_per_second": results.get("train_images_per_second", results.get("images_per_second")),
          "train_seconds": results.get("train_seconds"), "results": results, "steps_per_epoch": steps_per_epoch}


def run_torch(seed: int, variant: str, log: str) -> dict:
  with open(log, "w") as f:
    subprocess.run([sys.executable, TORCH_SCRIPT, f"--seed={seed}", f"--variant={variant}"], stdout=f,
                   stderr=subprocess.STDOUT, check=True)
  with open(log) as f:
    return json.loads([line for line in f if line.startswith("{")][-1])


def mean_se(values: list[float]) -> tuple[float, float]:
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, float("nan")
  var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
  return mean, math.sqrt(var / len(values))


def table(records: list[dict]) -> str:
  """A markdown table: per side, mean ± standard error of accuracy and each epoch's loss; then differences."""
  sides = sorted({r["side"] for r in records}, key=lambda s: (s != "ours", s != "torch", s))
  rows = ["| side | seeds | val top-1, mean ± SE | per seed | train loss per epoch (mean) | images/s | s per run |",
          "| --- | ---: | ---: | --- | --- | ---: | ---: |"]
  stats = {}
  for side in sides:
    runs = sorted((r for r in records if r["side"] == side), key=lambda r: r["seed"])
    acc = [100 * r["val_accuracy"] for r in runs]
    stats[side] = mean_se(acc)
    epochs = min(len(r["train_loss_per_epoch"]) for r in runs)
    losses = " / ".join(f"{sum(r['train_loss_per_epoch'][e] for r in runs) / len(runs):.3f}" for e in range(epochs))
    speed = sum(r["train_images_per_second"] for r in runs) / len(runs)
    wall = sum(r["wall_seconds"] for r in runs) / len(runs)
    per_seed = ", ".join(f"s{r['seed']} {a:.2f}" for r, a in zip(runs, acc))
    rows.append(f"| {side} | {len(runs)} | {stats[side][0]:.2f} ± {stats[side][1]:.2f}% | "
                f"{per_seed} | {losses} | {speed:.1f} | {wall:.0f} |")
  if "ours" in stats:
    rows.append("")
    for side in sides[1:]:
      diff = stats["ours"][0] - stats[side][0]
      se = math.hypot(stats["ours"][1], stats[side][1])
      verdict = "within 2 SE" if abs(diff) <= 2 * se else "NOT within 2 SE"
      rows.append(f"ours − {side}: {diff:+.2f} points, SE of the difference {se:.2f}: {verdict}")
  return "\n".join(rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--sides", default="ours,torch")
  parser.add_argument("--variant", default="", help="The torch side's --variant.")
  parser.add_argument("--out", default="/tmp/refruns")
  parser.add_argument("--table", action="store_true", help="Only print the table of the finished runs.")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  results_file = os.path.join(args.out, "imagewoof.jsonl")
  load = lambda: [json.loads(l) for l in open(results_file)] if os.path.exists(results_file) else []
  if not args.table:
    for seed in map(int, args.seeds.split(",")):
      for side in args.sides.split(","):
        name = side_name(side, args.variant if side == "torch" else "")
        if any(r["side"] == name and r["seed"] == seed for r in load()):
          continue
        log = os.path.join(args.out, f"{name}_s{seed}.log")
        start = time.perf_counter()
        result = run_ours(seed, args.out, log) if side == "ours" else run_torch(seed, args.variant, log)
        result.update(side=name, seed=seed, wall_seconds=time.perf_counter() - start,
                      load_average=os.getloadavg(), finished=time.strftime("%H:%M:%S"))
        with open(results_file, "a") as f:
          f.write(json.dumps(result) + "\n")
        print(f"{name} s{seed}: {100 * result['val_accuracy']:.2f}% in {result['wall_seconds']:.0f} s", flush=True)
  print(table(load()))


if __name__ == "__main__":
  main()
