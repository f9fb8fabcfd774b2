"""System errors of a run (out of memory, disk full, permission denied) reported as one-line UserErrors."""

import contextlib
import errno
from typing import Iterator

import tensorflow as tf

from cnn.errors import UserError

_DISK_FULL = "no space left on device"
_NO_SPACE_HINT = "free some space, or choose another --run_dir; the checkpoints saved before are intact"
_NOT_WRITABLE_HINT = "choose a --run_dir this user can write to"


@contextlib.contextmanager
def as_user_errors(memory_hint: str) -> Iterator[None]:
  """Turns out-of-memory, disk-full and permission errors into a one-line UserError.

  Args:
    memory_hint: the settings that decide the memory a run needs, named in the out-of-memory error
      (e.g. "--batch_size=512, --image_size=224").
  """
  try:
    yield
  except tf.errors.ResourceExhaustedError as e:
    message = _first_line(e.message)
    if _DISK_FULL in message.lower():
      raise UserError(f"disk full: {message}; {_NO_SPACE_HINT}") from None
    raise UserError(f"out of memory with {memory_hint}: {message[:200]}; try a smaller batch or image "
                    "size, or --precision=mixed_bfloat16 / mixed_float16") from None
  except tf.errors.PermissionDeniedError as e:
    raise UserError(f"permission denied: {_first_line(e.message)}; {_NOT_WRITABLE_HINT}") from None
  except OSError as e:
    where = f": {e.filename}" if e.filename else ""
    hint = {errno.ENOSPC: _NO_SPACE_HINT, errno.EACCES: _NOT_WRITABLE_HINT, errno.EPERM: _NOT_WRITABLE_HINT,
            errno.EROFS: _NOT_WRITABLE_HINT}.get(e.errno)
    raise UserError(f"{e.strerror or e}{where}" + (f"; {hint}" if hint else "")) from None


def _first_line(text: str) -> str:
  return text.strip().splitlines()[0] if text.strip() else "(no message)"
