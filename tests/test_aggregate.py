"""Importance aggregation equals a numpy double loop; masks keep the right channels."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acme_jax.edge import aggregate as A
from acme_jax.edge import similarity as S


def slow_aggregate(weights, importances):
  out = np.zeros_like(importances, dtype=np.float64)
  for k in range(weights.shape[0]):
    for i in range(weights.shape[1]):
      out[k] += weights[k, i] * importances[i]
  return out


def test_aggregation_matches_a_double_loop_over_a_pytree():
  rng = np.random.default_rng(0)
  d = 4
  weights = S.aggregation_weights(rng.uniform(size=(d, d)), temperature=0.3)
  tree = {'cell0': [rng.uniform(size=(d, 16)).astype(np.float32),
                    rng.uniform(size=(d, 8)).astype(np.float32)],
          'stem': rng.uniform(size=(d, 3, 5)).astype(np.float32)}
  out = A.aggregate_importances(weights, tree)
  assert jax.tree.structure(out) == jax.tree.structure(tree)
  for got, leaf in zip(jax.tree.leaves(out), jax.tree.leaves(tree)):
    assert got.shape == leaf.shape
    np.testing.assert_allclose(got, slow_aggregate(weights, leaf), rtol=1e-5)


def test_identity_and_average_modes():
  imp = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_allclose(
      A.aggregate_importances(S.mode_weights('pruning_alone', num_devices=3), imp),
      imp)
  w = S.mode_weights('pruning_avg', data_sizes=[1, 1, 2])
  out = np.asarray(A.aggregate_importances(w, imp))
  np.testing.assert_allclose(out, np.tile(0.25 * imp[0] + 0.25 * imp[1]
                                          + 0.5 * imp[2], (3, 1)), rtol=1e-6)


def test_aggregation_rejects_mismatched_device_axis():
  with pytest.raises(ValueError, match='devices'):
    A.aggregate_importances(np.eye(3), np.ones((4, 5)))


def test_aggregation_compiles_once_for_repeated_rounds():
  rng = np.random.default_rng(1)
  shapes = {'a': (5, 7), 'b': (5, 3)}
  tree = lambda: {k: rng.normal(size=s).astype(np.float32)
                  for k, s in shapes.items()}
  A.aggregate_importances(rng.uniform(size=(5, 5)).astype(np.float32), tree())
  before = A.aggregate_importances._cache_size()
  for _ in range(5):
    A.aggregate_importances(rng.uniform(size=(5, 5)).astype(np.float32), tree())
  assert A.aggregate_importances._cache_size() == before
