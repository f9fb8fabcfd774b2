"""The Imagewoof leaderboard's networks (xresnet, separable_resnet) against their plain-torch twins.

    pip install torch==2.13.0      # CPU build; a measuring tool here, not a dependency of cnn
    python -m benchmarks.leaderboard_speed --models=xresnet50_sa,separable_resnet --activation=mish \
        --num_classes=10 --batch_sizes=32 [--precisions=float32,mixed_bfloat16] [--rounds=2] [--steps=3]

benchmarks/resnet_speed.py does the measuring (its flags, our train step with SGD and momentum, the
PyTorch step: channels-last, `torch.autocast` for bfloat16, interleaved rounds, images/s and the ratio
ours/PyTorch); this script only gives it the PyTorch networks it lacks, the authors' definitions in
tests/leaderboard_twins.py, for the models named there. Run it from the repository root (`-m`, so that
`cnn` is this checkout's).
"""

from absl import app

from benchmarks import resnet_speed
from cnn.models.xresnet import ARCHITECTURES

FLAGS = resnet_speed.FLAGS


def leaderboard_twin(name: str):
  """The torch twin of our model `name`: xresnet18 … xresnet152, their `_sa` variants, separable_resnet."""
  from tests import leaderboard_twins  # pylint: disable=import-outside-toplevel  # Needs torch.

  if name == "separable_resnet":
    return leaderboard_twins.separable_resnet(FLAGS.num_classes, act=FLAGS.activation)
  base, _, variant = name.partition("_")
  expansion, layers = ARCHITECTURES[base]
  pool = {"sa_maxpool": "max", "sa_maxblur": "maxblur"}.get(variant, "avg")
  stem_pool = leaderboard_twins.MaxBlurPool() if variant == "sa_maxblur" else None
  return leaderboard_twins.xresnet(expansion, layers, FLAGS.num_classes, FLAGS.activation, sa=variant.startswith("sa"),
                                   pool=pool, stem_pool=stem_pool)


def main(argv):
  # resnet_speed builds its PyTorch side as torch_resnet(*_ARCHITECTURES[name]): name each of ours there.
  names = [name for name in FLAGS.models if name == "separable_resnet" or name.partition("_")[0] in ARCHITECTURES]
  resnet_speed._ARCHITECTURES.update({name: (name,) for name in names})  # pylint: disable=protected-access
  plain = resnet_speed.torch_resnet
  resnet_speed.torch_resnet = lambda *spec: leaderboard_twin(spec[0]) if spec[0] in names else plain(*spec)
  resnet_speed.main(argv)


if __name__ == "__main__":
  FLAGS.set_default("models", ["xresnet50_sa", "separable_resnet"])
  app.run(main)
