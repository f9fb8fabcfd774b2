"""`cnn.evaluate`, `cnn.export` and `cnn.predict` on a run trained on the tiny real-format dataset."""

import json
import shutil
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorboard.backend.event_processing import event_accumulator

from cnn import train  # Before the other entry points: they share its --run_dir and --overwrite flags.
from cnn import augment
from cnn import data
from cnn import evaluate
from cnn import inference
from cnn import export
from cnn import predict
from cnn.models import registry
from conftest import run_cli
from folder_test import listing
from folder_test import write_folder
import tiny_tfds


def tiny_run(data_dir, run_dir, *extra):
  code, stderr = run_cli(train.main, [f"--dataset={tiny_tfds.NAME}", f"--data_dir={data_dir}", "--nodownload",
                                      "--conv_filters=8", "--dense_units=16", "--batch_size=8",
                                      f"--run_dir={run_dir}", *extra])
  assert code == 0, stderr
  return run_dir


@pytest.fixture(scope="module")
def run(tiny_data_dir, tmp_path_factory):
  """A run of 2 epochs (12 steps each), so checkpoints/ has a latest and a best."""
  return tiny_run(tiny_data_dir, tmp_path_factory.mktemp("run") / "run", "--train_steps=24")


@pytest.mark.e2e
def test_evaluate_prints_and_writes_per_class_accuracy_and_the_confusion_matrix(run, capsys):
  code, stderr = run_cli(evaluate.main, [f"--run_dir={run}"])
  assert code == 0, stderr
  out = capsys.readouterr().out
  results = json.loads((run / "eval_test.json").read_text())
  matrix = np.array(results["confusion_matrix"])
  assert matrix.shape == (3, 3) and matrix.sum() == results["num_examples"] == tiny_tfds.SPLIT_SIZES["test"]
  assert matrix.sum(axis=1).tolist() == [10, 10, 10]  # Rows are the true classes.
  assert results["accuracy"] == pytest.approx(matrix.trace() / matrix.sum())
  assert [results["per_class_accuracy"][n] for n in tiny_tfds.CLASS_NAMES] == pytest.approx(
      (matrix.diagonal() / matrix.sum(axis=1)).tolist())
  # The latest checkpoint is the end of training: the same numbers as the run's own final eval.
  final = json.loads((run / "results.json").read_text())
  assert (results["accuracy"], results["loss"]) == (final["eval_accuracy"], final["eval_loss"])
  assert results["checkpoint"] == str(run / "checkpoints" / "ckpt-24")
  assert f"test: 30 examples, loss {results['loss']:.4f}, accuracy {results['accuracy']:.4f}" in out
  assert "green" in out and "confusion matrix" in out


@pytest.mark.e2e
def test_evaluate_another_split_and_the_best_checkpoint(run):
  code, stderr = run_cli(evaluate.main, [f"--run_dir={run}", "--checkpoint=best", "--split=train[:50]"])
  assert code == 0, stderr
  results = json.loads((run / "eval_train_50.json").read_text())
  assert np.array(results["confusion_matrix"]).sum() == 50
  assert results["checkpoint"].startswith(str(run / "checkpoints" / "best" / "ckpt-"))


