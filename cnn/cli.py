"""What every entry point shares: flag parsing and error reporting in one line, never a traceback."""

import inspect
import signal
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags

from cnn import flags as config_flags
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
    caller = inspect.currentframe().f_back.f_globals["__name__"]
    # The entry point's own flags: what --help lists first (absl names the main module by its path).
    define(name, default, help_text, module_name=sys.argv[0] if caller == "__main__" else caller, **kwargs)


def define_data_location_flags() -> None:
  """--data_dir and --dataset for the commands that use a trained run (evaluate, export).

  Given, they say where the run's data is on this machine; absent, the run's flags.txt does.
  """
  define_flag(flags.DEFINE_string, "data_dir", "", "The TFDS data directory on this machine, if not the run's.")
  define_flag(flags.DEFINE_string, "dataset", "", "For a run on --dataset=folder:PATH, the folder on this "
              "machine: folder:OTHER_PATH.")


def data_location() -> tuple[str, str]:
  """(--data_dir, --dataset) as given on the command line; empty where not given (the run's then)."""
  return tuple(flags.FLAGS[name].value if flags.FLAGS[name].present else "" for name in ("data_dir", "dataset"))


def required(name: str) -> str:
  """The value of flag `name`; raises UserError if it was not given on the command line."""
  if not flags.FLAGS[name].present:
    raise UserError(f"--{name} is required")
  return flags.FLAGS[name].value


class _GroupedHelp:
  """--help: the entry point's docstring and own flags, then the `Config` flags by section.

  absl's --help lists only the main module's flags, and the Config flags are defined elsewhere.
  """

  def parse(self, argument: str) -> None:
    if self._parse(argument):
      app.usage(shorthelp=True, writeto_stdout=True)
      print(config_flags.config_help())
      print("\nTry --helpfull to also list the flags of absl and TensorFlow.")
      sys.exit(0)


class _HelpFlag(_GroupedHelp, app.HelpFlag):
  pass


class _HelpshortFlag(_GroupedHelp, app.HelpshortFlag):
  pass


def _define_help_flags() -> None:
  """absl's help flags, with --help and --helpshort replaced by `_GroupedHelp`."""
  app.define_help_flags()
  for flag in (_HelpFlag(), _HelpshortFlag()):
    for name in filter(None, (flag.name, flag.short_name)):
      if name in flags.FLAGS:  # Not after flagsaver restored flags from before the first run (tests).
        delattr(flags.FLAGS, name)
    flags.DEFINE_flag(flag)


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
    except KeyboardInterrupt:  # Ctrl-C before the training loop handles it (set-up), or a second one.
      print("stopped by SIGINT (Ctrl-C); nothing was saved at this point", file=sys.stderr)
      sys.exit(128 + signal.SIGINT)
    except Exception as e:  # pylint: disable=broad-except
      # pylint: disable-next=import-outside-toplevel  # TensorFlow only when needed.
      from cnn.data import bad_images, service
      # A corrupt or vanished image met in the input pipeline; a tf.data service worker far behind.
      message = bad_images.pipeline_error_message(e) or service.error_message(e)
      if not message:
        raise
      _fail(message)

  _define_help_flags()
  app.run(guarded_main, flags_parser=_parse_flags)
