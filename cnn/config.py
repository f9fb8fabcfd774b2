"""The run configuration: one frozen dataclass that flags, flagfiles and notebooks all fill.

Every field becomes a command-line flag of the same name (see `cnn/flags.py`), so a new
setting is added here, once, with its default and help text, in a `_section` (its `--help` heading). The library takes a `Config`
and never reads flags, so it can be driven from a notebook:

    config = Config(dataset="fashion_mnist", epochs=1)
    results = run.train_and_evaluate(config)
"""

import dataclasses
import re
from typing import Any

from cnn import durations
from cnn.errors import UserError


_section_of_next_fields = ""


def _section(title: str) -> None:
  """Puts the fields defined after this call, up to the next call, in section `title` (a `--help` heading)."""
  global _section_of_next_fields
  _section_of_next_fields = title


def _field(default: Any, help: str, **metadata: Any) -> Any:  # pylint: disable=redefined-builtin
  """A field with its flag's help and, in `metadata`, the checks `Config.validate` makes: `choices`,
  `minimum`/`maximum` (inclusive), `above`/`below` (exclusive), `allow_empty` (tuples)."""
  return dataclasses.field(default=default, metadata={"help": help, "section": _section_of_next_fields,
                                                      **metadata})


@dataclasses.dataclass(frozen=True)
class Config:
  """All settings of one training run. Field names are the flag names."""

  _section("Data")
  dataset: str = _field("cifar10", "TFDS image-classification dataset, e.g. cifar10, cifar100, mnist, fashion_mnist.")
  data_dir: str = _field("", "TFDS data directory (empty: TFDS's default, ~/tensorflow_datasets).")
  download: bool = _field(True, "Download and prepare the dataset if it is not in --data_dir yet.")
  train_split: str = _field("train", "TFDS split to train on; slicing works: train[:90%].")
  eval_split: str = _field("test", "TFDS split to evaluate on; slicing works: train[90%:].")
  data_cache_dir: str = _field("", "Where decoded splits are cached between runs (empty: $XDG_CACHE_HOME/cnn "
                               "or ~/.cache/cnn; none: no cache).")
  data_memory_budget_mb: int = _field(
      -1, "Splits whose decoded images fit this many MB (in total) are held in memory, the rest stream from "
      "disk, decoded per example (-1: a quarter of the host's memory; 0: stream every split).", minimum=-1)
  skip_bad_images: bool = _field(False, "--dataset=folder:PATH: decode every image when the folder is first "
                                 "listed and leave out (and count) those that fail, instead of stopping.")
  train_crop: str = _field("none", "Training view of each image: none (as evaluation sees it) or random_resized "
                           "(a random crop of --crop_scale of the area and --crop_ratio aspect, resized to "
                           "--image_size, else to a fixed-size dataset's own size; the split then streams). "
                           "--augment applies after it.",
                           choices=("none", "random_resized"))
  crop_scale: tuple[float, ...] = _field((0.08, 1.0), "random_resized: MIN,MAX fraction of the image's area.",
                                         above=0.0, maximum=1.0)
  crop_ratio: tuple[float, ...] = _field((0.75, 4 / 3), "random_resized: MIN,MAX aspect ratio (width/height).",
                                         above=0.0)
  crop_sampler: str = _field("tensorflow", "random_resized: how windows are drawn: tensorflow "
                             "(tf.image.sample_distorted_bounding_box: aspect ratio and height uniform, windows clamped "
                             "into the image) or torchvision (RandomResizedCrop's, fastai's too: area uniform, aspect "
                             "ratio log-uniform, misses redrawn).", choices=("tensorflow", "torchvision"))
  resize_antialias: bool = _field(False, "Antialias every resize of the images (training and evaluation views, "
                                  "--image_size on a fixed-size dataset): a filter as wide as the shrink, as PIL's "
                                  "(fastai's and torchvision's on PIL images); off: plain bilinear.")
  eval_crop_fraction: float = _field(0.875, "Images of varying size: evaluation takes the centre square of this "
                                     "fraction of the shorter side, resized to --image_size.", above=0.0,
                                     maximum=1.0)
  eval_resize: str = _field("shorter_side", "Images of varying size, the evaluation view: shorter_side (the "
                            "centre square of --eval_crop_fraction of the shorter side, aspect kept: torchvision's "
                            "Resize + CenterCrop) or whole_image (the whole image squashed to a square of "
                            "--image_size / --eval_crop_fraction, then its centre --image_size crop: fastai's "
                            "RandomResizedCrop validation view, whose val_xtra=0.14 at 128 px is a fraction of "
                            "128/152).", choices=("shorter_side", "whole_image"))

  _section("Model")
  model: str = _field("simple_cnn", "Registered model name.")
  conv_filters: tuple[int, ...] = _field((32, 64), "Filters of each conv layer, e.g. 32,64,64.", minimum=1)
  kernel_size: int = _field(3, "Conv kernel size.", minimum=1)
  strides: int = _field(1, "Conv strides.", minimum=1)
  padding: str = _field("valid", "Conv padding.", choices=("valid", "same"))
  pool_size: tuple[int, ...] = _field(
      (2,), "Max-pool window after each conv layer: one value for all, or one per layer (0: no pooling).",
      minimum=0)
  dense_units: tuple[int, ...] = _field((64,), "Units of each hidden dense layer, e.g. 64 or 256,128.",
                                        minimum=1)
  activation: str = _field("relu", "Activation of conv and hidden dense layers (a Keras activation name).")
  dropout: float = _field(0.0, "Dropout rate after each hidden dense layer.", minimum=0.0, below=1.0)
  resnet_d: bool = _field(False, "ImageNet ResNets (resnet18 ... resnet152): the ResNet-D deep stem (three "
                          "3×3 convs) and average-pooling downsampling shortcuts (Bag of Tricks, He et al. 2019).")
  zero_init_residual: bool = _field(False, "ImageNet ResNets: the last BatchNorm gamma of each block starts at 0 "
                                    "(each block starts as the identity).")
  init_from: str = _field("", "Start a fresh run from the model weights of another run's checkpoint (e.g. "
                          "runs/x/checkpoints/ckpt-500, or a run directory: its latest) or a Keras .weights.h5 "
                          "file; a different class count gets a new classifier head (empty: random init).")

  _section("Optimisation")
  optimizer: str = _field("adam", "Optimizer: adam, adamw, radam (rectified Adam, Liu et al. 2019), sgd or "
                          "nesterov (sgd with Nesterov momentum).")
  learning_rate: float = _field(1e-3, "Learning rate.", above=0.0)
  lr_reference_batch: int = _field(0, "The batch size --learning_rate is given for: the run's peak rate is "
                                   "--learning_rate × --batch_size / this (linear scaling, Goyal et al. 2017), "
                                   "logged at start; 0: --learning_rate as given.", minimum=0)
  momentum: float = _field(0.9, "SGD momentum; Adam's beta_1.", minimum=0.0, below=1.0)
  adam_beta2: float = _field(0.999, "Adam: decay of the squared-gradient average (fast.ai's short "
                             "recipes: 0.99).", minimum=0.0, below=1.0)
  adam_epsilon: float = _field(1e-7, "Adam: epsilon, added to the root of the squared-gradient average.",
                               above=0.0)
  nesterov: bool = _field(False, "Nesterov momentum for SGD.")
  sgd_momentum: str = _field("keras", "How SGD's momentum meets a changing rate: keras (u ← μ·u − lr·g, w ← w + u: "
                             "the rate folded into the velocity, which carries earlier rates) or pytorch (b ← μ·b + g, "
                             "w ← w − lr·b: torch.optim.SGD's, what PyTorch recipes are tuned with). Equal at a "
                             "constant rate.", choices=("keras", "pytorch"))
  batch_size: int = _field(32, "Training batch size.", minimum=1)
  eval_batch_size: int = _field(256, "Evaluation batch size.", minimum=1)
  epochs: int = _field(5, "Training epochs (ignored when --train_steps is given).", minimum=1)
  train_steps: int = _field(0, "Training steps; wins over --epochs when positive.", minimum=0)

  # Research toolkit: plug-ins, data normalisation, schedules, regularisation, augmentation.
  _section("Research toolkit")
  extra_modules: str = _field(
      "", "Comma-separated Python modules to import before the flags are read, e.g. mylab.models: they "
      "register models and augmentations (importable from the current directory or PYTHONPATH).")
  test_split: str = _field("", "TFDS split for one final evaluation after training, e.g. test when "
                           "--eval_split is a validation split carved from train (empty: none).")
  image_size: int = _field(0, "Resize images to this height and width when loading (0: keep the dataset's "
                           "shape; needed for --dataset=folder:PATH with images of varying size).", minimum=0)
  normalization: str = _field(
      "unit", "Input scaling: unit ([0, 1]) or standardize (per-channel mean/std of the training split, "
      "or --normalization_mean/--normalization_std when given).", choices=("unit", "standardize"))
  normalization_mean: tuple[float, ...] = _field((), "Per-channel means in [0, 1] units for "
                                                 "--normalization=standardize (empty: computed).",
                                                 allow_empty=True)
  normalization_std: tuple[float, ...] = _field((), "Per-channel standard deviations in [0, 1] units, with "
                                                "--normalization_mean (empty: computed).", allow_empty=True, above=0.0)
  lr_schedule: str = _field("constant", "Learning-rate schedule (linear with a warmup is the one-cycle / "
                            "piecewise-linear schedule).", choices=("constant", "piecewise", "cosine", "linear"))
  lr_boundaries: tuple[int, ...] = _field((), "Piecewise schedule: steps (or epochs, see "
                                          "--lr_boundary_unit) at which the rate is multiplied by "
                                          "--lr_decay_factor.", allow_empty=True, minimum=1)
  lr_boundary_unit: str = _field("steps", "Unit of --lr_boundaries.", choices=("steps", "epochs"))
  lr_decay_factor: float = _field(0.1, "Piecewise schedule: factor at each boundary.", above=0.0)
  lr_warmup: str = _field("", "Linear warmup length, a duration: 500 (steps), 2.5ep (epochs) or 0.1run (a fraction "
                         "of the run); empty: --lr_warmup_epochs.")
  lr_warmup_epochs: float = _field(0.0, "Linear warmup length in epochs (fractions allowed); --lr_warmup wins when "
                                   "given.", minimum=0.0)
  lr_warmup_start_fraction: float = _field(0.0, "Warmup starts at this fraction of --learning_rate.",
                                           minimum=0.0)
  lr_final_fraction: float = _field(0.0, "cosine/linear: the rate ends at this fraction of "
                                    "--learning_rate.", minimum=0.0)
  lr_hold: str = _field("", "cosine/linear: the rate stays at its peak this long after the warmup before it "
                       "decays, a duration (500, 2ep, 0.75run: fast.ai's flat-cos); empty: --lr_hold_epochs.")
  lr_hold_epochs: float = _field(0.0, "cosine/linear: the peak's hold in epochs (fractions allowed); --lr_hold "
                                 "wins when given.", minimum=0.0)
  weight_decay: float = _field(0.0, "Weight decay coefficient (0: none).", minimum=0.0)
  weight_decay_type: str = _field(
      "auto", "l2: coupled, λ·w added to the gradient (He et al.); decoupled: w -= lr·λ·w after the "
      "update (AdamW); auto: decoupled for adamw and radam, l2 otherwise.", choices=("auto", "l2", "decoupled"))
  weight_decay_exclude: str = _field(
      "", "Comma-separated regular expressions; variables whose path matches one get no weight decay, "
      "e.g. bias,gamma,beta (biases and BatchNorm).")
  bn_bias_lr_scale: float = _field(1.0, "Multiplies the gradient of BatchNorm offsets (beta); with SGD "
                                   "this is their learning rate times this factor (airbench: 64).",
                                   above=0.0)
  clip_global_norm: float = _field(0.0, "Clip gradients to this global norm (0: no clipping).", minimum=0.0)
  ema_decay: float = _field(0.0, "Keep an exponential moving average of the weights with this decay "
                            "(e.g. 0.999) and evaluate with it; 0: off.", minimum=0.0, below=1.0)
  lookahead_every: int = _field(
      0, "Lookahead averaging (airbench): every this many steps the slow weights move toward the model's, "
      "slow = d·slow + (1−d)·weights, and the model takes them; it ends with them. 0: off.", minimum=0)
  lookahead_decay: float = _field(0.95**5, "Lookahead: the decay d at the end of training.", minimum=0.0,
                                  below=1.0)
  lookahead_decay_power: float = _field(3.0, "Lookahead: d at step t is lookahead_decay·(t/T)^power over T "
                                        "steps (airbench: 3; 0: constant, Zhang et al.'s α = 1−d).", minimum=0.0)
  lookahead_bn_stats: str = _field(
      "keep", "Lookahead over the trainable weights only, BatchNorm moving statistics kept as training "
      "leaves them (keep: Lookahead and Ranger), or averaged with them too (average: airbench).",
      choices=("keep", "average"))
  freeze_variables: str = _field(
      "", "Comma-separated regular expressions; trainable variables whose path matches one are trained "
      "for --freeze_after (or --freeze_after_epochs), then no longer updated (airbench: whiten/bias after 3 epochs).")
  freeze_after: str = _field("", "With --freeze_variables: how long to train them before freezing, a duration "
                            "(500, 3ep, 0.1run; 0: frozen from the start); empty: --freeze_after_epochs.")
  freeze_after_epochs: float = _field(0.0, "With --freeze_variables: epochs to train them before freezing "
                                      "(fractions allowed; 0: frozen from the start); --freeze_after wins when "
                                      "given.", minimum=0.0)
  label_smoothing: float = _field(0.0, "Label smoothing of the cross-entropy.", minimum=0.0, below=1.0)
  augment: str = _field("", "Comma-separated training augmentations, applied in order: crop, flip, "
                        "alternating_flip, cutout, mixup, cutmix (or a registered one).")
  crop_padding: int = _field(4, "crop: pad each side by this many pixels, then crop back.", minimum=0)
  crop_pad_mode: str = _field("constant", "crop: padding with zeros or by reflection.",
                              choices=("constant", "reflect"))
  cutout_size: int = _field(8, "cutout: side of the zeroed square.", minimum=1)
  mixup_alpha: float = _field(0.2, "mixup: Beta(α, α) of the mixing weight.", above=0.0)
  cutmix_alpha: float = _field(1.0, "cutmix: Beta(α, α) of the kept area.", above=0.0)
  tta: str = _field("none", "Test-time augmentation at eval: none, flip (mean logits of image and "
                    "mirror) or flip_translate (also ±1-pixel translations, as airbench).",
                    choices=("none", "flip", "flip_translate"))

  _section("Run")
  run_dir: str = _field("", "Run directory (empty: runs/<dataset>-<model>-<time>).")
  overwrite: bool = _field(False, "Replace the run that --run_dir holds.")
  seed: int = _field(0, "Seed for initialisation, shuffling and dropout.", minimum=0)
  deterministic: bool = _field(False, "Enable TensorFlow op determinism (bitwise reproducible runs).")
  log_every: str = _field("", "Progress lines and train summaries every this long, a duration: 500 (steps), "
                         "0.5ep (epochs) or 0.01run (a fraction of the run); empty: --log_every_steps.")
  log_every_steps: int = _field(100, "Steps between progress lines and train summaries; --log_every wins when "
                                "given.", minimum=1)

  _section("TensorBoard")
  histogram_every: str = _field("", "Histograms of each layer's weights and gradients every this long, a "
                               "duration (500, 1ep, 0.1run; 0: none); empty: --histogram_every_steps.")
  histogram_every_steps: int = _field(
      500, "Steps between histograms of each layer's weights and gradients (0: none); --histogram_every wins "
      "when given.", minimum=0)
  summary_images: int = _field(
      32, "Images per image grid: the first training batch at the start, and the most confidently "
      "misclassified eval images at each eval (0: no image grids).", minimum=0)
  confusion_matrix: bool = _field(True, "Write a confusion matrix (image and table) at each eval.")
  write_graph: bool = _field(True, "Write the train step's graph for TensorBoard's Graphs dashboard.")
  profile_steps: tuple[int, ...] = _field(
      (0, 0), "Capture a tf.profiler trace of train steps START,END (counted from 1, inclusive) for "
      "TensorBoard's Profile dashboard; 0,0: none.", minimum=0)

  # Distribution (tf.distribute).
  _section("Distribution")
  strategy: str = _field("default", "tf.distribute strategy.",
                         choices=("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu"))
  cpu_devices: int = _field(1, "Split the CPU into this many logical devices (try `mirrored` without GPUs).",
                            minimum=1)
  cluster: str = _field("tf_config", "Where multi_worker_mirrored finds its cluster.",
                        choices=("tf_config", "slurm"))
  tpu: str = _field("", "TPU address for --strategy=tpu (a name, grpc://host:port, or 'local').")
  startup_timeout_seconds: float = _field(
      300.0, "A multi-worker run whose cluster is not up by then stops with an error.", above=0.0)
  data_service: str = _field(
      "", "grpc://HOST:PORT of a tf.data service dispatcher: the training pipeline's preprocessing runs on "
      "its workers, bitwise the same batches (several workers: the dispatcher must list them); empty: here.")

  _section("Checkpoints")
  checkpoint_every: str = _field("", "A checkpoint every this long, a duration (500, 0.5ep, 0.1run; 0: only "
                                "those at epoch ends, the end and SIGTERM/SIGINT); empty: --checkpoint_every_steps.")
  checkpoint_every_steps: int = _field(
      500, "Steps between checkpoints; one is also saved at each epoch end, at the end, and on "
      "SIGTERM/SIGINT (0: only those); --checkpoint_every wins when given.", minimum=0)
  keep_checkpoints: int = _field(3, "Latest checkpoints kept (the --keep_best best by --best_metric are kept besides).",
                                 minimum=1)

  def differences(self, other: "Config") -> list[str]:
    """The fields that change the run (not in RESUMABLE_FIELDS) and differ, as `--name=self (other)`."""
    # A duration is compared as its effective value, whichever flag gives it (--lr_warmup=2ep is --lr_warmup_epochs=2).
    mine, theirs = durations.effective_texts(self), durations.effective_texts(other)
    skip = RESUMABLE_FIELDS | durations.aliases() | set(mine)
    return ([f"--{name}={_flag_text(getattr(self, name))} (the run has {_flag_text(getattr(other, name))})"
             for name in (f.name for f in dataclasses.fields(self))
             if name not in skip and getattr(self, name) != getattr(other, name)] +
            [f"--{name}={mine[name]} (the run has {theirs[name]})" for name in mine
             if name not in RESUMABLE_FIELDS and mine[name] != theirs[name]])

  # Speed (see cnn/throughput.py, cnn/flops.py and `benchmarks/bench.py`).
  _section("Speed")
  precision: str = _field("float32", "Keras mixed-precision policy; logits and loss stay float32; "
                          "mixed_float16 adds dynamic loss scaling.",
                          choices=("float32", "mixed_float16", "mixed_bfloat16"))
  steps_per_loop: int = _field(20, "Train steps per call of the compiled train function (a tf.range loop): "
                               "fewer calls from Python (each costs about 1 ms). Calls end where a log, checkpoint, "
                               "histogram, eval or profile is due, so all of those stay at their steps.", minimum=1)
  jit_compile: bool = _field(False, "Compile the train and eval steps with XLA.")
  peak_tflops: float = _field(0.0, "One device's peak TFLOP/s at --precision, for MFU = achieved TFLOP/s / "
                              "(this × replicas on all workers) (0: unknown, no MFU).", minimum=0.0)
  target_accuracy: float = _field(0.0, "Report the training seconds (evaluation left out, counted across "
                                  "resumes) and steps at which eval accuracy first reaches this (0: off).",
                                  minimum=0.0, maximum=1.0)

  # Evaluation: when, on what, which metrics, which checkpoints are the best (cnn/training/controller.py,
  # cnn/training/evaluator.py, cnn/training/actions.py). None changes what is trained.
  _section("Evaluation")
  eval_every: str = _field("", "An evaluation every this long, a duration: 500 (steps), 2ep / 0.5ep (epochs) or "
                          "0.25run (a fraction of the run); the run's last step is always evaluated; empty: "
                          "--eval_every_steps, else --eval_every_epochs.")
  eval_every_steps: int = _field(0, "Steps between evaluations (0: every --eval_every_epochs); --eval_every wins "
                                 "when given.", minimum=0)
  eval_every_epochs: float = _field(1.0, "Epochs between evaluations when --eval_every_steps is 0 (fractions "
                                    "allowed); --eval_every wins when given.", above=0.0)
  eval_at_start: bool = _field(False, "Also evaluate at step 0, before training (not when resuming).")
  eval_splits: str = _field("", "More eval sets, evaluated with --eval_split at every evaluation: comma-separated "
                            "[NAME=]SPLIT, e.g. val=train[90%:],test[:5000]; each reported as NAME/accuracy, ... "
                            "(NAME defaults to the split made a name: test[:5000] → test_5000).")
  eval_top_k: int = _field(0, "Also report top-k accuracy (topK_accuracy) at every evaluation; 0: 5 when the "
                           "dataset has more than 10 classes, else none; 1: none.", minimum=0)
  best_metric: str = _field("", "The metric that picks the best checkpoints, a column of metrics.csv, e.g. "
                            "eval/accuracy, eval_ema/accuracy, val/loss (names ending in loss: lower is better); "
                            "empty: eval_ema/accuracy under --ema_decay, else eval/accuracy.")
  keep_best: int = _field(1, "The best checkpoints kept by --best_metric, in checkpoints/best/.", minimum=1)

  def validate(self) -> "Config":
    """Checks numbers and choices; raises UserError naming the flag. Returns self."""
    for field in dataclasses.fields(self):
      value, meta = getattr(self, field.name), field.metadata
      values = value if isinstance(value, tuple) else (value,)
      if isinstance(value, tuple) and not value and not meta.get("allow_empty"):
        raise UserError(f"--{field.name} needs at least one value")
      for v in values:
        if "choices" in meta and v not in meta["choices"]:
          raise UserError(f"--{field.name}={v} is not one of: {', '.join(meta['choices'])}")
        if "minimum" in meta and v < meta["minimum"]:
          raise UserError(f"--{field.name}={v} must be at least {meta['minimum']}")
        if "maximum" in meta and v > meta["maximum"]:
          raise UserError(f"--{field.name}={v} must be at most {meta['maximum']}")
        if "above" in meta and not v > meta["above"]:
          raise UserError(f"--{field.name}={v} must be greater than {meta['above']}")
        if "below" in meta and not v < meta["below"]:
          raise UserError(f"--{field.name}={v} must be less than {meta['below']}")
    if len(self.pool_size) not in (1, len(self.conv_filters)):
      raise UserError(f"--pool_size has {len(self.pool_size)} values for {len(self.conv_filters)} conv "
                      "layers; give one value, or one per layer")
    if self.profile_steps != (0, 0) and not (len(self.profile_steps) == 2 and
                                             1 <= self.profile_steps[0] <= self.profile_steps[1]):
      raise UserError(f"--profile_steps={','.join(map(str, self.profile_steps))} must be START,END with "
                      "1 <= START <= END (0,0: no profiling)")
    for name in ("crop_scale", "crop_ratio"):
      low_high = getattr(self, name)
      if len(low_high) != 2 or low_high[0] > low_high[1]:
        raise UserError(f"--{name}={_flag_text(low_high)} must be MIN,MAX with MIN <= MAX")
    durations.check(self)
    if self.strategy == "multi_worker_mirrored" and not self.run_dir:  # The default has each worker's start time.
      raise UserError("--strategy=multi_worker_mirrored needs --run_dir: every worker must name the same directory")
    if durations.of(self, "freeze_after").value and not self.freeze_variables:
      raise UserError(f"{durations.of(self, 'freeze_after').flag_name} needs --freeze_variables (the variables to "
                      "freeze)")
    for name in ("weight_decay_exclude", "freeze_variables"):
      variable_patterns(getattr(self, name), name)  # Refused up front, whether or not they are used.
    # Statistics are given together (both used) or not at all (both computed): one alone would be ignored.
    if self.normalization_std and not self.normalization_mean:
      raise UserError("--normalization_std needs --normalization_mean (give both, or neither to compute both "
                      "from the training split)")
    if self.normalization_mean and len(self.normalization_mean) != len(self.normalization_std):
      raise UserError("--normalization_mean and --normalization_std need one value per channel each")
    if self.normalization_mean and self.normalization != "standardize":
      raise UserError("--normalization_mean and --normalization_std need --normalization=standardize")
    return self

  def to_flagfile(self) -> str:
    """The config as flagfile text: `python -m cnn.train --flagfile=<this>` reproduces it."""
    lines = []
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if isinstance(value, bool):
        lines.append(f"--{'' if value else 'no'}{field.name}")
      elif isinstance(value, tuple):
        lines.append(f"--{field.name}={','.join(map(str, value))}")
      else:
        lines.append(f"--{field.name}={value}")
    return "\n".join(lines) + "\n"


