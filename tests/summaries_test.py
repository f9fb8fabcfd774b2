"""TensorBoard summaries: every tag a run writes, read back from its event files, and served by a real
TensorBoard.

Two runs on the tiny real-format dataset share one folder of runs (module fixture `runs`): `full`
with every summary on at short cadences, and `off` with every costly summary switched off.
"""

import io
import json
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
from PIL import Image
import psutil
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from cnn import data
from cnn import distribute
from cnn import gradients
from cnn import models
from cnn import render
from cnn import run_dir as run_dir_lib
from cnn import summaries
from cnn import train
from cnn.config import Config
from cnn.config import OPERATIONAL_FIELDS
from cnn.models.simple_cnn import SimpleCNN
from cnn.training import metrics as metrics_lib
from cnn.training import train_step as train_step_lib
from conftest import run_cli, run_dir_files
from streaming_run_test import write_jpegs
import tiny_tfds

TRAIN_SCALARS = {"loss", "accuracy", "images_per_second", "step_seconds", "gradient_norm", "weight_norm",
                 "learning_rate", "tflops", "peak_host_memory_mb"}
# 2 epochs of 6 steps; a rate too low to learn all; the profile starts inside a loop of steps 1-3.
FULL = ["--train_steps=12", "--log_every_steps=3", "--histogram_every_steps=6", "--summary_images=8",
        "--profile_steps=2,3", "--steps_per_loop=4", "--learning_rate=1e-5"]
OFF = ["--train_steps=6", "--log_every_steps=3", "--histogram_every_steps=0", "--summary_images=0",
       "--noconfusion_matrix", "--nowrite_graph"]


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory) -> pathlib.Path:
  """A folder of two runs: `full` and `off`."""
  root = tmp_path_factory.mktemp("runs")
  for name, flags in (("full", FULL), ("off", OFF)):
    code, stderr = run_cli(train.main, [f"--dataset={tiny_tfds.NAME}", f"--data_dir={tiny_data_dir}",
                                        "--nodownload", "--batch_size=16", f"--run_dir={root / name}", *flags])
    assert code == 0, stderr[-3000:]
  return root


class Events:
  """The summaries of one event directory, by tag (TF2 writes every kind as a tensor)."""

  def __init__(self, directory: pathlib.Path):
    self.accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={
        event_accumulator.TENSORS: 0})
    self.accumulator.Reload()

  def tags(self, plugin: str) -> set[str]:
    return {tag for tag in self.accumulator.Tags()["tensors"] if self.plugin(tag) == plugin}

  def plugin(self, tag: str) -> str:
    return self.accumulator.SummaryMetadata(tag).plugin_data.plugin_name

  def steps(self, tag: str) -> list[int]:
    return [e.step for e in self.accumulator.Tensors(tag)]

  def values(self, tag: str) -> list[np.ndarray]:
    return [tf.make_ndarray(e.tensor_proto) for e in self.accumulator.Tensors(tag)]

  def scalars(self, tag: str) -> dict[int, float]:
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in self.accumulator.Tensors(tag)}

  def images(self, tag: str) -> list[np.ndarray]:
    # An image summary is [width, height, png, ...] as strings.
    return [np.asarray(Image.open(io.BytesIO(value[2]))) for value in self.values(tag)]

  def text(self, tag: str) -> list[str]:
    return [value.item().decode() for value in self.values(tag)]


def tiny_model_variables() -> dict[str, tuple[int, ...]]:
  """Shapes of the trainable variables of the default model on the tiny dataset, by layer path."""
  info = data.DatasetInfo(tiny_tfds.NAME, tiny_tfds.IMAGE_SHAPE, 3, tiny_tfds.CLASS_NAMES)
  model = models.build_model(Config(), info)
  model(tf.zeros((1, *tiny_tfds.IMAGE_SHAPE)))
  return {v.path.split("/", 1)[1]: tuple(v.shape) for v in model.trainable_variables}


# ------------------------------------------------------------------ What a run writes.

