"""Who may write a workdir: one job at a time (`lock`), and within a
multi-host job only process 0 (`is_writer`).

A leaf module (it imports only `errors`): the workdir, the mid-stage
checkpoints and the checkpoint files ask it.
"""
import os
import pathlib
import sys

from acme_jax import errors


def is_writer() -> bool:
  """False in a multi-host run's processes other than 0: they compute what
  process 0 does and write nothing. (Asked of JAX only once it runs
  multi-process: a question before `jax.distributed.initialize` would
  start the backend too early.)"""
  jax = sys.modules.get('jax')
  if jax is None or not jax.distributed.is_initialized():
    return True
  return jax.process_index() == 0


# Workdirs this process holds, path -> the directory's open descriptor. The
# lock is a flock on the directory itself: it writes nothing there, and it
# ends with its process however that ends (a lock whose process is gone is
# free). A second flock from this process would conflict with its own,
# hence the registry.
_HELD = {}


def _holder(path: pathlib.Path) -> str:
  """Who holds a flock on directory `path`, from /proc/locks (Linux; a
  holder on another host of a shared file system is not listed)."""
  try:
    st = os.stat(path)
    with open('/proc/locks') as f:
      entries = [line.split() for line in f]
  except OSError:
    return 'another process'
  inode = f'{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}'
  pids = [e[4] for e in entries
          if len(e) > 5 and e[1] == 'FLOCK' and e[5] == inode]
  for pid in pids:
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        argv = f.read().decode(errors='replace').split('\0')
    except OSError:
      continue
    command = ' '.join(' '.join(argv[1:]).split())[:160]
    return f'process {pid} ({command})'
  return 'another process'


def lock(path, shared: bool = False):
  """Holds `path` for this process's life; a workdir another live job
  holds is a `UserError` naming that job's process. `shared`: a shard of an
  experiment (`--shard`), which runs beside the other shards (each writes
  only its own repeats) but beside no other job."""
  import fcntl
  path = pathlib.Path(path).absolute()
  if path in _HELD:
    return
  fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
  try:
    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) |
                fcntl.LOCK_NB)
  except OSError:
    os.close(fd)
    raise errors.UserError(
        f'--workdir {path} is in use by {_holder(path)}; wait for that job '
        f'to end (or stop it) or give another --workdir') from None
  _HELD[path] = fd


def release(path=None):
  """Lets go of `path` (default: every workdir this process holds)."""
  paths = list(_HELD) if path is None else [pathlib.Path(path).absolute()]
  for p in paths:
    fd = _HELD.pop(p, None)
    if fd is not None:
      os.close(fd)
