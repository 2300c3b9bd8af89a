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
  fixed_best         per device, the fixed head (`baselines.kinds`) best
                     on local validation

nas_scratch vs random isolates what the search's choice of arch is worth;
nas_shared vs nas_scratch what the shared weights are worth as a start;
nas_shared vs nas_shared_longer whether fine-tuning is too short. Reports
mean ± 95% CI over `baselines.repeats` and paired differences to
nas_shared.
"""
import dataclasses
import functools

import numpy as np

from acme_jax import report
from acme_jax import stats
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.device import header as header_lib
from acme_jax.device import stage as device_stage
from experiments import table

SECTIONS = cloud_stage.SECTIONS + ('system', 'header', 'baselines')
EXPERIMENT = table.Experiment('header_ablation', SECTIONS,
                              repeats_in='baselines',
                              markdown=report.ablation_table)
COLUMNS = ('nas_shared', 'nas_scratch', 'nas_shared_longer', 'random',
           'smallest', 'fixed_best')


def one_repeat(world: world_lib.World, repeat: int, log):
  """Every column at each of `baselines.ablation_depths`, one repeat."""
  inputs = table.repeat_inputs(world, repeat, streams.HEADERS_EXPERIMENT)
  hp = inputs.hp
  rows = []
  for depth in world.config.baselines.ablation_depths:
    locals_, targets = table.full_width_cut(world, inputs, depth)

    def headers(variant, archs=None):
      found = device_stage.search_headers(variant, locals_, targets,
                                          archs=archs)
      return float(np.mean([h.result['test_accuracy'] for h in found]))

    row = {'depth_fraction': depth}
    row['nas_shared'] = headers(dataclasses.replace(hp,
                                                    final_weights='shared'))
    row['nas_scratch'] = headers(dataclasses.replace(hp,
                                                     final_weights='scratch'))
    row['nas_shared_longer'] = headers(dataclasses.replace(
        hp, final_weights='shared', finetune_epochs=4 * hp.finetune_epochs))
    row['random'] = headers(hp, device_stage.random_archs(hp, targets))
    row['smallest'] = headers(
        hp, [header_lib.smallest_arch(hp.nas.spec.num_nodes)] * len(targets))
    fixed = device_stage.fixed_heads(hp, locals_, inputs.seed)
    # Per device, the fixed head best on validation (as `compare`).
    row['fixed_best'] = float(np.mean([
        max(fixed.values(), key=lambda v: v['val_accuracy'][d])[
            'test_accuracy'][d] for d in range(len(targets))]))
    rows.append(row)
    log(f'[header_ablation] repeat {repeat} depth {depth:g}: ' + ', '.join(
        f'{k} {row[k]:.3f}' for k in COLUMNS))
  return rows


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


def run(config, workdir, log=print, shard=None):
  return EXPERIMENT.run(config, workdir, log, shard, one_repeat,
                        functools.partial(summarize, config))


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run, shards=True)
