"""Paper table: the searched header vs fixed early-exit heads (docs/method.md 8).

  python -m experiments.headers --config=configs/default.py --workdir=runs/default
  python -m experiments.headers --config=configs/paper_tables.py --workdir=runs/tables

Every device gets a full-width backbone cut at each depth fraction
(`baselines.depth_fractions`); on its cached features the ACME NAS header
(within `system.header_allowance`), a random architecture within the same
budget (the control for NAS) and each fixed head (`baselines.kinds`) get the
same final training (`device/compare.py`) and are tested on the device's
test split. Repeat r redraws the device data (partition seed `seed + r`),
every device-side key and the headers' initial weights; the cloud's
supernet is the workdir's (trained once, as in the paper), so the CIs cover
the devices' data, keys and initialization, not the cloud's training.

Reports per depth and on average: mean device test accuracy, mean ± 95% CI
over repeats, and the paired difference NAS - arm with its CI; a
difference "holds" where the CI excludes 0. Reuses the workdir's cloud
stages (trains them first if absent) and adds `headers` to results.json,
with `final_train_steps` (each arm's per-device steps, equal across arms).
"""
import jax
import numpy as np

from acme_jax import config as config_lib
from acme_jax import figures
from acme_jax import report
from acme_jax import stats
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.data import stage as data_stage
from acme_jax.device import compare
from acme_jax.device import stage as device_stage
from acme_jax.models import subnet as subnet_lib

SECTIONS = cloud_stage.SECTIONS + ('system', 'header', 'baselines')


def one_repeat(world: world_lib.World, repeat: int, log):
  """Every arm at each depth, one repeat: per depth the mean device test
  accuracy of each arm and the per-device details (`compare.compare`)."""
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
    # The same per-device keys and initial weights at every depth: only
    # the backbone changes.
    targets = device_stage.targets(hp, [
        {'device': d.id, 'edge': d.edge_id, 'width_mult': 1.0,
         'depth_mult': depth, 'budget': config.system.header_allowance,
         'params': 0} for d in topology.devices], key)
    out = compare.compare(hp, locals_, targets, seed)
    rows.append({'depth_fraction': depth, **out['mean_test_accuracy'],
                 'details': out})
    log(f'[headers] repeat {repeat} depth {depth:g}: ' + ', '.join(
        f'{k} {v:.3f}' for k, v in out['mean_test_accuracy'].items()))
  return rows


def summarize(config, repeats) -> dict:
  """Means, CIs and paired differences over the repeats' rows."""
  names = compare.arms(config.baselines.kinds)
  others = names[1:]
  by_depth = []
  for i, depth in enumerate(config.baselines.depth_fractions):
    cells = {k: stats.mean_ci([rep[i][k] for rep in repeats]) for k in names}
    diffs = {k: stats.paired([rep[i][compare.NAS] for rep in repeats],
                             [rep[i][k] for rep in repeats]) for k in others}
    by_depth.append({'depth_fraction': depth, 'accuracy': cells,
                     'nas_minus': diffs})
  average = {k: [float(np.mean([row[k] for row in rep])) for rep in repeats]
             for k in names}
  first = repeats[0][0]['details']
  return {
      'by_depth': by_depth,
      'average': {k: stats.mean_ci(v) for k, v in average.items()},
      'nas_minus': {k: stats.paired(average[compare.NAS], average[k])
                    for k in others},
      'final_train_steps': first['final_train_steps'],
      'search_steps': first['search_steps'],
      'repeats': len(repeats), 'rows': repeats,
  }


def run(config, workdir, log=print, shard=None):
  world = world_lib.build(config, workdir, log)
  fingerprint = config_lib.repeat_fingerprint(config, SECTIONS)
  repeats = world.wd.cached_repeats(
      'headers', fingerprint, config.baselines.repeats,
      lambda r: one_repeat(world, r, log), shard)
  if repeats is None:
    return None
  headers = summarize(config, repeats)
  wd = world.wd
  workdir_lib.atomic_write_json(wd / 'headers.json', headers)
  workdir_lib.atomic_save_figure(wd / 'headers.png',
                                 figures.headers_figure(headers))
  report.write_results(wd, {'headers': headers}, config)
  log('\n' + report.headers_table(headers))
  log(f'\nheaders: {wd / "headers.json"}, plot: {wd / "headers.png"}')
  return headers


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run, shards=True)
