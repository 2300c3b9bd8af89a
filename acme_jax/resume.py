"""Mid-stage checkpoints: a long stage (the teacher, both elastic stages, the
header search, the aggregation rounds) saves its whole loop state every
`resume.every_steps` training steps, and a rerun of the same command
resumes from the last one. The state saved is everything the loop carries
(arrays, the numpy generators' positions, the losses so far), so a resumed
stage ends byte-identical to an uninterrupted one.

A checkpoint is two files beside the stage's output: `<name>.partial.npz`
(the arrays) and `<name>.partial.json` (where the loop stands, a digest of
the arrays and the fingerprint of what the stage was asked to do). One that
does not match the fingerprint, or is damaged, is ignored with a warning and
the stage starts over; the stage removes both files when it finishes.
"""
import hashlib
import json
import pathlib
import sys
from typing import Any, Optional, Tuple

import jax
import numpy as np

from acme_jax import ownership
from acme_jax import workdir as workdir_lib

VERSION = 1


def _digest(path: pathlib.Path) -> str:
  """sha256 of a file, read in blocks (a ViT-B/16 stage's state is ~1 GB)."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def _to_host(leaf):
  """(numpy array, kind): typed PRNG keys travel as their key data."""
  if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
      leaf.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(leaf)), 'key'
  array = np.asarray(jax.device_get(leaf))
  if array.dtype.kind == 'V' or array.dtype.name not in np.sctypeDict:
    # bfloat16 and friends: saved as raw bits, viewed back on load.
    return array.view(f'u{array.dtype.itemsize}'), array.dtype.name
  return array, ''


def _like(leaf, array: np.ndarray, kind: str):
  """`array` placed and typed as `leaf` was."""
  if kind == 'key':
    return jax.device_put(jax.random.wrap_key_data(
        array, impl=jax.random.key_impl(leaf)), leaf.sharding)
  if kind:
    array = array.view(jax.numpy.dtype(kind))
  if isinstance(leaf, jax.Array):
    return jax.device_put(array, leaf.sharding)
  if isinstance(leaf, np.ndarray):
    return array if leaf.dtype == object else array.astype(leaf.dtype)
  if isinstance(leaf, np.generic):
    return leaf.dtype.type(array)
  return type(leaf)(array.item())


class Partial:
  """One stage's mid-stage checkpoint (see the module docstring). With no
  path, every_steps 0 or more than one process it never saves and never
  resumes."""

  def __init__(self, path: Optional[pathlib.Path], every_steps: int,
               fingerprint: Any = None, log=None):
    self.path = pathlib.Path(path) if path is not None else None
    # Multi-host runs do not checkpoint mid-stage: every process would
    # write (and finish() delete) the same files on the shared workdir.
    self.every = (int(every_steps) if path is not None and
                  jax.process_count() == 1 else 0)
    self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
    self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    self._last_saved = 0

  @property
  def _arrays(self) -> pathlib.Path:
    return self.path.with_name(self.path.name + '.partial.npz')

  @property
  def _meta(self) -> pathlib.Path:
    return self.path.with_name(self.path.name + '.partial.json')

  def load(self, like=None, like_from_meta=None
           ) -> Optional[Tuple[Any, dict]]:
    """(the saved tree shaped and placed like `like`, the saved meta), or
    None when there is nothing (valid) to resume from. For a loop whose
    state changes structure as it goes, `like_from_meta(saved meta)` gives
    the template instead (its leaves may be `as_saved()`)."""
    if (like is None) == (like_from_meta is None):
      # Without a template every save would look like another structure
      # and the stage would restart silently: a caller's bug, said so.
      raise TypeError('Partial.load needs exactly one of like and '
                      'like_from_meta')
    if not self.every or not self._meta.exists():
      return None
    try:
      meta = json.loads(self._meta.read_text())
      if (meta.get('version') != VERSION or
          meta.get('fingerprint') != self.fingerprint):
        self.log(f'[resume] {self.path.name}: the saved mid-stage state is '
                 'of another config; starting the stage over')
        return None
      if _digest(self._arrays) != meta['sha256']:
        raise ValueError('digest mismatch')
      with np.load(self._arrays) as saved:
        arrays = [saved[f'a{i}'] for i in range(len(meta['kinds']))]
      if like_from_meta is not None:
        like = like_from_meta(meta['loop'])
    except (OSError, ValueError, KeyError, TypeError) as e:
      self.log(f'[resume] {self.path.name}: the saved mid-stage state is '
               f'damaged ({e}); starting the stage over')
      return None
    leaves, treedef = jax.tree.flatten(like)
    if len(leaves) != len(arrays):
      self.log(f'[resume] {self.path.name}: the saved state has another '
               'structure; starting the stage over')
      return None
    tree = jax.tree.unflatten(treedef, [
        _like(l, a, k) for l, a, k in zip(leaves, arrays, meta['kinds'])])
    self._last_saved = meta['steps']
    self.log(f'[resume] {self.path.name}: resuming after step '
             f'{meta["steps"]}')
    return tree, meta['loop']

  def due(self, steps: int) -> bool:
    return bool(self.every) and steps - self._last_saved >= self.every

  def save(self, tree, loop: dict, steps: int):
    """Saves `tree` (arrays) and `loop` (JSON: where the loop stands)."""
    if not self.every:
      return
    hosted = [_to_host(l) for l in jax.tree.leaves(tree)]
    self.path.parent.mkdir(parents=True, exist_ok=True)  # a stage's first save
    with workdir_lib.atomic_open(self._arrays) as f:
      np.savez(f, **{f'a{i}': a for i, (a, _) in enumerate(hosted)})
    meta = {'version': VERSION, 'fingerprint': self.fingerprint,
            'steps': int(steps), 'sha256': _digest(self._arrays),
            'kinds': [k for _, k in hosted], 'loop': loop}
    workdir_lib.atomic_write_text(self._meta, json.dumps(meta))
    self._last_saved = steps

  def finish(self):
    """The stage is done: its mid-stage state goes (process 0's to do)."""
    if self.path is not None and ownership.is_writer():
      for p in (self._arrays, self._meta):
        p.unlink(missing_ok=True)


NONE = Partial(None, 0)


def as_saved() -> np.ndarray:
  """A leaf of a `like` tree that takes the saved array as it is (its
  shape and dtype), as a numpy array."""
  return np.empty(0, object)


def rng_state(rng: np.random.Generator) -> dict:
  return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict):
  rng.bit_generator.state = state