@pytest.mark.e2e
def test_train_scalars_at_every_log_step(runs):
  train_events = Events(runs / "full" / "train")
  assert train_events.tags("scalars") == TRAIN_SCALARS
  scalars = {tag: train_events.scalars(tag) for tag in TRAIN_SCALARS}
  for tag, values in scalars.items():
    assert list(values) == [3, 6, 9, 12], tag
    assert all(np.isfinite(v) and v >= 0 for v in values.values()), (tag, values)
  assert list(scalars["learning_rate"].values()) == pytest.approx([1e-5] * 4)
  assert all(v > 0 for v in scalars["gradient_norm"].values())
  assert len(set(scalars["weight_norm"].values())) == 4  # The weights change at every step.
  for step, seconds in scalars["step_seconds"].items():  # Both measure the same interval.
    assert scalars["images_per_second"][step] == pytest.approx(16 / seconds, rel=1e-3)
  eval_events = Events(runs / "full" / "eval")
  assert eval_events.tags("scalars") == {"loss", "accuracy"}
  assert eval_events.steps("accuracy") == [6, 12]


@pytest.mark.e2e
@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_the_learning_rate_logged_at_a_step_is_the_rate_that_step_applied(tiny_data_dir, tmp_path, precision):
  # Linear decay from 0.4 over 4 steps: step s (counted from 1) applies 0.4 · (1 - (s - 1) / 4).
  run_dir = tmp_path / "run"
  code, stderr = run_cli(train.main, [f"--dataset={tiny_tfds.NAME}", f"--data_dir={tiny_data_dir}", "--nodownload",
                                      "--batch_size=16", "--train_steps=4", "--steps_per_loop=2",
                                      "--log_every_steps=2", "--optimizer=sgd", "--learning_rate=0.4",
                                      "--lr_schedule=linear", f"--precision={precision}", "--summary_images=0",
                                      "--histogram_every_steps=0", "--nowrite_graph", "--noconfusion_matrix",
                                      f"--run_dir={run_dir}"])
  assert code == 0, stderr[-3000:]
  assert Events(run_dir / "train").scalars("learning_rate") == pytest.approx({2: 0.3, 4: 0.1})


@pytest.mark.e2e
def test_histograms_of_every_layer_count_every_parameter(runs):
  events = Events(runs / "full" / "train")
  variables = tiny_model_variables()
  expected = {f"{kind}/{path}" for kind in ("weights", "gradients") for path in variables}
  assert events.tags("histograms") == expected
  for tag in expected:
    assert events.steps(tag) == [6, 12], tag  # --histogram_every_steps=6
    for histogram in events.values(tag):  # Buckets: [left edge, right edge, count].
      assert histogram[:, 2].sum() == np.prod(variables[tag.split("/", 1)[1]]), tag


@pytest.mark.e2e
def test_input_grid_is_the_first_training_batch_with_class_names(runs, tiny_data_dir):
  events = Events(runs / "full" / "train")
  assert events.tags("images") == {"inputs"}
  assert events.steps("inputs") == [0]
  split = data.load_split(data.get_builder(tiny_tfds.NAME, tiny_data_dir, download=False), "train")
  images, labels = next(iter(data.train_dataset(split, batch_size=16, seed=0)))
  expected = render.image_grid(images[:8].numpy(), [[tiny_tfds.CLASS_NAMES[i]] for i in labels[:8]])
  np.testing.assert_array_equal(events.images("inputs")[0], expected)


@pytest.mark.e2e
def test_each_eval_writes_a_confusion_matrix_and_the_misclassified_images(runs):
  events = Events(runs / "full" / "eval")
  accuracy = events.scalars("accuracy")
  assert events.steps("confusion_matrix") == events.steps("confusion_matrix_table") == [6, 12]
  empty = render.confusion_matrix_image(np.zeros((3, 3), int), tiny_tfds.CLASS_NAMES)
  for image in events.images("confusion_matrix"):
    assert image.shape == empty.shape and not np.array_equal(image, empty)
  for step, table in zip([6, 12], events.text("confusion_matrix_table")):
    rows = [line.strip("|").split("|") for line in table.splitlines()]
    assert [cell.strip() for cell in rows[0][1:]] == list(tiny_tfds.CLASS_NAMES)
    matrix = np.array([[int(cell) for cell in row[1:]] for row in rows[2:]])
    assert matrix.shape == (3, 3) and matrix.sum() == 30  # The whole test split.
    assert np.trace(matrix) / 30 == pytest.approx(accuracy[step])

  wrong = {step: round((1 - acc) * 30) for step, acc in accuracy.items()}
  assert any(wrong.values())  # The learning rate is too low to get everything right.
  assert events.steps("misclassified") == [step for step, count in wrong.items() if count]
  descriptions = events.accumulator.SummaryMetadata("misclassified").summary_description
  assert f"of {wrong[events.steps('misclassified')[-1]]} misclassified" in descriptions
  grid = events.images("misclassified")[-1]
  assert grid.ndim == 3 and grid.shape[2] == 3


