"""The controller's cadence: where a call of the train loop is cut, and which calls write histograms."""

from cnn import durations
from cnn.config import Config
from cnn.training import controller


def calls(config: Config, total: int, epoch_end: int) -> list[tuple[int, int, bool]]:
  """(first step, steps, histograms) of each call from step 0 to `total` (epochs of `epoch_end` steps)."""
  step, out = 0, []
  while step < total:
    end = min((step // epoch_end + 1) * epoch_end, total)
    num_steps, histograms = controller.next_call(step, end, config, durations.cadence(config, epoch_end, total))
    out.append((step + 1, num_steps, histograms))
    step += num_steps
  return out


def test_calls_end_at_log_checkpoint_and_epoch_steps_and_histogram_steps_run_alone():
  config = Config(steps_per_loop=8, log_every_steps=5, checkpoint_every_steps=7, histogram_every_steps=6,
                  profile_steps=(0, 0))
  got = calls(config, total=20, epoch_end=12)
  last_steps = [first + n - 1 for first, n, _ in got]
  assert {5, 10, 15, 20, 7, 14, 12} <= set(last_steps)  # Log, checkpoint and epoch-end steps end a call.
  assert [(first, n) for first, n, histograms in got if histograms] == [(6, 1), (12, 1), (18, 1)]
  assert all(n <= 8 for _, n, _ in got) and sum(n for _, n, _ in got) == 20


def test_the_profile_window_is_its_own_calls():
  config = Config(steps_per_loop=10, log_every_steps=100, checkpoint_every_steps=0, histogram_every_steps=0,
                  profile_steps=(4, 6))
  assert calls(config, total=20, epoch_end=20) == [(1, 3, False), (4, 3, False), (7, 10, False), (17, 4, False)]
