"""Runs a recipe on both sides (ours and its reference), seed by seed, alternating, and prints the parity table.

    python benchmarks/references/parity.py --recipe=imagewoof --seeds=0,1,2    # ours s0, torch s0, ours s1, ...
    python benchmarks/references/parity.py --recipe=imagewoof --table          # the table of what has finished
    python benchmarks/references/parity.py --recipe=imagewoof --sides=torch --variant=keras_sgd --seeds=0,1,2
    python benchmarks/references/parity.py --recipe=airbench94 --source=PATH/legacy/airbench94.py --seeds=0,1,2

imagewoof: ours is `python -m cnn.train --flagfile=benchmarks/references/imagewoof_resnet18.cfg --seed=S`,
the reference `benchmarks/references/imagewoof_resnet_torch.py --seed=S [--variant=V]`.
airbench94: ours is `experiments/cifar10_airbench94.cfg` at `--epochs=2 --lr_warmup_epochs=0.46` (the
authors' warm-up is 23% of the steps), the reference the authors' script through airbench94_cpu.py at
`--epochs=2`; both report the accuracy with their own TTA.
One run at a time, each logged to OUT/<recipe>_<side>[_<variant>]_s<S>.log (ours' run directory beside it);
every result is appended to OUT/<recipe>.jsonl, and a run already there is not run again. Run from the
repository root.
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
OURS_FLAGS = {
    "imagewoof": [f"--flagfile={os.path.join(HERE, 'imagewoof_resnet18.cfg')}"],
    "airbench94": ["--flagfile=experiments/cifar10_airbench94.cfg", "--epochs=2", "--lr_warmup_epochs=0.46",
                   "--data_dir=../shared/tfds", "--nodownload", "--histogram_every_steps=0", "--summary_images=0"],
}
TORCH_COMMAND = {
    "imagewoof": [os.path.join(HERE, "imagewoof_resnet_torch.py")],
    "airbench94": [os.path.join(HERE, "airbench94_cpu.py"), "--epochs=2"],
}
# Our progress line at an epoch's last step holds that epoch's running mean loss (reset each epoch).
OURS_PROGRESS = re.compile(r"step (\d+)/(\d+)\s+epoch (\d+)\s+loss ([\d.]+).*?(\d[\d,]*) images/s")


def side_name(side: str, variant: str) -> str:
  return f"{side}_{variant.replace(',', '+')}" if variant else side


def run_ours(recipe: str, seed: int, out: str, log: str) -> dict:
  run_dir = os.path.join(out, f"ours_s{seed}" if recipe == "imagewoof" else f"{recipe}_ours_s{seed}")
  with open(log, "w") as f:
    subprocess.run([sys.executable, "-m", "cnn.train", *OURS_FLAGS[recipe], f"--seed={seed}",
                    f"--run_dir={run_dir}", "--overwrite"], stdout=f, stderr=subprocess.STDOUT, check=True)
  with open(os.path.join(run_dir, "results.json")) as f:
    results = json.load(f)
  losses = {}
  with open(log) as f:
    for step, _, epoch, loss, _ in OURS_PROGRESS.findall(f.read()):
      losses[int(epoch)] = (int(step), float(loss))  # The last line of each epoch wins.
  return {"val_accuracy": results["eval_accuracy"], "train_loss_per_epoch": [losses[e][1] for e in sorted(losses)],
          "train_images_per_second": results.get("train_images_per_second", results.get("images_per_second")),
          "train_seconds": results.get("train_seconds"), "results": results}


def run_torch(recipe: str, seed: int, variant: str, source: str, threads: int, log: str) -> dict:
  extra = [f"--variant={variant}"] if recipe == "imagewoof" else [f"--source={source}"]
  extra += [f"--threads={threads}"] if threads else []
  with open(log, "w") as f:
    subprocess.run([sys.executable, *TORCH_COMMAND[recipe], f"--seed={seed}", *extra], stdout=f,
                   stderr=subprocess.STDOUT, check=True)
  with open(log) as f:
    text = f.read()
  result = json.loads([line for line in text.splitlines() if line.startswith("{")][-1])
  if recipe == "airbench94":  # The authors' table: | run | epoch | train_loss (last batch) | ... |.
    result["val_accuracy"] = result["tta_accuracy"]
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("|") and "eval" not in line]
    result["train_loss_per_epoch"] = [float(r[2]) for r in rows if r[1].strip().isdigit()]
    result["train_images_per_second"] = float("nan")
  return result


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
  parser.add_argument("--recipe", choices=sorted(OURS_FLAGS), required=True)
  parser.add_argument("--source", default="", help="airbench94: the authors' legacy/airbench94.py (commit f1c599c).")
  parser.add_argument("--torch_threads", type=int, default=0, help="The reference's --threads (0: its default).")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--sides", default="ours,torch")
  parser.add_argument("--variant", default="", help="The torch side's --variant.")
  parser.add_argument("--out", default="/tmp/refruns")
  parser.add_argument("--table", action="store_true", help="Only print the table of the finished runs.")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  results_file = os.path.join(args.out, f"{args.recipe}.jsonl")
  load = lambda: [json.loads(l) for l in open(results_file)] if os.path.exists(results_file) else []
  if not args.table:
    for seed in map(int, args.seeds.split(",")):
      for side in args.sides.split(","):
        name = side_name(side, args.variant if side == "torch" else "")
        if any(r["side"] == name and r["seed"] == seed for r in load()):
          continue
        prefix = "" if args.recipe == "imagewoof" else f"{args.recipe}_"
        log = os.path.join(args.out, f"{prefix}{name}_s{seed}.log")
        start = time.perf_counter()
        if side == "ours":
          result = run_ours(args.recipe, seed, args.out, log)
        else:
          result = run_torch(args.recipe, seed, args.variant, args.source, args.torch_threads, log)
        result.update(side=name, seed=seed, wall_seconds=time.perf_counter() - start,
                      load_average=os.getloadavg(), finished=time.strftime("%H:%M:%S"))
        with open(results_file, "a") as f:
          f.write(json.dumps(result) + "\n")
        print(f"{name} s{seed}: {100 * result['val_accuracy']:.2f}% in {result['wall_seconds']:.0f} s", flush=True)
  print(table(load()))


if __name__ == "__main__":
  main()
