"""Splitting the devices' share of the training data among D devices (non-IID setups).

Every function takes a label array (the devices' share, length N) and returns index
arrays into it, so callers can `Split.take` them and tests can prove that no sample
sits on two devices.

Schemes (docs/method.md 6, last bullet):
  'iid'        a seeded shuffle cut into D near-equal parts; every sample assigned once.
  'dirichlet'  per class, Dirichlet(alpha) proportions across devices; every sample
               assigned once. Small alpha can leave a device empty; we then move single
               samples from the largest device (its most frequent class) to each empty
               one, so no device is empty and the draw is otherwise untouched.
  'shards'     the classic sort-by-label shards: the N samples, sorted by label, are
               cut into D*k near-equal shards and each device gets k random shards, so
               it holds about k classes (a shard can straddle a class boundary). Every
               sample assigned once.
  'IID', 'C2', 'C3', 'C4'
               the prototype's category-group setups, see `category_class_sets`. Every
               device gets `fraction_per_class` of each of its classes' samples;
               samples not handed out stay unassigned.
"""
import dataclasses
import math
from typing import Optional

import numpy as np

from acme_jax import choices
from acme_jax import streams

RANDOM_SCHEMES = choices.RANDOM_PARTITIONS
CATEGORY_SCHEMES = choices.CATEGORY_PARTITIONS
SCHEMES = choices.PARTITIONS

NUM_GROUPS = 4  # the prototype cuts the classes into 4 groups (25 each on CIFAR-100)

# Which class set device i gets in a category setup: TEMPLATES[scheme][i % 5].
# Names: 'A' = group 0, 'B' = group 1, 'AC' = half group 0 + half group 2,
# 'ABC' = thirds of groups 0, 1, 2, 'DA' = half group 3 + half group 0.
# The multisets over 5 devices are the prototype's for its 5 users; the order puts
# the k distinct sets of 'Ck' on the first k devices, so any D >= k shows all of them.
CATEGORY_TEMPLATES = {
    'IID': ('A', 'A', 'A', 'A', 'A'),
    'C2': ('A', 'B', 'A', 'B', 'A'),
    'C3': ('A', 'B', 'AC', 'A', 'B'),
    'C4': ('A', 'B', 'ABC', 'DA', 'A'),
}
_MIN_DEVICES = {'IID': 1, 'C2': 2, 'C3': 3, 'C4': 4}


def _as_labels(labels) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f'labels must be 1-D, got shape {labels.shape}')
  if labels.size and (not np.issubdtype(labels.dtype, np.integer)
                      or labels.min() < 0):
    raise ValueError('labels must be non-negative integers')
  return labels.astype(np.int64)


def _check_enough_samples(num_samples: int, num_devices: int, scheme: str):
  if num_devices < 1:
    raise ValueError(f'num_devices must be >= 1, got {num_devices}')
  if num_samples < num_devices:
    raise ValueError(f'{scheme}: {num_samples} samples cannot give each of '
                     f'{num_devices} devices at least one')


def _sorted_parts(parts) -> list:
  return [np.sort(np.asarray(p, np.int64)) for p in parts]


def iid(labels, num_devices: int, seed: int) -> list:
  """A seeded shuffle cut into `num_devices` parts whose sizes differ by <= 1."""
  labels = _as_labels(labels)
  _check_enough_samples(len(labels), num_devices, 'iid')
  order = np.random.default_rng(seed).permutation(len(labels))
  return _sorted_parts(np.array_split(order, num_devices))


def dirichlet(labels, num_devices: int, seed: int, alpha: float) -> list:
  """Per class, Dirichlet(alpha) proportions across devices (small alpha = skewed).

  No device ends up empty: after the draw, each empty device receives one sample
  moved from the currently largest device (a sample of that device's most frequent
  class, so the donor keeps its character). Needs N >= D.
  """
  labels = _as_labels(labels)
  if not alpha > 0:
    raise ValueError(f'dirichlet: alpha must be > 0, got {alpha}')
  _check_enough_samples(len(labels), num_devices, 'dirichlet')
  rng = np.random.default_rng(seed)
  parts = [[] for _ in range(num_devices)]
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    proportions = rng.dirichlet(np.full(num_devices, float(alpha)))
    cuts = np.round(np.cumsum(proportions)[:-1] * len(members)).astype(int)
    for device, chunk in enumerate(np.split(members, cuts)):
      parts[device].extend(chunk.tolist())
  for device in range(num_devices):
    if parts[device]:
      continue
    donor = max(range(num_devices), key=lambda d: len(parts[d]))
    donor_labels = labels[parts[donor]]
    common = np.bincount(donor_labels).argmax()
    position = int(np.flatnonzero(donor_labels == common)[-1])
    parts[device].append(parts[donor].pop(position))
  return _sorted_parts(parts)


