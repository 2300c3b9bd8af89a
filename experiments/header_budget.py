"""Under which search budget and data size does the searched header beat
the best fixed head, and random search? (docs/method.md 5, 8)

  python -m experiments.header_budget --config=configs/default.py --workdir=runs/default
  python -m experiments.header_budget --config=configs/minilm_prototype.py --workdir=runs/proto

On full-width backbones at depth `baselines.depth_fractions[0]`, each device's
training split is cut to `baselines.train_sizes` samples (at most what it
has; validation and test unchanged), and for each search budget
(`baselines.search_budgets`) the searched header, the random architecture
and the fixed heads are compared as in `experiments.headers`
(`device/compare.py`: the same final training for every arm). A budget is
the search's epochs and controller steps per epoch:

  default     the config's header.search_epochs, controller_steps_per_epoch
  x4          four times the default's epochs
  prototype   the prototype's ratio of steps to samples: 130 epochs (about
              one child step per training sample at batch 128) and 300
              controller steps per 45,000 training samples per epoch (its
              300 steps per epoch on ~45,000 images), at least one

The random architecture and the fixed heads do not depend on the budget;
they are trained once per repeat and size. Reports per (size, budget) the
mean device test accuracy of each, and the paired differences searched -
best fixed head and searched - random with 95% CIs over
`baselines.repeats`; a gain holds where its CI excludes 0. Adds
`header_budget` to results.json.
"""
import dataclasses
import functools

import numpy as np

from acme_jax import report
from acme_jax import resume
from acme_jax import stats
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.device import compare
from acme_jax.device import stage as device_stage
from acme_jax.parallel import engine
from experiments import table

SECTIONS = cloud_stage.SECTIONS + ('system', 'header', 'baselines')
EXPERIMENT = table.Experiment('header_budget', SECTIONS,
                              repeats_in='baselines',
                              markdown=report.budget_table)
# The prototype's search (`train_search.py`, `run_hyperparams.sh`).
PROTOTYPE_EPOCHS = 130
PROTOTYPE_CONTROLLER_STEPS = 300
PROTOTYPE_TRAIN_SAMPLES = 45_000


def budget(hp: device_stage.DeviceHparams, name: str, samples: int):
  """(search epochs, controller steps per epoch) of budget `name` for
  devices with `samples` training samples."""
  search = hp.search
  if name == 'default':
    return search.epochs, search.controller_steps_per_epoch
  if name == 'x4':
    return 4 * search.epochs, search.controller_steps_per_epoch
  if name == 'prototype':
    return PROTOTYPE_EPOCHS, max(1, round(
        PROTOTYPE_CONTROLLER_STEPS * samples / PROTOTYPE_TRAIN_SAMPLES))
  raise ValueError(f'unknown search budget {name!r}')


def _cut(splits, n: int, seed: int):
  """Each device's train split cut to n random samples (all if fewer)."""
  out = []
  for d, (train, val, test) in enumerate(splits):
    if len(train) > n:
      keep = np.sort(np.random.default_rng(seed + d).choice(len(train), n,
                                                            replace=False))
      train = train.take(keep)
    out.append((train, val, test))
  return out


