"""What every entry point shares: flag parsing and error reporting in one line, never a traceback."""

import sys
from typing import Callable, Sequence

from absl import app
from absl import flags

from cnn import plugins
from cnn.errors import Interrupted
from cnn.errors import UserError


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: Sequence[str]) -> list[str]:
  try:
    if "extra_modules" in flags.FLAGS:  # Import them first: they register models and augmentations.
      flags.FLAGS(argv, known_only=True)  # Also reads --flagfile, so a flagfile may name them.
      plugins.import_modules(flags.FLAGS.extra_modules)
      flags.FLAGS.unparse_flags()
    return flags.FLAGS(argv)
  except flags.Error as e:  # unknown flag, bad value, missing flagfile, ...
    _fail(str(e).splitlines()[0])
  except UserError as e:
    _fail(str(e))


def define_flag(define: Callable[..., None], name: str, default, help_text: str, **kwargs) -> None:
  """`define(name, default, help_text)` (an absl DEFINE_*) unless a flag of that name exists already.

  The entry points (train, evaluate, export, predict) share names such as --run_dir and
  --overwrite with the same meaning; this lets one process (the tests) import them all. Import
  cnn.train before the others there, since its flags are generated without this check. An entry
  point that needs a flag given checks `flags.FLAGS[name].present`, as defaults may be shared.
  """
  if name not in flags.FLAGS:
    define(name, default, help_text, **kwargs)


def required(name: str) -> str:
  """The value of flag `name`; raises UserError if it was not given on the command line."""
  if not flags.FLAGS[name].present:
    raise UserError(f"--{name} is required")
  return flags.FLAGS[name].value


def run(main: Callable[[Sequence[str]], None], takes_arguments: bool = False) -> None:
  """`absl.app.run(main)` that reports `UserError` and flag errors as one line and exits 2.

  Args:
    main: the entry point's main function; it gets argv.
    takes_arguments: whether positional arguments (after the flags) are allowed.
  """

  def guarded_main(argv: Sequence[str]) -> None:
    if len(argv) > 1 and not takes_arguments:
      _fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    try:
      main(argv)
    except UserError as e:
      _fail(str(e))
    except Interrupted as e:
      print(str(e), file=sys.stderr)
      sys.exit(128 + e.signum)
    except Exception as e:  # pylint: disable=broad-except
      from cnn import stream  # pylint: disable=import-outside-toplevel  # TensorFlow only when needed.
      message = stream.bad_image_message(e)  # A corrupt image met in the input pipeline: one line.
      if not message:
        raise
      _fail(message)

  app.run(guarded_main, flags_parser=_parse_flags)