@pytest.mark.e2e
def test_the_best_checkpoint_is_the_epoch_with_the_best_eval_accuracy(run):
  events = event_accumulator.EventAccumulator(str(run / "eval"), size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  per_epoch = [(float(tf.make_ndarray(e.tensor_proto)), e.step) for e in events.Tensors("accuracy")]
  assert [step for _, step in per_epoch] == [12, 24]
  best_accuracy, best_step = max(per_epoch, key=lambda a: (a[0], -a[1]))  # The first of equals.
  assert run_cli(evaluate.main, [f"--run_dir={run}", "--checkpoint=best"])[0] == 0
  results = json.loads((run / "eval_test.json").read_text())
  assert results["checkpoint"] == str(run / "checkpoints" / "best" / f"ckpt-{best_step}")
  assert results["accuracy"] == pytest.approx(best_accuracy, abs=1e-7)


@pytest.mark.e2e
@pytest.mark.parametrize("argv, message", [
    (["--run_dir=/nonexistent/run"], "error: --run_dir=/nonexistent/run does not exist"),
    (["--checkpoint=latest"], "error: --run_dir is required"),
    (["--run_dir={run}", "--checkpoint={run}/checkpoints/ckpt-999"], "error: --checkpoint={run}/checkpoints/"
     "ckpt-999 is not a checkpoint (no {run}/checkpoints/ckpt-999.index); give latest, best, or a path"),
    (["--run_dir={run}", "--split=validation"], "error: bad split 'validation' for cnn_tiny_images"),
])
def test_evaluate_bad_input_is_one_line(run, argv, message):
  code, stderr = run_cli(evaluate.main, [a.format(run=run) for a in argv])
  assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
  assert stderr.startswith(message.format(run=run)), stderr


@pytest.mark.e2e
@pytest.mark.parametrize("other_flags, message", [
    (["--conv_filters=4"], "is of another model: simple_cnn/conv1/bias is (4,) there, (8,) here; "
     "simple_cnn/conv1/kernel is (3, 3, 3, 4) there, (3, 3, 3, 8) here; check the run's flags"),
    (["--conv_filters=8,8", "--pool_size=2,0"], "it has variables this model lacks "
     "(simple_cnn/conv2/bias, simple_cnn/conv2/kernel)"),
    (["--dense_units=16,16"], "it has variables this model lacks (simple_cnn/dense2/bias, "
     "simple_cnn/dense2/kernel)"),
])
def test_a_checkpoint_of_another_model_is_refused_in_one_line(run, tiny_data_dir, tmp_path, other_flags,
                                                               message):
  other = tiny_run(tiny_data_dir, tmp_path / "other", "--train_steps=1", *other_flags)
  for command, extra in [(evaluate.main, []), (export.main, [f"--export_dir={tmp_path / 'export'}"])]:
    code, stderr = run_cli(command, [f"--run_dir={run}", f"--checkpoint={other}/checkpoints/ckpt-1", *extra])
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"error: checkpoint {other}/checkpoints/ckpt-1 ") and message in stderr, stderr
  assert not (tmp_path / "export").exists()


@pytest.mark.e2e
def test_export_reloads_with_plain_tensorflow_and_predicts_as_the_model(run, tmp_path):
  export_dir = tmp_path / "export"
  code, stderr = run_cli(export.main, [f"--run_dir={run}", f"--export_dir={export_dir}"])
  assert code == 0, stderr

  loaded = tf.saved_model.load(str(export_dir))
  serve = loaded.signatures["serving_default"]
  trained = inference.load_trained_model(str(run))
  test = data.load_split(trained.source.builder, "test")
  outputs = serve(images=tf.constant(test.images))
  assert set(outputs) == {"probabilities", "class_ids"}
  expected = tf.nn.softmax(trained.model(data.to_unit_range(test.images), training=False)).numpy()
  np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(outputs["class_ids"].numpy(), expected.argmax(axis=1))
  assert [n.decode() for n in loaded.class_names.numpy()] == list(tiny_tfds.CLASS_NAMES)
  assert (export_dir / "assets" / "class_names.txt").read_text().split() == list(tiny_tfds.CLASS_NAMES)

  # An existing export is replaced only with --overwrite; a directory that is not one never is.
  code, stderr = run_cli(export.main, [f"--run_dir={run}", f"--export_dir={export_dir}"])
  assert code == 2 and f"--export_dir={export_dir} exists; choose another, or pass --overwrite" in stderr
  code, stderr = run_cli(export.main, [f"--run_dir={run}", f"--export_dir={export_dir}", "--overwrite",
                                       "--checkpoint=best"])
  assert code == 0, stderr
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "a.txt").write_text("precious")
  code, stderr = run_cli(export.main, [f"--run_dir={run}", f"--export_dir={tmp_path / 'notes'}", "--overwrite"])
  assert code == 2 and "is not a SavedModel directory; it is not replaced" in stderr
  assert (tmp_path / "notes" / "a.txt").read_text() == "precious"


