"""Fixed-head baselines (Linear, MLP, Mixer, CNN-project) trained on every device
through the client engine.

Each device trains its own head on its cached backbone features; the engine
runs the same init/step/final for all devices (one compile), padding devices
with fewer batches with exact no-op steps.
"""
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax import training
from acme_jax.device import header as header_lib
from acme_jax.system import engine


def make_batches(features, labels, batch_size: int, epochs: int, seed: int):
  """Shuffled epochs of padded batches {x, y, w}; w = 0 marks padding.

  Every batch has `batch_size` rows whatever the device's data size, so one
  compiled step serves every device.
  """
  rng = np.random.default_rng(seed)
  n = len(labels)
  size = batch_size
  batches = []
  for _ in range(epochs):
    order = rng.permutation(n)
    for start in range(0, n, size):
      idx = order[start:start + size]
      w = np.zeros(size, np.float32)
      w[:len(idx)] = 1
      idx = np.concatenate([idx, np.repeat(idx[:1], size - len(idx))])
      batches.append({'x': features[idx], 'y': labels[idx].astype(np.int32),
                      'w': w})
  return batches


@functools.lru_cache(maxsize=None)
def _functions(module, learning_rate: float, total_steps: int):
  """init/step/final for one head module; cached so the engine compiles once."""
  tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, total_steps),
                   weight_decay=1e-4)

  def init(device_input):
    params, key = device_input
    return params, tx.init(params), key

  def step(state, batch):
    params, opt_state, key = state
    key, dropout_key = jax.random.split(key)

    def loss_fn(p):
      logits = module.apply({'params': p}, batch['x'], train=True,
                            rngs={'dropout': dropout_key})
      losses = training.cross_entropy(logits, batch['y'])
      return jnp.sum(losses * batch['w']) / jnp.maximum(batch['w'].sum(), 1)

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, key

  def final(state):
    return state[0]

  predict = jax.jit(lambda p, x: jnp.argmax(module.apply({'params': p}, x), -1))
  return init, step, final, predict


def train_and_test(kind: str, num_classes: int, device_data: Sequence,
                   *, epochs: int, batch_size: int, learning_rate: float,
                   seed: int, strategy: str = 'auto', **module_kwargs) -> dict:
  """Train one fixed head per device on its cached features.

  device_data: per device a `features.LocalFeatures` (the same grid and D for
  every device). Returns per-device lists 'val_accuracy', 'test_accuracy'
  and 'params'.
  """
  module = header_lib.BASELINES[kind](num_classes, **module_kwargs)
  batches = [make_batches(d.x_train, d.y_train, batch_size, epochs, seed + i)
             for i, d in enumerate(device_data)]
  total = max(len(b) for b in batches)
  init, step, final, predict = _functions(module, learning_rate, total)
  sample = device_data[0].x_train[:1]
  inputs = []
  for i in range(len(device_data)):
    key = jax.random.fold_in(jax.random.key(seed), i)
    params = module.init(key, sample)['params']
    inputs.append((params, jax.random.fold_in(key, 1)))
  trained = engine.for_each_device(init, step, final, inputs, batches,
                                   strategy=strategy)

  def accuracy(p, x, y):
    return float(np.mean(np.asarray(predict(p, x)) == y)) if len(y) else 0.0

  return {
      'val_accuracy': [accuracy(p, d.x_val, d.y_val)
                       for p, d in zip(trained, device_data)],
      'test_accuracy': [accuracy(p, d.x_test, d.y_test)
                        for p, d in zip(trained, device_data)],
      'params': [header_lib.count_params(p) for p in trained],
  }
