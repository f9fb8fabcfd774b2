"""The exception types the entry points report in one line: mistakes a user can fix, and interruptions.

Imports nothing heavy: `cnn.config` (and so `cnn.sweep`) uses it without starting TensorFlow.
"""


class UserError(Exception):
  """Bad input: a wrong flag, a missing file, a run directory in use.

  The entry points print its message as one line and exit non-zero, without a
  traceback. The message should name the problem and, where there is one, the fix.
  """


class Interrupted(Exception):
  """A run stopped on a signal (SIGTERM, SIGINT) after saving a checkpoint.

  The entry points print its message (how to resume) and exit 128 + the signal number, as a
  shell reports a process ended by that signal, so schedulers see that the run did not finish.
  """

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum
