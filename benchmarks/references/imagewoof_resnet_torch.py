"""Imagewoof ResNet-18 in plain PyTorch: the run-level reference for benchmarks/references/imagewoof_resnet18.cfg.

    pip install torch==2.13.0     # a measuring tool, not a dependency of cnn
    python benchmarks/references/imagewoof_resnet_torch.py --data=../shared/imagewoof2-160 --seed=0

Written the way a PyTorch researcher writes an ImageNet-style run, on the same JPEG files as ours:
  * torchvision's ResNet-18 (`torchvision.models.resnet18(num_classes=10)`: 7×7/2 stem, 3×3/2 max-pool,
    BasicBlocks [2, 2, 2, 2], 1×1 conv + BN shortcuts, He-normal fan-out convs, default Linear init),
    written out here because PyPI's torchvision does not import beside torch 2.13 on these machines;
  * torchvision's transforms, likewise written out on PIL: RandomResizedCrop(112, scale=(0.35, 1)) (10 tries
    of a uniform area and log-uniform aspect ratio, then the centre-crop fallback), bilinear PIL resize
    (antialiased), RandomHorizontalFlip, ToTensor, Normalize(ImageNet mean/std); eval Resize(128) (=
    int(112 / 0.875)) + CenterCrop(112); an ImageFolder-style dataset, a DataLoader with 2 workers;
  * SGD(lr 0.05, momentum 0.9, nesterov, weight_decay 5e-5 on every parameter: coupled L2),
    CrossEntropyLoss(label_smoothing=0.1), LambdaLR stepped every iteration: a linear warm-up from 0.1 of
    the peak over a quarter epoch, then cosine to 0; batch 64 (drop_last, as ours); float32; 1 epoch
    (the budget these shared cores allow; `--epochs`, `--image_size` lengthen it).
It prints the training loss of each epoch and one JSON line with the final validation top-1 accuracy.

`--variant` switches one thing at a time towards what TensorFlow/Keras do in ours, to find the cause
of a gap (see benchmarks/README.md, "Run-level parity"); the default is the plain PyTorch run.
"""

import argparse
import json
import math
import os
import random
import time

import numpy as np
from PIL import Image
import torch
from torch import nn
import torch.nn.functional as F

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VARIANTS = ("tf_crop_sampler", "no_antialias", "tf_same_padding", "glorot_fc", "keras_sgd", "biased_bn_var")


# --- data: torchvision's ImageFolder and transforms, on PIL ---------------------------------------------

def image_folder(root: str) -> tuple[list[tuple[str, int]], list[str]]:
  """(path, class index) of every image under root/<class>/, sorted as torchvision's ImageFolder."""
  classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
  samples = []
  for index, name in enumerate(classes):
    for folder, _, files in sorted(os.walk(os.path.join(root, name))):
      samples += [(os.path.join(folder, f), index) for f in sorted(files) if f.lower().endswith((".jpeg", ".jpg"))]
  return samples, classes


