"""Client engine: run one per-device computation for many devices.

Every tier of ACME customizes something per device (headers, importance scores,
signatures). The computation is the same for all devices, only the data differs, so
`for_each_device` (in the spirit of fedjax's `for_each_client`) runs it as

    state = init(device_input)
    for batch in batches_of_this_device: state = step(state, batch)
    output = final(state)

with one of three interchangeable strategies:

  loop     one jitted `step`, Python loop over devices and batches. Compiles once
           for any device count; fastest on CPU (measured, see choose_strategy):
           batched matmuls over different clients' params gain nothing there.
  vmap     devices stacked on a leading axis; the whole per-device loop is a
           `lax.scan` over batches inside one jit, vmapped over devices. One dispatch
           for everything: best on one GPU/TPU.
  sharded  like vmap, but the device axis is split over a `Mesh` axis named
           'devices' with `jax.shard_map`: each accelerator runs its own slice of
           devices, no communication. The device count is padded to a multiple of
           the mesh size with dummy devices whose outputs are dropped.

Devices may have different numbers of batches. The stacked strategies pad each
device to the longest one with masked steps that keep the state bit-for-bit (see
`masked_step`); `loop` just skips them. So the result does not depend on the
strategy or on the padding (up to float reassociation across compiled programs).
"""
import collections
import dataclasses
import functools
from typing import Any, Callable, List, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from acme_jax import choices

STRATEGIES = choices.STRATEGIES
MESH_AXIS = 'devices'

_trace_counts = collections.Counter()


@dataclasses.dataclass(frozen=True)
class Options:
  """How `for_each_device` runs: a strategy, and at most `chunk` devices at
  once (0: all). Chunks bound memory, so 10,000 users stream through; the
  stacked strategies pad the last chunk with dummy devices and every chunk to
  the longest device's batch count, so all chunks share one compiled
  program."""
  strategy: str = 'auto'
  chunk: int = 0


def options(config) -> Options:
  """The engine options of `config.engine`."""
  return Options(config.engine.strategy, config.engine.get('chunk', 0))


def trace_counts() -> dict:
  """How often each engine function was traced (= compiled), by name.

  Names: 'loop.init', 'loop.step', 'loop.final', 'vmap', 'sharded'. A jitted
  function is traced once per new input signature, so this counts compilations.
  Compare two snapshots to count those of one call.
  """
  return dict(_trace_counts)


def clear_caches():
  """Forgets every compiled engine program (and JAX's caches), so the next
  call compiles from cold: for benchmarks that time a fresh run."""
  jax.clear_caches()
  for cached in (_loop_functions, _vmap_function, _sharded_function):
    cached.cache_clear()


def _counted(name: str, fn: Callable) -> Callable:
  """Wraps fn so that each trace of it bumps the counter `name`."""

  @functools.wraps(fn)
  def wrapper(*args):
    _trace_counts[name] += 1  # Python side effect: runs at trace time only.
    return fn(*args)

  return wrapper


def masked_step(step: Callable) -> Callable:
  """Turns step(state, batch, consts) into step(state, batch, valid, consts)
  that pads exactly.

  With valid False the returned state is the old state bit for bit (a select, not
  arithmetic), whatever the batch holds, so padding never changes results.
  """

  def step_or_keep(state, batch, valid, consts):
    new_state = step(state, batch, consts)
    return jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_state,
                        state)

  return step_or_keep


def resolved_strategy(options: Options, num_devices: int) -> str:
  """The strategy `options` run `num_devices` devices with ('auto' resolved
  on this backend, as `for_each_device` resolves it without a mesh)."""
  if options.strategy == 'auto':
    return choose_strategy(num_devices)
  return options.strategy


def choose_strategy(num_devices: int, backend: Optional[str] = None,
                    accelerator_count: Optional[int] = None) -> str:
  """The strategy 'auto' picks.

  Rule, from benchmarks/engine.py on a loaded 2-core CPU (2-layer MLP header
  steps, 2-32 devices with 4-8 batches each): vmap ran 0.5-1.1x the loop's
  device-steps/s and recompiles (1-5 s) for every new device/batch count;
  sharded over 8 simulated host devices ran 0.3-0.95x (they share the cores).
    * CPU backend, or a single device to run -> 'loop';
    * accelerator with more than one chip -> 'sharded';
    * one GPU/TPU -> 'vmap' (one dispatch per call; not measured here).
  """
  backend = backend or jax.default_backend()
  if accelerator_count is None:
    accelerator_count = jax.device_count()
  if backend == 'cpu' or num_devices <= 1:
    return 'loop'
  if accelerator_count > 1:
    return 'sharded'
  return 'vmap'


