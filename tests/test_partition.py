"""Partitions hand every sample to at most one device, reproducibly, per the scheme."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from acme_jax.data import partition as P

FAST = settings(max_examples=25, deadline=None)


@st.composite
def labels_and_devices(draw, min_per_device=1):
  num_devices = draw(st.integers(1, 8))
  num_classes = draw(st.integers(1, 10))
  n = draw(st.integers(num_devices * min_per_device, 300))
  seed = draw(st.integers(0, 2**16))
  labels = np.random.default_rng(seed).integers(0, num_classes, n)
  return labels, num_devices, seed


def _assert_exact_cover(parts, n):
  joined = np.concatenate(parts)
  assert len(joined) == n
  np.testing.assert_array_equal(np.sort(joined), np.arange(n))


@FAST
@given(labels_and_devices())
def test_iid_assigns_every_sample_once_in_near_equal_parts(case):
  labels, num_devices, seed = case
  parts = P.partition(labels, num_devices, 'iid', seed)
  _assert_exact_cover(parts, len(labels))
  sizes = [len(p) for p in parts]
  assert max(sizes) - min(sizes) <= 1


@FAST
@given(labels_and_devices(), st.sampled_from([0.01, 0.1, 1.0, 100.0]))
def test_dirichlet_assigns_every_sample_once_and_no_device_is_empty(case, alpha):
  labels, num_devices, seed = case
  parts = P.partition(labels, num_devices, 'dirichlet', seed, P.SchemeOptions(alpha=alpha))
  _assert_exact_cover(parts, len(labels))
  assert all(len(p) >= 1 for p in parts)


@FAST
@given(labels_and_devices(min_per_device=3), st.integers(1, 3))
def test_shards_assign_every_sample_once(case, k):
  labels, num_devices, seed = case
  parts = P.partition(labels, num_devices, 'shards', seed, P.SchemeOptions(shards_per_device=k))
  _assert_exact_cover(parts, len(labels))
  assert all(len(p) >= 1 for p in parts)


def test_shards_give_about_k_classes_per_device():
  labels = np.repeat(np.arange(10), 50)
  parts = P.partition(labels, 5, 'shards', 0, P.SchemeOptions(shards_per_device=2))
  for part in parts:  # shards align with classes here: exactly <= 2 classes each
    assert len(np.unique(labels[part])) <= 2


def test_small_alpha_is_more_skewed_than_large_alpha():
  labels = np.repeat(np.arange(10), 100)

  def mean_classes(alpha):
    parts = P.partition(labels, 10, 'dirichlet', 3, P.SchemeOptions(alpha=alpha))
    return np.mean([len(np.unique(labels[p])) for p in parts])

  assert mean_classes(0.05) < mean_classes(100.0)


@FAST
@given(labels_and_devices(), st.sampled_from(['iid', 'dirichlet', 'shards']))
def test_histograms_match_the_data(case, scheme):
  labels, num_devices, seed = case
  parts = P.partition(labels, num_devices, scheme, seed, P.SchemeOptions(shards_per_device=1))
  num_classes = int(labels.max()) + 1
  per_device = [P.label_histogram(labels[p], num_classes) for p in parts]
  np.testing.assert_array_equal(np.sum(per_device, axis=0),
                                P.label_histogram(labels, num_classes))
  for part, hist in zip(parts, per_device):
    assert hist.sum() == len(part)
    normalised = P.label_histogram(labels[part], num_classes, normalize=True)
    np.testing.assert_allclose(normalised, hist / hist.sum())


@pytest.mark.parametrize('scheme', P.SCHEMES)
def test_same_seed_same_result_different_seed_different(scheme):
  labels = np.repeat(np.arange(12), 40)
  kwargs = dict(alpha=0.5, shards_per_device=2, fraction_per_class=0.1)
  first = P.partition(labels, 5, scheme, 7, P.SchemeOptions(**kwargs))
  again = P.partition(labels, 5, scheme, 7, P.SchemeOptions(**kwargs))
  other = P.partition(labels, 5, scheme, 8, P.SchemeOptions(**kwargs))
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize('scheme', P.CATEGORY_SCHEMES)
@pytest.mark.parametrize('num_classes,num_devices', [(100, 5), (10, 5), (10, 9),
                                                     (20, 4)])
def test_category_setups_assign_disjoint_fractions(scheme, num_classes, num_devices):
  labels = np.repeat(np.arange(num_classes), 60)
  if scheme == 'C4' and num_devices < 4:
    return
  parts = P.partition(labels, num_devices, scheme, 0, P.SchemeOptions(fraction_per_class=0.1))
  joined = np.concatenate(parts)
  assert len(np.unique(joined)) == len(joined)   # at most once
  assert len(joined) < len(labels)               # the rest stays unassigned
  sets = P.category_class_sets(num_classes, num_devices, scheme, 0)
  for part, classes in zip(parts, sets):
    np.testing.assert_array_equal(np.unique(labels[part]), classes)
    counts = P.label_histogram(labels[part], num_classes)
    assert set(counts[classes]) == {6}           # 10% of 60 per class


def test_category_class_sets_follow_the_prototype_pattern():
  iid = P.category_class_sets(100, 5, 'IID', 0)
  assert all(np.array_equal(s, iid[0]) for s in iid)
  assert len(iid[0]) == 25
  for scheme, distinct in [('C2', 2), ('C3', 3), ('C4', 4)]:
    sets = P.category_class_sets(100, 5, scheme, 0)
    assert len({tuple(s) for s in sets}) == distinct
    assert all(len(s) == 25 for s in sets)
    first = [tuple(s) for s in sets[:distinct]]
    assert len(set(first)) == distinct            # the first k devices differ
  c4 = P.category_class_sets(100, 4, 'C4', 0)
  assert len({tuple(s) for s in c4}) == 4         # C4 devices have different sets
  c3 = P.category_class_sets(100, 5, 'C3', 0)
  assert 0 < len(np.intersect1d(c3[0], c3[2])) < 25   # the mixed set overlaps A


def test_groups_partition_the_classes():
  groups = P.class_groups(100, 3)
  assert [len(g) for g in groups] == [25] * 4
  np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(100))


def test_category_setup_rejects_oversubscribed_classes():
  labels = np.repeat(np.arange(8), 20)
  with pytest.raises(ValueError, match='shared by'):
    P.partition(labels, 5, 'IID', 0, P.SchemeOptions(fraction_per_class=0.3))
  parts = P.partition(labels, 5, 'IID', 0, P.SchemeOptions(fraction_per_class=0.2))
  joined = np.concatenate(parts)
  np.testing.assert_array_equal(np.sort(joined),
                                np.flatnonzero(np.isin(labels, P.class_groups(8, 0)[0])))


@pytest.mark.parametrize('call,match', [
    (lambda y: P.partition(y, 2, 'nope', 0), 'allowed'),
    (lambda y: P.partition(y, 100, 'iid', 0), 'at least one'),
    (lambda y: P.partition(y, 2, 'dirichlet', 0, P.SchemeOptions(alpha=0.0)), 'alpha'),
    (lambda y: P.partition(y, 20, 'shards', 0, P.SchemeOptions(shards_per_device=2)), 'shards'),
    (lambda y: P.partition(y, 3, 'C4', 0), 'C4 needs'),
    (lambda y: P.partition(y, 5, 'C2', 0, P.SchemeOptions(fraction_per_class=0.01)), 'no samples'),
])
def test_impossible_settings_raise(call, match):
  labels = np.repeat(np.arange(10), 3)
  with pytest.raises(ValueError, match=match):
    call(labels)


@FAST
@given(labels_and_devices(), st.sampled_from([0.0, 0.1, 0.2, 0.45]),
       st.sampled_from([0.0, 0.1, 0.3, 0.5]))
def test_local_splits_are_disjoint_and_cover_the_device(case, val_f, test_f):
  labels, num_devices, seed = case
  for part in P.partition(labels, num_devices, 'dirichlet', seed, P.SchemeOptions(alpha=0.3)):
    train, val, test = P.local_splits(part, labels, seed, val_f, test_f)
    assert len(train) >= 1
    joined = np.concatenate([train, val, test])
    assert len(np.unique(joined)) == len(joined) == len(part)
    np.testing.assert_array_equal(np.sort(joined), part)


def test_local_splits_are_stratified():
  labels = np.repeat(np.arange(4), [40, 20, 100, 10])
  part = np.arange(len(labels))
  train, val, test = P.local_splits(part, labels, 0, 0.2, 0.1)
  assert (len(val), len(test)) == (34, 17)
  for split, fraction in [(val, 0.2), (test, 0.1)]:
    counts = P.label_histogram(labels[split], 4)
    expected = fraction * np.array([40, 20, 100, 10])
    assert np.all(np.abs(counts - expected) <= 1)


def test_local_splits_keep_a_train_sample_on_tiny_devices():
  labels = np.array([0, 1])
  train, val, test = P.local_splits(np.array([0, 1]), labels, 0, 0.45, 0.45)
  assert len(train) == 1 and len(val) + len(test) == 1
