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
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from acme_jax import data as data_lib
from acme_jax import report
from acme_jax.device import features
from acme_jax.device import header as header_lib
from acme_jax.device import nas
from acme_jax.models import subnet, vit

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py')
_STEPS = flags.DEFINE_integer('steps', 200, 'header steps per side')
_SAMPLES = flags.DEFINE_integer('samples', 128, 'local training samples')


def main(_):
  config = _CONFIG.value
  ds = data_lib.load_dataset(config.data, config.seed)
  model = vit.vit_from_config(config.model, ds.num_classes)
  params = vit.init_params(model, jax.random.key(0), ds.image_shape)
  masks = subnet.masks(model, subnet.for_model(model, 1.0, 1.0))
  images = ds.train.images[:_SAMPLES.value]
  labels = ds.train.labels[:_SAMPLES.value]
  h = config.header
  header = header_lib.Header(ds.num_classes, h.num_channels, h.num_nodes, 1)
  steps = nas.child_steps(header, h.momentum, h.weight_decay)
  patch_grid = features.patch_grid(model, ds.image_shape)
  grid = features.token_grid(features.backbone_tokens(
      model, params, masks, images[:1]), patch_grid)
  start_state = nas.init_child(header, steps, grid.shape, 0)
  arch = np.asarray(header_lib.smallest_arch(h.num_nodes))
  arch[:, 1] = 0  # separable convs: a realistic header cost
  gates = np.ones(h.num_channels, np.float32)
  rng = np.random.default_rng(0)
  batches = [rng.choice(len(labels), h.batch_size, replace=False)
             for _ in range(_STEPS.value + 1)]
  key = jax.random.key(0)

  def cached():
    tokens = features.backbone_tokens(model, params, masks, images)
    cache = features.token_grid(tokens, patch_grid)
    state = start_state
    for idx in batches[1:]:
      state, _ = steps.train(state, arch, gates, cache[idx], labels[idx],
                             0.05, key)
    return state

  @jax.jit
  def recompute_step(state, x, y):
    tokens = model.apply({'params': params}, x, masks)['tokens']
    grid = jax.lax.stop_gradient(tokens[:, 1:]).reshape(
        (x.shape[0],) + cache_grid_shape)
    return steps.train(state, arch, gates, grid, y, 0.05, key)

  cache_grid_shape = grid.shape[1:]

  def recomputed():
    state = start_state
    for idx in batches[1:]:
      state, _ = recompute_step(state, images[idx], labels[idx])
    return state

  # Warm-up: compile both paths on one batch.
  idx = batches[0]
  jax.block_until_ready(steps.train(start_state, arch, gates,
                                    features.token_grid(
                                        features.backbone_tokens(
                                            model, params, masks,
                                            images[idx]), patch_grid),
                                    labels[idx], 0.05, key))
  jax.block_until_ready(recompute_step(start_state, images[idx], labels[idx]))

  timings = {}
  for name, fn in (('cached features', cached), ('recompute backbone',
                                                 recomputed)):
    start = time.perf_counter()
    final = jax.block_until_ready(fn())
    timings[name] = (time.perf_counter() - start, final)
  # Same inputs to the header either way (up to float reassociation between
  # differently batched programs, which 200 SGD steps then amplify).
  idx = batches[1]
  cache = features.token_grid(features.backbone_tokens(model, params, masks,
                                                       images), patch_grid)
  fresh = model.apply({'params': params}, images[idx], masks)['tokens']
  diff = float(np.max(np.abs(cache[idx] - features.token_grid(
      np.asarray(fresh), patch_grid))))
  base = timings['cached features'][0]
  print(f'{_STEPS.value} header steps, batch {h.batch_size}, '
        f'{_SAMPLES.value} local samples, backbone {model.num_layers} layers '
        f'x {model.hidden_size} hidden, backend {jax.default_backend()}\n')
  print(report.markdown_table(
      ['strategy', 'seconds', 'steps/s', 'vs cached'],
      [[name, f'{t:.2f}', f'{_STEPS.value / t:.0f}', f'{t / base:.2f}x']
       for name, (t, _) in timings.items()]))
  print(f'\nmax |cached - recomputed feature|: {diff:.2e}')


if __name__ == '__main__':
  app.run(main)
