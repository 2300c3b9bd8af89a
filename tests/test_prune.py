"""Taylor importance on the header's gates and global gate pruning."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import live_fraction, tiny_nas

from acme_jax import training
from acme_jax.device import features
from acme_jax.device import header as header_lib
from acme_jax.device import local_data, prune
from acme_jax.device import child as child_lib
from acme_jax.device import state as state_lib

SPEC, CFG = tiny_nas()
CLASSES, DIM, CHANNELS, NODES = (SPEC.num_classes, SPEC.feature_dim,
                                 SPEC.num_channels, SPEC.num_nodes)
ARCH = np.array([[0, 0, 1, 2], [2, 4, 0, 5]], np.int32)  # sep3 pool sep1 id


def data(n=12, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, 3, 3, DIM)).astype(np.float32)
  y = rng.integers(0, CLASSES, n).astype(np.int32)
  return x, y


@pytest.mark.slow  # ~90 s here: the 10-minute budget of the default suite
def test_taylor_importance_is_squared_gate_times_gradient():
  """One full-batch step through the engine: the importance is
  (g dL/dg)^2 of the training-mode loss at the starting weights."""
  x, y = data()
  gates = header_lib.full_gates(SPEC)
  gates['cells'][0, 0, 0, 1, 2] = 0.0  # a pruned channel: importance 0
  state = child_lib.init_state(CFG, jax.random.key(0), 10**6, 2, arch=ARCH,
                         gates=gates)
  padded = local_data.device_data([features.LocalFeatures(
      x, y, x[:1], y[:1], x[:1], y[:1], x[:, 0, 0])])
  trained, = state_lib.train_fixed(
      CFG, [state], padded, [jax.random.key(0)],
      state_lib.Schedule(batch_size=12, lr_min=0.1), 1, 0.1, 'loop')
  imp = state_lib.importance(trained)
  header = header_lib.Header(SPEC)
  child = state.child

  def traced_loss(g):
    logits, _ = header.apply(
        {'params': child.params, 'batch_stats': child.batch_stats}, x, ARCH,
        2, g, jnp.ones(12), train=True, rngs={'dropout': jax.random.key(0)},
        mutable=['batch_stats'])
    return training.cross_entropy(logits, y).mean()

  def loss(g):
    return float(traced_loss(jax.tree.map(jnp.asarray, g)))

  # The gate gradient, directly: checked by central finite differences on
  # the last cell's output gates (a smooth direction; gates deeper in the
  # header cross ReLU kinks at float32 step sizes), then squared by the
  # engine run.
  grad = jax.grad(traced_loss)(jax.tree.map(jnp.asarray, gates))
  eps = 3e-3
  for leaf, index in (('final', (1, 3)), ('final', (1, 0))):
    up = jax.tree.map(np.copy, gates)
    down = jax.tree.map(np.copy, gates)
    up[leaf][index] += eps
    down[leaf][index] -= eps
    fd = (loss(up) - loss(down)) / (2 * eps)
    assert float(grad[leaf][index]) == pytest.approx(fd, rel=0.03)
  for leaf in ('stem', 'cells', 'final'):
    taylor = np.asarray(gates[leaf]) * np.asarray(grad[leaf])
    np.testing.assert_allclose(imp['squared'][leaf], taylor ** 2, rtol=1e-4,
                               atol=1e-10)
    np.testing.assert_allclose(imp['abs_sum'][leaf], np.abs(taylor),
                               rtol=1e-4, atol=1e-8)
  assert imp['squared']['cells'][0, 0, 0, 1, 2] == 0.0
  # A pool slot has no gates in use: its importance is exactly 0.
  assert np.all(imp['squared']['cells'][:, 0, 1] == 0)


@pytest.mark.slow  # ~170 s here: the 10-minute budget of the default suite
def test_taylor_importance_averages_squares_over_minibatches():
  """Over two minibatches, the NVlabs criterion is the mean of the
  per-minibatch (g dL/dg)^2, not the square of the mean gradient (a rate
  of 0 keeps the weights fixed, so each batch's gradient is at the start)."""
  from acme_jax import streams
  x, y = data(12, seed=1)
  gates = header_lib.full_gates(SPEC)
  state = child_lib.init_state(CFG, jax.random.key(0), 10**6, 2, arch=ARCH)
  padded = local_data.device_data([features.LocalFeatures(
      x, y, x[:1], y[:1], x[:1], y[:1], x[:, 0, 0])])
  key = jax.random.key(4)
  trained, = state_lib.train_fixed(
      CFG, [state], padded, [key],
      state_lib.Schedule(batch_size=6, kind='constant'), 1, 0.0, 'loop')
  imp = state_lib.importance(trained)['squared']
  # The two minibatches train_fixed drew (its batch-order stream).
  order = child_lib.seeded_rng(key, streams.TRAIN_BATCHES).permutation(12)
  header = header_lib.Header(SPEC)

  def gate_grad(rows):
    def loss(g):
      logits, _ = header.apply(
          {'params': state.child.params,
           'batch_stats': state.child.batch_stats}, x[rows], ARCH, 2, g,
          jnp.ones(len(rows)), train=True,
          rngs={'dropout': jax.random.key(0)}, mutable=['batch_stats'])
      return training.cross_entropy(logits, y[rows]).mean()
    return jax.grad(loss)(jax.tree.map(jnp.asarray, gates))

  grads = [gate_grad(order[:6]), gate_grad(order[6:])]
  for leaf in ('stem', 'cells', 'final'):
    per_batch = [(np.asarray(gates[leaf]) * np.asarray(g[leaf])) ** 2
                 for g in grads]
    want = 0.5 * (per_batch[0] + per_batch[1])
    np.testing.assert_allclose(imp[leaf], want, rtol=1e-4, atol=1e-12)
    square_of_mean = (np.asarray(gates[leaf]) * 0.5 * (
        np.asarray(grads[0][leaf]) + np.asarray(grads[1][leaf]))) ** 2
    if leaf == 'final':
      assert not np.allclose(imp[leaf], square_of_mean, rtol=1e-2)


def test_pruning_ranks_all_used_gate_channels_together():
  active = prune.active_gates(SPEC, ARCH, 2)
  n_active = int(sum(a.sum() for a in jax.tree.leaves(active)))
  rng = np.random.default_rng(0)
  importance = jax.tree.map(lambda a: rng.random(a.shape) + 1.0, active)
  # The lowest scores sit in an unused slot (never pruned) and in cell 1's
  # final gate (pruned first).
  importance['cells'][:, 0, 1] = 0.0
  importance['final'][1, :3] = [0.1, 0.2, 0.3]
  gates = prune.prune_gates(importance, active, 3.0 / n_active)
  assert gates['final'][1].tolist() == [0, 0, 0, 1]
  assert live_fraction(gates, active) == pytest.approx(
      1 - 3.0 / n_active)
  off = sum(((np.asarray(g) == 0) & (a > 0)).sum()
            for g, a in zip(jax.tree.leaves(gates), jax.tree.leaves(active)))
  assert off == 3
  # Already-off channels stay off and count towards the next ratio.
  importance['final'][1, :3] = 9.0
  again = prune.prune_gates(importance, active, 4.0 / n_active, gates)
  assert again['final'][1].tolist() == [0, 0, 0, 1]
  assert live_fraction(again, active) == pytest.approx(
      1 - 4.0 / n_active)


def test_pruned_header_is_smaller_by_the_channels_it_drops():
  full = int(header_lib.param_count(SPEC, ARCH, 2))
  gates = header_lib.full_gates(SPEC)
  gates['final'][1, 0] = 0.0  # last cell's output channel 0
  loose = int(np.sum(np.asarray(header_lib.loose_ends(ARCH))))
  # That cell's 1x1 conv column, its BN pair and the classifier row go.
  expected = full - (loose * CHANNELS + 2 + CLASSES)
  assert int(header_lib.param_count(SPEC, ARCH, 2, gates)) == expected


def test_num_pruned_guards_float_error():
  assert prune.num_pruned(100, 0.29) == 29
  assert prune.num_pruned(10, 0.3) == 3
  assert prune.num_pruned(10, 0.0) == 0
  with pytest.raises(ValueError):
    prune.num_pruned(10, 1.0)
