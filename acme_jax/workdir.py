"""The run directory: atomic files, verified orbax checkpoints, stage caches.

Each stage's output lands in one place and is written atomically (temp file
+ rename; orbax renames its temporary directory on commit), so an
interrupted run never leaves a half-written file, and a rerun loads what is
done instead of redoing it.

Every committed checkpoint and cached JSON gets a sha256 sidecar
(`<name>.sha256`), checked on load. A file that fails the check (a flipped
bit, a truncation, a deletion, an empty or unreadable JSON) is derived data:
it is moved aside to `<name>.corrupt` (nothing is deleted), one warning line
names it, and the stage is computed again, so the run ends with the results
a clean run gives. Leftover `*.orbax-checkpoint-tmp*` directories from an
interrupted save are removed when a run starts.
"""
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Callable

import numpy as np

from acme_jax import errors

HASH_SUFFIX = '.sha256'
CORRUPT_SUFFIX = '.corrupt'


def _json_default(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'not JSON serialisable: {type(value)}')


def _umask() -> int:
  try:  # Linux: read it without changing it
    for line in open('/proc/self/status'):
      if line.startswith('Umask:'):
        return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def atomic_write_bytes(path, data: bytes):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
  try:
    # mkstemp makes 0600 files; outputs get the user's usual mode.
    os.fchmod(fd, 0o666 & ~_umask())
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
  """Parse a JSON file; an unreadable one is one clear error naming it."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{path} is not valid JSON ({e.msg} at line '
                           f'{e.lineno}); delete it to recompute it') from e


def warn(message: str):
  print(f'warning: {message}', file=sys.stderr)


# ------------------------------------------------------------ hashing


def file_hashes(path: pathlib.Path) -> dict:
  """sha256 of a file, or of every file under a directory (relative names)."""
  path = pathlib.Path(path)
  files = ([path] if path.is_file() else
           sorted(p for p in path.rglob('*') if p.is_file()))
  out = {}
  for f in files:
    digest = hashlib.sha256()
    with open(f, 'rb') as handle:
      for chunk in iter(lambda: handle.read(1 << 20), b''):
        digest.update(chunk)
    out[str(f.relative_to(path)) if f != path else path.name] = (
        digest.hexdigest())
  return out


def _sidecar(path: pathlib.Path) -> pathlib.Path:
  return path.with_name(path.name + HASH_SUFFIX)


def seal(path):
  """Record the content hash of a committed file or checkpoint directory."""
  path = pathlib.Path(path)
  atomic_write_json(_sidecar(path), file_hashes(path))


def problem(path) -> str:
  """'' when `path` matches its recorded hash, else what is wrong with it."""
  path = pathlib.Path(path)
  sidecar = _sidecar(path)
  if not path.exists():
    return 'missing'
  if not sidecar.exists():
    return 'has no recorded hash'
  try:
    expected = json.loads(sidecar.read_text())
  except (OSError, json.JSONDecodeError):
    return 'has an unreadable hash record'
  actual = file_hashes(path)
  if actual == expected:
    return ''
  missing = sorted(set(expected) - set(actual))
  if missing:
    return f'lacks {missing[0]}'
  changed = sorted(k for k in expected if actual.get(k) != expected[k])
  return f'content changed ({changed[0] if changed else "extra files"})'


def quarantine(path, why: str):
  """Move a bad file or directory aside (never delete) and say so."""
  path = pathlib.Path(path)
  target = path.with_name(path.name + CORRUPT_SUFFIX)
  n = 1
  while target.exists():
    n += 1
    target = path.with_name(f'{path.name}{CORRUPT_SUFFIX}{n}')
  if path.exists():
    os.replace(path, target)
  sidecar = _sidecar(path)
  if sidecar.exists():
    sidecar.unlink()
  warn(f'{path} {why}: moved it to {target.name} and computing it again')


# ------------------------------------------------------------ the workdir


class Workdir:
  """Stage outputs under one directory, computed once, verified on load."""

  def __init__(self, path):
    self.path = pathlib.Path(path).absolute()
    blocked = errors.file_in_the_way(self.path)
    if blocked is not None:
      what = ('is a file' if blocked == self.path else
              f'is under {blocked}, which is a file')
      raise errors.UserError(f'--workdir {path} {what}; give a directory')
    try:
      self.path.mkdir(parents=True, exist_ok=True)
      probe = tempfile.NamedTemporaryFile(dir=self.path, prefix='.probe.')
      probe.close()
    except PermissionError as e:
      raise errors.UserError(f'--workdir {path} is not writable ({e.strerror})'
                             f'; choose another directory') from e
    except OSError as e:
      raise errors.UserError(f'--workdir {path} cannot be created '
                             f'({e.strerror}); choose another directory') from e
    self.clean_stale()

  def clean_stale(self):
    """Removes what an interrupted orbax save leaves behind."""
    for stale in self.path.rglob('*.orbax-checkpoint-tmp*'):
      if stale.is_dir():
        shutil.rmtree(stale, ignore_errors=True)

  def __truediv__(self, name) -> pathlib.Path:
    return self.path / name

  def valid_json(self, name: str) -> bool:
    """True when `name` exists and matches its hash; a bad copy is moved
    aside with a warning."""
    path = self / name
    if not path.exists() and not _sidecar(path).exists():
      return False
    why = problem(path)
    if why:
      quarantine(path, why)
      return False
    try:
      read_json(path)
    except errors.UserError:
      quarantine(path, 'is not valid JSON')
      return False
    return True

  def write_json(self, name: str, value):
    """Writes and seals a cache (process 0 only, on multi-host runs)."""
    import jax
    if jax.process_index() == 0:
      atomic_write_json(self / name, value)
      seal(self / name)

  def cached_json(self, name: str, compute: Callable[[], Any]):
    """Load `name` if a previous run committed it intact, else compute and
    write it."""
    if self.valid_json(name):
      return read_json(self / name)
    value = json.loads(json.dumps(compute(), default=_json_default))
    self.write_json(name, value)
    return value

  def cached_stage(self, name: str, fingerprint: dict,
                   compute: Callable[[], Any]):
    """`compute()` once per `fingerprint` (the config sections the stage
    depends on); reruns load the saved value (verified against its hash: a
    damaged copy is recomputed)."""
    if self.valid_json(name):
      saved = read_json(self / name)
      if saved.get('config') == fingerprint:
        return saved['value']
    value = json.loads(json.dumps(compute(), default=_json_default))
    self.write_json(name, {'config': fingerprint, 'value': value})
    return value

  def cached_repeats(self, experiment: str, fingerprint: dict, count: int,
                     compute: Callable[[int], Any], shard=None):
    """`compute(r)` for repeats r = 0..count-1, each cached on its own as
    `experiments/<experiment>/repeat_<r>.json` (see cached_stage). With
    `shard` (K, N) only the repeats r % N == K, and None is returned: N
    processes fill one workdir's cache, then a run without a shard loads
    them all."""
    mine = [r for r in range(count)
            if shard is None or r % shard[1] == shard[0]]
    values = [self.cached_stage(
        f'experiments/{experiment}/repeat_{r}.json', fingerprint,
        lambda r=r: compute(r)) for r in mine]
    return None if shard is not None else values

  def has_checkpoint(self, name: str) -> bool:
    """True when a committed checkpoint `name` matches its hash."""
    path = self / name
    return ((path / '_CHECKPOINT_METADATA').exists() and
            not problem(path))

  def cached_params(self, name: str, compute: Callable[[], Any], like,
                    recompute: bool = False):
    """Restore the checkpoint `name` (a pytree shaped like `like`), or
    compute and save it; `recompute` forces the latter (an earlier stage it
    depends on was recomputed).

    Orbax commits a checkpoint by writing `_CHECKPOINT_METADATA` and renaming
    its temporary directory; anything else at the path is a leftover from an
    interrupted write and is replaced. A committed checkpoint whose content
    hash does not match is moved aside and recomputed.
    """
    path = self / name
    if (path / '_CHECKPOINT_METADATA').exists():
      why = problem(path)
      if not why and not recompute:
        return restore(path, like)
      if why:
        quarantine(path, why)
    if path.exists():
      shutil.rmtree(path)
    params = compute()
    save(path, params)
    import jax
    if jax.process_index() == 0:
      seal(path)
    return params


# jax and orbax are imported where used: the networked mode's message
# handlers (a fresh process per message) write JSON without them.


def save(path, params):
  import jax
  import orbax.checkpoint as ocp
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, jax.tree.map(np.asarray, params))
    checkpointer.wait_until_finished()


def restore(path, like):
  import jax
  import orbax.checkpoint as ocp
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          jax.tree.map(np.asarray, like))
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(pathlib.Path(path), abstract)
  return jax.tree.map(np.asarray, restored)