@pytest.mark.e2e
def test_run_text_hparams_and_final_results(runs):
  run = runs / "full"
  events = Events(run)
  assert events.tags("text") == {"flags", "model", "dataset", "versions", "devices"}
  flags_text, = events.text("flags")
  assert flags_text == f"```\n{(run / 'flags.txt').read_text().rstrip()}\n```"
  model_text, = events.text("model")
  assert "conv1 (Conv2D)" in model_text and "logits (Dense)" in model_text
  assert f"{sum(np.prod(s) for s in tiny_model_variables().values()):,}" in model_text
  versions, = events.text("versions")
  assert f"| TensorFlow | {tf.__version__} |" in versions and f"| Python | {sys.version.split()[0]} |" in versions
  assert "/physical_device:CPU:0" in events.text("devices")[0]
  assert "red, green, blue" in events.text("dataset")[0]

  content = events.accumulator.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
  session = hparams_metadata.parse_session_start_info_plugin_data(content)
  assert session.group_name == "full"
  values = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in session.hparams.items()}
  assert values["learning_rate"] == pytest.approx(1e-5) and values["batch_size"] == 16
  assert values["dataset"] == tiny_tfds.NAME and values["conv_filters"] == "32,64"
  assert values["train_steps"] == 12 and values["num_parameters"] > 0
  assert not {"run_dir", "data_dir", "overwrite", "profile_steps"} & set(values)

  results = json.loads((run / "results.json").read_text())
  final = {tag: events.scalars(tag) for tag in events.tags("scalars")}
  assert final == {key: {12: pytest.approx(value)} for key, value in results.items() if not isinstance(value, str)}


@pytest.mark.e2e
def test_graph_and_profile_trace(runs):
  events = Events(runs / "full" / "train")
  assert events.accumulator.Tags()["graph"]
  graph = events.accumulator.Graph()  # The step's loop body is a function of the graph's library.
  ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
  assert {"IteratorGetNext", "Conv2D", "Conv2DBackpropFilter"} <= ops
  traces = [f for f in run_dir_files(runs / "full") if f.endswith(".xplane.pb")]
  assert len(traces) == 1 and traces[0].startswith("train/plugins/profile/"), traces
  assert (runs / "full" / traces[0]).stat().st_size > 1000


@pytest.mark.e2e
def test_off_switches_leave_only_scalars_text_and_hparams(runs):
  run = runs / "off"
  train_events, eval_events = Events(run / "train"), Events(run / "eval")
  assert train_events.tags("scalars") == TRAIN_SCALARS
  assert not train_events.tags("histograms") and not train_events.tags("images")
  assert not train_events.accumulator.Tags()["graph"]
  assert eval_events.tags("scalars") == {"loss", "accuracy"}
  assert not eval_events.tags("images") and not eval_events.tags("text")
  assert Events(run).tags("hparams") == {hparams_metadata.SESSION_START_INFO_TAG}
  assert not any("plugins" in f for f in run_dir_files(run))


