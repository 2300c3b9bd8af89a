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
import functools

import numpy as np

from acme_jax import figures
from acme_jax import report
from acme_jax import stats
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.device import compare
from experiments import table

SECTIONS = cloud_stage.SECTIONS + ('system', 'header', 'baselines')
EXPERIMENT = table.Experiment('headers', SECTIONS, repeats_in='baselines',
                              markdown=report.headers_table,
                              figure=figures.headers_figure)


def one_repeat(world: world_lib.World, repeat: int, log):
  """Every arm at each depth, one repeat: per depth the mean device test
  accuracy of each arm and the per-device details (`compare.compare`)."""
  inputs = table.repeat_inputs(world, repeat, streams.HEADERS_EXPERIMENT)
  rows = []
  for depth in world.config.baselines.depth_fractions:
    # The same per-device keys and initial weights at every depth: only
    # the backbone changes.
    locals_, targets = table.full_width_cut(world, inputs, depth)
    out = compare.compare(inputs.hp, locals_, targets, inputs.seed)
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
  return EXPERIMENT.run(config, workdir, log, shard, one_repeat,
                        functools.partial(summarize, config))


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run, shards=True)