def random_resized_crop_params(width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop.get_params: (top, left, h, w)."""
  area = height * width
  log_ratio = torch.log(torch.tensor(ratio))
  for _ in range(10):
    target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
    aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      top = torch.randint(0, height - h + 1, size=(1,)).item()
      left = torch.randint(0, width - w + 1, size=(1,)).item()
      return top, left, h, w
  in_ratio = width / height  # Fallback: the centre crop at the nearest allowed aspect ratio.
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def tf_crop_params(width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
  """TensorFlow's sample_distorted_bounding_box as ours calls it (variant tf_crop_sampler).

  Its kernel draws the aspect ratio uniformly, then the height uniformly between the heights that give
  the area range, and the offset uniformly; after 10 misses the whole image.
  """
  area = height * width
  for _ in range(10):
    aspect = random.uniform(ratio[0], ratio[1])
    min_h = int(round(math.sqrt(scale[0] * area / aspect)))
    max_h = min(int(round(math.sqrt(scale[1] * area / aspect))), height, int(width / aspect))
    if min_h > max_h:
      continue
    h = random.randint(min_h, max_h)
    w = int(round(h * aspect))
    if not (0 < w <= width and scale[0] * area <= h * w <= scale[1] * area):
      continue
    return random.randint(0, height - h), random.randint(0, width - w), h, w
  return 0, 0, height, width


class TrainTransform:
  """RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize."""

  def __init__(self, size: int, scale, variants):
    self.size, self.scale, self.ratio = size, scale, (3 / 4, 4 / 3)
    self.params = tf_crop_params if "tf_crop_sampler" in variants else random_resized_crop_params
    self.antialias = "no_antialias" not in variants

  def __call__(self, image: Image.Image) -> torch.Tensor:
    top, left, h, w = self.params(image.width, image.height, self.scale, self.ratio)
    crop = image.crop((left, top, left + w, top + h))
    if self.antialias:
      crop = crop.resize((self.size, self.size), Image.BILINEAR)  # PIL's bilinear antialiases (torchvision's).
    else:  # tf.image.resize's bilinear: no antialiasing, half-pixel centres.
      crop = F.interpolate(to_tensor(crop)[None], size=(self.size, self.size), mode="bilinear",
                           align_corners=False, antialias=False)[0]
      crop = (crop * 255).round().clamp(0, 255)
      return normalize(crop / 255, flip=torch.rand(1).item() < 0.5)
    return normalize(to_tensor(crop), flip=torch.rand(1).item() < 0.5)


class EvalTransform:
  """Resize(int(size / 0.875)) of the shorter side + CenterCrop(size) + ToTensor + Normalize."""

  def __init__(self, size: int, crop_fraction: float):
    self.size, self.resize = size, int(size / crop_fraction)

  def __call__(self, image: Image.Image) -> torch.Tensor:
    short, long = min(image.size), max(image.size)
    new_long = int(self.resize * long / short)
    new = (self.resize, new_long) if image.width <= image.height else (new_long, self.resize)
    image = image.resize(new, Image.BILINEAR)
    top, left = int(round((image.height - self.size) / 2)), int(round((image.width - self.size) / 2))
    return normalize(to_tensor(image.crop((left, top, left + self.size, top + self.size))), flip=False)


def to_tensor(image: Image.Image) -> torch.Tensor:
  return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)


def normalize(image: torch.Tensor, flip: bool) -> torch.Tensor:
  image = image.flip(-1) if flip else image
  return (image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


class Folder(torch.utils.data.Dataset):
  def __init__(self, root: str, transform):
    self.samples, self.classes = image_folder(root)
    self.transform = transform

  def __len__(self):
    return len(self.samples)

  def __getitem__(self, index):
    path, label = self.samples[index]
    with Image.open(path) as image:
      return self.transform(image.convert("RGB")), label


def worker_init(worker_id: int) -> None:
  random.seed(torch.initial_seed() % 2**32)  # The tf_crop_sampler variant draws from Python's random.


# --- model: torchvision's ResNet-18 ----------------------------------------------------------------------

class BasicBlock(nn.Module):
  def __init__(self, inplanes: int, planes: int, stride: int, pad):
    super().__init__()
    self.conv1 = pad(nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False), stride)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TFSame(nn.Module):
  """TensorFlow's `same` padding for a stride-2 k×k layer on an even input: (k-2)//2 before, k//2 after."""

  def __init__(self, layer: nn.Module, kernel: int, value: float = 0.0):
    super().__init__()
    self.layer, self.pads, self.value = layer, ((kernel - 2) // 2, kernel // 2) * 2, value
    layer.padding = 0

  def forward(self, x):
    return self.layer(F.pad(x, self.pads, value=self.value))


def resnet18(num_classes: int, variants) -> nn.Module:
  """torchvision.models.resnet18(num_classes=...), with its initialisation."""
  same = "tf_same_padding" in variants

  def pad(layer, stride):
    return TFSame(layer, layer.kernel_size[0]) if same and stride == 2 else layer

  stem_pool = nn.MaxPool2d(3, 2, 1)
  if same:
    stem_pool = TFSame(stem_pool, 3, value=-math.inf)
  layers = [pad(nn.Conv2d(3, 64, 7, 2, 3, bias=False), 2), nn.BatchNorm2d(64), nn.ReLU(inplace=True), stem_pool]
  inplanes = 64
  for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
    layers += [BasicBlock(inplanes, planes, stride, pad), BasicBlock(planes, planes, 1, pad)]
    inplanes = planes
  model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.constant_(m.weight, 1)
      nn.init.constant_(m.bias, 0)
  if "glorot_fc" in variants:  # Keras Dense: Glorot-uniform kernel, zero bias.
    nn.init.xavier_uniform_(model[-1].weight)
    nn.init.zeros_(model[-1].bias)
  return model


def use_biased_bn_variance(model: nn.Module) -> None:
  """Variant biased_bn_var: BN's running variance from the biased batch variance, as Keras's BN does."""

  def after(module, inputs, output):
    if module.training:  # Undo PyTorch's n/(n-1) on this step's contribution: var_run += m·(v_b - v_u).
      x = inputs[0].detach()
      n = x.numel() / x.shape[1]
      var = x.var(dim=(0, 2, 3), unbiased=False)
      module.running_var.add_(module.momentum * (var - var * n / (n - 1)))

  for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
      m.register_forward_hook(after)


# --- optimisation ----------------------------------------------------------------------------------------

def warmup_cosine(total: int, warmup: int, start: float):
  def factor(step: int) -> float:
    if step < warmup:
      return start + (1 - start) * step / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))
  return factor


