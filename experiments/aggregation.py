"""Paper table: personalized architecture aggregation under non-IID data
(docs/method.md 6, 8).

  python -m experiments.aggregation --config=configs/default.py --workdir=runs/default
  python -m experiments.aggregation --config=configs/paper_tables.py --workdir=runs/tables

For each category setup (`aggregation.setups`: IID, C2, C3, C4) every device
gets its data and, as in the prototype's experiment, its edge's one
backbone, header architecture and initial weights (`shared_headers`), which
it trains on its own data; then every mode runs its rounds from the same
headers with the same training keys (a paired comparison): wo_pruning,
pruning_alone, pruning_avg, and the personalized pruning_per_js /
pruning_per_emd at each of `aggregation.temperatures`. Repeat r redraws the
device data (seed + r), every device-side key and the headers' initial
weights.

Reports mean device test accuracy per setup and mode as mean ± 95% CI over
repeats, and each mode's paired difference to wo_pruning with its CI (a
gain "holds" where the CI excludes 0). Reuses the workdir's cloud stages and
adds `aggregation` to results.json.
"""
import functools

import jax
import numpy as np

from acme_jax import choices
from acme_jax import pipeline
from acme_jax import figures
from acme_jax import report
from acme_jax import stats
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax.data import stage as data_stage
from acme_jax.device import stage as device_stage
from acme_jax.device import state as state_lib
from acme_jax.edge import stage as edge_stage
from acme_jax.federated import acme
from acme_jax.parallel import engine
from experiments import table

SECTIONS = world_lib.DEVICE_SECTIONS
EXPERIMENT = table.Experiment('aggregation', SECTIONS,
                              repeats_in='aggregation',
                              markdown=report.aggregation_table,
                              figure=figures.aggregation_figure)


def columns(config) -> list:
  """(column name, mode, temperature) of every compared run."""
  out = []
  for mode in config.aggregation.modes:
    if mode in choices.PERSONALIZED_MODES:
      out += [(f'{mode}@T={t:g}', mode, t)
              for t in config.aggregation.temperatures]
    else:
      out.append((mode, mode, None))
  return out


def setup_partition(config, setup: str, seed=None):
  aggregation = config.aggregation
  return data_stage.PartitionHparams.from_config(
      config, scheme=setup, fraction_per_class=aggregation.fraction_per_class,
      seed=seed)


def shared_headers(world: world_lib.World, hp, delivery, key):
  """The prototype's set-up: per edge one backbone (`one_per_edge`), one
  header architecture (searched on the edge's smallest-budget device, so
  it fits every device's budget) and one initialization for every device;
  each device then trains it on its own data. So channel c is the same
  channel on all of an edge's devices, and the modes differ only in how
  they weigh each other's importances."""
  targets = device_stage.targets(hp, delivery.records, key)
  leads = {}
  for i, record in sorted(enumerate(delivery.records),
                          key=lambda x: (x[1]['budget'], x[0])):
    leads.setdefault(record['edge'], i)
  order = sorted(leads.values())
  found = device_stage.search_headers(
      hp, [delivery.features[i] for i in order], [targets[i] for i in order])
  arch = {targets[i].edge: h.arch for i, h in zip(order, found)}
  headers = device_stage.search_headers(
      hp, delivery.features, targets,
      archs=[arch[t.edge] for t in targets])
  return pipeline.with_signatures(world, headers, delivery.splits)


def one_repeat(world: world_lib.World, repeat: int, log):
  """Mean device test accuracy of every column on every setup, one repeat.
  Each setup is its own cached cell (`repeat_<r>/<setup>.json`): on text a
  setup takes half an hour, and an interrupted run resumes at the last one."""
  config = world.config
  aggregation = config.aggregation
  device_hp = device_stage.DeviceHparams.from_config(config,
                                                     world.num_classes)
  key = table.repeat_key(config, streams.AGGREGATION_EXPERIMENT, repeat)
  # A setup's cell records its engine strategy: the table pairs setups'
  # columns across repeats, and strategies agree only statistically
  # (docs/reproducibility.md).
  cell_fingerprint = dict(
      EXPERIMENT.fingerprint(config), engine_strategy=engine.resolved_strategy(
          device_hp.strategy, world.topology.num_devices))
  out = {}
  for s, setup in enumerate(aggregation.setups):
    out[setup] = world.wd.cached_stage(
        f'experiments/aggregation/repeat_{repeat}/{setup}.json',
        cell_fingerprint,
        lambda s=s, setup=setup: _one_setup(world, device_hp, setup, repeat,
                                            jax.random.fold_in(key, s)))
    log(f'[aggregation] repeat {repeat} {setup}: ' + ', '.join(
        f'{k} {v:.3f}' for k, v in out[setup].items()))
  return out


def _one_setup(world: world_lib.World, device_hp, setup: str, repeat: int,
               setup_key) -> dict:
  """Every column's mean device test accuracy on one setup."""
  config = world.config
  quiet = lambda *_: None  # noqa: E731
  splits = data_stage.device_splits(
      setup_partition(config, setup,
                      seed=table.repeat_seed(config, repeat)),
      world.device_data, world.num_classes)
  if config.aggregation.test_on == 'class_matched':
    splits = data_stage.class_matched_test(splits, world.dataset.test)
  delivery = edge_stage.deliver(config, world, splits, device_hp, quiet,
                                one_per_edge=True)
  base = shared_headers(world, device_hp, delivery, setup_key)
  accs = {}
  for name, mode, temperature in columns(config):
    rounds = acme.RoundsHparams.from_config(config, mode, temperature)
    devices, _ = acme.run(rounds, device_hp.nas, base,
                          jax.random.fold_in(setup_key, streams.ROUNDS))
    accs[name] = float(np.mean(state_lib.test_accuracy(
        device_hp.nas, devices, device_hp.strategy)))
  return accs


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


def run(config, workdir, log=print, shard=None):
  every_setup = [(setup_partition(config, setup), 'aggregation.setups')
                 for setup in config.aggregation.setups]  # checked up front
  return EXPERIMENT.run(config, workdir, log, shard, one_repeat,
                        functools.partial(summarize, config), every_setup)


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run, shards=True)
