"""--data_service: the training pipeline through local tf.data services (one worker; two or three, listed)."""

import socket

import numpy as np
import pytest
import tensorflow as tf

from cnn import augment
from cnn import data
from cnn.config import Config
from cnn.data import folder
from cnn.data import preprocess
from cnn.data import service as data_service
from cnn.errors import UserError
from folder_test import write_folder
import tiny_tfds
from tiny_tfds import sharded


# Jobs whose readers are gone end within a second, not the default minutes: stopping a worker waits for
# its jobs (the module's teardown took 117 s in CI).
_QUICK_JOB_GC = dict(job_gc_check_interval_ms=200, job_gc_timeout_ms=500)


@pytest.fixture(scope="module", name="service")
def fixture_service():
  """grpc://127.0.0.1:PORT of an in-process dispatcher with one worker."""
  dispatcher = tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(
      port=0, **_QUICK_JOB_GC))
  address = dispatcher.target.split("://")[1]
  worker = tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
      dispatcher_address=address, worker_address="127.0.0.1:%port%", heartbeat_interval_ms=200))
  yield f"grpc://{address}"
  worker.stop()
  dispatcher.stop()


def _free_port():
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _service(workers, listed):
  """An in-process dispatcher and `workers` workers; `listed`: the dispatcher knows their addresses."""
  ports = [_free_port() for _ in range(workers)]
  addresses = [f"127.0.0.1:{port}" for port in ports]
  dispatcher = tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(
      port=0, worker_addresses=addresses if listed else None, **_QUICK_JOB_GC))
  target = dispatcher.target.split("://")[1]
  servers = [tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
      dispatcher_address=target, worker_address=address, port=port, heartbeat_interval_ms=200))
      for address, port in zip(addresses, ports)]
  return f"grpc://{target}", [dispatcher, *servers]


@pytest.fixture(scope="module", name="three_workers")
def fixture_three_workers():
  """grpc://127.0.0.1:PORT of an in-process dispatcher that lists its three workers."""
  address, servers = _service(3, listed=True)
  yield address
  for server in reversed(servers):
    server.stop()


def batches(dataset, count):
  return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(count)]


def assert_same(a, b):
  assert len(a) == len(b)
  for (images_a, labels_a), (images_b, labels_b) in zip(a, b):
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(labels_a, labels_b)


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_a_streamed_folder_through_the_service_is_bitwise_the_local_one(service, tmp_path):
  root = write_folder(tmp_path / "images")
  split = folder.list_split(str(root), "train", folder.class_names(root))
  local = data.train_dataset(split, 4, seed=1, start_step=3, preprocessing=preprocess.Preprocessing(16))
  assert_same(batches(data_service.distribute(local, service), 6), batches(local, 6))


def test_an_unreachable_or_malformed_address_is_a_one_line_error():
  # A Python reader (an ArrayRecord split streamed) is refused too: tests/multishard_test.py.
  with socket.socket() as unused:  # A port nobody listens on.
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
  with pytest.raises(UserError, match="no tf.data service dispatcher answers"):
    data_service.check_reachable(f"grpc://127.0.0.1:{port}", timeout=2)
  for bad in ("grpc://127.0.0.1", "http://127.0.0.1:5000"):
    with pytest.raises(UserError, match="expected grpc://HOST:PORT"):
      data_service.check_reachable(bad)


@pytest.mark.e2e
def test_a_run_through_the_service_ends_in_the_checkpoint_of_a_local_run_and_resumes(
    service, three_workers, tiny_data_dir, tmp_path):
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
  three = tmp_path / "three"
  args = tiny_args(tiny_data_dir, three, "--augment=flip,crop", f"--data_service={three_workers}", "--train_steps=6")
  assert run_cli(train.main, args)[0] == 0
  assert_bitwise_equal(checkpoint_state(tf.train.latest_checkpoint(three / "checkpoints")),
                       checkpoint_state(tf.train.latest_checkpoint(local / "checkpoints")))
  code, stderr = run_cli(train.main, tiny_args(tiny_data_dir, tmp_path / "bad", "--train_steps=1",
                                               "--data_service=grpc://127.0.0.1:1"))
  assert code == 2 and stderr.count("\n") == 1 and "no tf.data service dispatcher answers" in stderr, stderr


