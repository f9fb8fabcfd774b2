"""`--extra_modules`: researchers' own modules, imported so that they can register models and augmentations.

A module registers things when imported (`@cnn.models.register("my_net")`,
`@cnn.augment.register("my_aug")`). It reads its settings from existing `Config` fields; a setting of
its own becomes a new `Config` field (and so a flag). Flags are generated from `Config`, so a module
cannot add flags.
"""

import importlib
import sys

from cnn.errors import UserError


def import_modules(names: str) -> None:
  """Imports each module of the comma-separated `names`. Raises UserError naming one that fails."""
  if "" not in sys.path:  # `python -m` puts the current directory first; a notebook or pytest may not.
    sys.path.insert(0, "")
  for name in filter(None, (n.strip() for n in names.split(","))):
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except  # Any error in a user's module is reported.
      detail = str(e).splitlines()[0] if str(e) else ""
      raise UserError(f"--extra_modules: cannot import {name}: {type(e).__name__}"
                      f"{': ' + detail if detail else ''}") from None
