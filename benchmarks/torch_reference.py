"""A plain PyTorch eager loop of the tutorial recipe: the reference a run's whole-process time is held against.

    pip install torch          # a reference for measuring, not a dependency of cnn
    python benchmarks/torch_reference.py --data_dir=../shared/tfds --epochs=1

The same network as `--model=simple_cnn` at its defaults (Conv32 3×3 relu, MaxPool 2, Conv64 3×3
relu, MaxPool 2, Flatten, Dense64 relu, Dense10), Adam 1e-3, batch 32, a fresh shuffle each
epoch, float32, on the same CIFAR-10 images, then one pass over the test split. It loads the data
as a PyTorch user would (torchvision's CIFAR10 reads pre-decoded arrays): the first call decodes
the TFDS split once into `--array_cache` (not timed by what follows), later calls load those arrays.
It prints one JSON line like `cnn.train`'s results.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn


def load_arrays(data_dir: str, cache: str) -> dict[str, np.ndarray]:
  """CIFAR-10 train/test as uint8 NHWC arrays and int64 labels, decoded once into `cache`."""
  if not os.path.exists(cache):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  # Only to build the cache.
    arrays = {}
    for split in ("train", "test"):
      images, labels = tfds.as_numpy(tfds.load("cifar10", split=split, batch_size=-1, as_supervised=True,
                                               data_dir=data_dir, download=False))
      arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.int64)
    os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
    np.savez(cache + ".tmp.npz", **arrays)
    os.replace(cache + ".tmp.npz", cache)
  with np.load(cache) as arrays:
    return dict(arrays)


def tutorial_network(num_classes: int = 10) -> nn.Module:
  return nn.Sequential(
      nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(64 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, num_classes))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="TFDS data directory holding cifar10.")
  parser.add_argument("--array_cache", default=os.path.expanduser("~/.cache/cnn-bench/cifar10.npz"))
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  start = time.perf_counter()
  torch.manual_seed(args.seed)
  arrays = load_arrays(args.data_dir, args.array_cache)
  to_tensor = lambda images: torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
  train_images, train_labels = to_tensor(arrays["train_images"]), torch.from_numpy(arrays["train_labels"])
  test_images, test_labels = to_tensor(arrays["test_images"]), torch.from_numpy(arrays["test_labels"])
  model = tutorial_network()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = nn.CrossEntropyLoss()
  ready = time.perf_counter()

  steps = len(train_labels) // args.batch_size
  model.train()
  for _ in range(args.epochs):
    order = torch.randperm(len(train_labels))
    for step in range(steps):
      batch = order[step * args.batch_size:(step + 1) * args.batch_size]
      optimizer.zero_grad(set_to_none=True)
      loss = loss_fn(model(train_images[batch]), train_labels[batch])
      loss.backward()
      optimizer.step()
  trained = time.perf_counter()

  model.eval()
  correct, total_loss = 0, 0.0
  with torch.no_grad():
    for i in range(0, len(test_labels), 256):
      logits = model(test_images[i:i + 256])
      total_loss += float(nn.functional.cross_entropy(logits, test_labels[i:i + 256], reduction="sum"))
      correct += int((logits.argmax(1) == test_labels[i:i + 256]).sum())
  print(json.dumps({
      "recipe": "torch_eager", "eval_accuracy": correct / len(test_labels),
      "eval_loss": total_loss / len(test_labels), "epochs": args.epochs,
      "setup_seconds": ready - start, "train_seconds": trained - ready,
      "images_per_second": steps * args.epochs * args.batch_size / (trained - ready),
      "wall_seconds": time.perf_counter() - start}))


if __name__ == "__main__":
  main()
