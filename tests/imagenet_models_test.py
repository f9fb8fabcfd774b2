"""ImageNet ResNets and `keras:<application>` models: published parameter counts, options, errors, learning.

Models are built on small images: parameter counts do not depend on the image size.
"""

import dataclasses
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cnn import flags as cnn_flags
from cnn import models
from cnn.checkpoints import model_variables
from cnn.config import Config
from cnn.data import DatasetInfo
from cnn.errors import UserError
from cnn.models import activations
from cnn.models.layer_table import layer_table
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib

IMAGENET_SMALL = DatasetInfo("imagenet2012", (32, 32, 3), 1000, tuple(f"c{i}" for i in range(1000)))
TINY = DatasetInfo("tiny", (32, 32, 3), 7, tuple(f"c{i}" for i in range(7)))

# torchvision's parameter counts (the same architectures, v1.5), 1000-class head; resnet26: timm's.
PUBLISHED = {
    "resnet18": 11_689_512,
    "resnet26": 15_995_176,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


def trainable_count(model):
  return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def build(info=IMAGENET_SMALL, **settings):
  model = models.build_model(Config(**settings), info)
  return model, model(tf.zeros((2, *info.image_shape)))


def head_parameters(name, num_classes):
  features = 512 if name in ("resnet18", "resnet34") else 2048
  return (features + 1) * num_classes


# Every one is also built by zoo_test.py, with a 10-class head (PUBLISHED less the difference in heads).
@pytest.mark.e2e
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_resnets_have_the_published_parameter_counts(name):
  model, logits = build(model=name)
  assert trainable_count(model) == PUBLISHED[name]
  assert logits.shape == (2, 1000) and logits.dtype == tf.float32


@pytest.mark.e2e
def test_resnet_d_has_the_deep_stem_and_average_pooled_shortcuts():
  plain, _ = build(model="resnet50")
  model, _ = build(model="resnet50", resnet_d=True)
  # The stem: 7×7×3×64 conv + BN(64) becomes 3×3 convs 3→32→32→64, each with a BN.
  stem = 9 * (3 * 32 + 32 * 32 + 32 * 64) + 2 * (32 + 32 + 64)
  assert trainable_count(model) == PUBLISHED["resnet50"] - (49 * 3 * 64 + 2 * 64) + stem == 25_576_264  # timm's resnet50d.
  assert [conv.strides for conv in model.stem_convs] == [(2, 2), (1, 1), (1, 1)]
  downsampling = model.blocks[3].shortcut  # stage2_block1: stride 2.
  assert downsampling.pool is not None and downsampling.conv.strides == (1, 1)
  assert model.blocks[0].shortcut.pool is None  # stage1_block1 widens 64 → 256 without striding.
  assert plain.blocks[3].shortcut.pool is None and plain.blocks[3].shortcut.conv.strides == (2, 2)
  assert plain.blocks[3].convs[1].strides == (2, 2) and plain.blocks[3].convs[0].strides == (1, 1)  # v1.5


@pytest.mark.e2e
@pytest.mark.parametrize("name, fan_in", [("resnet18", 512), ("resnet50", 2048)])
def test_the_logits_layer_starts_as_torchvisions_linear(name, fan_in):
  # Before: Keras's Glorot kernel and zero bias, logits about 2.4x wider than PyTorch's at the start.
  model, _ = build(TINY, model=name)
  bound = fan_in ** -0.5
  kernel, bias = model.logits.kernel.numpy(), model.logits.bias.numpy()
  assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound and np.all(bias != 0)
  np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.1)  # Uniform's; Glorot's is 1.4-2.4x.


def test_zero_init_residual_zeroes_only_the_last_batch_norm_gamma_of_each_block():
  model, _ = build(TINY, model="resnet18", zero_init_residual=True)
  for block in model.blocks:
    assert np.all(block.bns[-1].gamma.numpy() == 0.0), block.name
    assert np.all(block.bns[0].gamma.numpy() == 1.0), block.name
  block = model.blocks[1]  # An identity block starts as relu(x) = x for non-negative x.
  y = tf.nn.relu(tf.random.normal((2, 8, 8, 64)))
  np.testing.assert_allclose(block(y, training=False), y, atol=1e-6)
  default, _ = build(TINY, model="resnet18")
  assert np.all(default.blocks[0].bns[-1].gamma.numpy() == 1.0)
  assert default.blocks[0].bns[0].momentum == 0.9 and default.blocks[0].bns[0].epsilon == 1e-5


