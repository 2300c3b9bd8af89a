"""Paper table: personalized architecture aggregation under non-IID data
(ACME.md 6, 8).

  python -m experiments.aggregation --config=configs/default.py --workdir=runs/default
  python -m experiments.aggregation --config=configs/paper_tables.py --workdir=runs/tables

For each category setup (`aggregation.setups`: IID, C2, C3, C4) every device
gets its data, its backbone from the edge and a NAS header; then every mode
runs its rounds from the same headers with the same training keys (a paired
comparison): wo_pruning, pruning_alone, pruning_avg, and the personalized
pruning_per_js / pruning_per_emd at each of `aggregation.temperatures`.
Repeat r redraws the device data (seed + r) and every device-side key.

Reports mean device test accuracy per setup and mode as mean ± 95% CI over
repeats, and each mode's paired difference to wo_pruning with its CI (a
gain "holds" where the CI excludes 0). Reuses the workdir's cloud stages and
adds `aggregation` to results.json.
"""
import dataclasses

import jax
import numpy as np

from acme_jax import device_stages
from acme_jax import report
from acme_jax import shapes
from acme_jax import stages
from acme_jax import stats
from acme_jax import workdir as workdir_lib

SECTIONS = stages.CLOUD_SECTIONS + ('selection', 'system', 'header',
                                    'aggregation')
PERSONALIZED = ('pruning_per_js', 'pruning_per_emd')


def columns(config) -> list:
  """(column name, mode, temperature) of every compared run."""
  out = []
  for mode in config.aggregation.modes:
    if mode in PERSONALIZED:
      out += [(f'{mode}@T={t:g}', mode, t)
              for t in config.aggregation.temperatures]
    else:
      out.append((mode, mode, None))
  return out


def one_repeat(config, cloud, selection, topology, device_data, test,
               num_classes, repeat, log):
  """Mean device test accuracy of every column on every setup, one repeat."""
  a = config.aggregation
  seed = config.seed + repeat
  key = jax.random.fold_in(jax.random.fold_in(
      jax.random.key(config.seed), stages.AGGREGATION), repeat)
  out = {}
  for s, setup in enumerate(a.setups):
    splits = device_stages.device_splits(
        config, device_data, topology.num_devices, num_classes, scheme=setup,
        fraction_per_class=a.fraction_per_class, seed=seed)
    if a.test_on == 'class_matched':
      splits = device_stages.class_matched_test(splits, test)
    _, picks = device_stages.edge_choice(config, selection, topology, splits,
                                         num_classes)
    cands = selection['candidates']
    choices = [(cands[p.candidate]['width_mult'],
                cands[p.candidate]['depth_mult'], p.params) for p in picks]
    setup_key = jax.random.fold_in(key, s)
    base = device_stages.device_headers(
        config, cloud, topology, splits, choices,
        jax.random.fold_in(setup_key, 0), num_classes, log=lambda *_: None)
    accs = {}
    for name, mode, temperature in columns(config):
      devices = [dataclasses.replace(d) for d in base]
      device_stages.run_rounds(config, devices, num_classes, mode,
                               jax.random.fold_in(setup_key, 1), temperature)
      accs[name] = float(np.mean(device_stages.test_accuracies(config, devices,
                                                                num_classes)))
    out[setup] = accs
    log(f'[aggregation] repeat {repeat} {setup}: ' + ', '.join(
        f'{k} {v:.3f}' for k, v in accs.items()))
  return out


def summarize(config, repeats) -> dict:
  names = [c[0] for c in columns(config)]
  by_setup, gains = {}, {}
  for setup in config.aggregation.setups:
    by_setup[setup] = {n: stats.mean_ci([rep[setup][n] for rep in repeats])
                       for n in names}
    if 'wo_pruning' in names:
      gains[setup] = {n: stats.paired([rep[setup][n] for rep in repeats],
                                      [rep[setup]['wo_pruning']
                                       for rep in repeats])
                      for n in names if n != 'wo_pruning'}
  # The paper's ordering, per_emd > per_js > alone > avg, as paired
  # differences at each temperature.
  order = {}
  for t in config.aggregation.temperatures:
    emd, js = f'pruning_per_emd@T={t:g}', f'pruning_per_js@T={t:g}'
    for setup in config.aggregation.setups:
      pairs = [(emd, js), (js, 'pruning_alone'),
               ('pruning_alone', 'pruning_avg'), (emd, 'pruning_avg')]
      order.setdefault(f'T={t:g}', {})[setup] = {
          f'{a} - {b}': stats.paired([rep[setup][a] for rep in repeats],
                                     [rep[setup][b] for rep in repeats])
          for a, b in pairs if a in names and b in names}
  return {'by_setup': by_setup, 'gain_vs_wo_pruning': gains,
          'paper_order': order, 'repeats': len(repeats), 'rows': repeats,
          'temperatures': list(config.aggregation.temperatures)}


def run(config, workdir, log=print) -> dict:
  wd = stages.prepare_run(config, workdir)
  dataset, cloud_data, device_data = stages.load_data(config, log)
  for setup in config.aggregation.setups:  # every setup feasible, up front
    device_stages.check_partition(
        config, device_data, stages.num_devices(config), dataset.num_classes,
        scheme=setup,
        fraction_per_class=config.aggregation.fraction_per_class,
        field='aggregation.setups')
  cloud = stages.run_cloud(config, wd, dataset, cloud_data, log)
  selection = stages.run_selection(
      config, cloud['grid'], shapes.architecture(config, dataset.num_classes))
  topology = stages.build_topology(config, cloud['grid'])
  repeats = []
  for r in range(config.aggregation.repeats):
    repeats.append(stages.cached_stage(
        wd, f'experiments/aggregation/repeat_{r}.json', config, SECTIONS,
        lambda r=r: one_repeat(config, cloud, selection, topology,
                               device_data, dataset.test,
                               dataset.num_classes, r, log)))
  aggregation = summarize(config, repeats)
  workdir_lib.atomic_write_json(wd / 'aggregation.json', aggregation)
  workdir_lib.atomic_save_figure(wd / 'aggregation.png',
                                 report.aggregation_figure(aggregation))
  report.write_results(wd, {'aggregation': aggregation}, config)
  log('\n' + report.aggregation_table(aggregation))
  log(f'\naggregation: {wd / "aggregation.json"}, plot: '
      f'{wd / "aggregation.png"}')
  return aggregation


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run)
