"""The run directory: atomic files, orbax checkpoints, and stage caching.

Only the pipeline touches the workdir. Each stage's output lands in one place
and is written atomically (temp file + rename; orbax renames its temporary
directory on commit), so an interrupted run never leaves a half-written file,
and a rerun loads what is done instead of redoing it.
"""
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp


def _json_default(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'not JSON serialisable: {type(value)}')


def atomic_write_bytes(path, data: bytes):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path, text: str):
  atomic_write_bytes(path, text.encode())


def atomic_write_json(path, value):
  atomic_write_text(path, json.dumps(value, indent=2, default=_json_default)
                    + '\n')


def atomic_save_figure(path, figure):
  """Save a matplotlib figure as PNG atomically."""
  import io
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=120, bbox_inches='tight')
  atomic_write_bytes(path, buffer.getvalue())


def read_json(path):
  with open(path) as f:
    return json.load(f)


class Workdir:
  """Stage outputs under one directory, computed once."""

  def __init__(self, path):
    self.path = pathlib.Path(path).absolute()
    self.path.mkdir(parents=True, exist_ok=True)

  def __truediv__(self, name) -> pathlib.Path:
    return self.path / name

  def cached_json(self, name: str, compute: Callable[[], Any]):
    """Load `name` if a previous run wrote it, else compute and write it."""
    path = self / name
    if path.exists():
      return read_json(path)
    value = compute()
    atomic_write_json(path, value)
    return read_json(path)

  def has_checkpoint(self, name: str) -> bool:
    """True when a committed checkpoint `name` exists."""
    return (self / name / '_CHECKPOINT_METADATA').exists()

  def cached_params(self, name: str, compute: Callable[[], Any], like):
    """Restore the checkpoint `name` (a pytree shaped like `like`), or compute and save it.

    Orbax commits a checkpoint by writing `_CHECKPOINT_METADATA` and renaming
    its temporary directory; anything else at the path is a leftover from an
    interrupted write and is replaced.
    """
    path = self / name
    if (path / '_CHECKPOINT_METADATA').exists():
      return restore(path, like)
    if path.exists():
      shutil.rmtree(path)
    params = compute()
    save(path, params)
    return params


def save(path, params):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, jax.tree.map(np.asarray, params))
    checkpointer.wait_until_finished()


def restore(path, like):
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          jax.tree.map(np.asarray, like))
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(pathlib.Path(path), abstract)
  return jax.tree.map(np.asarray, restored)
