"""Training input through a tf.data service (--data_service): preprocessing on the service's workers.

The per-pipeline training dataset (`data.train_dataset`) is serialised and sent to the dispatcher,
whose workers run it; this process only receives the finished batches. The service runs it with
`ShardingPolicy.OFF` in an anonymous job per iterator, so each worker produces the whole dataset:
with ONE service worker the batches are the dataset's own elements in order (bitwise the same as
without the service, so still a pure function of (seed, step)); with several, the consumer takes
batches from all of them first-come first-served, so a step's batch is no longer determined by the
step (runs stop being reproducible). In-memory splits travel inside the graph (as constants);
streaming folder splits are read by path on the workers, which must see the same files.
"""

import socket
import urllib.parse

import tensorflow as tf

from cnn import stream
from cnn.errors import UserError

_PROBE_TIMEOUT_SECONDS = 10.0


def check_split(split) -> None:
  """Raises UserError for a split whose pipeline the service cannot run (a Python reader)."""
  if isinstance(split, stream.StreamSplit) and split.read is not None:
    raise UserError("--data_service: this streaming split reads its files through Python (tf.py_function), "
                    "which a tf.data service worker cannot run; use a split that fits --data_memory_budget_mb "
                    "or --dataset=folder:PATH")


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


def distribute(dataset: tf.data.Dataset, address: str) -> tf.data.Dataset:
  """`dataset`'s elements, produced by the tf.data service at `address` (see the module docstring).

  No job name: each iterator gets its own job, so a second iteration never joins one midway.
  """
  return dataset.apply(tf.data.experimental.service.distribute(
      processing_mode=tf.data.experimental.service.ShardingPolicy.OFF, service=address))