# ------------------------------------------------------------------ In a real TensorBoard.

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.e2e
def test_tensorboard_serves_the_runs_scalars_images_and_hparams(runs, tmp_path):
  port = _free_port()
  base = f"http://127.0.0.1:{port}"
  opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # Loopback: never a proxy.

  def get(path, body=None):
    request = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with opener.open(request, timeout=20) as response:
      return json.load(response)

  log = open(tmp_path / "tensorboard.log", "wb")  # pylint: disable=consider-using-with
  server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", f"--logdir={runs}", "--host=127.0.0.1",
                             f"--port={port}"], stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline, scalar_tags = time.monotonic() + 90, {}
    while not {"full/train", "full/eval", "full", "off/train"} <= set(scalar_tags):
      assert server.poll() is None, (tmp_path / "tensorboard.log").read_text()[-3000:]
      assert time.monotonic() < deadline, f"TensorBoard served no runs in 90 s: {scalar_tags}"
      time.sleep(1)
      try:
        scalar_tags = get("/data/plugin/scalars/tags")
      except OSError:  # Not listening yet.
        pass

    assert set(scalar_tags["full/train"]) == TRAIN_SCALARS
    assert set(scalar_tags["full/eval"]) == {"loss", "accuracy"}
    query = urllib.parse.urlencode({"run": "full/eval", "tag": "accuracy"})
    served = get(f"/data/plugin/scalars/scalars?{query}")  # [wall time, step, value]
    assert {step: value for _, step, value in served} == pytest.approx(
        Events(runs / "full" / "eval").scalars("accuracy"))

    images = get("/data/plugin/images/tags")
    assert set(images["full/train"]) == {"inputs"}
    assert {"confusion_matrix", "misclassified"} <= set(images["full/eval"])
    assert "off/eval" not in images
    assert set(get("/data/plugin/histograms/tags")["full/train"]) == {
        f"{kind}/{path}" for kind in ("weights", "gradients") for path in tiny_model_variables()}
    assert set(get("/data/plugin/text/tags")["full"]) == {"flags", "model", "dataset", "versions", "devices"}
    assert get("/data/plugin/graphs/info")["full/train"]["run_graph"]

    experiment = get("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"]: info for info in experiment["hparamInfos"]}
    assert {"model", "dataset", "optimizer", "learning_rate", "batch_size", "num_parameters"} <= set(hparams)
    assert hparams["learning_rate"]["differs"] and not hparams["model"]["differs"]
    metrics = {(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]}
    assert {("eval", "accuracy"), ("eval", "loss"), ("train", "loss"), ("", "eval_accuracy")} <= metrics
    groups = get("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
    assert {g["name"]: g["hparams"]["learning_rate"] for g in groups["sessionGroups"]} == pytest.approx(
        {"full": 1e-5, "off": 1e-3})
  finally:
    children = psutil.Process(server.pid).children(recursive=True)  # Its data server, if it started one.
    server.terminate()
    try:
      server.wait(timeout=20)
    except subprocess.TimeoutExpired:
      server.kill()
      server.wait(timeout=20)
    _, alive = psutil.wait_procs(children, timeout=20)
    for child in alive:
      child.kill()
    log.close()
  assert server.returncode is not None and not alive


# ------------------------------------------------------------------ The pieces.

def _histogram_step_gradients(log_dir: pathlib.Path, strategy_name: str, precision: str = "float32",
                              transforms=()) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """One histogram train step of a tiny model on a fixed batch of 8, from the same initial weights.

  Returns:
    The gradient histograms read back from the event files, and the mean gradient over the batch
    computed eagerly before the step, both by tag.
  """
  tf.keras.mixed_precision.set_global_policy(precision)
  try:
    strategy = distribute.make_strategy(Config(strategy=strategy_name, cpu_devices=2))  # The session's one.
    tf.keras.utils.set_random_seed(0)
    images, labels = tf.random.uniform((8, 12, 12, 3)), tf.range(8) % 3
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    with strategy.scope():
      model = SimpleCNN(num_classes=3, conv_filters=(4,), pool_sizes=(2,), dense_units=(8,))
      model(images[:1])
      optimizer = tf.keras.optimizers.SGD(0.1)
      if precision == "mixed_float16":
        optimizer = tf.keras.optimizers.LossScaleOptimizer(optimizer)
      optimizer.build(model.trainable_variables)
      metrics = metrics_lib.Metrics("train")
    histograms = summaries.GradientHistograms(model, strategy)
    tags = [f"gradients/{v.path.split('/', 1)[1]}" for v in model.trainable_variables]
    with tf.GradientTape() as tape:  # Cross-replica: reads the (mirrored) weights as one device does.
      loss = tf.reduce_mean(loss_fn(labels, tf.cast(model(images, training=True), tf.float32)))
    expected = dict(zip(tags, (g.numpy() for g in tape.gradient(loss, model.trainable_variables))))
    writer = tf.summary.create_file_writer(str(log_dir))
    train_loop = train_step_lib.make_train_loop(model, optimizer, loss_fn, metrics, strategy, global_batch_size=8,
                                                transforms=transforms,
                                                gradient_summary=histograms.record)
    train_loop(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, labels)))),
               histograms=True)
    histograms.write(writer, 1)
    writer.close()
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  events = Events(log_dir)
  histograms = {tag: values[0] for tag in tags for values in [events.values(tag)] if len(values) == 1}
  return histograms, expected