@pytest.mark.e2e
def test_predict_prints_the_top_classes_of_image_files(run, tmp_path, capsys):
  export_dir = tmp_path / "export"
  assert run_cli(export.main, [f"--run_dir={run}", f"--export_dir={export_dir}"])[0] == 0
  trained = inference.load_trained_model(str(run))
  test = data.load_split(trained.source.builder, "test")
  Image.fromarray(test.images[0]).save(tmp_path / "rgb.png")
  Image.fromarray(test.images[1]).convert("RGBA").save(tmp_path / "rgba.png")
  grey = np.asarray(Image.fromarray(test.images[2]).convert("L"))
  Image.fromarray(grey).save(tmp_path / "grey.png")
  Image.fromarray(test.images[0]).resize((32, 32), Image.NEAREST).save(tmp_path / "big.png")
  paths = [str(tmp_path / n) for n in ("rgb.png", "rgba.png", "grey.png", "big.png")]
  capsys.readouterr()

  code, stderr = run_cli(predict.main, [f"--model={export_dir}", "--top_k=2", *paths], takes_arguments=True)
  assert code == 0, stderr
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 4
  serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
  big = np.asarray(Image.open(tmp_path / "big.png"), np.float32)
  shrunk = tf.cast(tf.round(tf.image.resize(big, (16, 16), antialias=True)), tf.uint8).numpy()
  assert np.abs(shrunk.astype(int) - test.images[0]).mean() < 25  # Near the original (noise blurs).
  assert np.abs(shrunk.astype(int) - test.images[1]).mean() > 35  # Far from another image.
  inputs = np.stack([test.images[0], test.images[1], np.repeat(grey[..., None], 3, axis=-1), shrunk])
  probabilities = serve(images=tf.constant(inputs))["probabilities"].numpy()
  for line, path, p in zip(lines, paths, probabilities):
    top = np.argsort(-p)[:2]
    assert line == f"{path}: " + ", ".join(f"{tiny_tfds.CLASS_NAMES[j]} {p[j]:.4f}" for j in top)

  (tmp_path / "notes.png").write_text("not an image")
  code, stderr = run_cli(predict.main, [f"--model={export_dir}", paths[0], str(tmp_path / "notes.png")],
                         takes_arguments=True)
  # The bad file named, the others classified, exit status 1 (tests/bad_data_test.py has the other cases).
  assert code == 1 and stderr.strip() == f"error: {tmp_path / 'notes.png'} is not a JPEG, PNG, BMP, GIF or WebP " \
                                         "image by its contents"
  code, stderr = run_cli(predict.main, [f"--model={tmp_path}", paths[0]], takes_arguments=True)
  assert code == 2 and f"error: --model={tmp_path} is not an export (no saved_model.pb)" in stderr


@pytest.fixture
def outside_model(monkeypatch):
  """tests/outside_bn_net.py registers a model; `forget()` unimports it, as in a new process."""
  monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))  # pylint: disable=protected-access

  def forget():
    registry._BUILDERS.pop("outside_bn_net", None)  # pylint: disable=protected-access
    sys.modules.pop("outside_bn_net", None)

  forget()
  yield forget
  forget()


def logged_evals(run_dir, prefix="eval"):
  """{step: (accuracy, loss)} of the run's evaluations (`prefix`: eval_ema for the averages), from its event files."""
  events = event_accumulator.EventAccumulator(str(run_dir / prefix), size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  values = {tag: {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
            for tag in ("accuracy", "loss")}
  return {step: (accuracy, values["loss"][step]) for step, accuracy in values["accuracy"].items()}


@pytest.mark.e2e
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_evaluate_and_export_give_the_model_the_run_evaluated(tiny_data_dir, tmp_path, outside_model, precision):
  # EMA (BatchNorm statistics included), a model from --extra_modules, TTA and standardisation.
  run = tiny_run(tiny_data_dir, tmp_path / "run", "--train_steps=24", "--ema_decay=0.8", f"--precision={precision}",
                 "--extra_modules=outside_bn_net", "--model=outside_bn_net", "--tta=flip",
                 "--normalization=standardize", "--learning_rate=0.01")
  logged = logged_evals(run, "eval_ema")  # The averages: what the run reports, and evaluate and export use.
  assert sorted(logged) == [12, 24]
  outside_model()  # cnn.evaluate runs in a new process, which has not imported the module.
  best_step = max(logged, key=lambda s: (logged[s][0], -s))
  for which, step in [("latest", 24), (str(run / "checkpoints" / "ckpt-12"), 12), ("best", best_step)]:
    code, stderr = run_cli(evaluate.main, [f"--run_dir={run}", f"--checkpoint={which}"])
    assert code == 0, stderr
    results = json.loads((run / "eval_test.json").read_text())
    assert (results["accuracy"], results["loss"]) == pytest.approx(logged[step], rel=1e-6, abs=1e-7), which

  export_dir = tmp_path / "export"
  code, stderr = run_cli(export.main, [f"--run_dir={run}", f"--export_dir={export_dir}"])
  assert code == 0, stderr
  trained = inference.load_trained_model(str(run))
  test = data.load_split(trained.source.builder, "test")
  probabilities = tf.saved_model.load(str(export_dir)).signatures["serving_default"](
      images=tf.constant(test.images))["probabilities"].numpy()
  assert (probabilities.argmax(axis=1) == test.labels).mean() == pytest.approx(logged[24][0], abs=1e-7)
  logits = augment.with_tta(trained.model, "flip")(trained.preprocess(test.images), training=False)
  tolerance = 1e-6 if precision == "float32" else 5e-3  # bfloat16 keeps 8 bits: the SavedModel's fusions differ.
  np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), atol=tolerance)