def one_repeat(world: world_lib.World, repeat: int, log):
  """One repeat's rows. Each size's comparison (which holds the default
  budget's search) and each other budget's search is its own cached cell
  (`repeat_<r>/n<size>_<name>.json`): on text one repeat takes hours, and an
  interrupted run resumes at the last cell. A longer search also saves its
  state every `resume.every_steps` child steps and resumes from there (on
  text the prototype's budget on 1,250 samples runs for hours)."""
  config, topology = world.config, world.topology
  inputs = table.repeat_inputs(world, repeat, streams.BUDGET_EXPERIMENT)
  hp, seed = inputs.hp, inputs.seed
  depth = config.baselines.depth_fractions[0]
  # A cell records its engine strategy: a row pairs cells, and strategies
  # agree only statistically (docs/reproducibility.md), so a resume under
  # another strategy recomputes them.
  cell_fingerprint = dict(
      EXPERIMENT.fingerprint(config), engine_strategy=engine.resolved_strategy(
          hp.strategy, topology.num_devices))
  rows = []
  for n in config.baselines.train_sizes:
    cut = _cut(inputs.splits, n, seed)

    @functools.cache
    def locals_(cut=cut):
      # Features only when a cell of this size has to be computed.
      return table.full_width_features(world, hp, depth, cut)

    targets = table.full_width_targets(world, hp, depth, inputs.key)

    def cell(name, compute, n=n):
      return world.wd.cached_stage(
          f'experiments/header_budget/repeat_{repeat}/n{n}_{name}.json',
          cell_fingerprint, compute)

    def partial(name, progress, n=n):
      return resume.Partial(
          world.wd / f'experiments/header_budget/repeat_{repeat}/n{n}_{name}',
          config.resume.every_steps, cell_fingerprint, log=progress)

    # Every arm at the default budget; the searched header again at each
    # other (the random architecture and the fixed heads do not search).
    base = cell('compare', lambda: compare.compare(hp, locals_(), targets,
                                                   seed))
    samples = int(np.mean([len(c[0]) for c in cut]))
    for name in config.baselines.search_budgets:
      epochs, steps = budget(hp, name, samples)
      searched = {'nas': base['mean_test_accuracy'][compare.NAS],
                  'search_steps': base['search_steps']}
      if name != 'default':
        progress = functools.partial(
            _prefixed, log, f'[header_budget] repeat {repeat} n {samples} '
            f'{name}: ')
        mid_way = partial(name, progress)
        searched = cell(name, lambda epochs=epochs, steps=steps: _search(
            hp, epochs, steps, locals_(), targets, mid_way, progress))
        mid_way.finish()
      row = {'train_samples': samples, 'budget': name, 'epochs': epochs,
             'controller_steps_per_epoch': steps,
             compare.NAS: searched['nas'],
             compare.RANDOM: base['mean_test_accuracy'][compare.RANDOM],
             compare.FIXED_BEST: base['mean_test_accuracy'][
                 compare.FIXED_BEST],
             'search_steps': searched['search_steps']}
      rows.append(row)
      log(f'[header_budget] repeat {repeat} n {samples} {name}: ' +
          ', '.join(f'{k} {row[k]:.3f}' for k in
                    (compare.NAS, compare.RANDOM, compare.FIXED_BEST)))
  return rows


def _prefixed(log, prefix: str, message: str):
  log(prefix + message)


def _search(hp, epochs: int, steps: int, locals_, targets, partial,
            log) -> dict:
  """The searched header's mean device test accuracy and search steps at
  `epochs` x `steps` controller steps per epoch (saved mid-way in
  `partial`, progress to `log`)."""
  headers = device_stage.search_headers(dataclasses.replace(
      hp, search=dataclasses.replace(
          hp.search, epochs=epochs, controller_steps_per_epoch=steps)),
                                        locals_, targets, log=log,
                                        partial=partial)
  return {'nas': float(np.mean([h.result['test_accuracy'] for h in headers])),
          'search_steps': {
              'child': [h.result['child_steps'] for h in headers],
              'controller': [h.result['controller_steps'] for h in headers]}}


def summarize(config, repeats) -> dict:
  cells = []
  for i, first in enumerate(repeats[0]):
    column = [rep[i] for rep in repeats]
    nas = [r[compare.NAS] for r in column]
    cells.append({
        'train_samples': first['train_samples'], 'budget': first['budget'],
        'epochs': first['epochs'],
        'controller_steps_per_epoch': first['controller_steps_per_epoch'],
        'accuracy': {k: stats.mean_ci([r[k] for r in column]) for k in
                     (compare.NAS, compare.RANDOM, compare.FIXED_BEST)},
        'nas_minus_fixed_best': stats.paired(
            nas, [r[compare.FIXED_BEST] for r in column]),
        'nas_minus_random': stats.paired(
            nas, [r[compare.RANDOM] for r in column])})
  return {'cells': cells, 'repeats': len(repeats), 'rows': repeats,
          'depth_fraction': config.baselines.depth_fractions[0]}


def run(config, workdir, log=print, shard=None):
  return EXPERIMENT.run(config, workdir, log, shard, one_repeat,
                        functools.partial(summarize, config))


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run, shards=True)
