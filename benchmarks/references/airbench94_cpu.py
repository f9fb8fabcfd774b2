"""Runs the authors' airbench94.py on the CPU, float32, on the TFDS CIFAR-10 files: the reference for
experiments/cifar10_airbench94.cfg.

    git clone <KellerJordan/cifar10-airbench> && git -C cifar10-airbench checkout f1c599c4af24aca803e3e65a6a7e52a502e09d0e
    python benchmarks/references/airbench94_cpu.py --source=cifar10-airbench/legacy/airbench94.py \
        --data_dir=../shared/tfds --epochs=2 --seed=0

The source is Keller Jordan's `legacy/airbench94.py` (MIT licence, (c) 2024 Keller Jordan; the paper's
94.01% script, 9.9 epochs, at commit f1c599c4af24aca803e3e65a6a7e52a502e09d0e). It is not copied into this
repository: this runner reads it from `--source`, checks that it is that file, changes only what the CPU
needs, and calls its own `main`. Exactly what changes, each a whole-line text replacement checked to
occur once:
  1. `torch.load(data_path, map_location=torch.device(gpu))` -> `map_location=torch.device('cpu')` (device);
  2. `self.images.half()` -> `self.images.float()` (dtype: float32 data, as ours);
  3. `net = net.half().cuda()` -> `net = net.float()` (dtype and device: a float32 net on the CPU);
and, outside the text: `torch.cuda.Event` / `torch.cuda.synchronize` become CPU wall-clock timers (its
timing code), and the `torchvision` it imports is a stand-in (PyPI's torchvision does not import beside
torch 2.13 here) whose `datasets.CIFAR10` returns the TFDS split (decoded once into a .npz cache by
benchmarks/torch_reference.py in a separate process) and whose `transforms.Normalize` is torchvision's
per-channel (x - mean) / std. Its hyperparameters are the authors' except `hyp['opt']['train_epochs']`
(`--epochs`; the warm-up is 23% of the steps in its code, so it scales with the run) and, for a shortened
budget, the training set (`--train_images=N`: the first N images, what TFDS's `train[:N]` gives ours), and each run is
seeded with `torch.manual_seed(--seed)` (the authors' runs are unseeded). Its TTA is its own (level 2:
mirror + one-pixel translations). It prints one JSON line with the TTA accuracy.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_SHA256 = "0b155e0ff0e696bc01ae136654ddae88a24cd053cd2b4313d44548c29ed6c91d"  # legacy/airbench94.py at f1c599c.
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EDITS = [
    ("data = torch.load(data_path, map_location=torch.device(gpu))",
     "data = torch.load(data_path, map_location=torch.device('cpu'))"),
    ("self.images = (self.images.half() / 255).permute(0, 3, 1, 2).to(memory_format=torch.channels_last)",
     "self.images = (self.images.float() / 255).permute(0, 3, 1, 2).to(memory_format=torch.channels_last)"),
    ("net = net.half().cuda()", "net = net.float()"),
]


def cifar_arrays(data_dir: str, cache: str) -> dict:
  """CIFAR-10 as uint8 NHWC arrays, decoded from TFDS once in a separate process (TensorFlow beside torch)."""
  if not os.path.exists(cache):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from torch_reference import load_arrays; "
            "load_arrays(sys.argv[2], sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, os.path.dirname(HERE), data_dir, cache], check=True)
  with np.load(cache) as arrays:
    return dict(arrays)


def fake_torchvision(arrays: dict, train_images: int = 0) -> types.ModuleType:
  """A `torchvision` module with just what airbench94.py uses: datasets.CIFAR10 and transforms.Normalize.

  Args:
    arrays: CIFAR-10 as from `cifar_arrays`.
    train_images: if not 0, its training set is the first this many images (TFDS's `train[:N]`).
  """

  class CIFAR10:
    def __init__(self, root, download=False, train=True):
      split = "train" if train else "test"
      count = train_images if train and train_images else None
      self.data, self.targets = arrays[f"{split}_images"][:count], arrays[f"{split}_labels"][:count].tolist()
      self.classes = CLASSES

  class Normalize:
    def __init__(self, mean, std):
      self.mean, self.std = torch.as_tensor(mean), torch.as_tensor(std)

    def __call__(self, x):
      return (x - self.mean.view(-1, 1, 1).to(x)) / self.std.view(-1, 1, 1).to(x)

  torchvision = types.ModuleType("torchvision")
  torchvision.datasets = types.SimpleNamespace(CIFAR10=CIFAR10)
  torchvision.transforms = types.ModuleType("torchvision.transforms")
  torchvision.transforms.Normalize = Normalize
  return torchvision


class CpuEvent:
  """torch.cuda.Event(enable_timing=True) on the CPU: record() takes the time, elapsed_time() is in ms."""

  def __init__(self, enable_timing=True):
    self.t = None

  def record(self):
    self.t = time.perf_counter()

  def elapsed_time(self, end):
    return 1e3 * (end.t - self.t)


def load_airbench(source: str, arrays: dict, train_images: int = 0) -> types.ModuleType:
  with open(source, "rb") as f:
    raw = f.read()
  if hashlib.sha256(raw).hexdigest() != SOURCE_SHA256:
    raise SystemExit(f"{source} is not legacy/airbench94.py of commit f1c599c (its sha256 differs)")
  text = raw.decode()
  for old, new in EDITS:
    assert text.count(old) == 1, old
    text = text.replace(old, new)
  torchvision = fake_torchvision(arrays, train_images)
  sys.modules["torchvision"], sys.modules["torchvision.transforms"] = torchvision, torchvision.transforms
  torch.cuda.Event, torch.cuda.synchronize = CpuEvent, lambda: None
  module = types.ModuleType("airbench94")
  module.__file__ = source
  exec(compile(text, source, "exec"), module.__dict__)  # pylint: disable=exec-used
  return module


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", required=True, help="The authors' legacy/airbench94.py (commit f1c599c).")
  parser.add_argument("--data_dir", default="../shared/tfds", help="TFDS data directory holding cifar10.")
  parser.add_argument("--array_cache", default="/tmp/refruns/cifar10.npz")
  parser.add_argument("--work_dir", default="/tmp/refruns/airbench_torch", help="Its cifar10/*.pt cache.")
  parser.add_argument("--epochs", type=float, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--train_images", type=int, default=0,
                      help="Train on the first this many training images (0: all 50,000); ours: --train_split=train[:N].")
  parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default).")
  args = parser.parse_args()
  start = time.perf_counter()
  if args.threads:
    torch.set_num_threads(args.threads)
  airbench = load_airbench(args.source, cifar_arrays(args.data_dir, args.array_cache), args.train_images)
  airbench.hyp["opt"]["train_epochs"] = args.epochs
  # Its loader caches the tensors in ./cifar10/{train,test}.pt: one directory per training-set size.
  work_dir = f"{args.work_dir}_first{args.train_images}" if args.train_images else args.work_dir
  os.makedirs(os.path.join(work_dir, "cifar10"), exist_ok=True)
  os.chdir(work_dir)
  torch.manual_seed(args.seed)
  airbench.print_columns(airbench.logging_columns_list, is_head=True)
  accuracy = airbench.main(args.seed)
  print(json.dumps({"side": "torch", "seed": args.seed, "tta_accuracy": accuracy, "epochs": args.epochs,
                    "train_images": args.train_images or 50000,
                    "wall_seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
                    "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
  main()
