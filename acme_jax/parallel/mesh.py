"""The cloud stages on every accelerator, across hosts (docs/method.md 3 at scale).

One `jax.sharding.Mesh` over all devices of all processes, with one axis
'data': each global batch is split along it, and parameters (with their
optimizer state) are replicated, or sharded ZeRO/FSDP-style along it when
`cloud.param_sharding = 'fsdp'` (each leaf along its largest dimension that
the device count divides; XLA gathers them for the forward pass and
reduce-scatters their gradients). The same code runs on one CPU, on all GPUs
of a host and on a multi-host TPU pod or SLURM job: only the mesh grows.

Multi-host: `initialize` calls `jax.distributed.initialize` from the config
(`cloud.distributed`), or with JAX's auto-detection (TPU pods, SLURM) when
asked for. Every process holds the whole dataset and draws the same global
batch indices; each feeds only its slice of every global batch
(`Parallel.batch`).
"""
import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from acme_jax import choices
from acme_jax import errors

AXIS = 'data'
PARAM_SHARDINGS = choices.PARAM_SHARDINGS


def initialize(distributed_config) -> bool:
  """Starts multi-process JAX from `cloud.distributed`; True when started.

  coordinator '' and auto False: single process (nothing to do).
  auto True: `jax.distributed.initialize()` with JAX's detection (TPU pods,
  SLURM, ...). Otherwise coordinator address, process count and id as given;
  on CPU the cross-process collectives use gloo.
  """
  d = distributed_config
  if not d.auto and not d.coordinator:
    return False
  if jax.distributed.is_initialized():
    return True
  if d.cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', d.cpu_collectives)
  try:
    if d.auto:
      jax.distributed.initialize()
    else:
      jax.distributed.initialize(coordinator_address=d.coordinator,
                                 num_processes=d.num_processes,
                                 process_id=d.process_id)
  except (RuntimeError, ValueError) as e:
    how = ('cloud.distributed.auto = True: JAX found no cluster to join '
           '(a TPU pod, SLURM, ...); elsewhere give coordinator, '
           'num_processes and process_id' if d.auto else
           f'cloud.distributed.coordinator = {d.coordinator!r}: the '
           f'coordinator could not be reached or joined')
    raise errors.UserError(f'{how} ({errors.one_line(e)})') from e
  return True


def _fsdp_spec(shape, size: int) -> P:
  """Shard the largest dimension the device count divides; else replicate."""
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % size == 0 and shape[d] >= size:
      spec = [None] * len(shape)
      spec[d] = AXIS
      return P(*spec)
  return P()


@dataclasses.dataclass(frozen=True)
class Parallel:
  """Where the cloud's arrays live: a mesh and a parameter layout."""
  mesh: Mesh
  param_sharding: str = 'replicated'

  @property
  def size(self) -> int:
    return self.mesh.shape[AXIS]

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(AXIS))

  def param_shardings(self, tree) -> Any:
    """A sharding for every leaf of `tree` (params, or optimizer state)."""
    if self.param_sharding == 'replicated' or self.size == 1:
      return jax.tree.map(lambda _: self.replicated(), tree)
    return jax.tree.map(
        lambda leaf: NamedSharding(self.mesh, _fsdp_spec(np.shape(leaf),
                                                         self.size)), tree)

  def params(self, tree):
    """`tree` placed in the parameter layout (host arrays or jax arrays)."""
    shardings = self.param_shardings(tree)
    if jax.process_count() == 1:
      return jax.device_put(tree, shardings)
    return jax.tree.map(
        lambda leaf, s: jax.make_array_from_callback(
            np.shape(leaf), s, lambda index: np.asarray(leaf)[index]),
        tree, shardings)

  def batch(self, array):
    """A global batch (the same on every process) split along 'data': each
    process supplies only its rows."""
    array = np.asarray(array)
    if len(array) % self.size:
      raise ValueError(f'a global batch of {len(array)} does not split over '
                       f'{self.size} devices; make the batch size a '
                       f'multiple of the device count')
    sharding = self.batch_sharding()
    if jax.process_count() == 1:
      return jax.device_put(array, sharding)
    per_process = len(array) // jax.process_count()
    start = jax.process_index() * per_process
    return jax.make_array_from_process_local_data(
        sharding, array[start:start + per_process], array.shape)

  def constrain(self, tree, shardings):
    """Inside a jitted step: keep `tree` in its layout."""
    return jax.tree.map(jax.lax.with_sharding_constraint, tree, shardings)


def single_device() -> 'Parallel':
  return Parallel(Mesh(np.array(jax.devices()[:1]), (AXIS,)))


def local_mesh_all_devices() -> Mesh:
  """All devices of all processes on one 'data' axis (Auto axis type: the
  steps rely on XLA's propagation, not explicit sharding types)."""
  return Mesh(np.array(jax.devices()), (AXIS,))


def from_config(cloud_config) -> Parallel:
  return Parallel(local_mesh_all_devices(),
                  cloud_config.get('param_sharding', 'replicated'))


def host(tree):
  """Host numpy copies of (possibly sharded, multi-process) jax arrays."""
  def fetch(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)
  return jax.tree.map(fetch, tree)

