"""The Imagewoof leaderboard's networks and layers: fast.ai's xresnet and xse_resnext50, SimpleSelfAttention,
MaxBlurPool and liuyao12's separable_resnet, against their definitions (tests/leaderboard_twins.py, plain
torch) and numpy.

Parameter counts are written out below; with torch installed the twins recount them from the authors'
definitions. Models are built on small images: counts do not depend on the image size.
"""

import numpy as np
import pytest
import tensorflow as tf

from cnn import models
from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.errors import UserError
from cnn.models.blur_pool import MaxBlurPool
from cnn.models.self_attention import SimpleSelfAttention
from cnn.models.xresnet import ARCHITECTURES, SE_RESNEXT, XResBlock
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib
from grouped_conv_test import xla_compiled_calls

# fast.ai's xresnets with a 1000-class head (fastai2's XResNet, January 2020; xresnet50 is timm's resnet50d).
XRESNET = {
    "xresnet18": 11_708_744,
    "xresnet34": 21_816_904,
    "xresnet50": 25_576_264,
    "xresnet101": 44_568_392,
    "xresnet152": 60_212_040,
}
# fastai2's xse_resnext50 (1000 classes): timm's seresnext50_32x4d (27,559,896) with the deep stem (+19,232) for
# its 7×7 conv; the network of fast.ai's 2020-01 Imagewoof runs.
XSE_RESNEXT = {"xse_resnext50": 27_579_128}
# SimpleSelfAttention adds its C×C kernel and gamma, C the width of the first stage's output.
SA_WIDTH = {"xresnet18": 64, "xresnet34": 64, "xresnet50": 256, "xse_resnext50": 256}
# ResNet_separable.ipynb's model as the notebook builds it (10 classes, depth multiplier 6).
SEPARABLE_RESNET = 42_292_845


def features(name: str) -> int:
  family = "xse_resnext50" if name.startswith("xse_resnext50") else name.split("_")[0]
  return 512 * {**ARCHITECTURES, **SE_RESNEXT}[family][0]


def with_head(name: str, count_1000: int, num_classes: int) -> int:
  return count_1000 + (features(name) + 1) * (num_classes - 1000)


def expected_counts(num_classes: int) -> dict[str, int]:
  """Trainable parameters of every model this file covers, with a `num_classes` head."""
  counts = {name: with_head(name, count, num_classes) for name, count in {**XRESNET, **XSE_RESNEXT}.items()}
  for name, width in SA_WIDTH.items():
    counts[f"{name}_sa"] = counts[name] + width * width + 1
  for name in ("xresnet50", "xse_resnext50"):  # Pools have no parameters.
    counts[f"{name}_sa_maxblur"] = counts[f"{name}_sa_maxpool"] = counts[f"{name}_sa"]
  counts["separable_resnet"] = SEPARABLE_RESNET + (2048 + 1) * (num_classes - 10)
  return counts


def info(num_classes: int, side: int = 32) -> DatasetInfo:
  return DatasetInfo("random", (side, side, 3), num_classes, tuple(f"c{i}" for i in range(num_classes)))


def build(name: str, num_classes: int = 1000, side: int = 32, **settings):
  model = models.build_model(Config(model=name, **settings), info(num_classes, side))
  model(tf.zeros((2, side, side, 3)))
  return model


def trainable_count(model) -> int:
  return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["xresnet18", "xse_resnext50_sa"])  # Basic and bottleneck blocks, SE and SA.
def test_parameter_counts_are_the_authors(name):
  # At the authors' 1000 classes; tests/zoo_test.py checks every model (this file's too) at 10.
  assert trainable_count(build(name, 1000, 32)) == expected_counts(1000)[name]


@pytest.mark.e2e  # Full-size models built.
def test_the_written_counts_are_the_authors_definitions_recounted():
  twins = pytest.importorskip("leaderboard_twins", reason="PyTorch recounts: pip install -e '.[parity]'")
  for name, (expansion, layers) in ARCHITECTURES.items():
    assert twins.parameter_count(twins.xresnet(expansion, layers)) == XRESNET[name], name
    if name in SA_WIDTH:
      assert twins.parameter_count(twins.xresnet(expansion, layers, sa=True)) == expected_counts(1000)[f"{name}_sa"]
  assert twins.parameter_count(twins.xse_resnext50()) == XSE_RESNEXT["xse_resnext50"]
  assert twins.parameter_count(twins.xse_resnext50(sa=True)) == expected_counts(1000)["xse_resnext50_sa"]
  assert twins.parameter_count(twins.separable_resnet(10)) == SEPARABLE_RESNET


