"""How fast a run goes: FLOPs counted from the model, throughput, MFU, host memory,
time-to-accuracy, and warnings when a compiled step retraces.

The trainer reports these in its progress lines, its TensorBoard train scalars and results.json;
`python -m cnn.bench` compares them with Keras `fit`.
"""

import dataclasses
import resource
from typing import Any, Callable, Optional, Sequence

from absl import logging
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import


def count_flops(fn: Callable[..., Any], *input_specs: tf.TensorSpec) -> int:
  """Floating-point operations of one call of `fn` on inputs of `input_specs`, as TensorFlow counts them.

  `fn` is traced, its variables frozen to constants, and the graph counted by the TF profiler's
  `float_operation` counter: 2 per multiply-add in Conv2D / MatMul (and their gradients), 1 per
  element of BiasAdd, one per window element of MaxPool; activations and casts count 0.
  """
  concrete = tf.function(fn).get_concrete_function(*input_specs)
  graph = convert_to_constants.convert_variables_to_constants_v2(concrete).graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  return tf.compat.v1.profiler.profile(graph, options=options, cmd="scope").total_float_ops


def model_flops_per_image(model: tf.keras.Model, image_shape: Sequence[int], loss_fn: tf.keras.losses.Loss,
                          batch_size: int) -> tuple[float, float]:
  """(forward, train) FLOPs per image of `model`, counted on its graphs; (0, 0) if they cannot be.

  forward: one inference pass on one image. train: the forward pass, the loss and the gradients
  of one training batch of `batch_size`, divided by `batch_size` (about 3× forward: the backward
  pass computes gradients for both activations and weights). Both are traced with
  `training=False`, so that layers that update state in training (dropout's seed, batch-norm
  statistics) leave a graph that can be frozen; they differ from training mode by a few
  element-wise ops. The optimizer's update, which does not grow with the batch, is left out, as
  in the usual MFU accounting.
  """

  def gradients(images: tf.Tensor, labels: tf.Tensor) -> list[tf.Tensor]:
    with tf.GradientTape() as tape:
      loss = loss_fn(labels, model(images, training=False))
    return tape.gradient(loss, model.trainable_variables)

  try:
    forward = count_flops(lambda images: model(images, training=False),
                          tf.TensorSpec((1, *image_shape), tf.float32))
    train = count_flops(gradients, tf.TensorSpec((batch_size, *image_shape), tf.float32),
                        tf.TensorSpec((batch_size,), tf.int32))
  except (ValueError, TypeError, tf.errors.OpError) as e:  # A model the profiler cannot count.
    logging.warning("could not count the model's FLOPs (%s: %s); FLOP/s and MFU are not reported",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return 0.0, 0.0
  return float(forward), train / batch_size


def peak_host_memory_mb() -> float:
  """The process's peak resident memory so far, in MiB (Linux reports ru_maxrss in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclasses.dataclass(frozen=True)
class Throughput:
  """Turns (steps, seconds) into images/s, step time, achieved FLOP/s and MFU.

  `batch_size` is the global batch, so images/s and FLOP/s are those of all `devices` together
  (every replica on every worker), and MFU = achieved FLOP/s / (`peak_tflops` × `devices`).
  """
  batch_size: int
  train_flops_per_image: float
  peak_tflops: float = 0.0  # Of one device; 0: unknown, so no MFU.
  devices: int = 1

  def rates(self, steps: int, seconds: float) -> dict[str, float]:
    """images_per_second, step_seconds, and (when FLOPs were counted) tflops and (with a peak) mfu."""
    images_per_second = steps * self.batch_size / seconds
    rates = {"images_per_second": images_per_second, "step_seconds": seconds / steps}
    if self.train_flops_per_image:
      rates["tflops"] = images_per_second * self.train_flops_per_image / 1e12
      if self.peak_tflops:
        rates["mfu"] = rates["tflops"] / (self.peak_tflops * self.devices)
    return rates

  @staticmethod
  def describe(rates: dict[str, float]) -> str:
    """'1510 images/s  21.2 ms/step  0.041 TFLOP/s  MFU 1.2%' (what is known)."""
    text = f"{rates['images_per_second']:.0f} images/s  {rates['step_seconds'] * 1e3:.1f} ms/step"
    text += f"  {rates['tflops']:.3f} TFLOP/s" if "tflops" in rates else ""
    return text + (f"  MFU {rates['mfu']:.1%}" if "mfu" in rates else "")


class TimeToAccuracy:
  """Wall seconds and steps at which eval accuracy first reached `target` (0: off)."""

  def __init__(self, target: float):
    self.target = target
    self.seconds: Optional[float] = None
    self.steps: Optional[int] = None

  def update(self, accuracy: float, step: int, seconds: float) -> bool:
    """Records the first (step, seconds) with accuracy ≥ target; returns True at that moment."""
    if not self.target or self.steps is not None or accuracy < self.target:
      return False
    self.seconds, self.steps = seconds, step
    return True

  def results(self) -> dict[str, Any]:
    if not self.target:
      return {}
    return {"target_accuracy": self.target, "time_to_accuracy_seconds": self.seconds,
            "time_to_accuracy_steps": self.steps}


class RetraceWatch:
  """Logs a warning when a compiled function is traced again after its warm-up.

  The first `check()` takes the function's tracing count as the warm-up's (the train loop traces
  once; the eval step twice, for its full and its smaller last batch). Every later `check()` warns
  if the count has grown: a retrace costs a new trace (and, with XLA, a new compile) and usually
  means a shape or a Python value changed between calls.
  """

  def __init__(self, name: str, function: Any):
    self.name = name
    self._count = function.experimental_get_tracing_count
    self._seen: Optional[int] = None
    self.retraces = 0

  def check(self) -> None:
    count = self._count()
    if self._seen is not None and count > self._seen:
      self.retraces += count - self._seen
      logging.warning("%s was traced again (%d traces in all): a retrace after warm-up costs time; an "
                      "input shape or a Python argument changed between calls", self.name, count)
    self._seen = count