def shards(labels, num_devices: int, seed: int, shards_per_device: int) -> list:
  """Classic shards: sort by label, cut into D*k shards, deal k random shards each.

  Within a class the order is shuffled first, so which samples of a class fall in a
  shard depends on the seed. Needs N >= D*k so that no shard is empty.
  """
  labels = _as_labels(labels)
  if shards_per_device < 1:
    raise ValueError(f'shards: shards_per_device must be >= 1, '
                     f'got {shards_per_device}')
  num_shards = num_devices * shards_per_device
  _check_enough_samples(len(labels), num_devices, 'shards')
  if len(labels) < num_shards:
    raise ValueError(f'shards: {len(labels)} samples cannot fill {num_shards} '
                     f'shards ({num_devices} devices x {shards_per_device})')
  rng = np.random.default_rng(seed)
  shuffled = rng.permutation(len(labels))
  by_label = shuffled[np.argsort(labels[shuffled], kind='stable')]
  pieces = np.array_split(by_label, num_shards)
  dealt = rng.permutation(num_shards).reshape(num_devices, shards_per_device)
  return _sorted_parts(np.concatenate([pieces[s] for s in row]) for row in dealt)


def class_groups(num_classes: int, seed: int) -> list:
  """The 4 class groups: a seeded permutation of the classes cut into 4 near-equal parts.

  With C divisible by 4 every group has C/4 classes (25 on CIFAR-100, as in the
  prototype); otherwise sizes differ by one (digits: 3, 3, 2, 2).
  """
  if num_classes < NUM_GROUPS:
    raise ValueError(f'category setups need >= {NUM_GROUPS} classes, '
                     f'got {num_classes}')
  permutation = np.random.default_rng(seed).permutation(num_classes)
  return [np.asarray(g, np.int64) for g in np.array_split(permutation, NUM_GROUPS)]


def _mix(parts_and_groups, size: int) -> np.ndarray:
  """Concatenate leading classes of several groups, `size` classes in near-equal parts."""
  counts = [len(c) for c in np.array_split(np.arange(size), len(parts_and_groups))]
  return np.concatenate([group[len(group) - n:] if from_end else group[:n]
                         for (group, from_end), n in zip(parts_and_groups, counts)])


def category_class_sets(num_classes: int, num_devices: int, scheme: str,
                        seed: int) -> list:
  """Each device's classes in the prototype's 'IID' / 'C2' / 'C3' / 'C4' setups.

  Pattern (from the public PyTorch prototype's 5-user CIFAR-100 setup, generalised):
  groups A, B, C, D = `class_groups`; mixed sets have |A| classes.
    IID: every device A.
    C2:  A or B (3 x A, 2 x B per 5 devices).
    C3:  A, B, or AC = first half of A + first half of C (overlaps A).
    C4:  A, B, ABC = first third of A, B and C each (overlaps A and B),
         or DA = first half of D + last half of A (overlaps A, not ABC's part of A).
  Device i gets CATEGORY_TEMPLATES[scheme][i % 5]; 'Ck' needs >= k devices so that
  all k distinct sets appear.
  """
  if scheme not in CATEGORY_TEMPLATES:
    raise ValueError(f'unknown category setup {scheme!r}; allowed: {CATEGORY_SCHEMES}')
  if num_devices < _MIN_DEVICES[scheme]:
    raise ValueError(f'{scheme} needs >= {_MIN_DEVICES[scheme]} devices to show its '
                     f'{_MIN_DEVICES[scheme]} class sets, got {num_devices}')
  a, b, c, d = class_groups(num_classes, seed)
  size = len(a)
  sets = {
      'A': a,
      'B': b[:size],
      'AC': _mix([(a, False), (c, False)], size),
      'ABC': _mix([(a, False), (b, False), (c, False)], size),
      'DA': _mix([(d, False), (a, True)], size),
  }
  template = CATEGORY_TEMPLATES[scheme]
  distinct = {tuple(np.sort(sets[name])) for name in template}
  if len(distinct) < _MIN_DEVICES[scheme]:
    raise ValueError(f'{scheme}: {num_classes} classes are too few for '
                     f'{_MIN_DEVICES[scheme]} distinct class sets')
  return [np.sort(sets[template[i % len(template)]]) for i in range(num_devices)]


def category_groups(labels, num_devices: int, scheme: str, seed: int,
                    fraction_per_class: float = 0.1,
                    num_classes: Optional[int] = None,
                    independent: bool = False) -> list:
  """The prototype's category setups: each device gets a fraction of each of its classes.

  Device d gets floor(fraction_per_class * n_c) samples of each class c in its set
  (n_c = samples of c in `labels`). By default devices sharing a class get disjoint
  samples; if the k devices holding a class need more than all of it
  (k * floor(f * n_c) > n_c, i.e. roughly k * f > 1) we raise ValueError rather than
  overlap or shrink silently. `independent` samples each device on its own, as the
  prototype does (`sampling.py`: every user draws its share of each class apart from
  the others), so devices may hold the same samples. Samples not handed out stay
  unassigned. A device that would get no sample at all (tiny classes) is an error too.
  """
  labels = _as_labels(labels)
  if not 0 < fraction_per_class <= 1:
    raise ValueError(f'fraction_per_class must be in (0, 1], got {fraction_per_class}')
  num_classes = _num_classes(labels, num_classes)
  class_sets = category_class_sets(num_classes, num_devices, scheme, seed)
  rng = np.random.default_rng(seed + streams.CATEGORY_SAMPLES)
  parts = [[] for _ in range(num_devices)]
  for label in range(num_classes):
    holders = [dev for dev, classes in enumerate(class_sets) if label in classes]
    members = rng.permutation(np.flatnonzero(labels == label))
    take = int(math.floor(fraction_per_class * len(members) + 1e-9))
    if independent:
      for device in holders:
        parts[device].extend(rng.choice(members, take, replace=False).tolist())
      continue
    if len(holders) * take > len(members):
      raise ValueError(
          f'{scheme}: class {label} is shared by {len(holders)} devices, each asking '
          f'for {take} of its {len(members)} samples; use fraction_per_class <= '
          f'1/{len(holders)} or fewer devices')
    for rank, device in enumerate(holders):
      parts[device].extend(members[rank * take:(rank + 1) * take].tolist())
  for device, part in enumerate(parts):
    if not part:
      raise ValueError(f'{scheme}: device {device} gets no samples with '
                       f'fraction_per_class={fraction_per_class}; raise it')
  return _sorted_parts(parts)