# Fields that say where a run reads and writes, how often it reports and saves, and over which
# devices it runs: none changes what it computes. They are not hyperparameters (HParams dashboard).
# A new field changes the run unless it is listed here.
OPERATIONAL_FIELDS = frozenset({
    "data_dir", "data_cache_dir", "data_memory_budget_mb", "download", "run_dir", "overwrite", "log_every",
    "log_every_steps", "checkpoint_every", "checkpoint_every_steps", "keep_checkpoints", "histogram_every",
    "histogram_every_steps", "summary_images", "confusion_matrix", "write_graph",
    "profile_steps", "strategy", "cpu_devices", "cluster", "tpu", "startup_timeout_seconds", "data_service",
    "steps_per_loop", "peak_tflops", "target_accuracy", "test_split",
    "eval_every", "eval_every_steps", "eval_every_epochs", "eval_at_start", "eval_splits", "eval_top_k", "best_metric",
    "keep_best",
})
# The fields a resumed run may change: its length and the operational fields, except those that
# change the structure of the checkpointed (distributed) data iterator. Every other field must match
# the run's flags.txt for `--run_dir` to resume.
# --best_metric is not: the checkpoint's best values are of the run's metric.
RESUMABLE_FIELDS = (OPERATIONAL_FIELDS | {"epochs", "train_steps"}) - {"strategy", "cpu_devices", "best_metric"}


def variable_patterns(patterns: str, flag: str) -> list[re.Pattern]:
  """The comma-separated regular expressions `patterns` of the flag `flag`, compiled.

  Raises:
    UserError: naming `flag` for a bad regular expression.
  """
  try:
    return [re.compile(p.strip()) for p in patterns.split(",") if p.strip()]
  except re.error as e:
    raise UserError(f"--{flag}: bad regular expression ({e})") from None


def _flag_text(value: Any) -> str:
  return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
