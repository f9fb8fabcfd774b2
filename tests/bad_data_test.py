"""Bad data as a new user's folders have it, through the real entry points (train, evaluate, predict).

Every case ends in one line naming the file (or class folder) and what to do, or in a counted skip
under --skip_bad_images: never a traceback, never a silently wrong count. The folders are written by
the tests: images of varying size in every format TensorFlow decodes (JPEG, PNG, GIF, BMP, WebP).
"""

import io
import json
import os
import struct

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from conftest import run_cli
from cnn import evaluate
from cnn import export
from cnn import predict
from cnn import train  # pylint: disable=unused-import  # Imported first: its flags are defined unchecked.
from cnn.data import bad_images
from cnn.data import folder
from cnn.data import stream

SIZE = 16
FORMATS = ("jpg", "png", "gif", "bmp", "webp")
_PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}
KINDS = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WebP"}  # As messages name them.


def encode(fmt, image):
  """`image` (uint8 [H, W, 3]) encoded as `fmt` (a file suffix of FORMATS)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, _PIL_FORMATS[fmt])
  return buffer.getvalue()


def write_pets(root, classes=("cat", "dog"), per_class=4, splits=("train", "val")):
  """root/<split>/<class>/<i>.<format>: images of varying size, the formats in turn."""
  rng = np.random.default_rng(0)
  for split in splits:
    for label, name in enumerate(classes):
      (root / split / name).mkdir(parents=True, exist_ok=True)
      for i in range(per_class):
        image = rng.integers(0, 128, (16 + 3 * i, 20 + 2 * label, 3), np.uint8)
        fmt = FORMATS[(i + label) % len(FORMATS)]
        (root / split / name / f"{i}.{fmt}").write_bytes(encode(fmt, image))
  return root


def noise(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def cut_short(data):
  """`data` cut short, as a download or copy that stopped."""
  return data[:len(data) * 2 // 3]


def run_train(root, run_dir, *extra):
  return run_cli(train.main, [f"--dataset=folder:{root}", f"--image_size={SIZE}", "--model=simple_cnn",
                              "--batch_size=4", "--train_steps=2", "--log_every_steps=1", "--summary_images=0",
                              "--nowrite_graph", "--histogram_every_steps=0", f"--run_dir={run_dir}", *extra])


def assert_one_line(stderr, *parts):
  """stderr is one `error:` line holding every part (so, no traceback)."""
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
  for part in parts:
    assert str(part) in lines[0], (part, lines[0])


def checked(key, data):
  """`bad_images.check_encoded` run in a tf.data pipeline, as the streaming pipelines run it."""
  return list(tf.data.Dataset.from_tensors(tf.constant(data)).map(lambda d: bad_images.check_encoded(key, d)))


@pytest.mark.e2e
def test_every_format_cut_short_is_described_and_jpeg_png_and_empty_files_are_stopped_in_the_pipeline(tmp_path):
  image = noise(30, 40, seed=1)
  for fmt in FORMATS:
    whole = encode(fmt, image)
    assert checked("ok", whole)
    path = tmp_path / f"photo [1].{fmt}"  # Brackets, as in a browser's second download of a file.
    path.write_bytes(cut_short(whole))
    assert bad_images.describe(path.read_bytes()) == f"is a {KINDS[fmt]} file cut short"
    with pytest.raises(tf.errors.InvalidArgumentError) as error:  # The check, or else the decoder.
      checked(str(path), path.read_bytes())
      tf.io.decode_image(path.read_bytes(), channels=3, expand_animations=False)
    if fmt in ("jpg", "png"):  # A decoder may not fail on these: a crop window, or libpng's leniency.
      message = bad_images.pipeline_error_message(error.value)
      assert message == f"corrupt image {path} is a {KINDS[fmt]} file cut short: {bad_images.SKIP_HINT}"
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    checked("/x/empty.jpg", b"")
  assert bad_images.pipeline_error_message(error.value).startswith("corrupt image /x/empty.jpg is empty or cut short")
  with pytest.raises(tf.errors.InvalidArgumentError) as error:  # A TFDS split's example, by index.
    checked(tf.constant(7, tf.int64), b"")
  assert bad_images.pipeline_error_message(error.value).startswith("example 7 of the dataset is an empty or cut-short")
  assert bad_images.describe(b"") == "is empty (0 bytes)"
  assert bad_images.describe(b"notes") == "is not a JPEG, PNG, BMP, GIF or WebP image by its contents"


@pytest.mark.e2e
@pytest.mark.parametrize("fmt, split, budget", [
    ("jpg", "train", "0"), ("png", "train", "0"), ("gif", "train", "0"), ("bmp", "train", "0"),
    ("webp", "train", "0"), ("png", "train", "-1"), ("bmp", "train", "-1"),
    ("gif", "val", "0"), ("webp", "val", "0"), ("jpg", "val", "-1"), ("gif", "val", "-1"),
])
def test_a_file_cut_short_stops_the_run_naming_it(tmp_path, fmt, split, budget):
  # --data_memory_budget_mb=0: every split streams (a train split fails mid-epoch, an eval split at its
  # first evaluation); -1 (the default): both are decoded into memory when the run starts.
  root = write_pets(tmp_path / "pets")
  path = next((root / split / "dog").glob(f"*.{fmt}"), None) or root / split / "dog" / f"9.{fmt}"
  path.write_bytes(cut_short(path.read_bytes()) if path.exists() else cut_short(encode(fmt, noise(20, 24))))
  code, stderr = run_train(root, tmp_path / "run", f"--data_memory_budget_mb={budget}")
  assert code == 2
  assert_one_line(stderr, f"corrupt image {path} is a {KINDS[fmt]} file cut short", "--skip_bad_images")


def corrupt_inside(path):
  """Garbles `path` past its header, keeping its length and its end: a file whose header lies."""
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  if data.startswith(b"\x89PNG"):  # A flipped byte in the image data: the chunk's checksum no longer holds.
    start = data.index(b"IDAT") + 8
    data[start:start + 4] = bytes(b ^ 0xFF for b in data[start:start + 4])
  else:  # Garbage inside the entropy-coded data (markers the decoder does not know).
    data[middle:middle + 40] = b"\xff\x15" * 20
  path.write_bytes(bytes(data))
  return path


@pytest.mark.e2e
@pytest.mark.parametrize("case, split, budget", [
    ("png_bad_chunk", "train", "0"), ("jpeg_garbage", "train", "0"), ("jpeg_magic_then_text", "val", "-1"),
    ("png_bad_chunk", "val", "0"),
])
def test_a_file_whose_header_lies_stops_the_run_naming_it(tmp_path, case, split, budget):
  # The structural checks pass these; the decoder fails without naming the file, which is then found.
  root = write_pets(tmp_path / "pets", per_class=6)
  if case == "jpeg_magic_then_text":
    path = root / split / "cat" / "notes.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"my notes about this cat " * 10 + b"\xff\xd9")
  else:
    path = corrupt_inside(root / split / "cat" / ("1.png" if case == "png_bad_chunk" else "0.jpg"))
  code, stderr = run_train(root, tmp_path / "run", f"--data_memory_budget_mb={budget}", "--train_steps=3")
  assert code == 2
  assert_one_line(stderr, f"corrupt image {path} is a ", " file that does not decode (corrupt inside) (",
                  "--skip_bad_images")


@pytest.mark.e2e
@pytest.mark.parametrize("case, split, expected", [
    ("empty", "train", "{path} is empty (0 bytes)"),
    ("empty", "val", "{path} is empty (0 bytes)"),
    ("folder", "train", "{path} is a folder named like an image"),
    ("broken_link", "val", "{path} is a broken symbolic link"),
    ("unreadable", "train", "{path} cannot be read (permission denied)"),
])
def test_a_file_that_is_no_image_stops_the_run_when_its_folder_is_listed(tmp_path, case, split, expected):
  root = write_pets(tmp_path / "pets")
  path = root / split / "dog" / "new.jpg"
  if case == "empty":
    path.write_bytes(b"")
  elif case == "folder":
    (path / "inside").mkdir(parents=True)
  elif case == "broken_link":
    path.symlink_to(root / "moved_away.jpg")
  else:
    path.write_bytes(encode("jpg", noise(20, 20)))
    path.chmod(0)
    if os.access(path, os.R_OK):
      pytest.skip("the tests run as root, who reads any file: an unreadable file cannot be provoked")
  for budget in ("0", "-1"):  # Listed the same way streamed or held in memory.
    code, stderr = run_train(root, tmp_path / f"run{budget}", f"--data_memory_budget_mb={budget}")
    assert code == 2
    assert_one_line(stderr, expected.format(path=path), "--skip_bad_images")


@pytest.mark.e2e
def test_skip_bad_images_leaves_out_and_counts_every_kind_of_bad_file(tmp_path, caplog, monkeypatch):
  root = write_pets(tmp_path / "pets", per_class=6)
  bad = [root / "train" / "cat" / "empty.png", root / "train" / "cat" / "folder.jpg", root / "val" / "dog" / "1.gif",
         corrupt_inside(root / "train" / "dog" / "0.png"), corrupt_inside(root / "val" / "cat" / "0.jpg")]
  bad[0].write_bytes(b"")
  (bad[1] / "x").mkdir(parents=True)
  bad[2].write_bytes(cut_short(bad[2].read_bytes()))
  listed = []
  real_list_split = folder.list_split
  monkeypatch.setattr(folder, "list_split", lambda *args, **kwargs: listed.append(real_list_split(*args, **kwargs))
                      or listed[-1])
  with caplog.at_level("WARNING"):
    code, stderr = run_train(root, tmp_path / "run", "--skip_bad_images", "--data_memory_budget_mb=0",
                             "--train_steps=2")
  assert code == 0, stderr[-3000:]
  assert "left out 3 of 14 files of" in caplog.text and "left out 2 of 12 files of" in caplog.text
  assert all(str(path) in caplog.text for path in bad)  # Up to three of each split are named.
  assert [len(split) for split in listed] == [11, 10]  # What the run trained and evaluated on.
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["steps"] == 2


def test_webp_is_read_and_what_a_folder_holds_besides_images_is_counted(tmp_path, caplog):
  root = write_pets(tmp_path / "pets")
  (root / "train" / "cat" / "notes.txt").write_text("not an image")
  (root / "train" / "cat" / "scan.tif").write_bytes(b"II*\0")
  (root / "train" / "cat" / "._0.jpg").write_bytes(b"\0\5\26\7 macOS resource fork")  # AppleDouble, not a JPEG.
  (root / "train" / ".ipynb_checkpoints").mkdir()  # Not a class.
  (root / "train" / "stray.jpg").write_bytes(encode("jpg", noise(20, 20)))  # Outside the class folders.
  with caplog.at_level("WARNING"):
    split = folder.list_split(str(root), "train", folder.class_names(root))
  assert folder.class_names(root) == ("cat", "dog") and len(split) == 8
  assert sum(p.endswith(b".webp") for p in split.paths) == 1  # Left out before.
  assert "left out 3 files that are not images by name or are hidden (.tif: 1, .txt: 1, hidden: 1) and 1 file " \
         "outside the class folders" in caplog.text


@pytest.mark.parametrize("case, expected", [
    ("empty_train_class", "class folder {root}/train/bird has no images: add its images, or remove the folder"),
    ("extra_eval_class", "class folder {root}/val/bird is not a class of the training split {root}/train"),
    ("case_twins", "class folders {root}/train/Cat and {root}/train/cat differ only in case"),
    ("case_in_eval", "class folder {root}/val/Dog is not a class of the training split {root}/train (the model has "
                     "no output for it, so its images cannot be scored); {root}/train/dog differs only in case"),
    ("no_class_folders", "{root}/train has no class folders: put each class's images in {root}/train/<class>/"),
])
def test_class_folders_that_disagree_are_refused_in_one_line(tmp_path, case, expected):
  root = write_pets(tmp_path / "pets")
  if case == "empty_train_class":
    (root / "train" / "bird").mkdir()
  elif case == "extra_eval_class":  # Training lacks it: accepted silently before, scoring only the others.
    write_pets(root, classes=("bird",), splits=("val",))
  elif case == "case_twins":
    write_pets(root, classes=("Cat",), splits=("train",))
  elif case == "case_in_eval":
    (root / "val" / "dog").rename(root / "val" / "Dog")
  else:
    for path in (root / "train").rglob("*.*"):
      path.rename(root / "train" / f"{path.parent.name}_{path.name}")
    for name in ("cat", "dog"):
      (root / "train" / name).rmdir()
  code, stderr = run_train(root, tmp_path / "run")
  assert code == 2
  assert_one_line(stderr, expected.format(root=root))


@pytest.mark.e2e
def test_a_class_missing_from_the_eval_split_is_said_and_scored_over_the_others(tmp_path, caplog):
  root = write_pets(tmp_path / "pets", classes=("cat", "dog", "owl"))
  for path in (root / "val" / "owl").iterdir():
    path.unlink()
  (root / "val" / "empty_extra").mkdir()  # An empty folder holds nothing to score: no matter.
  with caplog.at_level("WARNING"):
    code, stderr = run_train(root, tmp_path / "run")
  assert code == 0, stderr[-3000:]
  assert f"{root / 'val'} has no images of 1 classes (owl): its accuracy is over the other classes" in caplog.text
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert round(results["eval_accuracy"] * 8, 4) % 1 == 0  # Of the 8 images of cat and dog.


@pytest.mark.e2e
def test_a_file_deleted_during_a_streaming_run_is_named(tmp_path, monkeypatch):
  # Deleted after the first step, it is read again in a later epoch. Not a counted skip even under
  # --skip_bad_images: a batch short of an example would break the rule that step k of a seed always
  # sees the same examples (exact resume), so the run stops, naming the file, and a new run lists anew.
  from cnn.training import trainer  # pylint: disable=import-outside-toplevel
  # 16 examples: 4 steps an epoch, 10 epochs. The pipeline reads ahead (prefetch): with 3 epochs it had
  # once read every later copy of the file before the deletion, and the run ended well (CI, under load).
  root = write_pets(tmp_path / "pets", per_class=8)
  gone = root / "train" / "dog" / "3.webp"
  real_train = trainer.Trainer.train

  def train_then_delete(self, num_steps, *args, **kwargs):
    outputs = real_train(self, num_steps, *args, **kwargs)
    if gone.exists():
      gone.unlink()
    return outputs

  monkeypatch.setattr(trainer.Trainer, "train", train_then_delete)
  for extra in ((), ("--skip_bad_images",)):
    gone.write_bytes(encode("webp", noise(20, 20)))
    code, stderr = run_train(root, tmp_path / f"run{len(extra)}", "--data_memory_budget_mb=0", "--train_steps=40",
                             "--steps_per_loop=1", *extra)
    assert code == 2
    assert_one_line(stderr, f"image file {gone} is gone: deleted or moved after the run listed its folder")


@pytest.mark.e2e
def test_evaluate_names_a_bad_eval_file_or_leaves_it_out_counted(tmp_path, caplog, capsys):
  root = write_pets(tmp_path / "pets")
  run = tmp_path / "run"
  assert run_train(root, run)[0] == 0  # The eval split held in memory, and cached decoded.
  path = corrupt_inside(root / "val" / "dog" / "0.png")
  code, stderr = run_cli(evaluate.main, [f"--run_dir={run}"])
  assert code == 2
  assert_one_line(stderr, f"corrupt image {path} is a ", " file that does not decode (corrupt inside) (",
                  "--skip_bad_images")
  capsys.readouterr()
  with caplog.at_level("WARNING"):
    code, stderr = run_cli(evaluate.main, [f"--run_dir={run}", "--skip_bad_images"])
  assert code == 0, stderr[-3000:]
  assert f"left out 1 of 8 files of {root / 'val'} that do not decode, e.g. {path}" in caplog.text
  assert capsys.readouterr().out.startswith("test: 7 examples, ")
  # Not served from the decoded split cached by the skipping run: the bad file is met again.
  code, stderr = run_cli(evaluate.main, [f"--run_dir={run}", "--split=val"])
  assert code == 2 and f"corrupt image {path}" in stderr


@pytest.mark.e2e
def test_predict_names_each_bad_file_and_classifies_the_others(tmp_path, capsys):
  root = write_pets(tmp_path / "pets")
  run, export_dir = tmp_path / "run", tmp_path / "export"
  assert run_train(root, run)[0] == 0
  assert run_cli(export.main, [f"--run_dir={run}", f"--export_dir={export_dir}"])[0] == 0
  good = [root / "val" / "cat" / f"{i}.{fmt}" for i, fmt in enumerate(FORMATS[:4])] + [root / "val" / "dog" / "3.webp"]
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(cut_short((root / "val" / "dog" / "0.png").read_bytes()))
  (tmp_path / "notes.jpg").write_text("not an image")
  (tmp_path / "folder.png").mkdir()
  (tmp_path / "empty.jpg").write_bytes(b"")
  bad = {tmp_path / "missing.jpg": "does not exist", truncated: "is a PNG file cut short",
         tmp_path / "notes.jpg": "is not a JPEG, PNG, BMP, GIF or WebP image by its contents",
         tmp_path / "folder.png": "is a folder, not an image file", tmp_path / "empty.jpg": "is empty (0 bytes)"}
  paths = [str(p) for pair in zip(good, bad) for p in pair]
  capsys.readouterr()
  code, stderr = run_cli(predict.main, [f"--model={export_dir}", "--top_k=1", *paths], takes_arguments=True)
  assert code == 1  # Some files were bad (each named); the others were classified.
  assert stderr.strip().splitlines() == [f"error: {path} {reason}" for path, reason in bad.items()]
  lines = capsys.readouterr().out.strip().splitlines()
  assert [line.split(": ")[0] for line in lines] == [str(p) for p in good]
  assert all(line.split(": ")[1].split()[0] in ("cat", "dog") for line in lines)