@pytest.mark.e2e
def test_xresnet_is_fastais_layout():
  model = build("xresnet50_sa", num_classes=10, activation="mish")
  assert [(layer.conv.filters, layer.conv.strides) for layer in model.stem] == [(32, (2, 2)), (32, (1, 1)),
                                                                               (64, (1, 1))]
  assert len(model.blocks) == 16 and model.blocks[-1].out_channels == 2048
  with_attention = [block.name for block in model.blocks if block.attention is not None]
  assert with_attention == ["stage1_block3"]  # fast.ai: the last block of the first stage.
  first, downsampling = model.blocks[0], model.blocks[3]
  assert first.pool is None and first.shortcut is not None  # 64 → 256, no stride.
  assert isinstance(downsampling.pool, tf.keras.layers.AveragePooling2D)
  assert downsampling.shortcut.conv.strides == (1, 1) and downsampling.convs[1].conv.strides == (2, 2)
  for block in model.blocks:  # Only the last BatchNorm of each block starts at gamma 0.
    gammas = [float(tf.reduce_max(tf.abs(layer.bn.gamma))) for layer in block.convs]
    assert gammas == [1.0] * (len(gammas) - 1) + [0.0]
  assert model.blocks[0].activation is models.activations.get("mish")
  assert isinstance(build("xresnet50_sa_maxpool").blocks[3].pool, tf.keras.layers.MaxPooling2D)
  maxblur = build("xresnet50_sa_maxblur", side=64)
  assert isinstance(maxblur.stem_pool, MaxBlurPool) and isinstance(maxblur.blocks[3].pool, MaxBlurPool)


@pytest.mark.e2e
def test_xse_resnext_is_fastais_layout():
  model = build("xse_resnext50_sa_maxpool", num_classes=10, activation="mish")
  assert len(model.blocks) == 16 and model.blocks[-1].out_channels == 2048
  # Per stage (first block): the 1×1 and the grouped 3×3 are floor(w·4/64)·32 wide, SE squeezes C to C/16.
  firsts = [model.blocks[i] for i in (0, 3, 7, 13)]
  assert [[layer.conv.filters for layer in block.convs] for block in firsts] == [
      [128, 128, 256], [256, 256, 512], [512, 512, 1024], [1024, 1024, 2048]]
  assert [block.convs[1].conv.strides for block in firsts] == [(1, 1)] + [(2, 2)] * 3
  assert all(block.convs[1].conv.groups == 32 and block.convs[0].conv.groups == 1 for block in model.blocks)
  assert model.blocks[0].convs[1].conv.kernel.shape == (3, 3, 4, 128)  # 128 channels in 32 groups of 4.
  assert [(block.se.squeeze.filters, block.se.excite.filters) for block in firsts] == [
      (16, 256), (32, 512), (64, 1024), (128, 2048)]
  assert all(block.se.squeeze.use_bias and block.se.excite.use_bias for block in model.blocks)
  assert [block.name for block in model.blocks if block.attention is not None] == ["stage1_block3"]
  assert isinstance(model.blocks[3].pool, tf.keras.layers.MaxPooling2D)
  for block in model.blocks:  # Only the last BatchNorm of each block starts at gamma 0.
    assert [float(tf.reduce_max(tf.abs(layer.bn.gamma))) for layer in block.convs] == [1.0, 1.0, 0.0]
  assert all(block.se is None for block in build("xresnet50").blocks)


