"""Header training on cached backbone features vs recomputing the backbone.

  python -m benchmarks.header [--config=configs/default.py] [--steps=200]

The backbone is frozen during the header search, so a device can run it once
over its local data and train on the cached features. Both sides below run the
same header steps on the same batches in this one process: (a) one backbone
pass over the local data, then header steps on cached features; (b) every step
runs the backbone on its batch inside the jitted step. Compile time excluded
(one warm-up step each); the header sees the same features either way. The
gain grows with the backbone's cost relative to the header's.
"""
import sys
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from acme_jax import cli
from acme_jax import errors
from acme_jax import data as data_lib
from acme_jax import report
from acme_jax import sizes
from acme_jax.device import features
from acme_jax.device import child as child_lib
from acme_jax.device import stage as device_stage
from acme_jax.device import header as header_lib
from acme_jax.models import subnet, vit
from benchmarks import inputs

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py')
_STEPS = flags.DEFINE_integer('steps', 200, 'header steps per side')
_SAMPLES = flags.DEFINE_integer('samples', 128, 'local training samples')


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.config_value(_CONFIG, sys.argv)
  inputs.header(config, _STEPS.value, _SAMPLES.value)
  ds = data_lib.load_dataset(config.data, config.seed)
  inputs.header_samples(_SAMPLES.value, len(ds.train.labels), config.data.name)
  model = vit.vit_from_config(config.model, ds.num_classes)
  params = vit.init_params(model, jax.random.key(0), ds.image_shape)
  full = subnet.for_model(model, 1.0, 1.0)
  images = ds.train.images[:_SAMPLES.value]
  labels = ds.train.labels[:_SAMPLES.value]
  source = config.header.features_from
  patch_grid = features.patch_grid(model, ds.image_shape)

  def backbone(x):
    return features.token_grid(features.backbone_tokens(
        model, params, full, x, source=source), patch_grid)

  cfg = device_stage.DeviceHparams.from_config(config, ds.num_classes).nas
  cells = sizes.max_header_cells(config)
  start = child_lib.init_child(cfg, 0)
  arch = header_lib.smallest_arch(cfg.spec.num_nodes)
  arch[:, 1] = 0  # separable convs: a realistic header cost
  gates = header_lib.full_gates(cfg.spec)
  batch = config.header.batch_size
  rng = np.random.default_rng(0)
  batches = [rng.choice(len(labels), batch, replace=False)
             for _ in range(_STEPS.value + 1)]
  weights = np.ones(batch, np.float32)
  key = jax.random.key(0)

  @jax.jit
  def cached_step(child, x, y):
    return child_lib.train_child(cfg, child, arch, cells, gates,
                           {'x': x, 'y': y, 'w': weights, 'lr': 0.05},
                           key)[0]

  @jax.jit
  def recompute_step(child, x, y):
    out = model.apply({'params': params}, x)
    tokens = out['hidden'][-1] if source == 'last_hidden' else out['tokens']
    grid = jax.lax.stop_gradient(tokens[:, 1:]).reshape(
        (x.shape[0],) + patch_grid + (tokens.shape[-1],))
    return child_lib.train_child(cfg, child, arch, cells, gates,
                           {'x': grid, 'y': y, 'w': weights, 'lr': 0.05},
                           key)[0]

  def cached():
    cache = backbone(images)
    child = start
    for idx in batches[1:]:
      child = cached_step(child, cache[idx], labels[idx])
    return child

  def recomputed():
    child = start
    for idx in batches[1:]:
      child = recompute_step(child, images[idx], labels[idx])
    return child

  # Warm-up: compile both paths on one batch.
  idx = batches[0]
  jax.block_until_ready(cached_step(start, backbone(images[idx]),
                                    labels[idx]))
  jax.block_until_ready(recompute_step(start, images[idx], labels[idx]))

  timings = {}
  for name, fn in (('cached features', cached), ('recompute backbone',
                                                 recomputed)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    timings[name] = time.perf_counter() - t0
  base = timings['cached features']
  print(f'{_STEPS.value} header steps, batch {batch}, {_SAMPLES.value} local '
        f'samples, backbone {model.num_layers} layers x {model.hidden_size} '
        f'hidden, header {cells} cells x {cfg.spec.num_channels} channels, '
        f'backend {jax.default_backend()}\n')
  print(report.markdown_table(
      ['strategy', 'seconds', 'steps/s', 'vs cached'],
      [[name, f'{t:.2f}', f'{_STEPS.value / t:.0f}', f'{t / base:.2f}x']
       for name, t in timings.items()]))


if __name__ == '__main__':
  cli.run_tool(main)
