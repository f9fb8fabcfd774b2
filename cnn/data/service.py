"""Training input through a tf.data service (--data_service): preprocessing on the service's workers.

The per-pipeline training dataset (`data.train_dataset`) is serialised and sent to the dispatcher,
whose workers run it; this process only receives the finished batches, in the order a local run
would have them, so a run through the service is bitwise a local run (resumed runs too):
  * ONE service worker: `ShardingPolicy.OFF`, an anonymous job per iterator; the worker produces
    the dataset's own elements in order.
  * SEVERAL workers (counted at start-up, `connect`): `ShardingPolicy.HINT`, so that worker w reads
    and decodes only every W-th batch of the stream (`data.train_dataset(service_shards=True)`), and
    coordinated reads (`num_consumers=1`), so that the consumer asks each worker in turn. A worker
    whose batch is not ready within 100 ms skips its turn (TF's RoundRobinTaskRunner), which an
    input-bound run meets often: each worker's batches arrive in order, the workers' interleaved
    anyhow, and each batch's number puts them back in order (`_in_order`; a late batch's successors
    wait, up to `_SLOTS_PER_WORKER` × W of them; turns slow how far a worker falls behind, where
    first-come-first-served reads would let the others run ahead without limit). Not bounded: a worker
    systematically slower than the others (or, over a long input-bound run, the drift between equal
    ones) falls further behind with each turn it skips, and past the slots the run stops (a service
    gives no way to hold the others back; fewer, equal workers or one keep it away). HINT needs the
    dispatcher to list its workers (`DispatcherConfig(worker_addresses=[...])`); `connect` says so in
    one line. With OFF, several workers would each produce the whole stream: every batch W times.
In-memory splits travel inside the graph (as constants); streaming folder splits are read by path, and
streaming TFRecord splits by their record table (cnn/data/tfds_stream.py), on the workers, which must
see the same files. ArrayRecord splits are read through Python and refused.
"""

import re
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
_FELL_BEHIND = "cnn-service-fell-behind"  # Marks the error of a worker past the slots; the capacity follows.
_SLOTS_PER_WORKER = 16  # Batches that may wait per worker while an earlier one is late (memory only when used).


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
  """An endless `dataset` of (..., number) elements, sharded at its `SHARD_HINT` over `workers` (each
  worker's elements arrive in order, the workers' interleaved anyhow), put back in order by number."""
  served = dataset.apply(_SERVICE.distribute(  # A fresh job name: a fresh job, read from its start.
      processing_mode=_SERVICE.ShardingPolicy.HINT, service=target, job_name=f"cnn-{uuid.uuid4().hex}",
      consumer_index=0, num_consumers=1))
  return _in_order(served, _SLOTS_PER_WORKER * workers)


def _in_order(served: tf.data.Dataset, capacity: int) -> tf.data.Dataset:
  """(..., number) elements numbered 0, 1, ... in any order as (...) in order of number (the number
  dropped). An element that arrives before its turn waits in one of `capacity` slots: a worker that falls
  further behind the others stops the run. Slots are passed on by reference, never copied."""
  blank = tuple(tf.zeros(spec.shape, spec.dtype) for spec in served.element_spec[:-1])
  initial = (tf.constant(0, tf.int64), tf.fill([capacity], tf.constant(-1, tf.int64)), (blank,) * capacity)

  def arrive(state, element):
    expected, numbers, slots = state
    *parts, number = element
    free = numbers < 0
    check = tf.debugging.Assert(tf.reduce_any(free), [_FELL_BEHIND, capacity])
    with tf.control_dependencies([check]):
      slot = tf.argmax(tf.cast(free, tf.int32), output_type=tf.int32)
    numbers = tf.tensor_scatter_nd_update(numbers, [[slot]], [number])
    slots = tuple(tf.cond(tf.equal(slot, i), lambda: tuple(parts), lambda held=held: held)
                  for i, held in enumerate(slots))
    matches = tf.equal(expected + tf.range(capacity, dtype=tf.int64)[:, None], numbers[None, :])
    ready = tf.reduce_sum(tf.math.cumprod(tf.cast(tf.reduce_any(matches, axis=1), tf.int64)))
    order = tf.argmax(tf.cast(matches, tf.int32), axis=1, output_type=tf.int32)  # Slot of each number.
    numbers = tf.where(tf.reduce_any(matches[:ready], axis=0), tf.constant(-1, tf.int64), numbers)
    return (expected + ready, numbers, slots), (ready, order, slots)

  def release(ready, order, slots):
    return tf.data.Dataset.range(ready).map(
        lambda j: tf.switch_case(order[j], [lambda held=held: held for held in slots]))

  return served.scan(initial, arrive).flat_map(release)


def error_message(error: Exception) -> str:
  """The one-line message of the error `_in_order` raises when a worker falls too far behind, else ''."""
  found = re.search(_FELL_BEHIND + r"\D*(\d+)", str(error))
  if not found:
    return ""
  return (f"--data_service: a service worker fell more than {found.group(1)} batches behind the others, so "
          "the batches cannot be put back in order; run the same command again to resume from the last "
          "checkpoint, with workers of equal speed, fewer of them, or one")


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
