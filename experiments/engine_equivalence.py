"""Do the client engine's strategies give the same answers? (loop vs vmap)

  python -m experiments.engine_equivalence --config=configs/default.py --workdir=runs/default

Float32 sums in another order (a vmapped or scanned program) differ in the
last bits; the device stage's discrete choices (sampled architectures,
argmax predictions, pruning ranks) can amplify that. In float64 the two
strategies give identical device results on the default
(docs/reproducibility.md), so the float32 differences are reassociation, not different computation.
This experiment shows how large they are: for each of `baselines.repeats`
repeats (each redraws the device data, keys and initial weights) the whole
device stage (edge choice, features, header search and training, rounds,
test) runs once per strategy on the same inputs. Reports whether the
backbones are the same (they are chosen before any float32 training) and
the paired difference of mean device test accuracy, vmap - loop, with its
95% CI. Adds `engine_equivalence` to results.json.

Its many repeats can be spread over processes: see `--shard` (cli.main).
"""
import copy

import jax
import numpy as np

from acme_jax import pipeline
from acme_jax import report
from acme_jax import stats
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax.device import stage as device_stage
from acme_jax.device import state as state_lib
from acme_jax.edge import stage as edge_stage
from acme_jax.federated import acme
from experiments import table

SECTIONS = world_lib.DEVICE_SECTIONS + ('baselines',)
STRATEGIES = ('loop', 'vmap')
EXPERIMENT = table.Experiment('engine_equivalence', SECTIONS,
                              repeats_in='baselines',
                              markdown=report.engine_table)


def one_repeat(world: world_lib.World, repeat: int, log):
  quiet = lambda *_: None  # noqa: E731
  # The same data and keys for both strategies; each its own hyper-parameters.
  splits = table.repeat_splits(world, repeat)
  key = table.repeat_key(world.config, streams.ENGINE_EXPERIMENT, repeat)
  out = {}
  for strategy in STRATEGIES:
    config = copy.deepcopy(world.config)
    with config.unlocked():
      config.engine.strategy = strategy
    hp = device_stage.DeviceHparams.from_config(config, world.num_classes)
    delivery = edge_stage.deliver(config, world, splits, hp, quiet)
    headers = pipeline.device_headers(world, hp, delivery, key, quiet)
    headers, _ = acme.run(acme.RoundsHparams.from_config(config), hp.nas,
                          headers, jax.random.fold_in(key, streams.ROUNDS))
    accuracy = state_lib.test_accuracy(hp.nas, headers, hp.strategy)
    out[strategy] = {
        'backbones': [[r['width_mult'], r['depth_mult']]
                      for r in delivery.records],
        'archs': [h.result['arch'] for h in headers],
        'test_accuracy': [float(a) for a in accuracy],
        'mean_test_accuracy': float(np.mean(accuracy))}
  log(f'[engine_equivalence] repeat {repeat}: ' + ', '.join(
      f'{s} {out[s]["mean_test_accuracy"]:.3f}' for s in STRATEGIES))
  return out


def summarize(repeats) -> dict:
  loop = [r['loop']['mean_test_accuracy'] for r in repeats]
  vmap = [r['vmap']['mean_test_accuracy'] for r in repeats]
  return {
      'repeats': len(repeats), 'rows': repeats,
      'same_backbones': all(r['loop']['backbones'] == r['vmap']['backbones']
                            for r in repeats),
      'same_archs': sum(a == b for r in repeats for a, b in
                        zip(r['loop']['archs'], r['vmap']['archs'])),
      'devices': sum(len(r['loop']['archs']) for r in repeats),
      'loop': stats.mean_ci(loop), 'vmap': stats.mean_ci(vmap),
      'vmap_minus_loop': stats.paired(vmap, loop)}


def run(config, workdir, log=print, shard=None):
  return EXPERIMENT.run(config, workdir, log, shard, one_repeat, summarize)


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run, shards=True)
