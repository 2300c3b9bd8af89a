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
from acme_jax import device_stages, report, stages
from acme_jax.models import subnet as subnet_lib
from acme_jax.system import engine
from configs import many_users

_USERS = flags.DEFINE_list('users', ['8', '64', '256'], 'user counts')
_STRATEGIES = flags.DEFINE_list(
    'strategies', ['loop', 'vmap', 'sharded'],
    'engine strategies (sharded only runs with several devices)')
_CHUNK = flags.DEFINE_integer('chunk', 0, 'users at once (0: all)')


def setup(users: int):
  """(config, cloud, topology, splits, choices, num_classes) for `users`."""
  config = many_users.get_config(str(users))
  dataset, _, device_data = stages.load_data(config, log=lambda _: None)
  key = jax.random.key(config.seed)
  model, params = stages.build_model(config, dataset, key)
  grid = []
  for d in config.cloud.depth_mults:
    for w in config.cloud.width_mults:
      size, _ = subnet_lib.subnet_size(model, params,
                                       subnet_lib.for_model(model, w, d))
      grid.append({'depth': d, 'width': w, 'params': size})
  topology = stages.build_topology(config, grid)
  # Each user: the largest grid subnet within its budget less the allowance.
  choices = []
  for device in topology.devices:
    fits = [g for g in grid
            if g['params'] + config.system.header_allowance <= device.budget]
    best = max(fits, key=lambda g: g['params'])
    choices.append((best['width'], best['depth'], best['params']))
  splits = device_stages.device_splits(config, device_data,
                                       topology.num_devices,
                                       dataset.num_classes)
  cloud = {'model': model, 'supernet': params}
  return config, cloud, topology, splits, choices, dataset.num_classes


def device_stage(config, cloud, topology, splits, choices, num_classes):
  key = jax.random.key(config.seed)
  headers = device_stages.device_headers(config, cloud, topology, splits,
                                         choices, key, num_classes,
                                         log=lambda _: None)
  device_stages.run_rounds(config, headers, num_classes, 'pruning_per_emd',
                           jax.random.fold_in(key, 1))
  return headers


def per_user_bytes(headers) -> int:
  h = headers[0]
  leaves = jax.tree.leaves((h.data, h.state))
  return int(sum(x.nbytes if hasattr(x, 'nbytes') else 0 for x in leaves))


def main(argv):
  del argv
  strategies = [s for s in _STRATEGIES.value
                if s != 'sharded' or jax.device_count() > 1]
  rows, per_minute = [], {}
  for users in map(int, _USERS.value):
    problem = setup(users)
    for strategy in strategies:
      config = problem[0]
      config.engine.strategy = strategy
      config.engine.chunk = _CHUNK.value
      engine.clear_caches()
      before = sum(engine.trace_counts().values())
      start = time.perf_counter()
      headers = device_stage(*problem)
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
