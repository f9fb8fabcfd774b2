"""Training input through a tf.data service (--data_service): preprocessing on the service's workers.

The per-pipeline training dataset (`data.train_dataset`) is serialised and sent to the dispatcher,
whose workers run it; this process only receives the finished batches, in the order a local run
would have them, so a run through the service is bitwise a local run (resumed runs too):
  * ONE service worker: `ShardingPolicy.OFF`, an anonymous job per iterator; the worker produces
    the dataset's own elements in order.
  * SEVERAL workers (counted at start-up, `connect`): `ShardingPolicy.HINT`, so that worker w reads
    and decodes only every W-th batch of the stream (`data.train_dataset(service_shards=True)`), and
    coordinated reads (`num_consumers=1`), so that the consumer takes one batch from each worker in
    turn: every W consecutive batches received are stream batches kW … kW+W-1 in some order, which
    each batch's number restores (checked: a wrong group stops the run). HINT needs the dispatcher to
    list its workers (`DispatcherConfig(worker_addresses=[...])`); `connect` says so in one line.
    With OFF, several workers would each produce the whole stream: every batch would arrive W times.
In-memory splits travel inside the graph (as constants); streaming folder splits are read by path, and
streaming TFRecord splits by their record table (cnn/data/tfds_stream.py), on the workers, which must
see the same files. ArrayRecord splits are read through Python and refused.
"""

import socket
import threading
import urllib.parse
import uuid

import tensorflow as tf

from cnn.data import stream
from cnn.errors import UserError

_PROBE_TIMEOUT_SECONDS = 10.0
_WORKERS_TIMEOUT_SECONDS = 60.0
_SERVICE = tf.data.experimental.service


def check_split(split) -> None:
  """Raises UserError for a split whose pipeline the service cannot run (a Python reader: ArrayRecord)."""
  if isinstance(split, stream.StreamSplit) and getattr(split.read, "runs_python", False):
    raise UserError("--data_service: this streaming split is ArrayRecord, read through Python (no TensorFlow op "
                    "reads ArrayRecord), which a tf.data service worker cannot run; prepare the dataset as "
                    "TFRecord, TFDS's default (tfds build NAME --file_format=tfrecord), or use a split that fits "
                    "--data_memory_budget_mb")


def check_reachable(address: str, timeout: float = _PROBE_TIMEOUT_SECONDS) -> None:
  """Raises UserError unless `address` (grpc://HOST:PORT) accepts a connection within `timeout`.

  tf.data service itself retries an unreachable dispatcher for a long time instead of failing.
  """
  parsed = urllib.parse.urlsplit(address if "://" in address else f"grpc://{address}")
  try:
    host, port = parsed.hostname, parsed.port
  except ValueError:
    host = port = None
  if parsed.scheme != "grpc" or not host or not port:
    raise UserError(f"--data_service={address}: expected grpc://HOST:PORT of a tf.data service dispatcher")
  try:
    socket.create_connection((host, port), timeout=timeout).close()
  except OSError as e:
    raise UserError(f"--data_service={address}: no tf.data service dispatcher answers there ({e})") from None


def connect(address: str, timeout: float = _WORKERS_TIMEOUT_SECONDS) -> int:
  """The number of workers of the tf.data service at `address`, checked usable. Raises UserError.

  Counted by a one-element dataset that every worker produces whole (`ShardingPolicy.OFF`); with
  several, a short `ShardingPolicy.HINT` job checks that the dispatcher lists its workers.
  """
  check_reachable(address)
  target = _target(address)
  one = tf.data.Dataset.range(1).apply(_SERVICE.distribute(processing_mode=_SERVICE.ShardingPolicy.OFF,
                                                            service=target))
  workers = len(_within(timeout, lambda: list(one), f"--data_service={address}: no tf.data service worker "
                        f"produced data within {timeout:.0f} s (are workers registered with the dispatcher?)"))
  if workers > 1:
    counter = tf.data.Dataset.counter().shard(tf.data.experimental.SHARD_HINT, tf.data.experimental.SHARD_HINT)
    numbers = _served_in_order(counter.map(lambda n: (n, n)), target, workers)
    try:
      _within(timeout, lambda: list(numbers.take(2 * workers)), f"--data_service={address}: its {workers} "
              f"workers did not answer within {timeout:.0f} s")
    except tf.errors.OpError as e:
      raise UserError(f"--data_service={address}: its {workers} workers cannot split the batches between them "
                      "(the dispatcher must list them: DispatcherConfig(worker_addresses=[...]); "
                      f"{e.message.splitlines()[0][:200]})") from None
  return workers


def distribute(dataset: tf.data.Dataset, address: str, workers: int = 1) -> tf.data.Dataset:
  """`dataset`'s elements, produced by the tf.data service at `address` (see the module docstring).

  Args:
    dataset: `data.train_dataset(...)`; with several `workers`, made with `service_shards=True`.
    address: grpc://HOST:PORT of the dispatcher.
    workers: the service's worker count (`connect`).
  """
  target = _target(address)
  if workers == 1:  # No job name: each iterator gets its own job, never joining one midway.
    return dataset.apply(_SERVICE.distribute(processing_mode=_SERVICE.ShardingPolicy.OFF, service=target))
  return _served_in_order(dataset, target, workers)


def _target(address: str) -> str:
  return address if "://" in address else f"grpc://{address}"


def _served_in_order(dataset: tf.data.Dataset, target: str, workers: int) -> tf.data.Dataset:
  """An endless `dataset` of (..., number) elements, sharded at its `SHARD_HINT` over `workers`, read in
  turn from each; each group of `workers` is put back in order by number, which is dropped."""
  served = dataset.apply(_SERVICE.distribute(  # A fresh job name: a fresh job, read from its start.
      processing_mode=_SERVICE.ShardingPolicy.HINT, service=target, job_name=f"cnn-{uuid.uuid4().hex}",
      consumer_index=0, num_consumers=1))

  def in_order(*group):
    numbers = group[-1]
    order = tf.argsort(numbers, stable=True)
    ordered = tf.gather(numbers, order)
    check = tf.debugging.assert_equal(ordered, ordered[0] + tf.range(workers, dtype=ordered.dtype), message=(
        "tf.data service: a group of batches from the workers is not consecutive"))
    with tf.control_dependencies([check]):
      return tuple(tf.gather(part, order) for part in group[:-1])

  return served.batch(workers).map(in_order).unbatch()


def _within(timeout: float, function, message: str):
  """`function()`, or UserError(message) when it has not returned within `timeout` seconds.

  The call runs in a daemon thread: one stuck in the service must not keep the process from exiting.
  """
  outcome = {}

  def call():
    try:
      outcome["value"] = function()
    except Exception as e:  # pylint: disable=broad-except  # Re-raised in the caller's thread.
      outcome["error"] = e

  thread = threading.Thread(target=call, daemon=True)
  thread.start()
  thread.join(timeout)
  if thread.is_alive():
    raise UserError(message)
  if "error" in outcome:
    raise outcome["error"]
  return outcome["value"]
