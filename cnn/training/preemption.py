"""Preemption: SIGTERM/SIGINT become a stop after the current step, agreed by every worker.

The controller (cnn/training/controller.py) asks `Preemption.requested()` after each call of the train
loop and after each evaluation; when it says yes, `stop` saves a checkpoint and raises
`Interrupted` with the command that resumes the run. A second signal acts at once.
"""

import contextlib
import os
import signal
from typing import Callable, Iterator, Sequence

import tensorflow as tf

from cnn import run_dir as run_dir_lib
from cnn.errors import Interrupted

# Test-only: `CNN_TEST_SIGKILL_AT_STEP=K` makes a training process send itself SIGKILL right after step
# K (and any checkpoint due at K), so that tests kill it at an exact step. A real SIGKILL: nothing runs.
# `CNN_TEST_SIGTERM_AT_STEP=K` likewise sends SIGTERM (to one worker of a multi-worker run, say).
_SIGNAL_ENV = {signal.SIGKILL: "CNN_TEST_SIGKILL_AT_STEP", signal.SIGTERM: "CNN_TEST_SIGTERM_AT_STEP"}


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[list[int]]:
  """Turns SIGTERM/SIGINT into a request the loop honours after its current step.

  Yields a list that receives the signal number. A second signal acts at once (the handlers are
  restored on the first). Outside the main thread (e.g. some notebooks) signals are left alone.
  """
  received: list[int] = []
  previous = {}

  def handler(signum, frame):
    del frame
    received.append(signum)
    for s, h in previous.items():
      signal.signal(s, h)

  try:
    for s in signals:
      previous[s] = signal.signal(s, handler)
  except ValueError:  # Not the main thread.
    pass
  try:
    yield received
  finally:
    for s, h in previous.items():
      signal.signal(s, h)



def any_worker(strategy: tf.distribute.Strategy) -> Callable[[bool], bool]:
  """A function of this process's flag that says whether any worker has it set.

  Under MultiWorkerMirroredStrategy it is a collective (a sum over the workers, about 2 ms on
  loopback): every worker must call it at the same point of the loop, and they all get the same
  answer. With one process it is the flag itself.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return bool

  @tf.function
  def total(flag: tf.Tensor) -> tf.Tensor:
    return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: flag), axis=None)

  return lambda flag: bool(total(tf.constant(int(flag))))


class Preemption:
  """Signals turned into a stop every worker agrees on; use as a context manager around the loop.

  Args:
    strategy: the run's strategy (a signal to one worker stops all of them at the same step).
    run_dir: the run directory, for the resume command.
  """

  def __init__(self, strategy: tf.distribute.Strategy, run_dir: str):
    self.run_dir = run_dir
    self.signals: list[int] = []
    self._any_worker = any_worker(strategy)
    self._signal_at = {int(os.environ[name]): signum for signum, name in _SIGNAL_ENV.items()
                       if os.environ.get(name)}
    self._handlers = None

  def __enter__(self) -> "Preemption":
    self._handlers = stop_on_signals()
    self.signals = self._handlers.__enter__()
    return self

  def __exit__(self, *exc) -> None:
    self._handlers.__exit__(*exc)

  def after_step(self, step: int) -> None:
    """The test-only self-signal hooks (see _SIGNAL_ENV), after the step and any save due at it."""
    if step in self._signal_at:
      os.kill(os.getpid(), self._signal_at[step])

  def steps_to_next_signal(self, step: int) -> list[int]:
    """Steps from `step` to the next test-only self-signal: a loop call ends there, so it fires on time."""
    return [at - step for at in self._signal_at if at > step]

  def requested(self) -> bool:
    """Whether any worker was signalled (a collective under MultiWorkerMirroredStrategy)."""
    return self._any_worker(bool(self.signals))

  def stop(self, save: Callable[[], str], directory: str, step: int) -> None:
    """Saves after `step` (`save()`, on every worker: a collective) and raises Interrupted saying how to resume.

    `directory` is where the chief's copy of the checkpoint is kept.
    """
    path = os.path.join(directory, os.path.basename(save()))  # The chief's copy, which is kept.
    signum = self.signals[0] if self.signals else signal.SIGTERM
    cause = signal.Signals(signum).name if self.signals else "a signal to another worker"
    raise Interrupted(
        f"stopped by {cause} after step {step}; saved {path}. Resume with: "
        f"python -m cnn.train --flagfile={os.path.join(self.run_dir, run_dir_lib.FLAGS_FILE)}", signum)
