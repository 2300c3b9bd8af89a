"""Users per minute through the whole device stage, per engine strategy.

  python -m benchmarks.devices                           # 8, 64, 256 users
  python -m benchmarks.devices --users=256,1024 --strategies=vmap  # a GPU

The device stage of `configs/many_users.py` (synthetic digits-shaped data,
a 4-layer supernet, 2-node headers): every user's backbone features
(batched across users with the same backbone), the header search within its
budget, fine-tuning, test accuracy, data signatures and one aggregation
round with Taylor importance and pruning (pruning_per_emd). The supernet is
freshly initialised (training it does not change the device stage's cost)
and each user gets a grid subnet that fits its budget.

Each cell is one cold run at that user count, compilation included (the
caches are cleared first): what a real run of that many users costs. It
reports users per minute, the programs compiled (engine traces) and the
per-user memory the device stage holds (cached features and state). With
`--chunk` the stacked strategies take that many users at a time.
"""
import time

import jax
from absl import flags

from acme_jax import cli
from acme_jax import errors
from acme_jax import pipeline
from acme_jax import report
from acme_jax import sizes
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.data import stage as data_stage
from acme_jax.device import stage as device_stage
from acme_jax.edge import stage as edge_stage
from acme_jax.federated import acme
from acme_jax.models import subnet as subnet_lib
from acme_jax.selection import stage as selection_stage
from acme_jax.parallel import engine
from benchmarks import inputs
from configs import many_users

_USERS = flags.DEFINE_list('users', ['8', '64', '256'], 'user counts')
_STRATEGIES = flags.DEFINE_list(
    'strategies', ['loop', 'vmap', 'sharded'],
    'engine strategies (sharded only runs with several devices)')
_CHUNK = flags.DEFINE_integer('chunk', 0, 'users at once (0: all)',
                              lower_bound=0)
flags.register_validator('users', lambda v: cli.whole_numbers(v, 8) and all(
    int(u) % 8 == 0 for u in v), '--users takes positive multiples of 8, '
    'e.g. 8,64,256')
flags.register_validator(
    'strategies', lambda v: bool(v) and set(v) <= {'loop', 'vmap', 'sharded'},
    '--strategies takes some of loop, vmap, sharded')


def setup(users: int) -> world_lib.World:
  """The world of `users` users with a fresh supernet: each grid subnet's
  accuracy is a proxy that grows with its size, so every user's edge picks
  the largest subnet within its budget less the allowance."""
  config = many_users.get_config(str(users))
  dataset, cloud_data, device_data = data_stage.load(config,
                                                     log=lambda _: None)
  model, params = cloud_stage.build_model(config, dataset,
                                          jax.random.key(config.seed))
  grid = []
  for d in config.cloud.depth_mults:
    for w in config.cloud.width_mults:
      size, _ = subnet_lib.subnet_size(model, params,
                                       subnet_lib.for_model(model, w, d))
      grid.append({'depth_mult': d, 'width_mult': w, 'params': size})
  largest = max(g['params'] for g in grid)
  for g in grid:
    g['accuracy'] = g['params'] / largest
    g['per_class_accuracy'] = [g['accuracy']] * dataset.num_classes
  selection = selection_stage.run(
      selection_stage.SelectionHparams.from_config(config), grid,
      sizes.architecture(config, dataset.num_classes))
  splits = data_stage.device_splits(
      data_stage.PartitionHparams.from_config(config), device_data,
      dataset.num_classes)
  return world_lib.World(
      config, None, dataset, cloud_data, device_data, splits,
      cloud_stage.Trained(model, params, grid, grid, grid), selection,
      world_lib.topology(config, grid))


def device_stage_run(world: world_lib.World):
  """Features, header search + fine-tuning + test, signatures, and one
  pruning_per_emd round, for every user."""
  config, quiet = world.config, lambda *_: None
  key = jax.random.key(config.seed)
  hp = device_stage.DeviceHparams.from_config(config, world.num_classes)
  delivery = edge_stage.deliver(config, world, world.splits, hp, quiet)
  headers = pipeline.device_headers(world, hp, delivery, key, quiet)
  headers, _ = acme.run(
      acme.RoundsHparams.from_config(config, mode='pruning_per_emd'), hp.nas,
      headers, jax.random.fold_in(key, streams.ROUNDS))
  return headers


def per_user_bytes(headers) -> int:
  h = headers[0]
  leaves = jax.tree.leaves((h.data, h.state))
  return int(sum(x.nbytes if hasattr(x, 'nbytes') else 0 for x in leaves))


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  strategies = [s for s in _STRATEGIES.value
                if s != 'sharded' or jax.device_count() > 1]
  if not strategies:
    raise errors.UserError(
        '--strategies=sharded needs several accelerators; this machine has '
        f'{jax.device_count()} (on CPU, simulate them with XLA_FLAGS='
        '--xla_force_host_platform_device_count=8)')
  inputs.devices([int(u) for u in _USERS.value], strategies, _CHUNK.value)
  rows, per_minute = [], {}
  for users in map(int, _USERS.value):
    world = setup(users)
    for strategy in strategies:
      world.config.engine.strategy = strategy
      world.config.engine.chunk = _CHUNK.value
      engine.clear_caches()
      before = sum(engine.trace_counts().values())
      start = time.perf_counter()
      headers = device_stage_run(world)
      seconds = time.perf_counter() - start
      compiles = sum(engine.trace_counts().values()) - before
      per_minute[users, strategy] = users / seconds * 60
      rows.append([users, strategy, f'{seconds:.1f}',
                   f'{per_minute[users, strategy]:.1f}', compiles,
                   f'{per_user_bytes(headers) / 1024:.0f}'])
      print(' | '.join(map(str, rows[-1])), flush=True)
  kind = jax.devices()[0].device_kind
  print(f'\nconfigs/many_users.py device stage (features, NAS search + '
        f'fine-tune + test, signatures, 1 aggregation round); '
        f'{jax.device_count()} x {kind} ({jax.default_backend()}); chunk '
        f'{_CHUNK.value or "all"}; cold runs, compilation included\n')
  print(report.markdown_table(
      ['users', 'strategy', 'seconds', 'users/min', 'programs compiled',
       'KiB per user'], rows))
  users = 64 if any(u == 64 for u, _ in per_minute) else max(
      u for u, _ in per_minute)
  parts = [f'{s} {per_minute[users, s]:.1f} users/min' for s in strategies
           if (users, s) in per_minute]
  print(f'\ndevice stage at {users} users: ' + ', '.join(parts))


if __name__ == '__main__':
  cli.run_tool(main)