def _num_classes(labels: np.ndarray, num_classes: Optional[int]) -> int:
  inferred = int(labels.max()) + 1 if labels.size else 0
  if num_classes is None:
    return inferred
  if num_classes < inferred:
    raise ValueError(f'num_classes={num_classes} but labels go up to {inferred - 1}')
  return int(num_classes)


@dataclasses.dataclass(frozen=True)
class SchemeOptions:
  """What a scheme reads beyond the labels: `alpha` ('dirichlet'),
  `shards_per_device` ('shards'); `fraction_per_class` and `independent`
  (the category setups 'IID', 'C2', 'C3', 'C4')."""
  alpha: float = 0.5
  shards_per_device: int = 2
  fraction_per_class: float = 0.1
  independent: bool = False


def partition(labels, num_devices: int, scheme: str, seed: int,
              options: SchemeOptions = SchemeOptions(),
              num_classes: Optional[int] = None) -> list:
  """Index arrays (sorted, int64, into `labels`), one per device, for `scheme`.

  `num_classes` (default: max label + 1) is read by the category setups. See
  the module docstring for each scheme.
  """
  if scheme == 'iid':
    return iid(labels, num_devices, seed)
  if scheme == 'dirichlet':
    return dirichlet(labels, num_devices, seed, options.alpha)
  if scheme == 'shards':
    return shards(labels, num_devices, seed, options.shards_per_device)
  if scheme in CATEGORY_SCHEMES:
    return category_groups(labels, num_devices, scheme, seed,
                           fraction_per_class=options.fraction_per_class,
                           num_classes=num_classes,
                           independent=options.independent)
  raise ValueError(f'unknown partition scheme {scheme!r}; allowed: {SCHEMES}')


def local_splits(indices, labels, seed: int, val_fraction: float,
                 test_fraction: float):
  """One device's (train, val, test) index arrays, a stratified cut of `indices`.

  `indices` point into `labels` (the array given to `partition`); the outputs are
  disjoint subsets of `indices` that together cover it. Stratified: each sample gets
  the key (rank within its class + u) / class size, u ~ U[0, 1), and the lowest keys
  go to test, then val; so every class is split in proportion, within one sample.
  Totals are round(fraction * n); train always keeps >= 1 sample (test, then val,
  give way when a device is tiny).
  """
  indices = np.asarray(indices, np.int64)
  labels = _as_labels(labels)
  if indices.ndim != 1 or len(indices) == 0:
    raise ValueError('local_splits needs a non-empty 1-D index array')
  if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1
          and val_fraction + test_fraction < 1):
    raise ValueError(f'need 0 <= val_fraction, test_fraction and their sum < 1; got '
                     f'{val_fraction}, {test_fraction}')
  rng = np.random.default_rng(seed)
  own_labels = labels[indices]
  keys = np.empty(len(indices))
  for label in np.unique(own_labels):
    members = np.flatnonzero(own_labels == label)
    ranks = rng.permutation(len(members))
    keys[members] = (ranks + rng.random(len(members))) / len(members)
  order = indices[np.argsort(keys, kind='stable')]
  n = len(indices)
  n_test = int(round(test_fraction * n))
  n_val = int(round(val_fraction * n))
  overflow = max(0, n_test + n_val - (n - 1))
  cut = min(overflow, n_test)
  n_test -= cut
  n_val -= overflow - cut
  test = order[:n_test]
  val = order[n_test:n_test + n_val]
  train = order[n_test + n_val:]
  return np.sort(train), np.sort(val), np.sort(test)


def label_histogram(labels, num_classes: int, normalize: bool = False) -> np.ndarray:
  """Per-class counts (int64), or frequencies summing to 1 with normalize=True.

  Normalised histograms of an empty label array are all zeros (no division by 0).
  """
  labels = _as_labels(labels)
  if labels.size and labels.max() >= num_classes:
    raise ValueError(f'label {labels.max()} out of range for {num_classes} classes')
  counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
  if not normalize:
    return counts
  total = counts.sum()
  return counts / total if total else np.zeros(num_classes, np.float64)
