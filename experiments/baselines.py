"""ACME or a federated method? The baselines on ACME's data, budgets and
ledger.

  python -m experiments.baselines --config=configs/default.py --workdir=runs/default
  python -m experiments.baselines --config=configs/paper_tables.py --workdir=runs/tables

On the world's devices, edges and budgets, and on each partition of
`federated.setups` (Dirichlet, IID, C2, C3, C4), every method of
`federated.methods` (FedAvg with local fine-tuning, FedPer, HeteroFL,
FjORD, DepthFL; `acme_jax/federated/`) runs `federated.rounds` rounds of
`federated.local_epochs` from the cloud's fine-tuned, importance-reordered
teacher (the reordering puts the most important heads and neurons first,
which the width-nested methods keep), edges averaging every round and the
cloud every `federated.cloud_every`; ACME runs its own device stage on the
same partition (`pipeline.customize`). Every deployed model fits its
device's budget; every byte is a ledger record.

Per method and setup: mean and worst-device test accuracy (mean ± 95% CI
over `federated.repeats`; each repeat redraws the partition and keys),
bytes (hop-weighted) and bytes relative to ACME's, device-side training
FLOPs, rounds and wall time; and ACME minus each method, paired over the
repeats. Adds `baselines` to results.json, a table to report.md and
`baselines.png` (accuracy against bytes).
"""
import dataclasses
import time

import jax
import numpy as np

from acme_jax import config as config_lib
from acme_jax import pipeline
from acme_jax import figures
from acme_jax import report
from acme_jax import stats
from acme_jax import streams
from acme_jax import orbax_io
from acme_jax import workdir as workdir_lib
from acme_jax import world as world_lib
from acme_jax.data import stage as data_stage
from acme_jax.federated import (depthfl, fedavg, fedper, heterofl, fjord,
                                hierarchical, local)
from acme_jax.federated import algorithm as algorithm_lib
from acme_jax.federated import flops as flops_lib
from acme_jax.federated import holdings as holdings_lib
from acme_jax.federated.method import FederatedHparams
from acme_jax.hardware import virtual_time
from acme_jax.hierarchy.ledger import Ledger

SECTIONS = world_lib.DEVICE_SECTIONS + ('federated',)
METHODS = {'fedavg': fedavg, 'fedper': fedper, 'heterofl': heterofl,
           'fjord': fjord, 'depthfl': depthfl}


def teacher_params(world: world_lib.World):
  """The cloud's fine-tuned teacher, importance-reordered when the config
  reorders (what every method starts from)."""
  name = ('cloud/reordered' if world.config.cloud.reorder
          else 'cloud/teacher')
  return orbax_io.restore(world.wd / name, world.cloud.supernet)


def setup_partition(config, setup: str, seed=None):
  """Partition `setup` of the devices' data: a category setup takes
  `aggregation.fraction_per_class` of each class, as the aggregation
  experiment."""
  fraction = (config.aggregation.fraction_per_class
              if setup in data_stage.partition.CATEGORY_SCHEMES else None)
  return data_stage.PartitionHparams.from_config(
      config, scheme=setup, fraction_per_class=fraction, seed=seed)


def setup_splits(world: world_lib.World, setup: str, seed: int):
  """The devices' splits under partition `setup` with seed `seed`."""
  return data_stage.device_splits(setup_partition(world.config, setup, seed),
                                  world.device_data, world.num_classes)


def run_method(name: str, world: world_lib.World, params, splits,
               hp: FederatedHparams) -> dict:
  """One federated method on one partition, at each peak rate of
  `federated.lrs`; reports the rate with the best mean device validation
  accuracy: per device its budget, deployed parameters, accuracy, bytes
  and training FLOPs; the ledger's totals. A device no model of the method
  fits is not served: it trains nothing and scores 0."""
  t0 = time.time()
  module = METHODS[name]
  model = world.cloud.model
  budgets = [d.budget for d in world.topology.devices]
  params, holdings = module.setup(model, params, budgets)
  devices = local.devices(world.topology, splits, holdings,
                          world.num_classes, module.METHOD.label_split)
  if not devices:
    hp = dataclasses.replace(hp, lrs=(None,))
  nothing = _nothing(world.fleet is not None)
  tried = [_one_rate(module, model, dataclasses.replace(hp, lr=lr), params,
                     devices, world.fleet) if devices else nothing
           for lr in hp.lrs]
  best = int(np.argmax([np.mean(t['val'] or [0.0]) for t in tried]))  # 1st tie
  run, ledger = tried[best], tried[best]['ledger']
  traffic = ledger.by_device()
  served = {d.id: (d, v, a, f) for d, v, a, f in zip(
      devices, run['val'], run['test'], run['flops'])}
  out = {'devices': []}
  for device in world.topology.devices:
    if device.id not in served:  # no model of the method fits its budget
      out['devices'].append({
          'device': device.id, 'budget': device.budget, 'served': False,
          'params': 0, 'val_accuracy': 0.0, 'test_accuracy': 0.0,
          'flops': 0.0, 'bytes_down': 0, 'bytes_up': 0})
      continue
    d, v, a, f = served[device.id]
    out['devices'].append({
        'device': d.id, 'budget': device.budget, 'served': True,
        'params': holdings_lib.held_count(d.holding.holder),
        'val_accuracy': v, 'test_accuracy': a, 'flops': f,
        'bytes_down': traffic[d.id]['down'], 'bytes_up': traffic[d.id]['up']})
  out.update(lr=hp.lrs[best],
             val_by_lr=[float(np.mean(t['val'] or [0.0])) for t in tried],
             bytes=ledger.total(), bytes_unweighted=ledger.total(False),
             rounds=hp.rounds, seconds=time.time() - t0)
  if 'simulated_time' in run:
    out['simulated_time'] = run['simulated_time']
  return out


