"""Why does the searched header lose to fixed heads? An ablation.

  python -m experiments.header_ablation --config=configs/paper_tables.py --workdir=runs/tables

On the same devices, backbones and keys as `experiments.headers` (full width,
depths `baselines.ablation_depths`), each column trains a header and tests
it on the device's test split:

  nas_shared         search, then train the found arch from the search's
                     shared weights (the prototype)
  nas_scratch        search, then train the found arch from fresh weights
                     (ENAS's final retraining)
  nas_shared_longer  as nas_shared, with 4x the fine-tuning epochs
  random             a uniformly random arch within budget, fresh weights
  smallest           the cheapest cell (pools only), fresh weights
  fixed_best         the fixed head (`baselines.kinds`) best on local
                     validation, on each repeat

nas_scratch vs random isolates what the search's choice of arch is worth;
nas_shared vs nas_scratch what the shared weights are worth as a start;
nas_shared vs nas_shared_longer whether fine-tuning is too short. Reports
mean ± 95% CI over `baselines.repeats` and paired differences to
nas_shared.
"""
import copy

import jax
import numpy as np

from acme_jax import device_stages
from acme_jax import report
from acme_jax import stages
from acme_jax import stats
from acme_jax import workdir as workdir_lib
from acme_jax.device import controller as controller_lib
from acme_jax.device import customize
from acme_jax.device import header as header_lib
from acme_jax.models import subnet as subnet_lib

SECTIONS = stages.CLOUD_SECTIONS + ('system', 'header', 'baselines')
COLUMNS = ('nas_shared', 'nas_scratch', 'nas_shared_longer', 'random',
           'smallest', 'fixed_best')


def _random_archs(spec, keys, limit, cells):
  out = []
  for key, n in zip(keys, cells):
    while True:
      key, sub = jax.random.split(key)
      arch = np.asarray(controller_lib.uniform_arch(sub, spec.num_nodes))
      if int(header_lib.param_count(spec, arch, n)) <= limit:
        out.append(arch)
        break
  return out


def one_repeat(config, cloud, topology, device_data, num_classes, repeat,
               log):
  seed = config.seed + repeat
  model, supernet = cloud['model'], cloud['supernet']
  splits = device_stages.device_splits(config, device_data,
                                       topology.num_devices, num_classes,
                                       seed=seed)
  key = jax.random.fold_in(jax.random.fold_in(
      jax.random.key(config.seed), stages.HEADERS), repeat)
  ids = [d.id for d in topology.devices]
  edges = [d.edge_id for d in topology.devices]
  limit = config.system.header_allowance
  rows = []
  for depth in config.baselines.ablation_depths:
    sub = subnet_lib.for_model(model, 1.0, depth)
    locals_ = customize.many_local_features(
        config, model, supernet, [sub] * len(ids), [splits[d] for d in ids])
    keys = [jax.random.fold_in(key, d) for d in ids]
    cells = [customize.header_cells(config, 1.0, depth)] * len(ids)
    spec = customize.nas_config(config, locals_[0].x_train.shape,
                                num_classes).spec

    def headers(cfg, archs=None):
      found = customize.search_headers(cfg, locals_, num_classes, keys,
                                       [limit] * len(ids), cells, ids, edges,
                                       archs=archs)
      return float(np.mean([h.result['test_accuracy'] for h in found]))

    variant = lambda **fields: _with_header(config, **fields)  # noqa: E731
    row = {'depth_fraction': depth}
    row['nas_shared'] = headers(variant(final_weights='shared'))
    row['nas_scratch'] = headers(variant(final_weights='scratch'))
    row['nas_shared_longer'] = headers(variant(
        final_weights='shared',
        finetune_epochs=4 * config.header.finetune_epochs))
    row['random'] = headers(config, _random_archs(
        spec, [jax.random.fold_in(k, 5) for k in keys], limit, cells))
    row['smallest'] = headers(
        config, [header_lib.smallest_arch(spec.num_nodes)] * len(ids))
    fixed = customize.baseline_accuracies(config, locals_, num_classes, seed)
    best = max(fixed.values(), key=lambda v: np.mean(v['val_accuracy']))
    row['fixed_best'] = float(np.mean(best['test_accuracy']))
    rows.append(row)
    log(f'[header_ablation] repeat {repeat} depth {depth:g}: ' + ', '.join(
        f'{k} {row[k]:.3f}' for k in COLUMNS))
  return rows


def _with_header(config, **fields):
  config = copy.deepcopy(config)
  with config.unlocked():
    for name, value in fields.items():
      config.header[name] = value
  return config


def summarize(config, repeats) -> dict:
  by_depth = []
  for i, depth in enumerate(config.baselines.ablation_depths):
    cells = {k: stats.mean_ci([rep[i][k] for rep in repeats])
             for k in COLUMNS}
    diffs = {k: stats.paired([rep[i][k] for rep in repeats],
                             [rep[i]['nas_shared'] for rep in repeats])
             for k in COLUMNS if k != 'nas_shared'}
    by_depth.append({'depth_fraction': depth, 'accuracy': cells,
                     'minus_nas_shared': diffs})
  return {'by_depth': by_depth, 'repeats': len(repeats), 'rows': repeats}


def run(config, workdir, log=print) -> dict:
  wd = stages.prepare_run(config, workdir)
  dataset, cloud_data, device_data = stages.load_data(config, log)
  device_stages.check_partition(config, device_data,
                                stages.num_devices(config),
                                dataset.num_classes)
  cloud = stages.run_cloud(config, wd, dataset, cloud_data, log)
  topology = stages.build_topology(config, cloud['grid'])
  repeats = [stages.cached_stage(
      wd, f'experiments/header_ablation/repeat_{r}.json', config, SECTIONS,
      lambda r=r: one_repeat(config, cloud, topology, device_data,
                             dataset.num_classes, r, log))
             for r in range(config.baselines.repeats)]
  ablation = summarize(config, repeats)
  workdir_lib.atomic_write_json(wd / 'header_ablation.json', ablation)
  report.write_results(wd, {'header_ablation': ablation}, config)
  log('\n' + report.ablation_table(ablation))
  return ablation


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run)
