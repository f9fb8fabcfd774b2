"""tf.distribute strategies by name, and what a run needs to know about its place in a cluster.

The trainer is written once for `tf.distribute`: the default strategy (one device) is just the
case with one replica, so single-device and multi-device runs take the same code path.
"""

import functools
import json
import os
import subprocess
import sys
import tempfile
from typing import Optional

import tensorflow as tf

from cnn.config import Config
from cnn.errors import UserError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def split_cpu(num_devices: int) -> None:
  """Splits the host CPU into `num_devices` logical devices (for `mirrored` without GPUs).

  Must run before TensorFlow initialises its runtime (before any op); a process that already
  has the same split is left as it is.
  """
  if num_devices <= 1:
    return
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError:  # The runtime is up: fine only if the split is already what was asked.
    if len(tf.config.list_logical_devices("CPU")) != num_devices:
      raise UserError(f"--cpu_devices={num_devices} must be applied before TensorFlow starts; this process "
                      f"already runs with {len(tf.config.list_logical_devices('CPU'))}") from None


def _cluster_resolver(config: Config) -> tf.distribute.cluster_resolver.ClusterResolver:
  if config.cluster == "slurm":
    if "SLURM_PROCID" not in os.environ:
      raise UserError("--cluster=slurm runs inside a Slurm job step (srun python -m cnn.train ... in an "
                      "allocation); SLURM_PROCID is not set here")
    try:
      return tf.distribute.cluster_resolver.SlurmClusterResolver()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:  # Missing variables, scontrol, nvidia-smi.
      raise UserError(f"--cluster=slurm cannot read the Slurm job: {str(e).splitlines()[0]}") from None
  if "TF_CONFIG" not in os.environ:
    raise UserError("--strategy=multi_worker_mirrored needs the TF_CONFIG environment variable (see "
                    "WORKSPACE.md, 'Several hosts'), or --cluster=slurm inside a Slurm job")
  try:
    json.loads(os.environ["TF_CONFIG"])
  except json.JSONDecodeError as e:
    raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
  return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def make_strategy(config: Config) -> tf.distribute.Strategy:
  """The `tf.distribute.Strategy` that `config.strategy` names. Raises UserError."""
  split_cpu(config.cpu_devices)
  name = config.strategy
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    return _mirrored(tuple(d.name for d in gpus or tf.config.list_logical_devices("CPU")))
  if name == "multi_worker_mirrored":
    resolver = _cluster_resolver(config)
    # A peer that never starts blocks the constructor or the first collective forever.
    with StartupWatchdog(config.startup_timeout_seconds):
      strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
      strategy.reduce("SUM", strategy.run(lambda: tf.constant(1)), axis=None)  # Barrier: all are up.
    return strategy
  if name == "tpu":
    if not config.tpu:
      raise UserError("--strategy=tpu needs --tpu=ADDRESS (a TPU name, grpc://host:port, or 'local')")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise UserError(f"unknown --strategy={name}; choose one of: {', '.join(STRATEGIES)}")


@functools.lru_cache(maxsize=None)
def _mirrored(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
  # One per process and device set: a second MirroredStrategy hands out the same collective
  # instance keys as the first, and their collectives then clash (TF 2.21, measured with two runs
  # in one process, as a notebook or the tests make).
  return tf.distribute.MirroredStrategy(list(devices))


def per_replica_batch_size(strategy: tf.distribute.Strategy, global_batch_size: int, flag: str) -> int:
  """`global_batch_size` split evenly across the replicas. Raises UserError if it does not divide."""
  replicas = strategy.num_replicas_in_sync
  if global_batch_size % replicas:
    raise UserError(f"--{flag}={global_batch_size} is the global batch; it must divide evenly across "
                    f"{replicas} replicas")
  return global_batch_size // replicas


def worker_dir(strategy: tf.distribute.Strategy, run_dir: str) -> str:
  """Where this process writes: the run dir on the chief, a fresh temporary directory elsewhere.

  Every worker must take part in saving checkpoints (the save is a collective), but only the
  chief's copy is kept; the others write to a temporary directory that the caller deletes.
  """
  if strategy.extended.should_checkpoint:  # The chief (worker 0 when there is no chief task).
    return run_dir
  return tempfile.mkdtemp(prefix=f"cnn-worker{strategy.cluster_resolver.task_id}-")


# Runs in a child process: it needs no GIL from the parent, which a blocked collective holds.
_WATCHDOG = """
import os, select, signal, sys
parent, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], timeout)  # Readable (EOF) once the parent is done.
if not ready:
  sys.stderr.write(message + "\\n")
  sys.stderr.flush()
  os.kill(parent, signal.SIGKILL)  # The strategy swallows SIGTERM.
"""


class StartupWatchdog:
  """Ends this process with a one-line error if the `with` block has not finished in time.

  A MultiWorkerMirroredStrategy whose peer never starts blocks forever inside TensorFlow's C++
  runtime while holding the GIL, and it swallows SIGTERM; so the watchdog is a small child
  process that SIGKILLs this one. Leaving the block (or this process dying) closes the pipe
  the child waits on, and it exits quietly.
  """

  def __init__(self, timeout_seconds: float):
    self._timeout_seconds = timeout_seconds
    self._process: Optional[subprocess.Popen] = None

  def __enter__(self) -> "StartupWatchdog":
    message = (f"error: the cluster did not come up within --startup_timeout_seconds="
               f"{self._timeout_seconds:g} (a worker never started or cannot be reached); start every "
               "worker, or check the addresses in TF_CONFIG")
    self._process = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self._timeout_seconds), message],
        stdin=subprocess.PIPE)
    return self

  def __exit__(self, *exc) -> None:
    self._process.stdin.close()
    self._process.wait()
