"""Signatures, distances and aggregation weights match hand-computed cases (docs/method.md 6)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats
from scipy.spatial import distance as sp_distance

from acme_jax.device import signature as signature_lib
from acme_jax.edge import similarity as S


def onehot(i, n):
  x = np.zeros(n)
  x[i] = 1.0
  return x


# ------------------------------------------------------------------ signatures


def test_histogram_signature_is_normalised_counts():
  sig = signature_lib.histogram_signature(np.array([0, 0, 2, 2, 2, 3]), num_classes=5)
  np.testing.assert_allclose(sig, [2 / 6, 0, 3 / 6, 1 / 6, 0])
  with pytest.raises(ValueError, match='lie in'):
    signature_lib.histogram_signature([0, 5], num_classes=5)
  with pytest.raises(ValueError, match='at least one'):
    signature_lib.histogram_signature(np.array([], np.int32), num_classes=5)


def test_feature_signature_subsamples_reproducibly():
  feats = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
  sig = signature_lib.feature_signature(feats, max_samples=200, seed=7)
  assert sig.shape == (200, 3) and sig.dtype == np.float32
  rows = sig[:, 0] // 3
  assert len(np.unique(rows)) == 200  # without replacement, real rows
  np.testing.assert_array_equal(sig, feats[rows.astype(int)])
  np.testing.assert_array_equal(sig, signature_lib.feature_signature(feats, 200, seed=7))
  assert not np.array_equal(sig, signature_lib.feature_signature(feats, 200, seed=8))
  # Fewer samples than the cap: all of them.
  assert signature_lib.feature_signature(feats[:50], 200, seed=0).shape == (50, 3)


def test_feature_signature_orders_by_label_like_the_prototype():
  feats = np.random.default_rng(0).normal(size=(300, 4))
  labels = np.random.default_rng(1).integers(0, 10, size=300)
  sig = signature_lib.feature_signature(feats, 100, seed=3, labels=labels)
  index = [int(np.flatnonzero((feats == row).all(1))[0]) for row in sig]
  assert np.all(np.diff(labels[index]) >= 0)


# ------------------------------------------------------------------- distances


def test_w1_histogram_uses_a_0_1_ground_metric():
  """Class ids are nominal: moving mass to any other class costs the same,
  and W1 is the total variation distance."""
  a = np.array([1.0, 0, 0, 0])
  assert S.wasserstein1(a, [0, 1.0, 0, 0], 'histogram') == pytest.approx(1.0)
  assert S.wasserstein1(a, [0, 0, 0, 1.0], 'histogram') == pytest.approx(1.0)
  p, q = np.array([3.0, 1, 0, 4]), np.array([1.0, 1, 2, 0])
  tv = 0.5 * np.abs(p / p.sum() - q / q.sum()).sum()
  assert S.wasserstein1(p, q, 'histogram') == pytest.approx(tv)
  # Relabelling the classes consistently changes nothing.
  perm = [2, 0, 3, 1]
  assert S.wasserstein1(p[perm], q[perm], 'histogram') == pytest.approx(tv)


def test_w1_features_treats_flattened_values_as_samples():
  a = np.array([[0.0, 1.0], [2.0, 3.0]])
  # Same multiset of values in another order and shape -> 0.
  assert S.wasserstein1(a, np.array([3.0, 2.0, 1.0, 0.0])) == pytest.approx(0)
  # Shift by 1 -> 1; different sample counts are allowed.
  assert S.wasserstein1(a, a + 1.0, 'features') == pytest.approx(1)
  assert S.wasserstein1([0.0, 0.0], [1.0, 1.0, 1.0]) == pytest.approx(1)
  with pytest.raises(ValueError, match='kind'):
    S.wasserstein1(a, a, 'pixels')


def test_w1_features_equals_scipy_on_the_flattened_values():
  rng = np.random.default_rng(0)
  a, b, c = rng.normal(size=(20, 6)), rng.normal(1, 2, (20, 6)), rng.normal(size=37)
  for x, y in ((a, b), (a, c)):
    expected = stats.wasserstein_distance(x.reshape(-1), y.reshape(-1))
    assert S.wasserstein1(x, y) == pytest.approx(expected)
  dist = S.distance_matrix([a, b, c], 'emd', kind='features')
  assert dist[0, 1] == pytest.approx(stats.wasserstein_distance(a.ravel(), b.ravel()))
  assert dist[1, 2] == pytest.approx(stats.wasserstein_distance(b.ravel(), c))


def test_js_identical_zero_disjoint_ln2_natural_log():
  p = np.array([0.2, 0.3, 0.5])
  assert S.jensen_shannon(p, p) == pytest.approx(0, abs=1e-12)
  assert S.jensen_shannon(onehot(0, 4), onehot(2, 4)) == pytest.approx(math.log(2))
  q = np.array([0.6, 0.3, 0.1])
  assert S.jensen_shannon(p, q) == pytest.approx(
      sp_distance.jensenshannon(p, q) ** 2)  # scipy returns sqrt, natural log


def test_js_clips_and_normalises_features_over_all_entries():
  a = np.array([[1.0, -5.0], [3.0, 0.0]])  # -> [[.25, 0], [.75, 0]]
  b = np.array([[2.0, 0.0], [6.0, -1.0]])  # -> same distribution
  assert S.jensen_shannon(a, b) == pytest.approx(0, abs=1e-12)
  with pytest.raises(ValueError, match='shapes differ'):
    S.jensen_shannon(a, b[:1])


def test_js_prototype_variant_formula():
  p = np.array([[0.1, 0.4], [0.2, 0.3]])
  q = np.array([[0.3, 0.1], [0.4, 0.2]])
  pe, qe = p + 1e-6, q + 1e-6
  m = 0.5 * (pe + qe)
  expected = 0.5 * (np.sum(m * np.log(m / pe)) + np.sum(m * np.log(m / qe))) / 2
  assert S.jensen_shannon(p, q, 'prototype') == pytest.approx(expected)
  assert S.jensen_shannon(p, p, 'prototype') == pytest.approx(0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_distances_symmetric_and_non_negative(data):
  n = data.draw(st.integers(2, 8))
  same_len = st.lists(st.floats(0.0, 10.0), min_size=n, max_size=n).filter(
      lambda v: sum(v) > 1e-3)
  a = np.array(data.draw(same_len))
  b = np.array(data.draw(same_len))
  for f in (lambda x, y: S.wasserstein1(x, y, 'histogram'),
            lambda x, y: S.wasserstein1(x, y, 'features'),
            S.jensen_shannon,
            lambda x, y: S.jensen_shannon(x, y, 'prototype')):
    d_ab, d_ba = f(a, b), f(b, a)
    assert d_ab >= 0
    assert d_ab == pytest.approx(d_ba, rel=1e-9, abs=1e-12)
  assert S.jensen_shannon(a, b) <= math.log(2) + 1e-12


def test_distance_matrix_matches_pairwise_calls():
  rng = np.random.default_rng(0)
  sigs = [rng.dirichlet(np.ones(6)) for _ in range(4)]
  for metric, f in (('emd', lambda x, y: S.wasserstein1(x, y, 'histogram')),
                    ('js', S.jensen_shannon)):
    dist = S.distance_matrix(sigs, metric, kind='histogram')
    assert dist.shape == (4, 4)
    np.testing.assert_array_equal(np.diag(dist), 0)
    np.testing.assert_allclose(dist, dist.T)
    assert dist[1, 3] == pytest.approx(f(sigs[1], sigs[3]))
  with pytest.raises(ValueError, match='metric'):
    S.distance_matrix(sigs, 'cosine')


# --------------------------------------------------------------------- weights


def test_similarity_and_symmetrise():
  np.testing.assert_allclose(S.similarity([0.0, 1.0, 3.0]), [1.0, 0.5, 0.25])
  sim = np.array([[1.0, 0.25], [1.0, 1.0]])
  np.testing.assert_allclose(S.symmetrise(sim), [[1.0, 0.5], [0.5, 1.0]])


def test_aggregation_weights_rows_are_a_softmax():
  sim = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.4], [0.2, 0.4, 1.0]])
  w = S.aggregation_weights(sim)
  np.testing.assert_allclose(w.sum(1), 1)
  np.testing.assert_allclose(w[0], np.exp(sim[0]) / np.exp(sim[0]).sum())
  sharp = S.aggregation_weights(sim, temperature=0.1)
  assert sharp[0, 0] > w[0, 0]  # lower temperature -> more self weight
  with pytest.raises(ValueError, match='temperature'):
    S.aggregation_weights(sim, temperature=0.0)


def test_self_weight_fixes_diagonal_and_keeps_off_diagonal_ratios():
  sim = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.4], [0.2, 0.4, 1.0]])
  plain = S.aggregation_weights(sim, temperature=0.5)
  w = S.aggregation_weights(sim, temperature=0.5, self_weight=0.7)
  np.testing.assert_allclose(np.diag(w), 0.7)
  np.testing.assert_allclose(w.sum(1), 1)
  assert w[0, 1] / w[0, 2] == pytest.approx(plain[0, 1] / plain[0, 2])
  np.testing.assert_array_equal(S.aggregation_weights([[1.0]], self_weight=0.3),
                                [[1.0]])
  with pytest.raises(ValueError, match='self_weight'):
    S.aggregation_weights(sim, self_weight=1.5)


def test_more_similar_devices_get_more_weight():
  # Devices 0 and 1 share classes 0-4; device 2 holds classes 5-9.
  labels = [np.arange(0, 5).repeat(10), np.arange(0, 5).repeat(10)[:-7],
            np.arange(5, 10).repeat(10)]
  sigs = [signature_lib.histogram_signature(l, 10) for l in labels]
  for mode in ('pruning_per_emd', 'pruning_per_js'):
    w = S.mode_weights(mode, signatures=sigs, signature_kind='histogram')
    np.testing.assert_allclose(w.sum(1), 1)
    assert w[0, 1] > w[0, 2] and w[1, 0] > w[1, 2]
    assert w[0, 0] >= w[0, 1]  # identical to itself
  # Feature signatures (W1 on flattened values): closer clouds, more weight.
  rng = np.random.default_rng(0)
  feats = [rng.normal(0.0, 1, (40, 8)), rng.normal(0.1, 1, (40, 8)),
           rng.normal(3.0, 1, (40, 8))]
  w = S.mode_weights('pruning_per_emd', signatures=feats, temperature=0.1)
  assert w[0, 1] > w[0, 2] and w[2, 1] > w[2, 0]


def test_mode_weights_all_modes():
  assert S.MODES == ('wo_pruning', 'pruning_alone', 'pruning_avg',
                     'pruning_per_js', 'pruning_per_emd')
  assert S.mode_weights('wo_pruning', num_devices=3) is None
  np.testing.assert_array_equal(S.mode_weights('pruning_alone', num_devices=3),
                                np.eye(3))
  np.testing.assert_array_equal(
      S.mode_weights('pruning_alone', data_sizes=[1, 2]), np.eye(2))
  sizes = np.array([10, 30, 60])
  w = S.mode_weights('pruning_avg', data_sizes=sizes)
  for row in w:
    np.testing.assert_allclose(row, sizes / sizes.sum())
  with pytest.raises(ValueError, match="Unknown aggregation mode 'fedavg'"):
    S.mode_weights('fedavg', num_devices=2)
  with pytest.raises(ValueError, match='signatures'):
    S.mode_weights('pruning_per_emd', data_sizes=sizes)
  with pytest.raises(ValueError, match='data_sizes'):
    S.mode_weights('pruning_avg', num_devices=3)