def _range(histogram: np.ndarray) -> tuple[float, float]:
  """The smallest and largest value a histogram counts (the edges of its outer buckets)."""
  return histogram[0, 0], histogram[-1, 1]


@pytest.mark.e2e
@pytest.mark.parametrize("strategy_name, precision", [
    ("default", "float32"), ("mirrored", "float32"), ("default", "mixed_float16")])
def test_gradient_histograms_are_the_applied_gradients_summed_over_replicas_and_unscaled(
    tmp_path, strategy_name, precision):
  histograms, expected = _histogram_step_gradients(tmp_path, strategy_name, precision)
  assert set(histograms) == set(expected)
  tolerance = 2e-2 if precision == "mixed_float16" else 1e-5  # float16 forward and backward passes.
  for tag, histogram in histograms.items():
    assert histogram[:, 2].sum() == expected[tag].size, tag
    assert _range(histogram) == pytest.approx((expected[tag].min(), expected[tag].max()), rel=tolerance), tag


def test_gradient_histograms_are_clipped_as_the_update(tmp_path):
  histograms, expected = _histogram_step_gradients(tmp_path, "default",
                                                 transforms=[gradients.clip_by_global_norm(1e-3)])
  factor = 1e-3 / np.sqrt(sum(np.sum(g**2) for g in expected.values()))
  assert factor < 0.1
  for tag, histogram in histograms.items():
    assert _range(histogram) == pytest.approx((expected[tag].min() * factor, expected[tag].max() * factor),
                                              rel=1e-4), tag


def test_image_grid_enlarges_tiles_in_order_and_captions_them():
  colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
  images = np.broadcast_to(colours[:, None, None, :], (3, 16, 16, 3))
  grid = render.image_grid(images, [["red"], ["green"], []], columns=3)
  boxes = []
  for colour in colours:
    ys, xs = np.nonzero(np.all(grid == colour, axis=-1))
    boxes.append((ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
    side = ys.max() + 1 - ys.min()
    assert side == xs.max() + 1 - xs.min() and side % 16 == 0 and side >= render.MIN_TILE_WIDTH
    assert len(ys) == side * side  # A solid, enlarged tile.
  assert boxes[0][0] == boxes[1][0] == boxes[2][0] and boxes[0][1] < boxes[1][1] < boxes[2][1]
  for (top, left, bottom, right), has_caption in zip(boxes, (True, True, False)):
    caption = grid[bottom:bottom + render.LINE_HEIGHT, left:right]
    assert (caption.min() < 128) == has_caption  # Black text under the first two tiles only.

  grey = render.image_grid(np.full((2, 8, 8, 1), 0.5, np.float32), [["a"], ["b"]])
  assert grey.ndim == 3 and grey.shape[2] == 3 and (grey == 128).all(axis=-1).any()


def test_confusion_matrix_image_colours_each_cell_by_its_share_of_the_true_row():
  matrix = np.array([[4, 0, 0],   # true red: all predicted red
                     [3, 1, 0],   # true green: 3/4 predicted red
                     [0, 0, 2]])  # true blue: all predicted blue
  image = render.confusion_matrix_image(matrix, tiny_tfds.CLASS_NAMES).astype(float)
  full, empty = np.array(render.FULL_RGB, float), np.array(render.EMPTY_RGB, float)
  ys, xs = np.nonzero(np.all(image == full, axis=-1))
  top, left, size = ys.min(), xs.min(), ys.max() + 1 - ys.min()
  assert size == xs.max() + 1 - left and size % 3 == 0  # Cells (0, 0) and (2, 2) span the matrix.
  cell = size // 3
  for i in range(3):
    for j in range(3):
      share = matrix[i, j] / matrix[i].sum()
      corner = image[top + i * cell + 2, left + j * cell + 2]  # Away from the count in the middle.
      np.testing.assert_allclose(corner, empty + share * (full - empty), atol=0.5, err_msg=f"cell {i},{j}")
  assert image[top:, :left].min() < 128 and image[:top, left:].min() < 128  # Row and column names.

  many = render.confusion_matrix_image(np.eye(100, dtype=int), [str(i) for i in range(100)])
  assert min(many.shape[:2]) >= 100 * 4


def test_train_scalars_add_the_loss_scale_under_float16():
  model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(3)])
  adam = summaries.train_scalars(model, tf.keras.optimizers.Adam(0.01))
  assert set(adam) == {"weight_norm"}  # The learning rate comes from the train loop (the step's own).
  assert adam["weight_norm"] == pytest.approx(np.sqrt(sum(np.sum(w.numpy() ** 2) for w in model.weights)))
  scaled = summaries.train_scalars(model, tf.keras.optimizers.LossScaleOptimizer(tf.keras.optimizers.Adam(0.01)))
  assert scaled["loss_scale"] == 2.0**15