def unstack(tree: Any, count: Optional[int] = None) -> List[Any]:
  """Splits a pytree stacked on a leading device axis into per-device pytrees.

  Keeps the first `count` entries (all when None), e.g. to drop dummy devices.
  """
  leaves, treedef = jax.tree.flatten(tree)
  if not leaves:
    return [tree] * (count or 0)
  total = leaves[0].shape[0]
  count = total if count is None else count
  columns = [list(leaf)[:count] for leaf in leaves]
  return [jax.tree.unflatten(treedef, [column[i] for column in columns])
          for i in range(count)]


def _batch_list(batches: Any) -> List[Any]:
  """One device's batches as a list: a list is a list of batches, any other
  pytree is stacked along a leading batch axis."""
  if isinstance(batches, list):
    return batches
  leaves = jax.tree.leaves(batches)
  if not leaves:
    return []
  counts = {np.shape(leaf)[0] for leaf in leaves}
  if len(counts) != 1:
    raise ValueError(f'stacked batches disagree on their leading axis: {counts}')
  return [jax.tree.map(lambda leaf: leaf[i], batches) for i in range(counts.pop())]


def _signature(batch: Any):
  leaves, treedef = jax.tree.flatten(batch)
  return treedef, tuple((np.shape(x), np.result_type(x)) for x in leaves)


def _check_batches(per_device: Sequence[List[Any]]):
  """All batches must share structure, shapes and dtypes: one compiled step."""
  expected = None
  for device, batches in enumerate(per_device):
    for index, batch in enumerate(batches):
      signature = _signature(batch)
      if expected is None:
        expected = signature
      elif signature != expected:
        raise ValueError(
            f'device {device} batch {index} has structure/shapes {signature}, '
            f'expected {expected}: all batches need one static shape')


def _stack_padded(per_device: Sequence[List[Any]], num_steps: int, num_rows: int):
  """Batches as [num_rows, num_steps, ...] host arrays (zeros where padded) and
  the [num_rows, num_steps] mask of real steps."""
  mask = np.zeros((num_rows, num_steps), bool)
  if num_steps == 0:
    return None, mask
  template = next(batch for batches in per_device for batch in batches)
  leaves, treedef = jax.tree.flatten(template)
  stacked = [np.zeros((num_rows, num_steps) + np.shape(x), np.result_type(x))
             for x in leaves]
  for device, batches in enumerate(per_device):
    mask[device, :len(batches)] = True
    for index, batch in enumerate(batches):
      for out, leaf in zip(stacked, jax.tree.leaves(batch)):
        out[device, index] = np.asarray(leaf)
  return jax.tree.unflatten(treedef, stacked), mask


def _stack_inputs(device_inputs: Sequence[Any], num_rows: int):
  """Device inputs stacked on a leading axis; rows past the real devices repeat
  device 0 (dummies: they run init/final only and are dropped)."""
  rows = list(device_inputs) + [device_inputs[0]] * (num_rows - len(device_inputs))
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *rows)


@functools.lru_cache(maxsize=None)
def _with_consts(step):
  """step(state, batch) as step(state, batch, consts) (consts unused)."""
  return lambda state, batch, consts: step(state, batch)


@functools.lru_cache(maxsize=32)
def _loop_functions(init, step, final):
  """Jitted init/step/final, cached so repeated calls (rounds) reuse compiles."""
  return (jax.jit(_counted('loop.init', init)),
          jax.jit(_counted('loop.step', step)),
          jax.jit(_counted('loop.final', final)))


def _per_device_program(init, step, final):
  """init -> scan of masked steps -> final, for one device."""
  step_or_keep = masked_step(step)

  def run(device_input, batches, mask, consts):
    state = init(device_input)
    if batches is not None:
      def body(state, xs):
        batch, valid = xs
        return step_or_keep(state, batch, valid, consts), None
      state, _ = jax.lax.scan(body, state, (batches, mask))
    return final(state)

  return run


@functools.lru_cache(maxsize=32)
def _vmap_function(init, step, final):
  run = _per_device_program(init, step, final)
  return jax.jit(_counted('vmap', jax.vmap(run)))


@functools.lru_cache(maxsize=32)
def _sharded_function(init, step, final, mesh):
  run = jax.vmap(_per_device_program(init, step, final))
  spec = PartitionSpec(MESH_AXIS)
  # check_vma=False: init may build constants (replicated in shard_map's type
  # system) that the scan carry then mixes with per-shard data; no collectives
  # run, so every shard's block is independent anyway.
  sharded = jax.shard_map(run, mesh=mesh, in_specs=spec, out_specs=spec,
                          check_vma=False)
  return jax.jit(_counted('sharded', sharded),
                 in_shardings=NamedSharding(mesh, spec),
                 out_shardings=NamedSharding(mesh, spec))


def default_mesh() -> Mesh:
  """All visible devices on one 'devices' axis (Auto axis type, unlike
  jax.make_mesh's default Explicit)."""
  return Mesh(np.array(jax.devices()), (MESH_AXIS,))


