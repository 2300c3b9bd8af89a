"""Paper table: the searched header vs fixed early-exit heads (ACME.md 8).

  python -m experiments.headers --config=configs/default.py --workdir=runs/default
  python -m experiments.headers --config=configs/paper_tables.py --workdir=runs/tables

Every device gets a full-width backbone cut at each depth fraction
(`baselines.depth_fractions`); on its cached features the ACME NAS header
(within `system.header_allowance`) and each fixed head (`baselines.kinds`)
are trained for the same epochs, each with its learning rate chosen on local
validation data, and tested on the device's test split. Repeat r redraws the
device data (partition seed `seed + r`) and every device-side key; the
cloud's supernet is the workdir's (trained once, as in the paper).

Reports per depth and on average: mean device test accuracy, mean ± 95% CI
over repeats, and the paired difference NAS - head with its CI; a
difference "holds" where the CI excludes 0. Reuses the workdir's cloud
stages (trains them first if absent) and adds `headers` to results.json.
"""
import jax
import numpy as np

from acme_jax import config as config_lib
from acme_jax import report
from acme_jax import stats
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.data import stage as data_stage
from acme_jax.device import stage as device_stage
from acme_jax.models import subnet as subnet_lib

SECTIONS = cloud_stage.SECTIONS + ('system', 'header', 'baselines')


def one_repeat(world: world_lib.World, repeat: int, log):
  """Mean device test accuracy of each head at each depth, one repeat."""
  config, topology = world.config, world.topology
  hp = device_stage.DeviceHparams.from_config(config, world.num_classes)
  seed = config.seed + repeat
  model, supernet = world.cloud.model, world.cloud.supernet
  splits = data_stage.device_splits(
      data_stage.PartitionHparams.from_config(config, seed=seed),
      world.device_data, world.num_classes)
  key = jax.random.fold_in(jax.random.fold_in(
      jax.random.key(config.seed), streams.HEADERS_EXPERIMENT), repeat)
  rows = []
  for depth in config.baselines.depth_fractions:
    sub = subnet_lib.for_model(model, 1.0, depth)
    locals_ = device_stage.local_features(
        hp, model, supernet, [sub] * topology.num_devices,
        [splits[d.id] for d in topology.devices])
    # The same per-device keys at every depth: only the backbone changes.
    targets = [device_stage.Target(
        device=d.id, edge=d.edge_id, key=jax.random.fold_in(key, d.id),
        limit=config.system.header_allowance,
        cells=device_stage.header_cells(hp, 1.0, depth))
               for d in topology.devices]
    headers = device_stage.search_headers(hp, locals_, targets)
    fixed = device_stage.fixed_heads(hp, locals_, seed)
    row = {'depth_fraction': depth,
           'acme_nas': float(np.mean([h.result['test_accuracy']
                                      for h in headers])),
           'nas_header_params': float(np.mean(
               [h.result['nas_header_params'] for h in headers]))}
    row.update({k: float(np.mean(v['test_accuracy'])) for k, v in
                fixed.items()})
    row['params'] = {k: int(np.mean(v['params'])) for k, v in fixed.items()}
    row['learning_rate'] = {k: v['learning_rate'] for k, v in fixed.items()}
    rows.append(row)
    log(f'[headers] repeat {repeat} depth {depth:g}: ' + ', '.join(
        f'{k} {row[k]:.3f}' for k in ('acme_nas',) + tuple(fixed)))
  return rows


def summarize(config, repeats) -> dict:
  """Means, CIs and paired differences over the repeats' rows."""
  heads = ('acme_nas',) + tuple(config.baselines.kinds)
  by_depth = []
  for i, depth in enumerate(config.baselines.depth_fractions):
    cells = {k: stats.mean_ci([rep[i][k] for rep in repeats]) for k in heads}
    diffs = {k: stats.paired([rep[i]['acme_nas'] for rep in repeats],
                             [rep[i][k] for rep in repeats])
             for k in config.baselines.kinds}
    by_depth.append({'depth_fraction': depth, 'accuracy': cells,
                     'nas_minus': diffs})
  average = {k: [float(np.mean([row[k] for row in rep])) for rep in repeats]
             for k in heads}
  return {
      'by_depth': by_depth,
      'average': {k: stats.mean_ci(v) for k, v in average.items()},
      'nas_minus': {k: stats.paired(average['acme_nas'], average[k])
                    for k in config.baselines.kinds},
      'repeats': len(repeats), 'rows': repeats,
  }


def run(config, workdir, log=print) -> dict:
  world = world_lib.build(config, workdir, log)
  fingerprint = config_lib.subset(config, SECTIONS)
  repeats = [world.wd.cached_stage(
      f'experiments/headers/repeat_{r}.json', fingerprint,
      lambda r=r: one_repeat(world, r, log))
             for r in range(config.baselines.repeats)]
  headers = summarize(config, repeats)
  wd = world.wd
  workdir_lib.atomic_write_json(wd / 'headers.json', headers)
  workdir_lib.atomic_save_figure(wd / 'headers.png',
                                 report.headers_figure(headers))
  report.write_results(wd, {'headers': headers}, config)
  log('\n' + report.headers_table(headers))
  log(f'\nheaders: {wd / "headers.json"}, plot: {wd / "headers.png"}')
  return headers


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run)
