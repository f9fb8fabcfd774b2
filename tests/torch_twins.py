"""PyTorch twins of our networks and training step, for tests/parity_test.py (needs torch).

Plain torch (torchvision does not import beside torch 2.13 here). Each twin takes its weights from
our Keras model and reads them back in Keras's layout, by variable path:
  * conv kernels: Keras HWIO, torch OIHW;
  * dense kernels: Keras [in, out], torch's Linear weight [out, in];
  * the flatten before the tutorial's first dense layer: Keras flattens NHWC, so the twin permutes its
    NCHW activations to NHWC first (the dense weights then map one to one);
  * TensorFlow's "same" padding is asymmetric on strided convs and pools (the extra row and column at
    the bottom and right): the twin pads explicitly as TensorFlow does, so both compute one function.
BatchNorm: Keras momentum m is torch momentum 1−m. Keras's moving variance averages the biased batch
variance, torch's running_var the unbiased one (n/(n−1) larger, n = batch·height·width): each twin
BatchNorm also keeps `biased_running_var`, Keras's convention, for the comparison.
"""

import math
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def same_padding(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
  """`x` [N, C, H, W] padded as TensorFlow's padding="same" pads it (the odd pixel after)."""
  pads = []
  for size in (x.shape[3], x.shape[2]):  # F.pad takes the last dimension first.
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    pads += [total // 2, total - total // 2]
  return F.pad(x, pads, value=value)


class BatchNorm(nn.BatchNorm2d):
  """torch's BatchNorm2d (Keras's momentum 0.9 and epsilon 1e-5), also tracking Keras's biased moving variance."""

  def __init__(self, channels: int, keras_momentum: float = 0.9, epsilon: float = 1e-5):
    super().__init__(channels, eps=epsilon, momentum=1.0 - keras_momentum)
    self.register_buffer("biased_running_var", torch.ones(channels))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.training:
      with torch.no_grad():
        variance = x.var(dim=(0, 2, 3), unbiased=False)
        self.biased_running_var.mul_(1 - self.momentum).add_(variance, alpha=self.momentum)
    return super().forward(x)


class Twin(nn.Module):
  """A network whose tensors are named by our Keras variable paths (`keras_tensors`)."""

  def keras_tensors(self) -> dict[str, tuple[torch.Tensor, str]]:
    """{Keras path: (torch tensor, layout)}; layout: "conv", "dense" or "vector". Defined by each twin."""
    raise NotImplementedError

  def load_keras(self, values: dict[str, np.ndarray]) -> None:
    """Takes our model's values ({path: array}), converted to torch's layout."""
    with torch.no_grad():
      for path, (tensor, layout) in self.keras_tensors().items():
        tensor.copy_(torch.from_numpy(to_torch_layout(values[path], layout)))

  def as_keras(self, biased_variance: bool = True) -> dict[str, np.ndarray]:
    """{Keras path: value in Keras's layout}; moving variances biased (Keras's) unless told otherwise."""
    out = {path: to_keras_layout(tensor.detach().numpy(), layout)
           for path, (tensor, layout) in self.keras_tensors().items()}
    if biased_variance:
      for path, module in self.batch_norms().items():
        out[f"{path}/moving_variance"] = module.biased_running_var.numpy().copy()
    return out

  def batch_norms(self) -> dict[str, BatchNorm]:
    return {}


def to_torch_layout(value: np.ndarray, layout: str) -> np.ndarray:
  if layout == "conv":
    return np.ascontiguousarray(value.transpose(3, 2, 0, 1))  # HWIO → OIHW.
  return np.ascontiguousarray(value.T) if layout == "dense" else value.copy()


def to_keras_layout(value: np.ndarray, layout: str) -> np.ndarray:
  if layout == "conv":
    return value.transpose(2, 3, 1, 0)  # OIHW → HWIO.
  return value.T if layout == "dense" else value.copy()


def _conv_entries(path: str, conv: nn.Conv2d) -> dict[str, tuple[torch.Tensor, str]]:
  entries = {f"{path}/kernel": (conv.weight, "conv")}
  if conv.bias is not None:
    entries[f"{path}/bias"] = (conv.bias, "vector")
  return entries


def _dense_entries(path: str, dense: nn.Linear) -> dict[str, tuple[torch.Tensor, str]]:
  return {f"{path}/kernel": (dense.weight, "dense"), f"{path}/bias": (dense.bias, "vector")}


def _bn_entries(path: str, bn: BatchNorm) -> dict[str, tuple[torch.Tensor, str]]:
  return {f"{path}/gamma": (bn.weight, "vector"), f"{path}/beta": (bn.bias, "vector"),
          f"{path}/moving_mean": (bn.running_mean, "vector"), f"{path}/moving_variance": (bn.running_var, "vector")}


class TutorialCNN(Twin):
  """cnn/models/simple_cnn.py with its defaults: Conv32-Pool-Conv64-Pool-Flatten-Dense64-Dense(classes).

  `activation`: --activation's function in torch (F.relu, F.silu, F.mish).
  """

  def __init__(self, num_classes: int, image_size: int,
               activation: Callable[[torch.Tensor], torch.Tensor] = F.relu):
    super().__init__()
    self.activation = activation
    self.conv1, self.conv2 = nn.Conv2d(3, 32, 3), nn.Conv2d(32, 64, 3)
    side = ((image_size - 2) // 2 - 2) // 2
    self.dense1, self.logits = nn.Linear(64 * side * side, 64), nn.Linear(64, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.max_pool2d(self.activation(self.conv1(x)), 2)
    x = F.max_pool2d(self.activation(self.conv2(x)), 2)
    x = x.permute(0, 2, 3, 1).flatten(1)  # Keras's Flatten sees NHWC.
    return self.logits(self.activation(self.dense1(x)))

  def keras_tensors(self):
    return {**_conv_entries("simple_cnn/conv1", self.conv1), **_conv_entries("simple_cnn/conv2", self.conv2),
            **_dense_entries("simple_cnn/dense1", self.dense1), **_dense_entries("simple_cnn/logits", self.logits)}


class BasicBlock(nn.Module):
  """cnn/models/imagenet_resnet.py's basic block: 3×3 → BN → act → 3×3 → BN, + shortcut, act (ReLU by default)."""

  def __init__(self, cin: int, cout: int, stride: int, activation: Callable[[torch.Tensor], torch.Tensor] = F.relu):
    super().__init__()
    self.stride, self.activation = stride, activation
    self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, bias=False), BatchNorm(cout)
    self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, bias=False), BatchNorm(cout)
    self.projection = stride > 1 or cin != cout
    if self.projection:
      self.shortcut_conv, self.shortcut_bn = nn.Conv2d(cin, cout, 1, stride, bias=False), BatchNorm(cout)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = self.activation(self.bn1(self.conv1(same_padding(x, 3, self.stride))))
    y = self.bn2(self.conv2(same_padding(y, 3, 1)))
    shortcut = self.shortcut_bn(self.shortcut_conv(same_padding(x, 1, self.stride))) if self.projection else x
    return self.activation(y + shortcut)

  def entries(self, path: str):
    out = {**_conv_entries(f"{path}/conv1", self.conv1), **_bn_entries(f"{path}/bn1", self.bn1),
           **_conv_entries(f"{path}/conv2", self.conv2), **_bn_entries(f"{path}/bn2", self.bn2)}
    if self.projection:
      out.update({**_conv_entries(f"{path}/shortcut/conv", self.shortcut_conv),
                  **_bn_entries(f"{path}/shortcut/bn", self.shortcut_bn)})
    return out


class ResNet18(Twin):
  """cnn/models/imagenet_resnet.py's resnet18 (v1.5, no ResNet-D): 7×7/2 stem, 3×3/2 max-pool, 4 stages.

  `activation`: --activation's function in torch (F.relu, F.silu, F.mish).
  """

  def __init__(self, num_classes: int, activation: Callable[[torch.Tensor], torch.Tensor] = F.relu):
    super().__init__()
    self.activation = activation
    self.stem_conv, self.stem_bn = nn.Conv2d(3, 64, 7, 2, bias=False), BatchNorm(64)
    self.blocks, self.block_names, cin = nn.ModuleList(), [], 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
      for i in (1, 2):
        self.blocks.append(BasicBlock(cin, width, 2 if stage > 1 and i == 1 else 1, activation))
        self.block_names.append(f"resnet18/stage{stage}_block{i}")
        cin = width
    self.logits = nn.Linear(512, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.activation(self.stem_bn(self.stem_conv(same_padding(x, 7, 2))))
    x = F.max_pool2d(same_padding(x, 3, 2, value=-math.inf), 3, 2)
    for block in self.blocks:
      x = block(x)
    return self.logits(x.mean(dim=(2, 3)))

  def keras_tensors(self):
    out = {**_conv_entries("resnet18/stem_conv1", self.stem_conv), **_bn_entries("resnet18/stem_bn1", self.stem_bn)}
    for name, block in zip(self.block_names, self.blocks):
      out.update(block.entries(name))
    out.update(_dense_entries("resnet18/logits", self.logits))
    return out

  def batch_norms(self):
    out = {"resnet18/stem_bn1": self.stem_bn}
    for name, block in zip(self.block_names, self.blocks):
      out.update({f"{name}/bn1": block.bn1, f"{name}/bn2": block.bn2})
      if block.projection:
        out[f"{name}/shortcut/bn"] = block.shortcut_bn
    return out


def warmup_hold_cosine(warmup: int, hold: int, total: int, start_fraction: float,
                       final_fraction: float) -> Callable[[int], float]:
  """The rate's fraction of its peak at step s (from 0), written out: linear warm-up from `start_fraction`,
  the peak for `hold` steps, then a cosine to `final_fraction` at `total` (for torch's LambdaLR)."""

  def fraction(step: int) -> float:
    if step < warmup:
      return start_fraction + (1 - start_fraction) * step / warmup
    if step < warmup + hold:
      return 1.0
    done = min(step - warmup - hold, total - warmup - hold) / (total - warmup - hold)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * done))

  return fraction


class Lookahead:
  """Zhang et al.'s Lookahead over `params`, by hand (torch has none): every k steps slow += α·(fast − slow),
  fast = slow; `finish()` puts the slow weights in (the paper returns them; so does our run)."""

  def __init__(self, params: Sequence[torch.Tensor], every: int, alpha: float):
    self.params, self.every, self.alpha = list(params), every, alpha
    self.slow = [p.detach().clone() for p in self.params]
    self.steps = 0

  def step(self) -> None:
    self.steps += 1
    if self.steps % self.every == 0:
      self.finish(self.alpha)

  def finish(self, alpha: float = 0.0) -> None:
    with torch.no_grad():
      for slow, fast in zip(self.slow, self.params):
        slow.add_(fast - slow, alpha=alpha)
        fast.copy_(slow)


class WeightAverage:
  """EMA of `tensors` as Keras's optimizer EMA (cnn/optim.py): the first step copies, then d·avg + (1−d)·w."""

  def __init__(self, tensors: dict[str, torch.Tensor], decay: float):
    self.tensors, self.decay, self.averages = tensors, decay, None

  def update(self) -> None:
    values = {k: t.detach().clone() for k, t in self.tensors.items()}
    if self.averages is None:
      self.averages = values
    else:
      self.averages = {k: self.decay * self.averages[k] + (1 - self.decay) * v for k, v in values.items()}


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
  """The same batches as `tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)`, NCHW."""
  for start in range(0, len(images), batch_size):
    yield (torch.from_numpy(images[start:start + batch_size].transpose(0, 3, 1, 2).copy()),
           torch.from_numpy(labels[start:start + batch_size].astype(np.int64)))


class KerasSGD(torch.optim.Optimizer):
  """Keras's SGD momentum in torch: u ← μ·u − lr_t·g, w ← w + u (the rate folded into the velocity)."""

  def __init__(self, params, lr: float, momentum: float):
    super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=0.0))

  @torch.no_grad()
  def step(self, closure=None):  # pylint: disable=unused-argument
    for group in self.param_groups:
      for p in group["params"]:
        velocity = self.state[p].setdefault("velocity", torch.zeros_like(p))
        velocity.mul_(group["momentum"]).sub_(p.grad, alpha=group["lr"])
        p.add_(velocity)
