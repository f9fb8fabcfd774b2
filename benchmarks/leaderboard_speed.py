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

import functools

from absl import app

from benchmarks import resnet_speed
from cnn.models.xresnet import ARCHITECTURES, SE_RESNEXT

FLAGS = resnet_speed.FLAGS


def leaderboard_twin(name: str, *, num_classes: int, activation: str, **unused):
  """The torch twin of our model `name`: xresnet18 … xresnet152 and xse_resnext50, their `_sa` variants (max-pooled
  shortcuts as `_sa_maxpool`, max-blur as `_sa_maxblur`), separable_resnet."""
  from tests import leaderboard_twins  # pylint: disable=import-outside-toplevel  # Needs torch.

  del unused  # resnet_speed's --resnet_d and --zero_init_residual: these networks fix their own.
  if name == "separable_resnet":
    return leaderboard_twins.separable_resnet(num_classes, act=activation)
  base, variant = _split(name)
  pool = {"sa_maxpool": "max", "sa_maxblur": "maxblur"}.get(variant, "avg")
  stem_pool = leaderboard_twins.MaxBlurPool() if variant == "sa_maxblur" else None
  if base in SE_RESNEXT:
    return leaderboard_twins.xse_resnext50(num_classes, activation, sa=variant.startswith("sa"), pool=pool,
                                           stem_pool=stem_pool)
  expansion, layers = ARCHITECTURES[base]
  return leaderboard_twins.xresnet(expansion, layers, num_classes, activation, sa=variant.startswith("sa"),
                                   pool=pool, stem_pool=stem_pool)


def _split(name: str) -> tuple[str, str]:
  """("xse_resnext50", "sa_maxpool") from "xse_resnext50_sa_maxpool"; ("xresnet50", "sa") from "xresnet50_sa"."""
  for base in (*SE_RESNEXT, *ARCHITECTURES):
    if name == base or name.startswith(base + "_"):
      return base, name[len(base) + 1:]
  return name, ""


def main(argv):
  for name in FLAGS.models:
    if name == "separable_resnet" or _split(name)[0] in (*ARCHITECTURES, *SE_RESNEXT):
      resnet_speed.resnet_twins.TWINS[name] = functools.partial(leaderboard_twin, name)
  resnet_speed.main(argv)


if __name__ == "__main__":
  FLAGS.set_default("models", ["xresnet50_sa", "separable_resnet"])
  app.run(main)