def test_hparams_are_the_settings_that_change_what_is_trained():
  values = summaries.hparams(Config(conv_filters=(16, 32), dropout=0.5), num_parameters=1234)
  assert values["conv_filters"] == "16,32" and values["dropout"] == 0.5 and values["num_parameters"] == 1234
  assert not OPERATIONAL_FIELDS & set(values)
  assert all(isinstance(v, (bool, int, float, str)) for v in values.values())


@pytest.mark.parametrize("value", ["5,2", "3", "0,4", "1,2,3"])
def test_bad_profile_steps_is_one_line(mock_tfds, tmp_path, value):
  code, stderr = run_cli(train.main, [f"--profile_steps={value}", f"--run_dir={tmp_path / 'run'}"])
  assert code == 2
  assert stderr.strip() == (f"error: --profile_steps={value} must be START,END with 1 <= START <= END "
                            "(0,0: no profiling)")
  assert not (tmp_path / "run").exists()


def test_good_profile_steps_validate_and_are_written_to_flags_txt():
  assert Config(profile_steps=(10, 20)).validate().profile_steps == (10, 20)
  assert re.search(r"^--profile_steps=0,0$", Config().to_flagfile(), re.M)


# ------------------------------------------------------------------ Streamed splits.

@pytest.mark.e2e
@pytest.mark.parametrize("dataset", ["tfds", "folder"])
def test_a_streamed_run_with_default_summaries_writes_its_eval_images(dataset, tiny_data_dir, tmp_path):
  # Train and eval splits both stream (budget 0): the eval images are read from disk by index. The
  # folder's JPEGs (64×48) are seen as their centre crops.
  if dataset == "tfds":
    where = [f"--dataset={tiny_tfds.NAME}", f"--data_dir={tiny_data_dir}", "--batch_size=16", "--train_steps=6"]
  else:
    where = [f"--dataset=folder:{write_jpegs(tmp_path / 'jpegs', 8)}", "--image_size=16", "--batch_size=8",
             "--train_steps=3"]
  run = tmp_path / "streamed"
  code, stderr = run_cli(train.main, [*where, "--nodownload", "--data_memory_budget_mb=0", "--learning_rate=1e-5",
                                      "--nowrite_graph", f"--run_dir={run}"])
  assert code == 0, stderr[-3000:]
  assert Events(run / "train").tags("images") == {"inputs"}
  events = Events(run / "eval")
  assert events.tags("images") == {"confusion_matrix", "misclassified"}
  assert len(events.steps("misclassified")) == len(events.steps("confusion_matrix")) == 1
  config = run_dir_lib.read_config(str(run))
  (views,) = data.open_splits(data.open_dataset(config), [config.eval_split], 1, train_first=False)
  assert isinstance(views, data.Split)  # The eval views, held in memory this time.
  # The first tile is an eval view, enlarged (nearest neighbour) to render.MIN_TILE_WIDTH.
  scale = render.MIN_TILE_WIDTH // 16
  tile = events.images("misclassified")[0][render.PAD:render.PAD + 16 * scale:scale,
                                           render.PAD:render.PAD + 16 * scale:scale]
  assert any(np.array_equal(tile, image) for image in views.images)
