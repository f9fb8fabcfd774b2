"""The Imagewoof leaderboard's networks and layers in plain torch, written as their authors build them.

For tests/xresnet_test.py (parameter counts, layer values) and benchmarks/leaderboard_speed.py (the
PyTorch side of the step). Needs torch (`pip install -e '.[parity]'`); torchvision does not import
beside torch 2.13 here, so nothing of it is used. Written from the definitions, not copied:
  * `xresnet`: fastai2's `XResNet` and `ResBlock` (January 2020): stem `ConvLayer`s 3→32/2, 32→32,
    32→64, max-pool 3/2, stages of `ResBlock`s whose identity path is [AvgPool(2) →] [1×1 conv → BN],
    `SimpleSelfAttention` (`sa`) in the last block of stage `len(layers) - 4`, then pooling and Linear;
  * `xse_resnext`: fastai2's `xse_resnext50` (January 2020): the same `XResNet` of `SEResNeXtBlock`s,
    `ResBlock`s with a 3×3 conv of 32 groups, floor(nf·4/64)·32 wide (also the first 1×1's width), and an
    `SEModule` (pool → 1×1 conv with bias → activation → 1×1 conv with bias → sigmoid → product with the
    input, ceil(ch // 16 / 8)·8 hidden channels) after the convs, before `SimpleSelfAttention`;
  * `SelfAttention`: fastai's `SimpleSelfAttention` (a spectrally normalised 1×1 `Conv1d`, gamma 0);
  * `separable_resnet`: liuyao12's `ResNet_separable.ipynb` model (model_constructor's `Net` with the
    notebook's `NewLayer`/`NewResBlock`, depth multiplier `dm`);
  * `max_blur_pool`: kornia 0.4's `MaxBlurPool2d(3, ceil_mode=True)` (max-pool 3/1, `pyrdown`: 5×5
    binomial blur with reflect padding, bilinear resize by 0.5).
"""

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

Activation = Callable[[], nn.Module]


def activation_class(name: str) -> Activation:
  """relu or mish, as the entries use them."""
  return {"relu": lambda: nn.ReLU(inplace=True), "mish": nn.Mish}[name]


def conv_layer(cin: int, cout: int, kernel: int, stride: int = 1, act: Activation | None = None,
               zero_bn: bool = False, groups: int = 1) -> nn.Sequential:
  """fast.ai's ConvLayer: conv (padding k//2, no bias) → BN (gamma 0 or 1) [→ activation]."""
  bn = nn.BatchNorm2d(cout)
  nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
  layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False, groups=groups), bn]
  return nn.Sequential(*layers, *([act()] if act else []))