@pytest.mark.e2e
def test_a_multi_shard_tfds_split_streamed_through_two_workers_trains_to_the_local_weights(tmp_path):
  # Before: a streamed TFDS split was read through tf.py_function and refused.
  from cnn import train  # pylint: disable=import-outside-toplevel
  from checkpoints_test import TINY, assert_bitwise_equal, checkpoint_state  # pylint: disable=import-outside-toplevel
  from conftest import run_cli  # pylint: disable=import-outside-toplevel
  sharded.prepare(sharded.IMAGES_NAME, str(tmp_path / "tfds"))
  source = data.open_dataset(Config(dataset=sharded.IMAGES_NAME, data_dir=str(tmp_path / "tfds"), download=False))
  (split,) = data.open_splits(source, ["train"], budget_mb=0)
  assert isinstance(split, data.stream.StreamSplit)
  address, servers = _service(2, listed=True)
  try:
    assert data_service.connect(address) == 2
    local = data.train_dataset(split, 8, seed=2, start_step=20)  # 22 steps an epoch: crosses into epoch 2.
    served = batches(data_service.distribute(data.train_dataset(split, 8, seed=2, start_step=20,
                                                                service_shards=True), address, 2), 4)
    assert_same(served, batches(local, 4))
    for images, labels in served:
      np.testing.assert_array_equal(labels, sharded.label_of(sharded.number_of(images)))
    args = [f"--dataset={sharded.IMAGES_NAME}", f"--data_dir={tmp_path / 'tfds'}", "--nodownload", *TINY,
            "--data_memory_budget_mb=0", "--augment=flip,crop"]
    assert run_cli(train.main, [*args, f"--run_dir={tmp_path / 'local'}", "--train_steps=6"])[0] == 0
    served_args = [*args, f"--run_dir={tmp_path / 'served'}", f"--data_service={address}"]
    assert run_cli(train.main, [*served_args, "--train_steps=3"])[0] == 0
    code, stderr = run_cli(train.main, [*served_args, "--train_steps=6"])  # Resumed at step 3.
    assert code == 0, stderr
  finally:
    for server in reversed(servers):
      server.stop()
  assert_bitwise_equal(checkpoint_state(tf.train.latest_checkpoint(tmp_path / "served" / "checkpoints")),
                       checkpoint_state(tf.train.latest_checkpoint(tmp_path / "local" / "checkpoints")))


@pytest.mark.e2e
def test_the_service_is_counted_and_several_workers_serve_each_batch_once_in_the_local_order(
    service, three_workers, tiny_data_dir):
  assert data_service.connect(service) == 1 and data_service.connect(three_workers) == 3
  split = data.load_split(data.get_builder(tiny_tfds.NAME, data_dir=tiny_data_dir), "train")
  augment_fn = augment.make_augment_fn(Config(augment="flip,crop,mixup", batch_size=8), 10, len(split))
  for start_step in (0, 7):  # 7: a resumed run, mid-epoch.
    local = data.train_dataset(split, 8, seed=3, start_step=start_step, augment_fn=augment_fn)
    sharded = data.train_dataset(split, 8, seed=3, start_step=start_step, augment_fn=augment_fn,
                                 service_shards=True)
    # Before this change each of the three workers produced the whole stream: every batch came 3 times.
    assert_same(batches(data_service.distribute(sharded, three_workers, 3), 13), batches(local, 13))


@pytest.mark.e2e
def test_two_replicas_of_a_streamed_folder_from_three_workers_are_the_local_batches(three_workers, tmp_path):
  root = write_folder(tmp_path / "images")
  split = folder.list_split(str(root), "train", folder.class_names(root))
  context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
  made = lambda **kw: data.train_dataset(split, 4, seed=1, input_context=context, start_step=3,
                                         preprocessing=preprocess.Preprocessing(16), **kw)
  served = data_service.distribute(made(service_shards=True), three_workers, 3)
  assert_same(batches(served, 8), batches(made(), 8))


@pytest.mark.e2e
def test_several_workers_the_dispatcher_does_not_list_are_one_line(tmp_path):
  address, servers = _service(2, listed=False)
  try:
    with pytest.raises(UserError) as error:
      data_service.connect(address, timeout=30)
    message = str(error.value)
    assert "its 2 workers cannot split the batches" in message and "worker_addresses" in message
    assert len(message.splitlines()) == 1
  finally:
    for server in reversed(servers):
      server.stop()


@pytest.mark.e2e
def test_a_dispatcher_without_workers_is_one_line_and_the_process_exits(tmp_path):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  dispatcher = tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(port=0))
  try:
    script = ("import sys; from cnn.data import service; from cnn.errors import UserError\n"
              "try:\n  service.connect(sys.argv[1], timeout=3)\n"
              "except UserError as e:\n  print(e); sys.exit(2)\n")
    done = subprocess.run([sys.executable, "-c", script, dispatcher.target], capture_output=True, text=True,
                          timeout=120, check=False)  # A thread left waiting on the service must not hang the exit.
    assert done.returncode == 2, done.stderr
    assert "no tf.data service worker produced data within 3 s" in done.stdout
  finally:
    dispatcher.stop()


def test_a_worker_past_the_slots_stops_with_one_line_naming_the_limit():
  # Batches 1, 2, 3 arrive before 0: with 2 slots the third cannot wait (a worker far behind).
  served = tf.data.Dataset.from_tensor_slices((np.arange(4) * 10, np.array([1, 2, 3, 0], np.int64)))
  assert not list(data_service._in_order(served.take(3), 3))  # Waiting, nothing released.
  assert [int(x) for (x,) in data_service._in_order(served, 4)] == [30, 0, 10, 20]  # By number.
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    list(data_service._in_order(served, 2))
  message = data_service.error_message(error.value)
  assert message.startswith("--data_service: a service worker fell more than 2 batches behind")
  assert "\n" not in message and data_service.error_message(ValueError("other")) == ""