def train_a_few_steps(model, info, num_steps=3, learning_rate=1e-3):
  """Loss on one fixed batch before and after `num_steps` Adam steps of the project's train step."""
  tf.keras.utils.set_random_seed(0)
  images = tf.random.uniform((8, *info.image_shape))
  labels = tf.constant(np.arange(8) % info.num_classes, tf.int32)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
  optimizer = tf.keras.optimizers.Adam(learning_rate)
  optimizer.build(model.trainable_variables)
  train_step = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics_lib.Metrics("train"),
                                              tf.distribute.get_strategy(), global_batch_size=8)
  before = float(tf.reduce_mean(loss_fn(labels, model(images, training=True))))
  iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
  for _ in range(num_steps):
    train_step(iterator)
  return before, float(tf.reduce_mean(loss_fn(labels, model(images, training=True))))


@pytest.mark.e2e
def test_resnet18_learns_a_batch():
  model, _ = build(TINY, model="resnet18", resnet_d=True)
  before, after = train_a_few_steps(model, TINY)
  assert after < before, (before, after)


@pytest.mark.e2e
@pytest.mark.parametrize("name, input_scale", [("MobileNetV3Small", 1.0), ("EfficientNetB0", 255.0)])
def test_keras_applications_build_with_our_head_and_see_our_input_range(name, input_scale):
  model, logits = build(TINY, model=f"keras:{name}")
  assert logits.shape == (2, 7) and logits.dtype == tf.float32
  assert model.logits.units == 7 and model.input_scale == input_scale
  rescaling = [layer.scale for layer in model.backbone.layers if isinstance(layer, tf.keras.layers.Rescaling)]
  # include_preprocessing=False took MobileNetV3's out; EfficientNetB0's 1/255 undoes our ×255.
  assert rescaling == ([] if input_scale == 1.0 else [pytest.approx(1 / 255)])


@pytest.mark.e2e
def test_a_keras_application_learns_a_batch():  # EfficientNetB0's train step takes ~35 s to trace: not here.
  model, _ = build(TINY, model="keras:MobileNetV3Small")
  before, after = train_a_few_steps(model, TINY)
  assert after < before, (before, after)


@pytest.mark.e2e
def test_keras_application_variable_paths_do_not_depend_on_what_was_built_before():
  first, _ = build(TINY, model="keras:EfficientNetB0")  # Auto-named layers (normalization) inside.
  second, _ = build(TINY, model="keras:EfficientNetB0")
  assert list(model_variables(first)) == list(model_variables(second))
  assert "normalization/mean" in model_variables(first)


def test_unknown_or_unfit_applications_are_one_line_errors():
  with pytest.raises(UserError, match=r"^unknown --model=keras:EfficientNetV2b0; close matches: "
                     r"keras:EfficientNetV2B0, .*keras:EfficientNetV2S"):
    build(TINY, model="keras:EfficientNetV2b0")
  with pytest.raises(UserError, match=r"^unknown --model=keras:Foo; tf.keras.applications has: ConvNeXtBase, "):
    build(TINY, model="keras:Foo")
  with pytest.raises(UserError, match=r"^--model=keras:InceptionV3 cannot take 32×32×3 images: .*at least 75x75"):
    build(TINY, model="keras:InceptionV3")


@pytest.mark.e2e
def test_the_imagewoof_recipe_runs_on_a_small_folder_of_photos(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from cnn import train  # pylint: disable=import-outside-toplevel
  from conftest import run_cli  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  for split, count in (("train", 8), ("val", 4)):
    for label in ("n02086240", "n02087394"):
      (tmp_path / "woof" / split / label).mkdir(parents=True)
      for i in range(count):  # JPEGs of varying aspect ratios, as Imagewoof's.
        pixels = rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "woof" / split / label / f"{i}.JPEG")
  code, stderr = run_cli(train.main, ["--flagfile=experiments/imagewoof_resnet26d_5ep.cfg", f"--dataset=folder:{tmp_path / 'woof'}",
                                      "--image_size=32", "--batch_size=8", "--eval_batch_size=8", "--train_steps=3",
                                      "--lr_hold_epochs=0.5", f"--run_dir={tmp_path / 'run'}"])  # 3 steps: 1 held.
  assert code == 0, stderr
  flags_txt = (tmp_path / "run" / "flags.txt").read_text()
  assert "--model=resnet26" in flags_txt and "--resnet_d" in flags_txt and "--zero_init_residual" in flags_txt
  assert "--activation=mish" in flags_txt and "--lookahead_every=6" in flags_txt