class SelfAttention(nn.Module):
  """fast.ai's SimpleSelfAttention: gamma · (x xᵀ)(W x) + x, W a spectrally normalised 1×1 Conv1d."""

  def __init__(self, channels: int, sym: bool = False):
    super().__init__()
    conv = nn.Conv1d(channels, channels, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    self.conv = nn.utils.spectral_norm(conv)
    self.gamma = nn.Parameter(torch.tensor([0.0]))
    self.sym, self.channels = sym, channels

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.sym:  # fast.ai's order: the symmetric weight, then the spectral-norm hook recomputes it.
      c = self.conv.weight.view(self.channels, self.channels)
      self.conv.weight = ((c + c.t()) / 2).view(self.channels, self.channels, 1)
    size = x.size()
    x = x.view(*size[:2], -1)
    o = torch.bmm(torch.bmm(x, x.permute(0, 2, 1)), self.conv(x))
    return (self.gamma * o + x).view(*size)


class SEModule(nn.Module):
  """fastai2's SEModule: x · sigmoid(conv(act(conv(avgpool(x))))), 1×1 convs with biases."""

  def __init__(self, channels: int, reduction: int, act: Activation):
    super().__init__()
    hidden = math.ceil(channels // reduction / 8) * 8
    self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), act(),
                              nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x * self.gate(x)


class ResBlock(nn.Module):
  """fastai2's ResBlock (expansion 1 or 4), identity path [pool →] [1×1 conv → BN]; with `groups` > 1 its
  SEResNeXtBlock (the 3×3 conv grouped, floor(nf·4/64)·groups wide, SE of `reduction` if > 0)."""

  def __init__(self, expansion: int, ni: int, nf: int, stride: int, act: Activation, sa: bool = False,
               pool: str = "avg", groups: int = 1, reduction: int = 0):
    super().__init__()
    nh = math.floor(nf * (4 / 64)) * groups if groups > 1 else nf
    nf, ni = nf * expansion, ni * expansion
    convs = ([conv_layer(ni, nh, 3, stride, act, groups=groups), conv_layer(nh, nf, 3, zero_bn=True)]
             if expansion == 1 else
             [conv_layer(ni, nh, 1, act=act), conv_layer(nh, nh, 3, stride, act, groups=groups),
              conv_layer(nh, nf, 1, zero_bn=True)])
    se = [SEModule(nf, reduction, act)] if reduction else []
    self.convpath = nn.Sequential(*convs, *se, *([SelfAttention(nf)] if sa else []))
    pooling = {"avg": lambda: nn.AvgPool2d(2, ceil_mode=True), "max": lambda: nn.MaxPool2d(2, ceil_mode=True),
               "maxblur": lambda: MaxBlurPool()}[pool]
    self.idpath = nn.Sequential(*([pooling()] if stride != 1 else []),
                                *([conv_layer(ni, nf, 1)] if ni != nf else []))
    self.act = act()

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.act(self.convpath(x) + self.idpath(x))


def init_cnn(module: nn.Module) -> None:
  """fast.ai's init_cnn: biases 0, kaiming_normal_ on Conv2d and Linear weights."""
  if getattr(module, "bias", None) is not None:
    nn.init.constant_(module.bias, 0)
  if isinstance(module, (nn.Conv2d, nn.Linear)):
    nn.init.kaiming_normal_(module.weight)
  for child in module.children():
    init_cnn(child)


def xresnet(expansion: int, layers, num_classes: int = 1000, act: str = "relu", sa: bool = False,
            pool: str = "avg", stem_pool: nn.Module | None = None, groups: int = 1,
            reduction: int = 0) -> nn.Sequential:
  """fastai2's XResNet(expansion, layers, c_out=num_classes, sa=sa, act_cls=act, pool=pool); `groups` > 1:
  of SEResNeXtBlocks (`xse_resnext`)."""
  act_cls = activation_class(act)
  sizes = [3, 32, 32, 64]
  stem = [conv_layer(sizes[i], sizes[i + 1], 3, 2 if i == 0 else 1, act_cls) for i in range(3)]
  widths = [64 // expansion, 64, 128, 256, 512]
  blocks = [ResBlock(expansion, widths[i] if j == 0 else widths[i + 1], widths[i + 1], 2 if i > 0 and j == 0 else 1,
                     act_cls, sa=sa and i == 0 and j == count - 1, pool=pool, groups=groups, reduction=reduction)
            for i, count in enumerate(layers) for j in range(count)]
  model = nn.Sequential(*stem, stem_pool or nn.MaxPool2d(3, 2, 1), *blocks, nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(512 * expansion, num_classes))
  init_cnn(model)
  return model


def xse_resnext50(num_classes: int = 1000, act: str = "relu", sa: bool = False, pool: str = "avg",
                  stem_pool: nn.Module | None = None) -> nn.Sequential:
  """fastai2's xse_resnext50: XResNet(SEResNeXtBlock, 4, [3, 4, 6, 3], groups=32, reduction=16, p=None)."""
  return xresnet(4, (3, 4, 6, 3), num_classes, act, sa, pool, stem_pool, groups=32, reduction=16)


def max_blur_pool(x: torch.Tensor) -> torch.Tensor:
  """kornia 0.4's MaxBlurPool2d(3, ceil_mode=True)(x)."""
  x = F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
  taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype)
  kernel = (torch.outer(taps, taps) / 256.0).expand(x.shape[1], 1, 5, 5)
  x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])
  return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, recompute_scale_factor=False)


class MaxBlurPool(nn.Module):
  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return max_blur_pool(x)


def separable_layer(cin: int, cout: int, stride: int, dm: int, act: Activation) -> nn.Sequential:
  """The notebook's stem NewLayer: depthwise 3×3 (cin·dm filters) → 1×1 → BN → activation."""
  return nn.Sequential(nn.Conv2d(cin, cin * dm, 3, stride, 1, bias=False, groups=cin),
                       nn.Conv2d(cin * dm, cout, 1, bias=False), nn.BatchNorm2d(cout), act())


class SeparableBlock(nn.Module):
  """The notebook's NewResBlock (expansion 4): reduce (MaxBlurPool) → 1×1 → depthwise → 1×1 [→ SA]."""

  def __init__(self, ni: int, nh: int, stride: int, dm: int, act: Activation, sa: bool):
    super().__init__()
    nf, ni = nh * 4, ni * 4
    self.reduce = MaxBlurPool() if stride != 1 else nn.Identity()
    self.convs = nn.Sequential(conv_layer(ni, nh, 1, act=act), nn.Conv2d(nh, nh * dm, 3, 1, 1, bias=False, groups=nh),
                               conv_layer(nh * dm, nf, 1, zero_bn=True), *([SelfAttention(nf)] if sa else []))
    self.idconv = conv_layer(ni, nf, 1) if ni != nf else nn.Identity()
    self.merge = act()

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    o = self.reduce(x)
    return self.merge(self.convs(o) + self.idconv(o))


def separable_resnet(num_classes: int = 10, dm: int = 6, act: str = "mish", layers=(3, 6, 8, 3)) -> nn.Sequential:
  """ResNet_separable.ipynb's model: Net(c_out, layers=[3,6,8,3], expansion=4), stem 3/32/64/64, sa."""
  act_cls = activation_class(act)
  stem_sizes = [3, 32, 64, 64]
  stem = [separable_layer(stem_sizes[i], stem_sizes[i + 1], 2 if i == 0 else 1, dm, act_cls) for i in range(3)]
  widths = [64 // 4, 64, 128, 256, 512]
  blocks = [SeparableBlock(widths[i] if j == 0 else widths[i + 1], widths[i + 1], 2 if i > 0 and j == 0 else 1, dm,
                           act_cls, sa=i == 0 and j == count - 1)
            for i, count in enumerate(layers) for j in range(count)]
  model = nn.Sequential(*stem, nn.MaxPool2d(3, 2, 1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(512 * 4, num_classes))
  init_cnn(model)
  return model


def parameter_count(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters() if p.requires_grad)
