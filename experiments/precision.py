"""bfloat16 vs float32 compute in the cloud stages, over seeds.

  python -m experiments.precision --config=configs/default.py --workdir=runs/precision
  python -m experiments.precision --config=configs/default.py \
      --workdir=runs/precision --config.baselines.repeats=3

For each of `baselines.repeats` seeds (config.seed + r) the cloud stages
(teacher, reordering, both elastic stages, grid) are trained twice, with
`model.dtype` float32 and bfloat16 (params and optimizer state float32 in
both), each in its own sub-workdir (`precision/<dtype>_seed<s>`, resumable).
Reports the test accuracy of the full model and the mean over the grid's
subnets per dtype (mean ± 95% CI over seeds), and the paired difference
bf16 - f32 with its CI; a difference holds where the CI excludes 0. Writes
`precision.json` and adds `precision` to results.json.
"""
import numpy as np

from acme_jax import report
from acme_jax import stats
from acme_jax import world as world_lib
from acme_jax import workdir as workdir_lib

DTYPES = ('float32', 'bfloat16')


def one_run(config, workdir, dtype: str, seed: int, log) -> dict:
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.model.dtype = dtype
    cfg.seed = seed
  _, cloud = world_lib.train_cloud(cfg, workdir, log)
  test = cloud.test
  full = next(r for r in test
              if r['depth_mult'] == 1.0 and r['width_mult'] == 1.0)
  return {'full': float(full['accuracy']),
          'grid_mean': float(np.mean([r['accuracy'] for r in test]))}


def run(config, workdir, log=print) -> dict:
  wd = world_lib.prepare(config, workdir)
  runs = {dtype: [] for dtype in DTYPES}
  for r in range(config.baselines.repeats):
    for dtype in DTYPES:
      seed = config.seed + r
      log(f'[precision] {dtype}, seed {seed}')
      runs[dtype].append(one_run(config, wd / f'precision/{dtype}_seed{seed}',
                                 dtype, seed, log))
  out = {'repeats': config.baselines.repeats, 'runs': runs}
  for metric in ('full', 'grid_mean'):
    values = {d: [x[metric] for x in runs[d]] for d in DTYPES}
    out[metric] = {d: stats.mean_ci(values[d]) for d in DTYPES}
    out[metric]['bf16_minus_f32'] = stats.paired(values['bfloat16'],
                                                 values['float32'])
  workdir_lib.atomic_write_json(wd / 'precision.json', out)
  report.write_results(wd, {'precision': out}, config)
  rows = [[metric, stats.fmt(out[metric]['float32']),
           stats.fmt(out[metric]['bfloat16']),
           stats.fmt_diff(out[metric]['bf16_minus_f32'])]
          for metric in ('full', 'grid_mean')]
  log('\n' + report.markdown_table(
      ['test accuracy', 'float32', 'bfloat16', 'bf16 - f32'], rows))
  return out


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run)
