"""Streaming back-end: folders of images read per example, ImageNet preprocessing, exact resume, shares."""

import json

import numpy as np
import pytest
import tensorflow as tf

from cnn import data
from cnn.config import Config
from cnn.data import folder
from cnn.data import preprocess
from cnn.data import stream
from cnn.errors import UserError

SIZE = 16


def write_folder(root, sizes=((20, 30), (32, 24), (16, 16), (40, 40)), classes=("cat", "dog")):
  """root/{train,val}/<class>/ with JPEGs of `sizes`, one grayscale JPEG and one PNG per class."""
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    for name in classes:
      (root / split / name).mkdir(parents=True)
      for i, (h, w) in enumerate(sizes):
        (root / split / name / f"{i}.jpg").write_bytes(
            tf.io.encode_jpeg(rng.integers(0, 256, (h, w, 3), np.uint8)).numpy())
      (root / split / name / "gray.JPEG").write_bytes(
          tf.io.encode_jpeg(rng.integers(0, 256, (18, 22, 1), np.uint8)).numpy())
      (root / split / name / "p.png").write_bytes(tf.io.encode_png(rng.integers(0, 256, (24, 20, 3), np.uint8)).numpy())
  return root


def listing(root, split="train"):
  return folder.list_split(str(root), split, folder.class_names(root))


def test_random_resized_crops_stay_within_the_scale_and_ratio_ranges():
  shape = tf.constant([200, 300, 3])
  areas, ratios = [], []
  for i in range(300):
    _, _, h, w = (int(v) for v in preprocess.random_window(shape, tf.constant([7, i], tf.int64), (0.08, 1.0),
                                                            (3 / 4, 4 / 3)))
    areas.append(h * w / (200 * 300))
    ratios.append(w / h)
  areas, ratios = np.array(areas), np.array(ratios)
  whole = areas == 1.0  # The fallback after 10 misses.
  assert whole.mean() < 0.2
  assert areas[~whole].min() >= 0.08 - 0.01 and 3 / 4 - 0.05 <= ratios[~whole].min()
  assert ratios[~whole].max() <= 4 / 3 + 0.05
  assert areas.min() < 0.2 and areas.max() > 0.8  # Spread over the range, not stuck.
  again = preprocess.random_window(shape, tf.constant([7, 0], tf.int64), (0.08, 1.0), (3 / 4, 4 / 3))
  assert [int(v) for v in again] == [int(v) for v in preprocess.random_window(
      shape, tf.constant([7, 0], tf.int64), (0.08, 1.0), (3 / 4, 4 / 3))]


def test_eval_centre_crop_geometry():
  assert [int(v) for v in preprocess.center_window(tf.constant([100, 200, 3]), 0.875)] == [6, 56, 88, 88]
  image = np.zeros((100, 200, 3), np.uint8)
  image[6:94, 56:144] = 200  # Exactly the centre window.
  view = preprocess.eval_image(image, 32, 0.875).numpy()
  assert view.shape == (32, 32, 3) and view.dtype == np.float32
  np.testing.assert_allclose(view, 200 / 255, atol=1e-6)  # Nothing from outside the window.
  gray = preprocess.eval_image(image[:, :, :1], 32, 0.875)
  assert gray.shape == (32, 32, 3)


def test_eval_whole_image_view_is_fastais_squash_then_centre_crop():
  # fastai's validation view at 128 px: the whole image resized to 152 × 152, then its centre 128 × 128.
  fraction = 128 / 152
  assert [int(v) for v in preprocess.center_window(tf.constant([300, 400, 3]), fraction, "whole_image")] == [
      23, 31, 253, 337]
  rows, cols = np.meshgrid(np.linspace(0, 1, 300), np.linspace(0, 1, 400), indexing="ij")
  image = np.stack([rows * 255, cols * 255, (rows + cols) * 127], -1).round().astype(np.uint8)  # Smooth ramps.
  view = preprocess.eval_image(image, 128, fraction, "whole_image").numpy()
  squashed = tf.image.resize(tf.constant(image, tf.float32), (152, 152)).numpy()[12:140, 12:140] / 255
  np.testing.assert_allclose(view, squashed, atol=3 / 255)
  kept_aspect = preprocess.eval_image(image, 128, fraction).numpy()  # The default view differs: it keeps the aspect.
  assert np.abs(kept_aspect - squashed).max() > 20 / 255


@pytest.mark.e2e
def test_streaming_batches_have_the_shapes_and_grayscale_and_png_become_rgb(tmp_path):
  split = listing(write_folder(tmp_path / "pets"))
  assert len(split) == 12 and list(np.bincount(split.labels)) == [6, 6]
  settings = preprocess.Preprocessing(SIZE)
  images, labels = next(iter(data.train_dataset(split, 4, seed=0, preprocessing=settings)))
  assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == tf.float32 and labels.shape == (4,)
  batches = list(data.eval_dataset(listing(tmp_path / "pets", "val"), 5, preprocessing=settings))
  assert [b[0].shape[0] for b in batches] == [5, 5, 2]


@pytest.mark.parametrize("eval_resize", ["shorter_side", "whole_image"])
def test_streaming_eval_is_eval_image_of_the_decoded_file(tmp_path, eval_resize):
  # What an exported model computes on a decoded photo is what evaluation fed the model.
  split = listing(write_folder(tmp_path / "pets"), "val")
  settings = preprocess.Preprocessing(SIZE, crop_fraction=0.875, eval_resize=eval_resize)
  streamed = np.concatenate([b[0] for b in data.eval_dataset(split, 5, preprocessing=settings)])
  for path, view in zip(split.paths, streamed):
    decoded = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    np.testing.assert_allclose(view, preprocess.eval_image(decoded, SIZE, 0.875, eval_resize), atol=1e-6,
                               err_msg=path)


def test_streaming_equals_in_memory_when_the_crop_is_the_whole_image(tmp_path):
  root = tmp_path / "squares"
  rng = np.random.default_rng(1)
  (root / "train" / "a").mkdir(parents=True)
  pixels = rng.integers(0, 256, (10, SIZE, SIZE, 3), np.uint8)
  for i, image in enumerate(pixels):
    (root / "train" / "a" / f"{i:02d}.png").write_bytes(tf.io.encode_png(image).numpy())
  streaming = listing(root)
  in_memory = data.Split(pixels, streaming.labels)
  whole = preprocess.Preprocessing(SIZE, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  a = [b for _, b in zip(range(6), data.train_dataset(streaming, 4, 3, preprocessing=whole))]
  b = [b for _, b in zip(range(6), data.train_dataset(in_memory, 4, 3))]
  for (a_images, a_labels), (b_images, b_labels) in zip(a, b):
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)


@pytest.mark.e2e
def test_streaming_resume_rebuilds_the_same_batches(tmp_path):
  split = listing(write_folder(tmp_path / "pets"))
  settings = preprocess.Preprocessing(SIZE)

  def pipeline(start_step=0):
    return data.train_dataset(split, 4, seed=2, start_step=start_step, preprocessing=settings)

  first = [b for _, b in zip(range(8), pipeline())]
  assert not np.array_equal(first[0][0], first[3][0])  # Epoch 1 crops anew.
  resumed = iter(pipeline(start_step=5))  # 3 batches an epoch: mid-epoch 1.
  for expected_images, expected_labels in first[5:]:
    images, labels = next(resumed)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def test_two_input_pipelines_read_disjoint_shares_covering_every_example_each_epoch():
  split = folder.FileSplit(np.array(["unused"] * 24), np.arange(24, dtype=np.int32))
  fake = data.Split(np.zeros((24, 2, 2, 3), np.uint8), split.labels)  # Labels name the examples.
  for epoch in range(2):
    seen = []
    for pipeline in range(2):
      context = tf.distribute.InputContext(2, pipeline, 2)
      batches = data.train_dataset(fake, 8, seed=0, input_context=context, start_step=3 * epoch)
      seen.append(np.concatenate([labels for _, labels in batches.take(3)]))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(np.concatenate(seen)) == list(range(24))


@pytest.mark.parametrize("case, message", [
    ("missing_split", "split 'test' not found in {root} (splits there: train, val)"),
    ("no_images", "no images"),
    ("corrupt", "{root}/train/cat/broken.jpg is not a JPEG, PNG, BMP, GIF or WebP image by its contents"),
])
def test_bad_folders_are_one_line_errors_naming_what_is_wrong(tmp_path, case, message):
  root = write_folder(tmp_path / "pets")
  split = "test" if case == "missing_split" else "train"
  if case == "no_images":
    for path in (root / "train").rglob("*.*"):
      path.unlink()
  if case == "corrupt":
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"not an image")
  with pytest.raises(UserError) as error:
    folder.list_split(str(root), split, ("cat", "dog"))
  assert message.format(root=root) in str(error.value) and len(str(error.value).splitlines()) == 1


