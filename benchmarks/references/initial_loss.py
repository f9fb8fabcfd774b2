"""The loss of a freshly initialised ResNet-18 on Imagewoof: ours against torchvision's, and torchvision's with Keras's Dense init.

    python benchmarks/references/initial_loss.py --seeds=5

Keras's Dense starts Glorot-uniform (limit √(6/(512+10)) = 0.107), PyTorch's Linear U(±1/√512) = ±0.044:
the logits of ours start about 2.4× wider, so the first steps' loss starts higher. This measures that
on real images, with no training: the label-smoothed (0.1) cross-entropy and the logits' standard deviation of
each network at initialisation, in training mode (batch statistics, as the first step sees them), on
the same 4 batches of 64 validation images (centre crops at 112 px), over `--seeds` initialisations.
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imagewoof_resnet_torch import EvalTransform, Folder, resnet18  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from cnn.models.imagenet_resnet import ImageNetResNet  # pylint: disable=wrong-import-position


def batches(data: str, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
  """4 batches of 64 validation images, every class, in a fixed order."""
  folder = Folder(os.path.join(data, "val"), EvalTransform(size, 0.875))
  picks = np.random.default_rng(0).permutation(len(folder))[:256]
  images, labels = zip(*(folder[i] for i in picks))
  images, labels = torch.stack(images), torch.tensor(labels)
  return [(images[i:i + 64], labels[i:i + 64]) for i in range(0, 256, 64)]


def torch_loss(model: nn.Module, data) -> tuple[float, float]:
  model.train()
  criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
  with torch.no_grad():
    logits = [model(x) for x, _ in data]
  return (float(np.mean([criterion(z, y).item() for z, (_, y) in zip(logits, data)])),
          float(torch.cat(logits).std()))


def our_loss(seed: int, data) -> tuple[float, float]:
  tf.keras.utils.set_random_seed(seed)
  model = ImageNetResNet(10, bottleneck=False, blocks_per_stage=(2, 2, 2, 2), name="resnet18")
  loss_fn = tf.keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
  logits = [model(tf.constant(x.permute(0, 2, 3, 1).numpy()), training=True) for x, _ in data]
  losses = [float(loss_fn(tf.one_hot(y.numpy(), 10), z)) for z, (_, y) in zip(logits, data)]
  return float(np.mean(losses)), float(tf.math.reduce_std(tf.concat(logits, 0)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="../shared/imagewoof2-160")
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--image_size", type=int, default=112)
  args = parser.parse_args()
  torch.set_num_threads(1)
  data = batches(args.data, args.image_size)
  rows = {"ours": [], "torch (Linear default)": [], "torch + Glorot Linear": []}
  for seed in range(args.seeds):
    rows["ours"].append(our_loss(seed, data))
    for name, variants in (("torch (Linear default)", []), ("torch + Glorot Linear", ["glorot_fc"])):
      torch.manual_seed(seed)
      rows[name].append(torch_loss(resnet18(10, variants), data))
  print(f"| network at initialisation | loss, mean over {args.seeds} seeds (range) | logits' std |")
  print("| --- | ---: | ---: |")
  for name, values in rows.items():
    loss, std = np.array(values).T
    print(f"| {name} | {loss.mean():.3f} ({loss.min():.3f}-{loss.max():.3f}) | {std.mean():.2f} |")


if __name__ == "__main__":
  main()