def test_an_xse_resnext_block_computes_fastais_values():
  twins = pytest.importorskip("leaderboard_twins", reason="PyTorch measures this: pip install -e '.[parity]'")
  torch = twins.torch
  torch.manual_seed(0)
  theirs = twins.ResBlock(4, 16, 64, 1, twins.activation_class("mish"), groups=32, reduction=16).eval()
  with torch.no_grad():  # Random BatchNorms: the zero gamma would hide the convs and the SE behind it.
    for module in theirs.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        for tensor in (module.weight, module.bias, module.running_mean):
          tensor.copy_(torch.randn_like(tensor) * 0.5)
        module.running_var.uniform_(0.5, 1.5)
  ours = XResBlock(4, 64, 64, 1, models.activations.get("mish"), groups=32, se_reduction=16)
  x = np.random.default_rng(4).normal(size=(2, 64, 6, 5)).astype(np.float32)  # NCHW.
  ours(tf.constant(x.transpose(0, 2, 3, 1)))
  convs = [m for m in theirs.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
  values = []
  for module in convs:  # The same order as ours: convs, SE, shortcut.
    if isinstance(module, torch.nn.Conv2d):
      values += [module.weight.detach().numpy().transpose(2, 3, 1, 0)]
      values += [] if module.bias is None else [module.bias.detach().numpy()]
    else:
      values += [t.detach().numpy() for t in (module.weight, module.bias, module.running_mean, module.running_var)]
  assert len(values) == len(ours.variables)
  for variable, value in zip(ours.variables, values):
    variable.assign(value)
  expected = theirs(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
  got = ours(tf.constant(x.transpose(0, 2, 3, 1)), training=False).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.e2e
def test_separable_resnet_is_the_notebooks_layout():
  model = build("separable_resnet", num_classes=10, side=64, activation="mish")
  assert [(s.depthwise.depth_multiplier, s.depthwise.strides, s.pointwise.filters) for s in model.stem] == [
      (6, (2, 2), 32), (6, (1, 1), 64), (6, (1, 1), 64)]
  assert [sum(b.name.startswith(f"stage{i}") for b in model.blocks) for i in range(1, 5)] == [3, 6, 8, 3]
  reducing = [b.name for b in model.blocks if b.reduce is not None]
  assert reducing == ["stage2_block1", "stage3_block1", "stage4_block1"]
  assert [b.name for b in model.blocks if b.attention is not None] == ["stage1_block3"]
  assert model.blocks[4].depthwise.kernel.shape == (3, 3, 128, 6)
  assert float(tf.reduce_max(tf.abs(model.blocks[4].conv3.bn.gamma))) == 0.0


@pytest.mark.e2e  # Full-size models built.
def test_models_with_blur_pools_refuse_images_too_small_for_them():
  with pytest.raises(UserError, match="at least 45 pixels"):
    models.build_model(Config(model="separable_resnet"), info(10, side=44))
  build("separable_resnet", num_classes=10, side=45)
  with pytest.raises(UserError, match="at least 47 pixels"):
    models.build_model(Config(model="xresnet50_sa_maxblur"), info(10, side=46))
  build("xresnet18", num_classes=10, side=16)  # Max- and average-pools take any size.


@pytest.mark.e2e
@pytest.mark.parametrize("name,side", [("xresnet50_sa", 32), ("xse_resnext50_sa_maxpool", 32),
                                       ("separable_resnet", 48)])
def test_a_real_train_step_moves_the_weights(name, side):
  tf.keras.utils.set_random_seed(0)
  images = tf.random.uniform((4, side, side, 3))
  labels = tf.constant([0, 1, 2, 3], tf.int32)
  model = build(name, num_classes=4, side=side, activation="mish")
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  optimizer = tf.keras.optimizers.Adam(1e-3)
  optimizer.build(model.trainable_variables)
  train_step = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics_lib.Metrics("train"),
                                              tf.distribute.get_strategy(), global_batch_size=4)
  before = {v.path: v.numpy() for v in model.variables}
  iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
  assert np.isfinite(float(train_step(iterator)["loss"]))
  # The first step cannot move the attention's gamma: its input, after a BN with gamma 0, is 0.
  attention = f"{name}/stage1_block3/attention/gamma"
  assert float(_variable(model, attention)[0]) == 0.0
  assert np.isfinite(float(train_step(iterator)["loss"]))
  moved = {v.path for v in model.variables if not np.array_equal(before[v.path], v.numpy())}
  assert f"{name}/logits/kernel" in moved
  assert f"{name}/stage4_block3/conv3/bn/gamma" in moved  # Zero at the start, not after.
  assert attention in moved
  assert f"{name}/stage1_block3/attention/u" in moved  # The power iteration ran.
  if name.startswith("xse"):  # The SE gate's input, the block's convs, is 0 only in the first step.
    se = {f"{name}/stage1_block3/se/{conv}/{v}" for conv in ("squeeze", "excite") for v in ("kernel", "bias")}
    assert se <= moved
    # Its grouped convs run TensorFlow's kernel: through Keras's XLA detour the step was 230× slower per
    # conv, and a real run with Mish failed in its first loop (NotFoundError: ... __inference__mish_gradient).
    compiled = xla_compiled_calls(train_step.get_concrete_function(iterator).graph)  # Mish's gradient is, by design.
    assert compiled and not [name for name in compiled if "conv" in name], compiled


def _variable(model, path):
  return next(v for v in model.variables if v.path == path).numpy()


@pytest.mark.e2e  # A full-size model built and traced.
# Failed before the fused BatchNorm fenced its inference output: grappler fused FusedBatchNormV3 and
# Mish into a oneDNN op that does not exist ('Fusion is not implemented: [FusedBatchNorm,Mish]').
def test_a_mish_xresnet_evaluates_in_float32_in_a_graph():
  model = build("xresnet18", num_classes=10, activation="mish")
  logits = tf.function(lambda images: model(images, training=False))(tf.zeros((2, 32, 32, 3)))
  assert logits.shape == (2, 10)