class KerasSGD(torch.optim.Optimizer):
  """Keras 3's SGD (variant keras_sgd): the rate folded into the velocity, coupled L2 added to the gradient.

  v = m·v − lr·g; Nesterov: w += m·v − lr·g (plain: w += v).
  """

  def __init__(self, params, lr, momentum, weight_decay, nesterov=True):
    super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

  @torch.no_grad()
  def step(self):
    for group in self.param_groups:
      lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
      for p in group["params"]:
        g = p.grad + wd * p
        v = self.state[p].setdefault("velocity", torch.zeros_like(p))
        v.mul_(m).sub_(lr * g)
        p.add_(m * v - lr * g if group["nesterov"] else v)


def evaluate(model: nn.Module, loader) -> float:
  model.eval()
  correct = total = 0
  with torch.no_grad():
    for images, labels in loader:
      correct += (model(images).argmax(1) == labels).sum().item()
      total += len(labels)
  return correct / total


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="../shared/imagewoof2-160", help="Folder with train/<class>/ and val/<class>/.")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--image_size", type=int, default=112)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--lr", type=float, default=0.05)
  parser.add_argument("--weight_decay", type=float, default=5e-5)
  parser.add_argument("--warmup_epochs", type=float, default=0.25)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default, "
                      "one per core); 1 on a loaded machine, where 2 threads on 2 busy cores mostly wait on each other.")
  parser.add_argument("--log_every", type=int, default=47, help="Steps between progress lines.")
  parser.add_argument("--train_steps", type=int, default=0, help="Stop after this many steps (a check; 0: all).")
  parser.add_argument("--variant", default="", help=f"Comma-separated, any of: {', '.join(VARIANTS)}.")
  return parser.parse_args()


def main() -> None:
  args = parse_args()
  variants = [v for v in args.variant.split(",") if v]
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    raise SystemExit(f"unknown --variant {','.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
  start = time.perf_counter()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  random.seed(args.seed)
  train_set = Folder(os.path.join(args.data, "train"), TrainTransform(args.image_size, (0.35, 1.0), variants))
  val_set = Folder(os.path.join(args.data, "val"), EvalTransform(args.image_size, 0.875))
  loader_args = dict(num_workers=args.workers, worker_init_fn=worker_init, persistent_workers=args.workers > 0)
  train_loader = torch.utils.data.DataLoader(train_set, args.batch_size, shuffle=True, drop_last=True, **loader_args)
  val_loader = torch.utils.data.DataLoader(val_set, 256, **loader_args)

  model = resnet18(len(train_set.classes), variants)
  if "biased_bn_var" in variants:
    use_biased_bn_variance(model)
  if "keras_sgd" in variants:
    optimizer = KerasSGD(model.parameters(), args.lr, 0.9, args.weight_decay)
  else:
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=0.9, nesterov=True,
                                weight_decay=args.weight_decay)
  steps_per_epoch = len(train_loader)
  total = args.epochs * steps_per_epoch
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      optimizer, warmup_cosine(total, round(args.warmup_epochs * steps_per_epoch), 0.1))
  criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

  epoch_losses, train_seconds, step = [], 0.0, 0
  for epoch in range(args.epochs):
    model.train()
    epoch_start, losses = time.perf_counter(), []
    for images, labels in train_loader:
      loss = criterion(model(images), labels)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      scheduler.step()
      losses.append(loss.item())
      step += 1
      if step % args.log_every == 0:
        print(f"step {step}/{total} loss {np.mean(losses[-args.log_every:]):.4f} lr {scheduler.get_last_lr()[0]:.5f} "
              f"{len(losses) * args.batch_size / (time.perf_counter() - epoch_start):.1f} img/s", flush=True)
      if args.train_steps and step >= args.train_steps:
        break
    train_seconds += time.perf_counter() - epoch_start
    epoch_losses.append(float(np.mean(losses)))
    print(f"epoch {epoch + 1}: train loss {epoch_losses[-1]:.4f}", flush=True)
    if args.train_steps and step >= args.train_steps:
      break
  accuracy = evaluate(model, val_loader)
  print(json.dumps({"side": "torch", "seed": args.seed, "variant": args.variant, "val_accuracy": accuracy,
                    "train_loss_per_epoch": epoch_losses, "train_images_per_second": step * args.batch_size / train_seconds,
                    "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start,
                    "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
  main()