def moved_run(run, tmp_path, old, new):
  """A copy of `run` whose flags.txt says `new` where it said `old` (a run brought from another machine)."""
  copy = tmp_path / "copied_run"
  shutil.copytree(run, copy)
  flags_file = copy / "flags.txt"
  assert old in flags_file.read_text()
  flags_file.write_text(flags_file.read_text().replace(old, new))
  return copy


@pytest.mark.e2e
def test_evaluate_and_export_take_this_machines_data_dir(run, tiny_data_dir, tmp_path):
  copy = moved_run(run, tmp_path, f"--data_dir={tiny_data_dir}", "--data_dir=/elsewhere/tfds")
  code, stderr = run_cli(evaluate.main, [f"--run_dir={copy}"])
  assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
  code, stderr = run_cli(evaluate.main, [f"--run_dir={copy}", f"--data_dir={tiny_data_dir}"])
  assert code == 0, stderr
  final = json.loads((run / "results.json").read_text())
  assert json.loads((copy / "eval_test.json").read_text())["accuracy"] == final["eval_accuracy"]
  code, stderr = run_cli(export.main, [f"--run_dir={copy}", f"--data_dir={tiny_data_dir}",
                                       f"--export_dir={tmp_path / 'export'}"])
  assert code == 0, stderr
  code, stderr = run_cli(evaluate.main, [f"--run_dir={copy}", "--dataset=folder:/data/pets"])
  assert code == 2 and stderr.startswith("error: --dataset=folder:/data/pets: only the location of a folder "
                                         "dataset can be changed"), stderr


@pytest.mark.e2e
def test_evaluate_takes_this_machines_folder_of_images(tmp_path):
  rng = np.random.default_rng(0)
  for split, count in (("train", 8), ("test", 3)):
    for label, name in enumerate(("cat", "dog", "fish")):
      (tmp_path / "pets" / split / name).mkdir(parents=True)
      for i in range(count):
        image = np.full((16, 16, 3), 80 * label, np.uint8) + rng.integers(0, 40, (16, 16, 3), np.uint8)
        Image.fromarray(image).save(tmp_path / "pets" / split / name / f"{i}.png")
  code, stderr = run_cli(train.main, [f"--dataset=folder:{tmp_path / 'pets'}", "--image_size=16", "--conv_filters=8",
                                      "--dense_units=16", "--batch_size=8", "--train_steps=3",
                                      f"--run_dir={tmp_path / 'run'}"])
  assert code == 0, stderr
  (tmp_path / "pets").rename(tmp_path / "moved_pets")
  code, stderr = run_cli(evaluate.main, [f"--run_dir={tmp_path / 'run'}"])
  assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
  code, stderr = run_cli(evaluate.main, [f"--run_dir={tmp_path / 'run'}",
                                         f"--dataset=folder:{tmp_path / 'moved_pets'}"])
  assert code == 0, stderr
  final = json.loads((tmp_path / "run" / "results.json").read_text())
  assert json.loads((tmp_path / "run" / "eval_test.json").read_text())["accuracy"] == final["eval_accuracy"]


@pytest.fixture(scope="module")
def varying_run(tmp_path_factory):
  """A folder run on JPEGs and PNGs of several sizes (none 16×16 but one), random-resized crops, standardised."""
  root = write_folder(tmp_path_factory.mktemp("varying") / "pets")  # train/ and val/.
  code, stderr = run_cli(train.main, [f"--dataset=folder:{root}", "--image_size=16", "--train_crop=random_resized",
                                      "--normalization=standardize", "--tta=flip", "--conv_filters=8",
                                      "--dense_units=16", "--batch_size=4", "--train_steps=6",
                                      f"--run_dir={root.parent / 'run'}"])
  assert code == 0, stderr
  return root, root.parent / "run"


@pytest.mark.e2e
def test_evaluate_gives_the_logged_eval_of_a_folder_of_images_of_varying_size(varying_run):
  _, run_dir = varying_run
  code, stderr = run_cli(evaluate.main, [f"--run_dir={run_dir}"])
  assert code == 0, stderr
  results = json.loads((run_dir / "eval_test.json").read_text())
  final = json.loads((run_dir / "results.json").read_text())
  assert results["num_examples"] == 12  # val/: the centre crops the run evaluated.
  assert (results["accuracy"], results["loss"]) == (final["eval_accuracy"], final["eval_loss"])