def _nothing(hardware: bool = False) -> dict:
  """A method that serves no device: it trains and sends nothing."""
  out = {'val': [], 'test': [], 'flops': [], 'ledger': Ledger()}
  if hardware:
    out['simulated_time'] = virtual_time.timeline([], [], [])
  return out


def _one_rate(module, model, hp: FederatedHparams, params, devices,
              fleet=None) -> dict:
  """The method's rounds and deployment at one peak rate; with a `fleet`
  (devices as hardware), their simulated time too."""
  ledger = Ledger()
  state, history = algorithm_lib.run(
      module.algorithm(model, hp, params, devices), devices, ledger)
  flops = {d.id: sum(h['flops'] for h in history.get(d.id, []))
           for d in devices}
  deployed = hierarchical.deploy(module.METHOD, model, hp, state, devices,
                                 ledger)
  out = {'val': deployed['val'], 'test': deployed['test'], 'ledger': ledger,
         'flops': [flops[d.id] + f for d, f in zip(devices,
                                                   deployed['flops'])]}
  if fleet is not None:
    out['simulated_time'] = virtual_time.baseline_run(
        fleet, history, {d.id: f for d, f in zip(devices, deployed['flops'])},
        ledger.to_records(), hp.rounds)
  return out


def run_acme(world: world_lib.World, splits, key) -> dict:
  """ACME's device stage on the same partition (the main job's settings)."""
  t0 = time.time()
  customized = pipeline.customize(world, lambda *_: None, splits, key)
  ledger = Ledger.from_records(customized['ledger'])
  traffic = ledger.by_device()
  devices = [{'device': d['device'], 'budget': d['budget'],
              'params': d['total_params'], 'test_accuracy': d['test_accuracy'],
              'flops': acme_flops(world, d),
              'bytes_down': traffic[d['device']]['down'],
              'bytes_up': traffic[d['device']]['up']}
             for d in customized['devices']]
  out = {'devices': devices, 'bytes': ledger.total(),
         'bytes_unweighted': ledger.total(False),
         'rounds': world.config.aggregation.rounds,
         'seconds': time.time() - t0}
  if 'simulated_time' in customized:
    out['simulated_time'] = customized['simulated_time']
  return out


def acme_flops(world: world_lib.World, record: dict) -> float:
  """ACME's device-side training FLOPs (`flops.acme_phase_flops`), all
  phases."""
  phases = flops_lib.acme_phase_flops(world.cloud.model, world.cloud.supernet,
                                      world.config, record)
  return phases['setup'] + world.config.aggregation.rounds * phases['round']


def repeat_setup(world: world_lib.World, repeat: int, s: int):
  """(hyper-parameters, device splits, key) of partition
  `federated.setups[s]` in `repeat`: its partition seed and keys."""
  config = world.config
  key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
      jax.random.key(config.seed), streams.BASELINES_EXPERIMENT), repeat), s)
  hp = dataclasses.replace(FederatedHparams.from_config(config),
                           seed=config.seed + 1000 * repeat + s)
  setup = config.federated.setups[s]
  return hp, setup_splits(world, setup, config.seed + repeat), key


def run_methods(world: world_lib.World, params, splits,
                hp: FederatedHparams) -> dict:
  """Every method of `federated.methods`, each starting from `params` (the
  full-size weights each cuts to its devices' shapes)."""
  return {name: run_method(name, world, params, splits, hp)
          for name in world.config.federated.methods}


def one_setup(world: world_lib.World, repeat: int, s: int, log) -> dict:
  """ACME and every method (from the teacher) on partition
  `federated.setups[s]` of `repeat`."""
  hp, splits, key = repeat_setup(world, repeat, s)
  runs = {'acme': run_acme(world, splits, key)}
  runs.update(run_methods(world, teacher_params(world), splits, hp))
  log(f'[baselines] repeat {repeat} {world.config.federated.setups[s]}: ' +
      ', '.join(f"{k} {mean_accuracy(v):.3f}" for k, v in runs.items()))
  return runs


def mean_accuracy(run: dict) -> float:
  """A method's (or ACME's) mean device test accuracy in one run."""
  return float(np.mean([d['test_accuracy'] for d in run['devices']]))


