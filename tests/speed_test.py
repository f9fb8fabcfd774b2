"""Speed features: precisions, loss scaling, steps per loop, XLA, FLOPs counting and retrace warnings."""

import dataclasses
import importlib
import json
import logging
import statistics

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import

from cnn import data as data_lib
from cnn import flops
from cnn import throughput
from cnn.config import Config
from cnn.training import actions
from cnn.training import evaluator
from cnn.training import trainer
from conftest import REPO, run_cli
from streaming_run_test import write_jpegs

INFO = data_lib.DatasetInfo("random", (32, 32, 3), 10, tuple(map(str, range(10))))


@pytest.fixture(autouse=True)
def _float32_policy_afterwards():
  yield
  tf.keras.mixed_precision.set_global_policy("float32")  # The policy is process-wide.


@pytest.fixture
def op_determinism():
  tf.config.experimental.enable_op_determinism()
  yield
  tf_config.disable_op_determinism()  # Not public; keeps the rest of the session as it was.


def random_split(n: int, seed: int = 0) -> data_lib.Split:
  rng = np.random.default_rng(seed)
  return data_lib.Split(rng.integers(0, 256, (n, *INFO.image_shape), dtype=np.uint8),
                        rng.integers(0, INFO.num_classes, n, dtype=np.int32))


def build(**settings) -> trainer.Training:
  tf.keras.utils.set_random_seed(0)
  config, strategy = Config(**settings), tf.distribute.get_strategy()
  return trainer.build_training(config, trainer.build_model_in_scope(config, INFO, strategy)[0], strategy,
                                steps_per_epoch=6, total_steps=9)


def weights(training: trainer.Training) -> list[np.ndarray]:
  return [v.numpy() for v in training.model.weights]


