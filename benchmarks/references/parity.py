"""Runs a recipe on both sides (ours and its reference), seed by seed, alternating, and prints the parity table.

    python benchmarks/references/parity.py --recipe=imagewoof --seeds=0,1,2    # ours s0, torch s0, ours s1, ...
    python benchmarks/references/parity.py --recipe=imagewoof --table          # the table of what has finished
    python benchmarks/references/parity.py --recipe=imagewoof --sides=torch --variant=keras_sgd --seeds=0,1,2
    python benchmarks/references/parity.py --recipe=airbench94 --source=PATH/legacy/airbench94.py --seeds=0,1,2
    python benchmarks/references/parity.py --recipe=airbench94 --source=... --epochs=2 --train_images=25600
    python benchmarks/references/parity.py --recipe=airbench94 --source=... --epochs=2 --train_images=25600 \
        --sides=ours --ours_flags=--sgd_momentum=keras

imagewoof: ours is `python -m cnn.train --flagfile=benchmarks/references/imagewoof_resnet18.cfg --seed=S`,
the reference `benchmarks/references/imagewoof_resnet_torch.py --seed=S [--variant=V]`.
airbench94: ours is `experiments/cifar10_airbench94.cfg` at `--epochs=E --lr_warmup_epochs=0.23×E` (the
authors' warm-up is 23% of the steps), the reference the authors' script through airbench94_cpu.py at
`--epochs=E` (E = --epochs, 2 unless set); with --train_images=N both train on the first N training images
(a shortened budget for a CPU); both report the accuracy with their own TTA on the whole test set.
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
    "airbench94": ["--flagfile=experiments/cifar10_airbench94.cfg", "--data_dir=../shared/tfds", "--nodownload",
                   "--histogram_every_steps=0", "--summary_images=0"],
}
TORCH_COMMAND = {
    "imagewoof": [os.path.join(HERE, "imagewoof_resnet_torch.py")],
    "airbench94": [os.path.join(HERE, "airbench94_cpu.py")],
}


def budget_flags(recipe: str, epochs: float, train_images: int) -> tuple[list[str], list[str]]:
  """The flags that set airbench94's budget on each side: (ours, the reference's).

  The authors' warm-up is 23% of the steps, so ours is --lr_warmup_epochs=0.23 × epochs; a shortened training
  set is the first N images on both sides (TFDS's train[:N] and the same rows of the reference's arrays).
  """
  if recipe != "airbench94":
    return [], []
  ours = [f"--epochs={epochs:g}", f"--lr_warmup_epochs={0.23 * epochs:g}"]
  torch_side = [f"--epochs={epochs:g}"]
  if train_images:
    ours.append(f"--train_split=train[:{train_images}]")
    torch_side.append(f"--train_images={train_images}")
  return ours, torch_side


def budget_name(recipe: str, epochs: float, train_images: int) -> str:
  """airbench94 at its 2-epoch budget on all images keeps the plain name; a shortened one is named by it."""
  if recipe != "airbench94" or (epochs == 2 and not train_images):
    return recipe
  return f"{recipe}_e{epochs:g}" + (f"_first{train_images}" if train_images else "")
# Our progress line at an epoch's last step holds that epoch's running mean loss (reset each epoch).
OURS_PROGRESS = re.compile(r"step (\d+)/(\d+)\s+epoch (\d+)\s+loss ([\d.]+).*?(\d[\d,]*) images/s")


def side_name(side: str, variant: str) -> str:
  return f"{side}_{variant.replace(',', '+')}" if variant else side


def ours_label(flags: str) -> str:
  """`--sgd_momentum=pytorch --x=1` → `sgd_momentum=pytorch+x=1` (a side name's variant part)."""
  return "+".join(flag.lstrip("-") for flag in flags.split())


def run_ours(recipe: str, seed: int, out: str, log: str, flags: list[str], name: str, label: str = "ours") -> dict:
  run_dir = os.path.join(out, f"{label}_s{seed}" if recipe == "imagewoof" else f"{name}_{label}_s{seed}")
  with open(log, "w") as f:
    subprocess.run([sys.executable, "-m", "cnn.train", *OURS_FLAGS[recipe], *flags, f"--seed={seed}",
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


def run_torch(recipe: str, seed: int, variant: str, source: str, threads: int, log: str, budget: list[str]) -> dict:
  extra = [f"--variant={variant}"] if recipe == "imagewoof" else [f"--source={source}", *budget]
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
  rows.append("")
  for ours in (s for s in sides if s.startswith("ours")):
    for side in (s for s in sides if s.startswith("torch")):
      diff = stats[ours][0] - stats[side][0]
      se = math.hypot(stats[ours][1], stats[side][1])
      verdict = "within 2 SE" if abs(diff) <= 2 * se else "NOT within 2 SE"
      rows.append(f"{ours} − {side}: {diff:+.2f} points, SE of the difference {se:.2f}: {verdict}")
  return "\n".join(rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipe", choices=sorted(OURS_FLAGS), required=True)
  parser.add_argument("--source", default="", help="airbench94: the authors' legacy/airbench94.py (commit f1c599c).")
  parser.add_argument("--torch_threads", type=int, default=0, help="The reference's --threads (0: its default).")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--sides", default="ours,torch")
  parser.add_argument("--variant", default="", help="The torch side's --variant.")
  parser.add_argument("--ours_flags", default="",
                      help="Extra flags for our side, space-separated (e.g. --sgd_momentum=pytorch); its rows are "
                           "labelled ours_<flags>.")
  parser.add_argument("--epochs", type=float, default=2, help="airbench94: epochs on both sides.")
  parser.add_argument("--train_images", type=int, default=0,
                      help="airbench94: train both sides on the first N training images (0: all).")
  parser.add_argument("--ours_label", default="", help="Our side's name in the table (default: ours[_<flags>]); "
                      "name a code change the flags do not show.")
  parser.add_argument("--out", default="/tmp/refruns")
  parser.add_argument("--table", action="store_true", help="Only print the table of the finished runs.")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  name = budget_name(args.recipe, args.epochs, args.train_images)
  ours_budget, torch_budget = budget_flags(args.recipe, args.epochs, args.train_images)
  results_file = os.path.join(args.out, f"{name}.jsonl")
  load = lambda: [json.loads(l) for l in open(results_file)] if os.path.exists(results_file) else []
  if not args.table:
    for seed in map(int, args.seeds.split(",")):
      for side in args.sides.split(","):
        label = side_name(side, args.variant if side == "torch" else ours_label(args.ours_flags))
        label = args.ours_label if side == "ours" and args.ours_label else label
        if any(r["side"] == label and r["seed"] == seed for r in load()):
          continue
        prefix = "" if args.recipe == "imagewoof" else f"{name}_"
        log = os.path.join(args.out, f"{prefix}{label}_s{seed}.log")
        start = time.perf_counter()
        if side == "ours":
          result = run_ours(args.recipe, seed, args.out, log, ours_budget + args.ours_flags.split(), name, label)
        else:
          result = run_torch(args.recipe, seed, args.variant, args.source, args.torch_threads, log, torch_budget)
        result.update(side=label, seed=seed, wall_seconds=time.perf_counter() - start,
                      load_average=os.getloadavg(), finished=time.strftime("%H:%M:%S"))
        with open(results_file, "a") as f:
          f.write(json.dumps(result) + "\n")
        print(f"{label} s{seed}: {100 * result['val_accuracy']:.2f}% in {result['wall_seconds']:.0f} s", flush=True)
  print(table(load()))


if __name__ == "__main__":
  main()
