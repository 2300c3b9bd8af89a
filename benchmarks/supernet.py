"""Evaluating the 16-subnet grid: one compiled masked program vs a compile per subnet.

  python -m benchmarks.supernet [--config=configs/default.py]

Both sides run in this one process on the same params and data: (a) the masked
supernet, where the subnet is a `Masks` argument of one jitted function; (b)
each subnet extracted to dense params and jitted on its own (what a
shape-specialising implementation does). Reports wall time including
compilation, and the number of compilations each way.
"""
import sys
import time

import jax
import numpy as np
from ml_collections import config_flags

from acme_jax import cli
from acme_jax import errors
from acme_jax import data as data_lib
from acme_jax import report
from acme_jax.cloud import grid as grid_lib
from acme_jax.models import subnet, vit
from benchmarks import inputs

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py')


def _accuracy(forward, params, images, labels, *extra):
  logits = forward(params, images, *extra)
  return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = inputs.config(cli.config_value(_CONFIG, sys.argv),
                         'benchmarks.supernet')
  ds = data_lib.load_dataset(config.data, config.seed)
  model = vit.vit_from_config(config.model, ds.num_classes)
  params = vit.init_params(model, jax.random.key(0), ds.image_shape)
  images, labels = ds.validation.images, ds.validation.labels
  points = grid_lib.grid_points(config.cloud.depth_mults,
                                config.cloud.width_mults)
  subnets = [subnet.for_model(model, w, d) for d, w in points]

  masked_forward = jax.jit(
      lambda p, x, m: model.apply({'params': p}, x, m)['logits'])
  start = time.perf_counter()
  masked = [_accuracy(masked_forward, params, images, labels,
                      subnet.masks(model, s)) for s in subnets]
  masked_time = time.perf_counter() - start
  masked_compiles = masked_forward._cache_size()

  start = time.perf_counter()
  dense, dense_compiles = [], 0
  for s in subnets:
    sub_model, sub_params = subnet.extract(model, params, s)
    forward = jax.jit(
        lambda p, x, m=sub_model: m.apply({'params': p}, x)['logits'])
    dense.append(_accuracy(forward, sub_params, images, labels))
    dense_compiles += forward._cache_size()
  dense_time = time.perf_counter() - start
  assert np.allclose(masked, dense), 'masked and extracted subnets disagree'

  # Steady state: the programs are compiled; evaluate the grid again.
  start = time.perf_counter()
  for s in subnets:
    _accuracy(masked_forward, params, images, labels, subnet.masks(model, s))
  masked_warm = time.perf_counter() - start

  print(f'{len(subnets)} grid subnets, {len(labels)} images, '
        f'backend {jax.default_backend()}\n')
  print(report.markdown_table(
      ['strategy', 'compilations', 'time incl. compile (s)', 'vs masked'],
      [['masked, one program', masked_compiles, f'{masked_time:.2f}', '1.00x'],
       ['compile each subnet', dense_compiles, f'{dense_time:.2f}',
        f'{dense_time / masked_time:.2f}x']]))
  print(f'\nmasked grid again, already compiled: {masked_warm:.2f}s')


if __name__ == '__main__':
  cli.run_tool(main)
