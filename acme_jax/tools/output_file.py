"""An output file a tool writes: checked before any work (it can be
written, and writing it destroys no input), then written atomically."""
import io
import os
import tempfile
from typing import Callable

from acme_jax import errors
from acme_jax import workdir as workdir_lib
from acme_jax.errors import UserError


def same_file(a: str, b: str) -> bool:
  """a and b name one file: the same path, a symlink, a relative path, a
  hard link."""
  try:
    return os.path.samefile(a, b)
  except OSError:
    return os.path.realpath(a) == os.path.realpath(b)


def unwritable(folder) -> str:
  """Why a file cannot be created in `folder`, or ''. A probe file, made
  and removed (as `workdir.Workdir`): os.access says yes to root on a
  read-only sysfs or a full disk."""
  try:
    tempfile.NamedTemporaryFile(dir=folder, prefix='.probe.').close()
  except OSError as e:
    return e.strerror or str(e)
  return ''


def check(path: str, reads: dict, kind: str = 'an .npz file'):
  """Before any work: --output can be written where it is asked for, and
  writing it destroys nothing the tool reads (`reads`: flag -> path)."""
  blocked = errors.file_in_the_way(os.path.dirname(os.path.abspath(path)))
  if blocked is not None:
    raise UserError(f'--output={path} is under {blocked}, which is a file; '
                    f'give a path in a directory')
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UserError(f'--output folder {folder} does not exist')
  if os.path.isdir(path):
    raise UserError(f'--output={path} is a directory; give {kind} path')
  if os.path.lexists(path) and not os.path.isfile(path):
    raise UserError(f'--output={path} exists and is not a regular file; '
                    f'give {kind} path')
  problem = unwritable(folder)
  if problem:
    raise UserError(f'--output folder {folder} is not writable ({problem})')
  for name, read in reads.items():
    if read and os.path.exists(path) and same_file(path, read):
      raise UserError(f'--output={path} is the file --{name}={read} names: '
                      f'writing it would overwrite the input; give another '
                      f'path')


def save(path: str, write: Callable):
  """`write(file)` into `path` whole or not at all (`workdir`'s temp file
  beside it, then a rename); a failed write (a full disk) is one line and
  leaves no temp file."""
  buffer = io.BytesIO()
  write(buffer)
  try:
    workdir_lib.atomic_write_bytes(path, buffer.getvalue())
  except OSError as e:
    raise UserError(f'cannot write --output {path}: {e.strerror or e}') \
        from None
