"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
  """Bad input: a wrong flag, a missing file, a run directory in use.

  The entry points print its message as one line and exit non-zero, without a
  traceback. The message should name the problem and, where there is one, the fix.
  """