def _many_files(root, per_class=30, classes=("a", "b", "c")):
  """root/{train,val}/<class>/NN.jpg: tiny JPEGs, enough of them for slices to mean something."""
  tiny = tf.io.encode_jpeg(np.zeros((4, 4, 3), np.uint8)).numpy()
  for split in ("train", "val"):
    for name in classes:
      (root / split / name).mkdir(parents=True)
      for i in range(per_class):
        (root / split / name / f"{i:02d}.jpg").write_bytes(tiny)
  return root


def test_a_sliced_folder_split_is_a_stable_class_balanced_selection_and_slices_partition_it(tmp_path):
  root = _many_files(tmp_path / "pets")
  whole = listing(root, "train")
  head, tail = listing(root, "train[:80%]"), listing(root, "train[80%:]")
  assert len(head) == 72 and len(tail) == 18
  # Together the two slices are the split, each file once; each keeps the sorted order.
  np.testing.assert_array_equal(np.sort(np.concatenate([head.paths, tail.paths])), np.sort(whole.paths))
  assert list(head.paths) == sorted(head.paths) and list(tail.paths) == sorted(tail.paths)
  # Not the first 80% of the class-by-class order: every class is in the held-out slice.
  assert set(tail.labels) == {0, 1, 2} and min(np.bincount(tail.labels)) >= 2
  # The labels follow their files.
  by_path = dict(zip(whole.paths, whole.labels))
  assert all(by_path[p] == l for p, l in zip(tail.paths, tail.labels))
  # A file added later joins one side; no other file moves across the boundary.
  (root / "train" / "a" / "new.jpg").write_bytes((root / "train" / "a" / "00.jpg").read_bytes())
  moved = set(listing(root, "train[80%:]").paths) ^ set(tail.paths)
  assert moved <= {bytes(root / "train" / "a" / "new.jpg")} | set(head.paths) and len(moved) <= 2
  both = listing(root, "train[:10]+val[-5:]")
  assert len(both) == 15 and sum(b"/val/" in p for p in both.paths) == 5


@pytest.mark.parametrize("spec, message", [
    ("train[:150%]", "split 'train[:150%]': "),
    ("train[:x]", "split 'train[:x]': "),
    ("valid[:10%]", "split 'valid' not found in {root} (splits there: train, val)"),
])
def test_a_bad_split_selection_is_one_line(tmp_path, spec, message):
  root = _many_files(tmp_path / "pets", per_class=2)
  with pytest.raises(UserError) as error:
    listing(root, spec)
  assert message.format(root=root) in str(error.value) and len(str(error.value).splitlines()) == 1


@pytest.mark.e2e
def test_a_run_holds_out_a_slice_of_a_folder_split(tmp_path):
  root = _many_files(tmp_path / "pets", per_class=10)
  code, stderr = _train(root, tmp_path / "run", "--train_split=train[:80%]", "--eval_split=train[80%:]")
  assert code == 0, stderr
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["epochs"] == 3 / 6  # 3 steps of an epoch of 24 examples in batches of 4.
  assert results["eval_split"] == "train[80%:]" and round(results["eval_accuracy"] * 6, 4) % 1 == 0  # Of 6.


def _train(root, run_dir, *extra):
  from cnn import train  # pylint: disable=import-outside-toplevel
  from conftest import run_cli  # pylint: disable=import-outside-toplevel
  return run_cli(train.main, [f"--dataset=folder:{root}", f"--image_size={SIZE}", "--model=resnet20",
                              "--batch_size=4", "--train_steps=3", "--log_every_steps=1", "--summary_images=0",
                              "--nowrite_graph", f"--run_dir={run_dir}", *extra])


@pytest.mark.e2e
def test_a_run_streams_a_fastai_layout_folder_with_random_resized_crops_flips_and_standardisation(tmp_path):
  root = write_folder(tmp_path / "pets")  # train/ and val/: the default --eval_split=test evaluates val/.
  code, stderr = _train(root, tmp_path / "run", "--train_crop=random_resized", "--augment=flip",
                        "--normalization=standardize", "--data_memory_budget_mb=0", "--crop_scale=0.25,1")
  assert code == 0, stderr
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["steps"] == 3 and 0.0 <= results["eval_accuracy"] <= 1.0


