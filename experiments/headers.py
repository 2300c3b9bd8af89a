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

from acme_jax import device_stages
from acme_jax import report
from acme_jax import stages
from acme_jax import stats
from acme_jax import workdir as workdir_lib
from acme_jax.device import customize
from acme_jax.models import subnet as subnet_lib

SECTIONS = stages.CLOUD_SECTIONS + ('system', 'header', 'baselines')


def one_repeat(config, cloud, topology, device_data, num_classes, repeat,
               log):
  """Mean device test accuracy of each head at each depth, one repeat."""
  seed = config.seed + repeat
  model, supernet = cloud['model'], cloud['supernet']
  splits = device_stages.device_splits(config, device_data,
                                       topology.num_devices, num_classes,
                                       seed=seed)
  key = jax.random.fold_in(jax.random.fold_in(
      jax.random.key(config.seed), stages.HEADERS), repeat)
  rows = []
  for depth in config.baselines.depth_fractions:
    sub = subnet_lib.for_model(model, 1.0, depth)
    locals_ = customize.many_local_features(
        config, model, supernet, [sub] * topology.num_devices,
        [splits[d.id] for d in topology.devices])
    # The same per-device keys at every depth: only the backbone changes.
    headers = customize.search_headers(
        config, locals_, num_classes,
        [jax.random.fold_in(key, d.id) for d in topology.devices],
        [config.system.header_allowance] * topology.num_devices,
        [customize.header_cells(config, 1.0, depth)] * topology.num_devices,
        [d.id for d in topology.devices],
        [d.edge_id for d in topology.devices])
    fixed = customize.baseline_accuracies(config, locals_, num_classes, seed)
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
  wd = stages.prepare_run(config, workdir)
  dataset, cloud_data, device_data = stages.load_data(config, log)
  device_stages.check_partition(config, device_data,
                                stages.num_devices(config),
                                dataset.num_classes)
  cloud = stages.run_cloud(config, wd, dataset, cloud_data, log)
  topology = stages.build_topology(config, cloud['grid'])
  repeats = []
  for r in range(config.baselines.repeats):
    repeats.append(stages.cached_stage(
        wd, f'experiments/headers/repeat_{r}.json', config, SECTIONS,
        lambda r=r: one_repeat(config, cloud, topology, device_data,
                               dataset.num_classes, r, log)))
  headers = summarize(config, repeats)
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