@pytest.mark.e2e
@pytest.mark.parametrize("precision, compute_dtype", [
    ("float32", "float32"), ("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_each_precision_trains_and_the_loss_falls(precision, compute_dtype):
  training = build(precision=precision)
  images, labels = next(iter(data_lib.train_dataset(random_split(32), 32, seed=0)))
  assert training.model.layers[0].compute_dtype == compute_dtype
  assert training.model(images).dtype == tf.float32  # float32 logits, so a float32 loss.
  assert training.model.trainable_variables[0].dtype == tf.float32  # float32 master weights.

  def loss() -> float:
    training.eval_metrics.reset()
    training.eval_step((images, labels, tf.range(len(labels))))
    return training.eval_metrics.result()["loss"]

  before = loss()
  training.train_loop(iter(tf.data.Dataset.from_tensors((images, labels)).repeat()), 30)
  assert loss() < 0.5 * before


@pytest.mark.e2e
def test_float16_loss_scaling_skips_a_non_finite_step_and_lowers_the_scale():
  training = build(precision="mixed_float16")
  optimizer = training.optimizer
  assert isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer)
  images, labels = next(iter(data_lib.train_dataset(random_split(32), 32, seed=0)))
  poisoned = tf.tensor_scatter_nd_update(images, [[0, 0, 0, 0]], [np.inf])
  stream = iter(tf.data.Dataset.from_tensor_slices(((tf.stack([images, poisoned, images])),
                                                     tf.stack([labels] * 3))))
  training.train_loop(stream)  # A normal step.
  # Applied updates (the inner optimizer's count) stay; the step count (which drives the schedule) advances.
  scale, before = float(optimizer.dynamic_scale), weights(training)
  iterations = int(optimizer.inner_optimizer.iterations)

  training.train_loop(stream)  # Non-finite gradients: skipped.
  assert float(optimizer.dynamic_scale) == scale / 2
  assert int(optimizer.inner_optimizer.iterations) == iterations and int(optimizer.iterations) == 2
  for a, b in zip(before, weights(training)):
    np.testing.assert_array_equal(a, b)

  # The step reads the scale from its variable (not a constant baked in when it was traced): a
  # scale of 2**100 overflows float16 gradients, so this finite batch is skipped too.
  optimizer.dynamic_scale.assign(2.0 ** 100)
  training.train_loop(stream)
  assert float(optimizer.dynamic_scale) == 2.0 ** 99 and int(optimizer.inner_optimizer.iterations) == iterations


def test_the_loss_scale_is_saved_with_the_optimizer(tmp_path):
  training = build(precision="mixed_float16")
  training.optimizer.dynamic_scale.assign(1024.0)
  path = tf.train.Checkpoint(optimizer=training.optimizer).save(str(tmp_path / "ckpt"))
  restored = build(precision="mixed_float16")
  tf.train.Checkpoint(optimizer=restored.optimizer).restore(path).assert_existing_objects_matched()
  assert float(restored.optimizer.dynamic_scale) == 1024.0


@pytest.mark.e2e
def test_k_steps_per_loop_give_the_same_weights_as_k_single_steps(op_determinism):
  split = random_split(200)
  results = []
  for calls in ([1] * 9, [4, 4, 1], [9], [2, 7]):
    training = build()
    iterator = iter(data_lib.train_dataset(split, 32, seed=1))  # 6 batches an epoch: 9 steps cross it.
    for num_steps in calls:
      training.train_loop(iterator, num_steps)
    assert training.train_loop.experimental_get_tracing_count() == 1  # num_steps is a tensor.
    assert int(training.optimizer.iterations) == 9
    results.append((weights(training), training.train_metrics.result()))
  for other_weights, other_metrics in results[1:]:
    for a, b in zip(results[0][0], other_weights):
      np.testing.assert_array_equal(a, b)
    assert other_metrics == results[0][1]


@pytest.mark.e2e
def test_xla_on_and_off_agree_and_nothing_retraces():
  split, eval_split = random_split(128), random_split(70, seed=1)  # Eval batches of 32, 32 and 6.
  results = []
  for jit_compile in (False, True):
    training = build(jit_compile=jit_compile, eval_batch_size=32)
    iterator = iter(data_lib.train_dataset(split, 32, seed=0))
    for num_steps in (3, 1, 2):
      training.train_loop(iterator, num_steps)
    evaluations = [evaluator.evaluate_pass(training.eval_step, data_lib.eval_dataset(eval_split, 32),
                                    training.eval_metrics)[0] for _ in range(2)]
    assert evaluations[0] == evaluations[1]
    assert training.train_loop.experimental_get_tracing_count() == 1
    assert training.eval_step.experimental_get_tracing_count() == 2  # Full batches, and the last one.
    results.append((weights(training), evaluations[0]))
  (plain_weights, plain_eval), (xla_weights, xla_eval) = results
  for a, b in zip(plain_weights, xla_weights):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  assert xla_eval["loss"] == pytest.approx(plain_eval["loss"], rel=1e-4)
  assert xla_eval["accuracy"] == pytest.approx(plain_eval["accuracy"], abs=1 / 70)


@pytest.mark.e2e
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_flops_of_the_tutorial_network_match_a_hand_count(precision):
  training = build(precision=precision)
  # Conv2D and Dense: 2 FLOPs per multiply-add; bias adds: 1 per output; 2×2 max-pool: 4 per output.
  conv1 = 2 * (3 * 3 * 3) * (30 * 30 * 32) + 30 * 30 * 32
  pool1 = 4 * (15 * 15 * 32)
  conv2 = 2 * (3 * 3 * 32) * (13 * 13 * 64) + 13 * 13 * 64
  pool2 = 4 * (6 * 6 * 64)
  dense = 2 * (6 * 6 * 64) * 64 + 64
  logits = 2 * 64 * 10 + 10
  forward, train = flops.model_flops_per_image(training.model, INFO.image_shape, training.loss_fn, 32)
  assert forward == conv1 + pool1 + conv2 + pool2 + dense + logits == 8_159_114
  # The backward pass costs about twice the forward one (gradients of activations and of weights).
  assert 3.0 * forward < train < 3.5 * forward
  # Dropout's state update (its seed) does not stop the graph from being counted; the masks are
  # left out of the count.
  with_dropout = build(precision=precision, dropout=0.25)
  assert flops.model_flops_per_image(with_dropout.model, INFO.image_shape, with_dropout.loss_fn, 32) == (
      forward, train)


def test_throughput_rates_and_time_to_accuracy():
  rates = throughput.Throughput(batch_size=32, train_flops_per_image=1e6, peak_tflops=0.5).rates(100, 2.0)
  assert rates == pytest.approx({"images_per_second": 1600, "step_seconds": 0.02, "tflops": 1.6e-3,
                                 "mfu": 3.2e-3})
  assert "mfu" not in throughput.Throughput(32, 1e6).rates(100, 2.0)
  # The batch is global, so the achieved FLOP/s are summed over devices: MFU divides by all their peaks.
  eight = throughput.Throughput(batch_size=32, train_flops_per_image=1e6, peak_tflops=0.5, devices=8).rates(100, 2.0)
  assert eight["tflops"] == pytest.approx(1.6e-3) and eight["mfu"] == pytest.approx(3.2e-3 / 8)
  reached = actions.TimeToAccuracy(0.6)
  assert [reached.update(a, s, t) for a, s, t in [(0.5, 10, 1.0), (0.6, 20, 2.0), (0.7, 30, 3.0)]] == [
      False, True, False]
  assert reached.results() == {"run_train_seconds": 0.0, "target_accuracy": 0.6, "time_to_accuracy_seconds": 2.0,
                               "time_to_accuracy_steps": 20}
  assert actions.TimeToAccuracy(0.0).results() == {"run_train_seconds": 0.0}


def test_a_retrace_after_warm_up_is_logged_as_a_warning(caplog):
  square = tf.function(lambda x: x * x)
  watch = throughput.RetraceWatch("square", square)
  square(tf.zeros(2))
  watch.check()  # Warm-up: one trace, no warning.
  square(tf.ones(2))
  watch.check()
  assert watch.retraces == 0 and not caplog.records
  with caplog.at_level(logging.WARNING):
    square(tf.zeros(3))  # A new shape: traced again.
    watch.check()
  assert watch.retraces == 1
  assert "square was traced again (2 traces in all)" in caplog.text


def test_precision_and_target_accuracy_are_validated():
  with pytest.raises(Exception, match="--precision=float8 is not one of"):
    Config(precision="float8").validate()
  with pytest.raises(Exception, match="--target_accuracy=1.5 must be at most 1.0"):
    dataclasses.replace(Config(), target_accuracy=1.5).validate()


def import_bench(monkeypatch):
  """benchmarks/bench.py as a module: benchmarks/ is not a package, and bench.py imports keras_fit beside it.

  Imported inside the tests: it defines its flags on import."""
  monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
  return importlib.import_module("bench")


@pytest.mark.e2e
def test_bench_runs_end_to_end_on_mock_data_and_writes_its_json(mock_tfds, tmp_path, monkeypatch):
  bench = import_bench(monkeypatch)
  output = tmp_path / "bench.json"
  code, stderr = run_cli(bench.main, [
      "--bench_steps=4", "--lead_in_steps=2", "--rounds=3", "--search_rounds=1", "--search_steps=2",
      "--search_precisions=float32,mixed_bfloat16", "--search_steps_per_loop=1,2",
      "--search_jit_compile=false", "--eval_examples=64", f"--output={output}"])
  assert code == 0, stderr[-2000:]
  report = json.loads(output.read_text())
  runs = report["runs"]
  assert set(runs) == {"A", "B", "C", "D", "C_cached", "D_cached", "pipeline"}
  for name, run in runs.items():
    assert len(run["measured"]) == 3 and run["images_per_second"] == statistics.median(run["measured"])
    assert run["ratio_to_A"] == pytest.approx(run["images_per_second"] / runs["A"]["images_per_second"])
    assert (run["accuracy"] is not None) == (name in "ABCD")
  assert runs["A"]["ratio_to_A"] == 1.0 and 0.0 <= runs["D"]["accuracy"] <= 1.0
  assert f"float32, {Config().steps_per_loop} steps per loop, XLA off" in runs["C"]["what"]  # The defaults.
  fastest = report["fastest"]
  assert fastest["precision"] in ("float32", "mixed_bfloat16") and fastest["steps_per_loop"] in (1, 2)
  assert [t["choosing"] for t in report["search"]] == ["precision"] * 2 + ["steps_per_loop"] * 2 + ["jit_compile"]
  assert report["eval_examples"] == 64 and report["pipeline_images_per_second"] > 0
  assert 0.0 <= report["input_bound_fraction"]["C"] < 1.0


@pytest.mark.e2e
def test_bench_runs_on_a_folder_of_images_whose_splits_stream(tmp_path, monkeypatch):
  bench = import_bench(monkeypatch)
  root = write_jpegs(tmp_path / "jpegs", 8)  # train/ 24 and val/ 12 JPEGs of 64×48, 3 classes.
  output = tmp_path / "bench.json"
  code, stderr = run_cli(bench.main, [
      f"--dataset=folder:{root}", "--image_size=16", "--data_memory_budget_mb=0", "--batch_size=8",
      "--bench_steps=2", "--lead_in_steps=1", "--rounds=1", "--search_rounds=1", "--search_steps=1",
      "--search_precisions=float32", "--search_steps_per_loop=1", "--search_jit_compile=false",
      "--eval_examples=10", f"--output={output}"])
  assert code == 0, stderr[-2000:]
  report = json.loads(output.read_text())
  assert report["train_examples"] == 24 and report["eval_examples"] == 10
  assert all(0.0 <= report["runs"][name]["accuracy"] <= 1.0 for name in "ABCD")