def for_each_device(init: Callable, step: Callable, final: Callable,
                    device_inputs: Sequence[Any], device_batches: Sequence[Any], *,
                    device_consts: Optional[Sequence[Any]] = None,
                    strategy: Union[str, Options] = 'auto',
                    mesh: Optional[Mesh] = None) -> List[Any]:
  """Runs init -> step per batch -> final for every device; returns the outputs.

  Args:
    init: device_input -> state.
    step: (state, batch) -> state, or (state, batch, consts) -> state when
      `device_consts` is given; same structure, shapes and dtypes out as in.
    final: state -> output.
    device_inputs: one pytree per device (params, PRNG key, device id...). The
      stacked strategies need the same structure and shapes for all devices.
    device_batches: per device, a list of batches or one pytree stacked along a
      leading batch axis (a `list` always means a list of batches). Counts may
      differ; every batch must have the same structure, shapes and dtypes.
    strategy: 'loop', 'vmap', 'sharded' or 'auto' (`choose_strategy`), or
      `Options` with a strategy and a chunk size.
    device_consts: optional per-device pytrees read by every step but never
      changed (e.g. cached features): passed to `step`, not carried through
      its scan, so the stacked strategies do not copy them each step.
    mesh: for 'sharded', a Mesh with a 'devices' axis; default all devices.
      Passing one makes 'auto' pick 'sharded'.

  Returns:
    A list with final(state) of each device, in input order. Stacked strategies
    recompile when the device count or the longest batch count changes.
  """
  chunk = 0
  if isinstance(strategy, Options):
    strategy, chunk = strategy.strategy, strategy.chunk
  if strategy not in STRATEGIES:
    raise ValueError(f'unknown strategy {strategy!r}; allowed: {STRATEGIES}')
  if len(device_inputs) != len(device_batches):
    raise ValueError(f'{len(device_inputs)} device inputs but '
                     f'{len(device_batches)} device batch sets')
  num_devices = len(device_inputs)
  if num_devices == 0:
    return []
  if strategy == 'auto':
    strategy = 'sharded' if mesh is not None else choose_strategy(num_devices)

  per_device = [_batch_list(batches) for batches in device_batches]
  _check_batches(per_device)
  if device_consts is None:
    step = _with_consts(step)
    device_consts = [()] * num_devices
  elif len(device_consts) != num_devices:
    raise ValueError(f'{len(device_consts)} device consts for {num_devices} '
                     f'devices')

  program = (init, step, final)
  if chunk and num_devices > chunk and strategy != 'loop':
    return _chunked(program, device_inputs, per_device, device_consts,
                    strategy, mesh, chunk)
  if strategy == 'loop':
    init_fn, step_fn, final_fn = _loop_functions(init, step, final)
    outputs = []
    for device_input, batches, consts in zip(device_inputs, per_device,
                                             device_consts):
      state = init_fn(device_input)
      for batch in batches:
        state = step_fn(state, batch, consts)
      outputs.append(final_fn(state))
    return outputs

  num_steps = max(len(batches) for batches in per_device)
  return _stacked(program, device_inputs, per_device, device_consts,
                  strategy, mesh, (num_steps, num_devices))


def _stacked(program, device_inputs, per_device, device_consts, strategy,
             mesh, shape):
  """The vmap / sharded run of `program` (init, step, final) for all given
  devices as `shape` = (num_steps, num_rows): rows past the devices are
  dummies, steps past a device's batches are masked."""
  num_steps, num_rows = shape
  num_devices = len(device_inputs)
  if strategy == 'vmap':
    run = _vmap_function(*program)
  else:
    mesh = mesh or default_mesh()
    if MESH_AXIS not in mesh.axis_names:
      raise ValueError(f'mesh needs a {MESH_AXIS!r} axis, has {mesh.axis_names}')
    shards = mesh.shape[MESH_AXIS]
    num_rows = -(-num_rows // shards) * shards
    run = _sharded_function(*program, mesh)
  batches, mask = _stack_padded(per_device, num_steps, num_rows)
  stacked_outputs = run(_stack_inputs(device_inputs, num_rows), batches, mask,
                        _stack_inputs(device_consts, num_rows))
  return unstack(stacked_outputs, num_devices)


def _chunked(program, device_inputs, per_device, device_consts, strategy,
             mesh, chunk):
  """Stacked runs of `chunk` devices at a time, all with the same static
  shapes (the last chunk padded with dummies): one compiled program."""
  device_inputs, device_consts = list(device_inputs), list(device_consts)
  num_steps = max(len(batches) for batches in per_device)
  outputs = []
  for start in range(0, len(device_inputs), chunk):
    part = slice(start, start + chunk)
    outputs += _stacked(program, device_inputs[part], per_device[part],
                        device_consts[part], strategy, mesh,
                        (num_steps, chunk))
  return outputs
