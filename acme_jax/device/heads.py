"""Fixed-head baselines (Linear, MLP, Mixer, CNN-project) trained on every device
through the client engine.

Each device trains its own head on its cached backbone features; the engine
runs the same init/step/final for all devices (one compile), padding devices
with fewer batches with exact no-op steps.
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax import choices
from acme_jax import streams
from acme_jax import training
from acme_jax.parallel import engine


def _grid_rank(features) -> int:
  rank = features.ndim - 2
  if rank not in (1, 2):
    raise ValueError(f'features must be (B, T, D) or (B, P, P, D), got '
                     f'{features.shape}')
  return rank


def _mean_tokens(features):
  return features.mean(axis=tuple(range(1, features.ndim - 1)))


class Linear(nn.Module):
  """Early-exit baseline: mean-pool tokens, linear."""
  num_classes: int

  @nn.compact
  def __call__(self, features, train: bool = False):
    return nn.Dense(self.num_classes)(_mean_tokens(features))


class MLP(nn.Module):
  """Baseline: mean-pool, hidden layer, classes."""
  num_classes: int
  hidden: int = 256
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, features, train: bool = False):
    x = nn.relu(nn.Dense(self.hidden)(_mean_tokens(features)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


class Mixer(nn.Module):
  """Baseline: one MLP-Mixer block (token then channel mixing), pool, linear."""
  num_classes: int
  token_hidden: int = 64
  channel_hidden: int = 256

  @nn.compact
  def __call__(self, features, train: bool = False):
    _grid_rank(features)
    x = features.reshape(features.shape[0], -1, features.shape[-1])
    y = nn.LayerNorm()(x).swapaxes(1, 2)
    y = nn.Dense(x.shape[1])(nn.gelu(nn.Dense(self.token_hidden)(y)))
    x = x + y.swapaxes(1, 2)
    y = nn.LayerNorm()(x)
    x = x + nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.channel_hidden)(y)))
    return nn.Dense(self.num_classes)(nn.LayerNorm()(x).mean(1))


class CNNProject(nn.Module):
  """Baseline: 1x1 conv projection, 3x3 conv (3 for text), pool, linear."""
  num_classes: int
  channels: int = 128

  @nn.compact
  def __call__(self, features, train: bool = False):
    rank = _grid_rank(features)
    x = nn.relu(nn.Dense(self.channels)(features))
    x = nn.relu(nn.Conv(self.channels, (3,) * rank, padding='SAME')(x))
    return nn.Dense(self.num_classes)(_mean_tokens(x))


BASELINES = dict(zip(choices.HEAD_KINDS, (Linear, MLP, Mixer, CNNProject)))


def make_batches(features, labels, batch_size: int, epochs: int, seed: int,
                 learning_rates=None):
  """Shuffled epochs of padded batches {x, y, w, lr}; w = 0 marks padding.

  Every batch has `batch_size` rows whatever the device's data size, so one
  compiled step serves every device; `learning_rates` gives each step's rate
  (data, not a constant baked into the program).
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
  rates = (np.zeros(len(batches)) if learning_rates is None
           else learning_rates(len(batches)))
  for batch, rate in zip(batches, rates):
    batch['lr'] = np.float32(rate)
  return batches


def device_batches(device_data, epochs: int, batch_size: int,
                   learning_rate: float, seed: int) -> list:
  """Every device's training batches, its rate decaying (cosine) from
  `learning_rate` to 0 over its own steps: annealed to its end."""
  def rates(n):
    schedule = optax.cosine_decay_schedule(learning_rate, max(n - 1, 1))
    return [schedule(i) for i in range(n)]

  return [make_batches(d.x_train, d.y_train, batch_size, epochs, seed + i,
                       rates) for i, d in enumerate(device_data)]


WEIGHT_DECAY = 1e-4


@functools.lru_cache(maxsize=None)
def _functions(module):
  """init/step/final/predict for one head module: AdamW with the learning
  rate read from each batch, so every rate and schedule length shares one
  compiled program."""
  tx = optax.chain(optax.scale_by_adam(),
                   optax.add_decayed_weights(WEIGHT_DECAY))

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
    params = jax.tree.map(lambda p, u: p - batch['lr'] * u, params, updates)
    return params, opt_state, key

  def final(state):
    return state[0]

  @jax.jit
  def correct(p, x, y, w):
    return jnp.sum((jnp.argmax(module.apply({'params': p}, x), -1) == y) * w)

  return init, step, final, correct


def accuracy(correct, params, x, y, batch_size: int) -> float:
  """Accuracy over a whole set in padded fixed-size batches (one compile)."""
  if not len(y):
    return 0.0
  hits = 0.0
  for idx, w in training.padded_batches(len(y), batch_size):
    hits += float(correct(params, x[idx], y[idx], w))
  return hits / len(y)


def train_and_test(kind: str, num_classes: int, device_data: Sequence,
                   *, epochs: int, batch_size: int, learning_rate: float,
                   seed: int, strategy: str = 'auto', **module_kwargs) -> dict:
  """Train one fixed head per device on its cached features (AdamW, cosine
  decay from `learning_rate` to 0 over each device's own steps, so every
  schedule is annealed to its end).

  device_data: per device a `features.LocalFeatures` (the same grid and D for
  every device). Returns per-device lists 'val_accuracy', 'test_accuracy',
  'params' and 'train_steps'.
  """
  module = BASELINES[kind](num_classes, **module_kwargs)
  batches = device_batches(device_data, epochs, batch_size, learning_rate,
                           seed)
  init, step, final, correct = _functions(module)
  sample = device_data[0].x_train[:1]
  inputs = []
  for i in range(len(device_data)):
    key = jax.random.fold_in(jax.random.key(seed), i)
    params = module.init(key, sample)['params']
    inputs.append((params, jax.random.fold_in(key, streams.HEAD_DROPOUT)))
  trained = engine.for_each_device(init, step, final, inputs, batches,
                                   strategy=strategy)
  return {
      'val_accuracy': [accuracy(correct, p, d.x_val, d.y_val, batch_size)
                       for p, d in zip(trained, device_data)],
      'test_accuracy': [accuracy(correct, p, d.x_test, d.y_test, batch_size)
                        for p, d in zip(trained, device_data)],
      'params': [count_params(p) for p in trained],
      'train_steps': [len(b) for b in batches],
  }


def count_params(params) -> int:
  return int(sum(np.size(p) for p in jax.tree.leaves(params)))