def _cell(runs: list) -> dict:
  """One method on one setup over the repeats: mean and worst-device test
  accuracy (mean ± 95% CI), bytes, device FLOPs, rates, time."""
  means = [mean_accuracy(r) for r in runs]
  worst = [float(np.min([d['test_accuracy'] for d in r['devices']]))
           for r in runs]
  return {'accuracy': stats.mean_ci(means), 'worst': stats.mean_ci(worst),
          'bytes': float(np.mean([r['bytes'] for r in runs])),
          'bytes_unweighted': float(np.mean([r['bytes_unweighted']
                                             for r in runs])),
          'device_flops': float(np.mean([d['flops'] for r in runs
                                         for d in r['devices']])),
          'lrs': [r.get('lr') for r in runs],
          'rounds': runs[0]['rounds'],
          'wall_seconds': float(np.mean([r['seconds'] for r in runs])),
          'devices': runs[0]['devices'],
          **_simulated(runs)}


def _simulated(runs: list) -> dict:
  """The simulated seconds to the final accuracy and those spent waiting
  for stragglers (mean ± 95% CI over repeats), when the devices are
  hardware."""
  if 'simulated_time' not in runs[0]:
    return {}
  return {f'simulated_{k}': stats.mean_ci(
      [r['simulated_time'][k] for r in runs])
          for k in ('seconds', 'straggler_seconds')}


def summarize(config, repeats) -> dict:
  """`repeats[r][setup][method]` -> the baselines section: per setup and
  method a cell (`_cell`), bytes relative to ACME's and ACME minus the
  method, paired over repeats; and, per method, the first setup's numbers
  at the top level (ACME's main partition)."""
  setups = list(config.federated.setups)
  names = ['acme'] + list(config.federated.methods)
  by_setup, acme_minus = {}, {}
  for setup in setups:
    cells = {n: _cell([rep[setup][n] for rep in repeats]) for n in names}
    for n in names:
      cells[n]['bytes_vs_acme'] = cells[n]['bytes'] / cells['acme']['bytes']
    acme = cells['acme']
    acme_minus[setup] = {
        n: {k: stats.paired(acme[k]['values'], cells[n][k]['values'])
            for k in ('accuracy', 'worst')} for n in names[1:]}
    by_setup[setup] = cells
  main = by_setup[setups[0]]
  out = {n: {'mean_test_accuracy': main[n]['accuracy']['mean'],
             'ci95': main[n]['accuracy']['ci'],
             'worst_test_accuracy': main[n]['worst']['mean'],
             'worst_ci95': main[n]['worst']['ci'],
             'bytes': main[n]['bytes'],
             'bytes_vs_acme': main[n]['bytes_vs_acme'],
             'devices': main[n]['devices'],
             **{k: main[n][k] for k in ('simulated_seconds',
                                        'simulated_straggler_seconds')
                if k in main[n]}} for n in names}
  out.update(setups=setups, methods=names, repeats=len(repeats),
             by_setup=by_setup, acme_minus=acme_minus)
  return out


def simulated_section(wd, result) -> dict:
  """results.json's `simulated_time` with every method's (ACME's among
  them, on the baselines' partitions and repeats) beside the main job's."""
  acme = result['acme']['simulated_seconds']['values']
  return report.merged_section(wd, 'simulated_time', {'methods': {
      n: {'seconds': result[n]['simulated_seconds'],
          'straggler_seconds': result[n]['simulated_straggler_seconds'],
          # Paired over repeats (the same partition and devices).
          'minus_acme': stats.paired(
              result[n]['simulated_seconds']['values'], acme),
          'mean_test_accuracy': result[n]['mean_test_accuracy'],
          'setup': result['setups'][0], 'repeats': result['repeats']}
      for n in result['methods']}})


def partitions(config, setups):
  """What `world_lib.build` splits the devices' data by for `setups`."""
  return [(setup_partition(config, s), 'federated.setups') for s in setups]


def run(config, workdir, log=print) -> dict:
  world = world_lib.build(config, workdir, log,
                          partitions=partitions(config,
                                                config.federated.setups),
                          hardware=True)
  fingerprint = config_lib.repeat_fingerprint(config, SECTIONS)
  if world.fleet is not None:
    fingerprint.update(world.fleet.fingerprint(config))
  repeats = [{setup: world.wd.cached_stage(
      f'experiments/baselines/repeat_{r}/{setup}.json', fingerprint,
      lambda r=r, s=s: one_setup(world, r, s, log))
              for s, setup in enumerate(config.federated.setups)}
             for r in range(config.federated.repeats)]
  result = summarize(config, repeats)
  workdir_lib.atomic_write_json(world.wd / 'baselines.json', result)
  workdir_lib.atomic_save_figure(world.wd / 'baselines.png',
                                 figures.baselines_figure(result))
  sections = {'baselines': result}
  if world.fleet is not None:
    sections['simulated_time'] = simulated_section(world.wd, result)
  report.write_results(world.wd, sections, config)
  log('\n' + report.baselines_table(result))
  return result


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run)
