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
import contextlib
import errno
import hashlib
import io
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Callable

import numpy as np

from acme_jax import errors
from acme_jax import orbax_io
from acme_jax import ownership

HASH_SUFFIX = '.sha256'
# A file being written (`atomic_open`); one left over is a killed job's.
TMP_SUFFIX = '.acme-tmp'
# What a checkpoint was computed from, stored inside it (see cached_params).
FINGERPRINT_NAME = 'acme_fingerprint.json'
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


@contextlib.contextmanager
def atomic_open(path):
  """A binary file that becomes `path` when the block ends, and leaves
  nothing behind when it raises (a full disk, an interrupt). Only process
  0 of a multi-host run writes (`is_writer`): the others' writes go
  nowhere."""
  if not ownership.is_writer():
    yield io.BytesIO()
    return
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.',
                             suffix=TMP_SUFFIX)
  try:
    # mkstemp makes 0600 files; outputs get the user's usual mode.
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, 'wb') as f:
      yield f
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.unlink(tmp)
    if isinstance(e, OSError) and e.errno and not e.filename:
      # A write through a file object names no file: name the one meant.
      raise OSError(e.errno, e.strerror, str(path)) from e
    raise


def atomic_write_bytes(path, data: bytes):
  with atomic_open(path) as f:
    f.write(data)


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
  """Move a bad file or directory aside (never delete) and say so (process
  0 alone: the others leave the workdir to it)."""
  if not ownership.is_writer():
    return
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
  """Stage outputs under one directory, computed once, verified on load.
  `writer`: this process writes (False on a multi-host run's processes
  other than 0, which only read: no probe, no clean-up)."""

  def __init__(self, path, writer: bool = True, shared: bool = False):
    self.path = pathlib.Path(path).absolute()
    self.writer = writer
    blocked = errors.file_in_the_way(self.path)
    if blocked is not None:
      what = ('is a file' if blocked == self.path else
              f'is under {blocked}, which is a file')
      raise errors.UserError(f'--workdir {path} {what}; give a directory')
    if not writer:
      return
    try:
      self.path.mkdir(parents=True, exist_ok=True)
      probe = tempfile.NamedTemporaryFile(dir=self.path, prefix='.probe.')
      probe.close()
    except OSError as e:
      if (isinstance(e, PermissionError) or e.errno == errno.EROFS or
          self.path.is_dir()):
        raise errors.UserError(f'--workdir {path} is not writable '
                               f'({e.strerror}); choose another directory'
                               ) from e
      raise errors.UserError(f'--workdir {path} cannot be created '
                             f'({e.strerror}); choose another directory') from e
    # Before any clean-up: a live job's temporary files are its own. (A
    # multi-host run's other processes share process 0's job.)
    ownership.lock(self.path, shared)
    if not shared:  # a shard's neighbours may be saving
      self.clean_stale()

  def clean_stale(self):
    """Removes what a killed job's saves leave behind (a SIGKILL skips
    every clean-up): orbax's temporary directories, our temporary files."""
    for stale in self.path.rglob('*.orbax-checkpoint-tmp*'):
      if stale.is_dir():
        shutil.rmtree(stale, ignore_errors=True)
    for stale in self.path.rglob(f'.*{TMP_SUFFIX}'):
      if stale.is_file():
        stale.unlink(missing_ok=True)

  def check_layout(self, files=(), dirs=()):
    """Before any work: each of `files` is a file (or absent), each of
    `dirs` a directory (or absent), every directory here writable.
    Anything wrong is one `UserError` naming the path and what to do."""
    for name in files:
      if (self / name).exists() and not (self / name).is_file():
        raise errors.UserError(
            f'{self / name} is a directory where the job writes a file; '
            f'move it away')
    for name in dirs:
      blocked = errors.file_in_the_way(self / name)
      if blocked is not None and self.path in blocked.parents:
        raise errors.UserError(
            f'{blocked} is a file where the job keeps a directory; move it '
            f'away')
    if self.writer:
      for d in [self.path, *(p for p in self.path.rglob('*') if p.is_dir())]:
        if not os.access(d, os.W_OK | os.X_OK):
          raise errors.UserError(
              f'{d} is not writable; make it writable (chmod u+w) or give '
              f'another --workdir')

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
    if self.writer:
      atomic_write_json(self / name, value)
      seal(self / name)

  def cached_json(self, name: str, compute: Callable[[], Any],
                  recompute: bool = False):
    """Load `name` if a previous run committed it intact (and not
    `recompute`), else compute and write it."""
    if not recompute and self.valid_json(name):
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
      if not (isinstance(saved, dict) and 'value' in saved):
        quarantine(self / name, 'is not a stage record')
      elif saved.get('config') == fingerprint:
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

  def stored_fingerprint(self, name: str):
    """The fingerprint sealed inside checkpoint `name` (None: it has none,
    or is not a committed, intact checkpoint)."""
    path = self / name / FINGERPRINT_NAME
    if not self.has_checkpoint(name) or not path.is_file():
      return None
    return read_json(path)

  def cached_params(self, name: str, compute: Callable[[], Any], like,
                    recompute: bool = False, fingerprint=None):
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
        return orbax_io.restore(path, like)
      if why:
        quarantine(path, why)
    if path.exists() and self.writer:
      shutil.rmtree(path)
    params = compute()
    orbax_io.save(path, params)
    if self.writer:
      if fingerprint is not None:
        # Inside the sealed directory: editing it breaks the seal.
        atomic_write_json(path / FINGERPRINT_NAME, fingerprint)
      seal(path)
    return params


