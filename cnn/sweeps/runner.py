"""Running trials: each an ordinary `python -m cnn.train` process in a free slot, K at a time.

A trial's output goes to its log (appended to on each attempt). SIGTERM or SIGINT to the sweep is
passed on to the running trials, which save a checkpoint and stop; re-running the sweep resumes them.
"""

import dataclasses
import datetime
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

from cnn.errors import Interrupted
from cnn.sweeps import store
from cnn.sweeps.slots import Slot

_POLL_SECONDS = 0.2


def command(sweep_dir: str, trial: store.Trial, python: str = sys.executable) -> list[str]:
  """The trial's command: the sweep's base flags, its swept flags, its run directory."""
  return [python, "-m", "cnn.train", f"--flagfile={os.path.join(sweep_dir, store.BASE_FLAGS_FILE)}",
          *(f"--{name}={value}" for name, value in trial.flags.items()),
          f"--run_dir={store.run_dir(sweep_dir, trial)}"]


@dataclasses.dataclass
class _Running:
  trial: store.Trial
  slot: Slot
  process: subprocess.Popen
  start: float


def run_trials(sweep_dir: str, trials: Sequence[store.Trial], slots: Sequence[Slot],
               echo: Callable[[str], None] = print) -> dict[str, str]:
  """Runs `trials` (none finished yet), as many at once as there are `slots`.

  Returns:
    The failed trials' names → what happened ("exit 2: <its last line>", "killed by SIGKILL").

  Raises:
    Interrupted: after SIGTERM/SIGINT, once the running trials have stopped.
  """
  pending, free, running, failures = list(trials), list(slots), [], {}
  stop: list[int] = []

  def on_signal(signum, frame):  # pylint: disable=unused-argument
    stop.append(signum)
    for r in running:
      r.process.send_signal(signal.SIGTERM)  # Each saves a checkpoint and stops.

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while running or (pending and not stop):
      while pending and free and not stop:
        running.append(_start(sweep_dir, pending.pop(0), free.pop(0), echo))
      time.sleep(_POLL_SECONDS)
      for r in [r for r in running if r.process.poll() is not None]:
        running.remove(r)
        free.append(r.slot)
        failure = _report(sweep_dir, r, echo, stopping=bool(stop))
        if failure:
          failures[r.trial.name] = failure
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if stop:
    raise Interrupted(f"sweep stopped by {signal.Signals(stop[0]).name}; the trials that ran saved checkpoints. "
                      "Resume with the same command", stop[0])
  return failures


def _start(sweep_dir: str, trial: store.Trial, slot: Slot, echo: Callable[[str], None]) -> _Running:
  argv = command(sweep_dir, trial)
  log = store.log_path(sweep_dir, trial)
  resuming = store.started(sweep_dir, trial)
  with open(log, "a") as f:
    f.write(f"=== {datetime.datetime.now():%Y-%m-%d %H:%M:%S} on {slot.describe()}: {shlex.join(argv)}\n")
    f.flush()
    process = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=slot.environment(dict(os.environ)), preexec_fn=slot.pin)
  echo(f"{'resumed' if resuming else 'started'} {trial.name} on {slot.describe()} (pid {process.pid}, log {log})")
  return _Running(trial, slot, process, time.perf_counter())


def _report(sweep_dir: str, r: _Running, echo: Callable[[str], None], stopping: bool) -> Optional[str]:
  """Says how the trial ended; returns what went wrong, or None if it finished or was stopped."""
  seconds = time.perf_counter() - r.start
  results = store.results(sweep_dir, r.trial)
  if r.process.returncode == 0 and results is not None:
    echo(f"finished {r.trial.name} in {seconds:.0f} s: eval_accuracy {results.get('eval_accuracy', float('nan')):.4f}")
    return None
  code = r.process.returncode
  if stopping:  # By the sweep's SIGTERM: with a checkpoint if it had started training.
    echo(f"stopped {r.trial.name} after {seconds:.0f} s; log {store.log_path(sweep_dir, r.trial)}")
    return None
  failure = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
  last = _last_line(store.log_path(sweep_dir, r.trial))
  failure += f": {last}" if last and code > 0 else ""
  echo(f"FAILED {r.trial.name} after {seconds:.0f} s ({failure}); log {store.log_path(sweep_dir, r.trial)}")
  return failure


def _last_line(path: str) -> str:
  with open(path, errors="replace") as f:
    lines = [line.strip() for line in f if line.strip()]
  return lines[-1] if lines else ""