@pytest.mark.e2e
def test_evaluate_gives_the_logged_eval_of_a_tfds_dataset_of_varying_size(tmp_path):
  tfds.builder(tiny_tfds.PHOTOS_NAME, data_dir=str(tmp_path / "tfds")).download_and_prepare()
  run_dir = tiny_run(tmp_path / "tfds", tmp_path / "run", f"--dataset={tiny_tfds.PHOTOS_NAME}", "--image_size=8",
                     "--train_crop=random_resized", "--normalization=standardize", "--train_steps=4")
  code, stderr = run_cli(evaluate.main, [f"--run_dir={run_dir}"])
  assert code == 0, stderr
  results = json.loads((run_dir / "eval_test.json").read_text())
  final = json.loads((run_dir / "results.json").read_text())
  assert (results["accuracy"], results["loss"]) == (final["eval_accuracy"], final["eval_loss"])


@pytest.mark.e2e
def test_a_run_whose_splits_stream_is_evaluated_and_exported_as_it_evaluated(tiny_data_dir, tmp_path):
  # Every split streams (budget 0): TTA, standardisation from the streamed train split, EMA.
  run_dir = tiny_run(tiny_data_dir, tmp_path / "run", "--data_memory_budget_mb=0", "--train_steps=12",
                     "--tta=flip_translate", "--normalization=standardize", "--ema_decay=0.8",
                     "--learning_rate=2e-4")
  final = json.loads((run_dir / "results.json").read_text())
  assert 0.4 < final["eval_accuracy"] < 1  # Some misclassified: the run wrote their grid from the streamed split.
  code, stderr = run_cli(evaluate.main, [f"--run_dir={run_dir}"])
  assert code == 0, stderr
  results = json.loads((run_dir / "eval_test.json").read_text())
  assert (results["accuracy"], results["loss"]) == pytest.approx((final["eval_accuracy"], final["eval_loss"]),
                                                                 rel=1e-6)
  code, stderr = run_cli(export.main, [f"--run_dir={run_dir}", f"--export_dir={tmp_path / 'export'}"])
  assert code == 0, stderr
  test = data.load_split(inference.load_trained_model(str(run_dir)).source.builder, "test")
  serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
  class_ids = serve(images=tf.constant(test.images))["class_ids"].numpy()
  assert (class_ids == test.labels).mean() == pytest.approx(final["eval_accuracy"], abs=1e-7)


@pytest.mark.e2e
def test_an_export_of_varying_size_images_takes_any_size_and_sees_what_evaluation_saw(varying_run, tmp_path,
                                                                                       capsys):
  root, run_dir = varying_run
  export_dir = tmp_path / "export"
  code, stderr = run_cli(export.main, [f"--run_dir={run_dir}", f"--export_dir={export_dir}"])
  assert code == 0, stderr
  serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
  assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, None, None, 3]

  # The run's eval path: the val split opened and read as the trainer's evaluations read it.
  trained = inference.load_trained_model(str(run_dir))
  split, = data.open_splits(trained.source, ["val"], trained.config.data_memory_budget_mb, train_first=False)
  images, labels, _ = next(iter(data.eval_dataset(split, 100, mean_std=trained.mean_std)))
  expected = tf.nn.softmax(augment.with_tta(trained.model, "flip")(images, training=False)).numpy()
  files = listing(root, "val")
  np.testing.assert_array_equal(labels.numpy(), files.labels)  # The same examples, in the same order.
  paths = [p.decode() for p in files.paths]
  photos = [predict.read_image(p, (None, None, 3)) for p in paths]
  assert len({tuple(p.shape) for p in photos}) > 3  # Sizes differ, none resized.
  probabilities = np.concatenate([serve(images=photo[None])["probabilities"].numpy() for photo in photos])
  np.testing.assert_allclose(probabilities, expected, atol=1e-5)

  capsys.readouterr()
  chosen = [paths[0], str(root / "val" / "dog" / "p.png")]  # A 20×30 JPEG, a 24×20 PNG.
  code, stderr = run_cli(predict.main, [f"--model={export_dir}", "--top_k=1", *chosen], takes_arguments=True)
  assert code == 0, stderr
  lines = capsys.readouterr().out.strip().splitlines()
  for line, path in zip(lines, chosen, strict=True):
    p = probabilities[paths.index(path)]
    assert line == f"{path}: {trained.info.class_names[p.argmax()]} {p.max():.4f}"
