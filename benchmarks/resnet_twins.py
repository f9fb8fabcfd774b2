"""Our ResNets in plain PyTorch, for benchmarks/resnet_speed.py: the same layers and parameters, as torchvision
and the CIFAR papers' code build them (channels, strides, padding 1 where ours pads `same`), without torchvision,
which does not import beside torch 2.13 here. A measuring tool: torch is imported inside the builders.
tests/resnet_twins_test.py checks every twin's parameter count against ours.
"""

import functools


def torch_resnet(bottleneck: bool, blocks_per_stage, *, num_classes: int, activation: str = "relu",
                 resnet_d: bool = False, zero_init_residual: bool = False):
  """Our ImageNet ResNet (cnn/models/imagenet_resnet.py) in plain torch, as torchvision builds it."""
  from torch import nn  # pylint: disable=import-outside-toplevel

  make_activation = (lambda: nn.Mish(inplace=True)) if activation == "mish" else (lambda: nn.ReLU(inplace=True))

  def conv_bn(cin, cout, kernel, stride):
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]

  class Block(nn.Module):
    def __init__(self, cin, width, stride):
      super().__init__()
      self.out = width * 4 if bottleneck else width
      shapes = ([(cin, width, 1, 1), (width, width, 3, stride), (width, self.out, 1, 1)] if bottleneck else
                [(cin, width, 3, stride), (width, width, 3, 1)])
      layers = []
      for i, shape in enumerate(shapes):
        layers += conv_bn(*shape) + ([make_activation()] if i < len(shapes) - 1 else [])
      if zero_init_residual:
        nn.init.zeros_(layers[-1].weight)
      self.body, self.shortcut, self.activation = nn.Sequential(*layers), None, make_activation()
      if stride > 1 or cin != self.out:
        pool = resnet_d and stride > 1
        self.shortcut = nn.Sequential(*([nn.AvgPool2d(stride, ceil_mode=True)] if pool else []),
                                      *conv_bn(cin, self.out, 1, 1 if pool else stride))

    def forward(self, x):
      return self.activation(self.body(x) + (x if self.shortcut is None else self.shortcut(x)))

  stem = [(3, 32, 3, 2), (32, 32, 3, 1), (32, 64, 3, 1)] if resnet_d else [(3, 64, 7, 2)]
  layers = [layer for shape in stem for layer in conv_bn(*shape) + [make_activation()]]
  layers.append(nn.MaxPool2d(3, 2, 1))
  channels = 64
  for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
    for i in range(count):
      layers.append(Block(channels, width, 2 if stage > 0 and i == 0 else 1))
      channels = layers[-1].out
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def torch_cifar_resnet(blocks_per_stage: int, *, num_classes: int, activation: str = "relu", resnet_d: bool = False,
                       zero_init_residual: bool = False):
  """Our CIFAR ResNet (cnn/models/resnet.py, He et al.'s 6n+2 layers, option-A shortcuts) in plain torch."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel

  if (activation, resnet_d, zero_init_residual) != ("relu", False, False):
    raise ValueError("the CIFAR ResNets take no --activation, --resnet_d or --zero_init_residual")

  def conv_bn(cin, cout, stride):
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout, 1))
      self.stride, self.extra = stride, cout - cin

    def forward(self, x):
      shortcut = x
      if self.stride > 1 or self.extra:  # Option A: subsample, zero-pad the new channels.
        shortcut = nn.functional.pad(x[:, :, ::self.stride, ::self.stride],
                                     (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
      return torch.relu(self.body(x) + shortcut)

  layers, channels = [*conv_bn(3, 16, 1), nn.ReLU(inplace=True)], 16
  for stage, width in enumerate((16, 32, 64)):
    for i in range(blocks_per_stage):
      layers.append(Block(channels, width, 2 if stage > 0 and i == 0 else 1))
      channels = width
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


# Our model's name -> its PyTorch twin, built with keyword arguments num_classes, activation, resnet_d and
# zero_init_residual. benchmarks/leaderboard_speed.py adds the leaderboard's networks.
TWINS = {
    **{name: functools.partial(torch_resnet, bottleneck, blocks) for name, (bottleneck, blocks) in {
        "resnet18": (False, (2, 2, 2, 2)), "resnet26": (True, (2, 2, 2, 2)), "resnet34": (False, (3, 4, 6, 3)),
        "resnet50": (True, (3, 4, 6, 3)), "resnet101": (True, (3, 4, 23, 3))}.items()},
    **{f"resnet{6 * n + 2}": functools.partial(torch_cifar_resnet, n) for n in (3, 5, 7, 9, 18)},
}
