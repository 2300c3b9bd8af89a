"""Taylor gate importance, gate pruning and the pruned parameter count."""
import jax
import numpy as np

from acme_jax.device import header as header_lib
from acme_jax.device import nas
from acme_jax.device import prune

CHANNELS, NODES, CLASSES, DIM = 6, 2, 3, 5
HEADER = header_lib.Header(CLASSES, CHANNELS, NODES, 1, dropout_rate=0.0)
ARCH = np.array([[0, 0, 1, 2], [2, 4, 0, 5]], np.int32)  # sep3, pool, sep1, id


def setup(n=24, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 3, 3, DIM)).astype(np.float32)
  y = rng.integers(0, CLASSES, n).astype(np.int32)
  steps = nas.child_steps(HEADER)
  return x, y, nas.init_child(HEADER, steps, x.shape, seed)


def test_gate_gradient_matches_finite_differences():
  x, y, state = setup()
  gates = np.ones(CHANNELS, np.float32)
  _, grad = prune.gate_gradient(HEADER, state, ARCH, gates, x, y)
  eps = 1e-2
  for c in range(CHANNELS):
    up, down = gates.copy(), gates.copy()
    up[c] += eps
    down[c] -= eps
    numeric = (float(prune.gate_gradient(HEADER, state, ARCH, up, x, y)[0]) -
               float(prune.gate_gradient(HEADER, state, ARCH, down, x, y)[0])
               ) / (2 * eps)
    np.testing.assert_allclose(grad[c], numeric, rtol=0.05, atol=2e-4)


def test_importance_is_abs_gate_gradient_and_zero_for_dead_channel():
  x, y, state = setup()
  arch = header_lib.smallest_arch(NODES)  # per-channel ops only
  params = dict(state.params)
  params['classifier'] = dict(params['classifier'],
                              kernel=params['classifier']['kernel'].at[4].set(0))
  state = state._replace(params=params)
  importance, _ = prune.taylor_importance(
      HEADER, state, arch, x, y, epochs=1, key=jax.random.key(0),
      batch_size=len(y), lr_max=0.0, lr_min=0.0)
  _, grad = prune.gate_gradient(HEADER, state, arch, np.ones(CHANNELS), x, y)
  np.testing.assert_allclose(importance, np.abs(grad), rtol=1e-4, atol=1e-7)
  assert importance[4] == 0.0
  assert np.all(np.delete(importance, 4) > 0)


def test_prune_gates_counts_and_order():
  importance = np.array([0.5, 0.1, 0.9, 0.3, 0.0, 0.7])
  gates = prune.prune_gates(importance, 0.5)
  np.testing.assert_array_equal(gates, [1, 0, 1, 0, 0, 1])
  assert prune.prune_gates(importance, 0.0).sum() == 6
  assert prune.prune_gates(importance, 0.99).sum() == 1
  # Channels already off stay off and count towards the ratio.
  current = np.array([1, 1, 0, 1, 1, 1])
  gates = prune.prune_gates(importance, 1 / 3, current)
  np.testing.assert_array_equal(gates, [1, 1, 0, 1, 0, 1])


def test_prune_and_finetune_shrinks_header():
  x, y, state = setup(48)
  importance, state = prune.taylor_importance(
      HEADER, state, ARCH, x, y, epochs=1, key=jax.random.key(0),
      batch_size=16)
  assert importance.shape == (CHANNELS,)
  result = prune.prune_and_finetune(HEADER, state, ARCH, importance, 0.5, x, y,
                                    x, y, epochs=1, key=jax.random.key(1),
                                    batch_size=16)
  assert result['gates'].sum() == CHANNELS - 3
  full = prune.pruned_param_count(HEADER, ARCH, np.ones(CHANNELS),
                                  feature_dim=DIM, grid_rank=2)
  assert result['header_params'] < full
  _, extracted = header_lib.extract(
      HEADER, {'params': result['state'].params,
               'batch_stats': result['state'].batch_stats},
      ARCH, result['gates'])
  assert header_lib.count_params(extracted['params']) == result['header_params']