def test_the_memory_budget_chooses_the_back_end_and_both_feed_the_same_batches(tmp_path):
  root = write_folder(tmp_path / "pets")
  source = data.open_dataset(Config(dataset=f"folder:{root}", image_size=SIZE, eval_split="val"))
  streamed = data.open_splits(source, ["train", "val"], budget_mb=0)
  held = data.open_splits(source, ["train", "val"], budget_mb=1)  # 1 MB: both fit.
  assert all(isinstance(s, stream.StreamSplit) for s in streamed) and all(isinstance(s, data.Split) for s in held)
  for a, b in zip(data.eval_dataset(held[1], 5), data.eval_dataset(streamed[1], 5)):
    np.testing.assert_array_equal(a[0], b[0])
  a, b = (list(data.train_dataset(split[0], 4, seed=1).take(4)) for split in (held, streamed))
  for (a_images, a_labels), (b_images, b_labels) in zip(a, b):
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)


def test_a_split_over_the_budget_left_streams_and_the_log_says_so(tmp_path, caplog, monkeypatch):
  root = write_folder(tmp_path / "pets")
  source = data.open_dataset(Config(dataset=f"folder:{root}", image_size=SIZE))
  monkeypatch.setattr(data.splits, "memory_budget_bytes", lambda mb: 12 * SIZE * SIZE * 3)  # The train split only.
  with caplog.at_level("INFO"):
    train_split, val_split = data.open_splits(source, ["train", "test"], budget_mb=-1)
  assert isinstance(train_split, data.Split) and isinstance(val_split, stream.StreamSplit)
  assert "streaming it from disk" in caplog.text and "evaluating on val/" in caplog.text


def test_streaming_channel_stats_match_the_in_memory_ones(tmp_path):
  root = write_folder(tmp_path / "pets")
  source = data.open_dataset(Config(dataset=f"folder:{root}", image_size=SIZE))
  (streamed,), (held,) = data.open_splits(source, ["train"], 0), data.open_splits(source, ["train"], 1)
  for a, b in zip(data.channel_stats(streamed), data.channel_stats(held)):
    np.testing.assert_array_equal(a, b)  # Bit for bit: the budget does not change a run.
  np.testing.assert_array_equal(data.head_images(streamed, 5), held.images[:5])


def _truncate_a_jpeg(root):
  path = root / "train" / "dog" / "1.jpg"
  path.write_bytes(path.read_bytes()[:-40])  # The header is intact; the body and end marker are cut.
  return path


@pytest.mark.e2e
def test_a_truncated_jpeg_fails_the_run_with_one_line_naming_the_file(tmp_path):
  root = write_folder(tmp_path / "pets")
  path = _truncate_a_jpeg(root)
  code, stderr = _train(root, tmp_path / "run", "--data_memory_budget_mb=0")
  assert code == 2 and f"error: corrupt image {path}" in stderr and "--skip_bad_images" in stderr, stderr[-3000:]
  assert len(stderr.strip().splitlines()) == 1, stderr[-3000:]


@pytest.mark.e2e
def test_skip_bad_images_leaves_out_and_counts_what_does_not_decode(tmp_path, caplog):
  root = write_folder(tmp_path / "pets")
  path = _truncate_a_jpeg(root)
  (root / "train" / "cat" / "text.jpg").write_bytes(b"not an image at all")
  with caplog.at_level("WARNING"):
    split = folder.list_split(str(root), "train", ("cat", "dog"), decodable=stream.decodable)
  assert len(split) == 11 and str(path).encode() not in set(split.paths)
  assert "left out 2 of 13 files" in caplog.text and str(path) in caplog.text
  code, stderr = _train(root, tmp_path / "run", "--data_memory_budget_mb=0", "--skip_bad_images")
  assert code == 0, stderr[-3000:]


def test_a_folder_listing_is_cached_until_a_file_is_added_or_removed(tmp_path, monkeypatch):
  root = write_folder(tmp_path / "pets")
  cache = tmp_path / "cache"
  first = folder.list_split(str(root), "train", ("cat", "dog"), cache)
  listed = []
  monkeypatch.setattr(folder, "_list", lambda *args: listed.append(args) or real_list(*args))
  again = folder.list_split(str(root), "train", ("cat", "dog"), cache)
  assert not listed  # Served from the cache, the same listing.
  np.testing.assert_array_equal(again.paths, first.paths)
  np.testing.assert_array_equal(again.labels, first.labels)
  (root / "train" / "dog" / "0.jpg").unlink()
  assert len(folder.list_split(str(root), "train", ("cat", "dog"), cache)) == 11 and listed


real_list = folder._list  # pylint: disable=protected-access