def test_the_leaderboard_recipe_keeps_the_run_rules_and_is_fastais_run_with_maxblurpool():
  recipe = cnn_flags.config_from_flagfile("experiments/imagewoof_5ep.cfg")
  # The leaderboard's rules: 5 epochs at 128 px, random initialisation, no test-time augmentation.
  assert (recipe.epochs, recipe.image_size, recipe.init_from, recipe.tta) == (5, 128, "", "none")
  assert recipe == cnn_flags.config_from_flagfile("experiments/imagewoof_xse_resnext50_maxblur.cfg")
  fastais = cnn_flags.config_from_flagfile("experiments/imagewoof_xse_resnext50_fastai.cfg")
  assert dataclasses.replace(recipe, model=fastais.model) == fastais  # Only the network's pooling differs.
  assert (recipe.model, recipe.activation, recipe.optimizer, recipe.batch_size) == (
      "xse_resnext50_sa_maxblur", "mish", "radam", 64)
  assert (recipe.crop_sampler, recipe.resize_antialias, recipe.eval_resize) == ("torchvision", True, "whole_image")


def test_the_20_epoch_recipe_is_the_5_epoch_one_held_for_three_quarters_of_its_length():
  five, twenty = (cnn_flags.config_from_flagfile(f"experiments/imagewoof_resnet26d_{n}ep.cfg") for n in (5, 20))
  assert (twenty.epochs, five.epochs) == (20, 5)
  assert (twenty.lr_warmup_epochs + twenty.lr_hold_epochs) / 20 == (five.lr_warmup_epochs + five.lr_hold_epochs) / 5
  assert dataclasses.replace(twenty, epochs=5, lr_hold_epochs=five.lr_hold_epochs) == five


@pytest.mark.e2e
def test_activation_replaces_every_relu_and_keeps_the_parameters():
  images = tf.random.stateless_normal((2, 32, 32, 3), seed=[1, 2])
  tf.keras.utils.set_random_seed(3)
  relu, _ = build(TINY, model="resnet18", resnet_d=True)
  tf.keras.utils.set_random_seed(3)
  mish, _ = build(TINY, model="resnet18", resnet_d=True, activation="mish")
  assert trainable_count(mish) == trainable_count(relu)
  assert mish.activation is activations.mish and all(b.activation is mish.activation for b in mish.blocks)
  # The same weights, another function: mish(x) = x·tanh(softplus(x)) is not relu anywhere but at 0.
  assert not np.allclose(mish(images, training=True), relu(images, training=True))
  assert "stage4_block2" in layer_table(mish, TINY.image_shape)  # The table a run prints traces it symbolically.
  with pytest.raises(UserError, match="unknown --activation=rectify"):
    build(TINY, model="resnet18", activation="rectify")


@pytest.mark.parametrize("settings, flag", [(dict(activation="mish"), "--activation=mish"),
                                            (dict(resnet_d=True), "--resnet_d"),
                                            (dict(zero_init_residual=True), "--zero_init_residual")])
def test_keras_applications_refuse_the_model_flags_they_would_ignore(settings, flag):
  # They used to build the application unchanged: a run "with Mish" trained with the application's own.
  with pytest.raises(UserError, match=rf"^--model=keras:MobileNetV3Small takes no {flag}: .* architecture is "
                                      r"fixed by its name"):
    build(TINY, model="keras:MobileNetV3Small", **settings)


_FIRST_KERNELS = """
import sys, numpy as np, tensorflow as tf
from cnn import models
from cnn.config import Config
from cnn.data import DatasetInfo
tf.keras.utils.set_random_seed(0)
model = models.build_model(Config(model="resnet18"), DatasetInfo("x", (32, 32, 3), 7, tuple("abcdefg")))
model(tf.zeros((1, 32, 32, 3)))
kernels = {v.path: v.numpy() for v in model.variables if v.path.endswith("kernel")}
names = [n for n in kernels if "stage1_block1/conv" in n or "stage1_block2/conv1" in n]
print(len(names), len({kernels[n].tobytes() for n in names}), sum(float(kernels[n].sum()) for n in names))
"""


@pytest.mark.e2e  # Two Python processes, each building a ResNet-18.
def test_resnet_kernels_are_drawn_each_their_own_and_from_the_seed_alone():
  # A shared initializer gave same-shaped kernels identical values, drawn at import time (seed ignored).
  outputs = [subprocess.run([sys.executable, "-c", _FIRST_KERNELS], capture_output=True, text=True, check=True,
                            cwd=pathlib.Path(__file__).resolve().parents[1]).stdout.split() for _ in range(2)]
  count, distinct, _ = outputs[0]
  assert int(count) == 3 and int(distinct) == 3  # Each kernel its own values.
  assert outputs[0] == outputs[1]  # The same --seed in another process: the same weights.
