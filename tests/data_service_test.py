"""--data_service: the training pipeline through a local tf.data service (dispatcher + one worker)."""

import socket

import numpy as np
import pytest
import tensorflow as tf

from cnn import augment
from cnn import data
from cnn import data_service
from cnn import folder
from cnn import preprocess
from cnn.config import Config
from cnn.errors import UserError
from folder_test import write_folder
import tiny_tfds


@pytest.fixture(scope="module", name="service")
def fixture_service():
  """grpc://127.0.0.1:PORT of an in-process dispatcher with one worker."""
  dispatcher = tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(port=0))
  address = dispatcher.target.split("://")[1]
  worker = tf.data.experimental.service.WorkerServer(
      tf.data.experimental.service.WorkerConfig(dispatcher_address=address, worker_address="127.0.0.1:%port%"))
  yield f"grpc://{address}"
  worker.stop()
  dispatcher.stop()


def batches(dataset, count):
  return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(count)]


def assert_same(a, b):
  assert len(a) == len(b)
  for (images_a, labels_a), (images_b, labels_b) in zip(a, b):
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(labels_a, labels_b)


def test_in_memory_batches_through_the_service_are_bitwise_the_local_ones_also_from_a_resumed_step(
    service, tiny_data_dir):
  split = data.load_split(data.get_builder(tiny_tfds.NAME, data_dir=tiny_data_dir), "train")
  config = Config(augment="flip,crop,mixup", batch_size=8)
  augment_fn = augment.make_augment_fn(config, 10, len(split))
  for start_step in (0, 7):  # 7: a resumed run, mid-epoch.
    local = data.train_dataset(split, 8, seed=3, start_step=start_step, augment_fn=augment_fn)
    served = data_service.distribute(local, service)
    expected = batches(local, 12)
    assert_same(batches(served, 12), expected)
    assert_same(batches(served, 12), expected)  # A second iterator gets its own job, from the start.
  other_seed = batches(data.train_dataset(split, 8, seed=4, augment_fn=augment_fn), 1)
  assert not np.array_equal(other_seed[0][0], expected[0][0])  # The comparison can tell batches apart.


def test_a_streamed_folder_through_the_service_is_bitwise_the_local_one(service, tmp_path):
  root = write_folder(tmp_path / "images")
  split = folder.list_split(str(root), "train", folder.class_names(root))
  local = data.train_dataset(split, 4, seed=1, start_step=3, preprocessing=preprocess.Preprocessing(16))
  assert_same(batches(data_service.distribute(local, service), 6), batches(local, 6))


def test_a_python_reader_and_an_unreachable_or_malformed_address_are_one_line_errors():
  with pytest.raises(UserError, match="tf.py_function"):
    data_service.check_split(data.stream.StreamSplit(np.arange(3), np.zeros(3, np.int32),
                                                     preprocess.Preprocessing(16), lambda key: key))
  with socket.socket() as unused:  # A port nobody listens on.
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
  with pytest.raises(UserError, match="no tf.data service dispatcher answers"):
    data_service.check_reachable(f"grpc://127.0.0.1:{port}", timeout=2)
  for bad in ("grpc://127.0.0.1", "http://127.0.0.1:5000"):
    with pytest.raises(UserError, match="expected grpc://HOST:PORT"):
      data_service.check_reachable(bad)


def test_a_run_through_the_service_ends_in_the_checkpoint_of_a_local_run_and_resumes(
    service, tiny_data_dir, tmp_path):
  from cnn import train  # pylint: disable=import-outside-toplevel
  from checkpoints_test import assert_bitwise_equal, checkpoint_state, tiny_args  # pylint: disable=import-outside-toplevel
  from conftest import run_cli  # pylint: disable=import-outside-toplevel
  local, served = tmp_path / "local", tmp_path / "served"
  assert run_cli(train.main, tiny_args(tiny_data_dir, local, "--train_steps=6", "--augment=flip,crop"))[0] == 0
  args = tiny_args(tiny_data_dir, served, "--augment=flip,crop", f"--data_service={service}")
  assert run_cli(train.main, [*args, "--train_steps=3"])[0] == 0
  assert run_cli(train.main, [*args, "--train_steps=6"])[0] == 0  # Resumed at step 3.
  assert_bitwise_equal(checkpoint_state(tf.train.latest_checkpoint(served / "checkpoints")),
                       checkpoint_state(tf.train.latest_checkpoint(local / "checkpoints")))
  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, tmp_path / "bad", "--train_steps=1",
                                               "--data_service=grpc://127.0.0.1:1"))
  assert code == 2 and stderr.count("\n") == 1 and "no tf.data service dispatcher answers" in stderr, stderr
