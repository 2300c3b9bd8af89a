"""Orbax checkpoints of parameter trees: saved only when they fit the disk,
restored as numpy. jax and orbax are imported where used: the networked
mode's message handlers (a fresh process per message) write JSON without
them."""
import errno
import os
import pathlib
import re
import shutil

import numpy as np

from acme_jax import ownership


def save(path, params):
  """An orbax checkpoint at `path`; a failed save (a full disk) leaves no
  temporary directory behind."""
  import jax
  import orbax.checkpoint as ocp
  path = pathlib.Path(path)
  host = jax.tree.map(np.asarray, params)
  if ownership.is_writer():
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_room(path, sum(a.nbytes for a in jax.tree.leaves(host)))
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(path, host)
      checkpointer.wait_until_finished()
  except BaseException as e:
    if ownership.is_writer():
      for stale in path.parent.glob(f'{path.name}.orbax-checkpoint-tmp*'):
        shutil.rmtree(stale, ignore_errors=True)
    code = re.search(r"os_error_code='(\d+)'", str(e))
    if code:  # tensorstore's own error for a refused write
      raise OSError(int(code.group(1)), os.strerror(int(code.group(1))),
                    str(path)) from e
    raise


def _check_room(path: pathlib.Path, nbytes: int):
  """A save that cannot fit is refused before it starts: orbax's writer
  threads, failing mid-way, print a page of tracebacks."""
  needed = int(nbytes * 1.05) + (1 << 20)  # metadata, a margin
  free = shutil.disk_usage(path.parent).free
  if needed > free:
    raise OSError(errno.ENOSPC,
                  f'No space left on device (the checkpoint needs about '
                  f'{needed / 2**20:,.1f} MiB, {free / 2**20:,.1f} MiB are '
                  f'free)', str(path))


def restore(path, like):
  import jax
  import orbax.checkpoint as ocp
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          jax.tree.map(np.asarray, like))
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(pathlib.Path(path), abstract)
  return jax.tree.map(np.asarray, restored)
