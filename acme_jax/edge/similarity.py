"""Distances between devices' data signatures, and aggregation weights
(docs/method.md 6). Devices make their signatures (`device/signature.py`).

The edge never sees raw data, only a small per-device *signature*; from pairwise
signature distances it builds a row-stochastic matrix W so that device k receives
I'_k = sum_i W[k, i] I_i (see `acme_jax.edge.aggregate`). More similar data ->
more weight, which is what makes the aggregation personalised under non-IID data.

How the public PyTorch prototype computes this (its `main` script, read for
reference, not copied), and what we follow:
- Signature: CLS features (last hidden layer, a common reference ViT) of 200 random
  local samples, grouped by label, as a (200, hidden) array. Label histograms are a
  project option (docs/method.md 6) that the prototype does not have.
- EMD: `scipy.stats.wasserstein_distance(p.flatten(), q.flatten())`, i.e. the
  flattened feature values are treated as two unweighted empirical samples of a 1-D
  distribution. We do the same for feature signatures (`kind='features'`). For
  histograms that reading is meaningless (it would compare the multiset of bin
  masses), so there W1 is between the two distributions over the classes
  (`kind='histogram'`) with the 0/1 ground metric, since class ids are nominal
  (class 3 is no farther from class 0 than class 1 is): W1 = total variation
  = 0.5 * sum |p - q|.
- JS: both arrays are clipped at 0 and normalised to sum 1 over all entries
  (not per row), then compared entry by entry. The prototype then computes
  0.5 (KL(M||P) + KL(M||Q)) via torch `kl_div(..., 'batchmean')` with P, Q smoothed by
  +1e-6, which reverses the KL arguments and divides by the number of rows (200).
  Our default (`js_variant='standard'`) keeps the clip-and-normalise step but uses
  the textbook JS divergence 0.5 KL(P||M) + 0.5 KL(Q||M) in nats (identical -> 0,
  disjoint supports -> ln 2); `js_variant='prototype'` reproduces the prototype's
  formula for faithful comparisons.
- Similarity 1 / (1 + d), symmetrised sqrt(S * S^T), weights = row-softmax(S) with
  temperature 1 (`exp(S) / sum exp(S)`). A commented-out prototype variant scaled
  the diagonal logit by 9 before the softmax; we expose a direct `self_weight`.
- pruning_avg: one importance vector averaged with weights n_i / sum(n).
"""
from typing import Optional, Sequence, Union

import numpy as np
from scipy import stats

from acme_jax import choices

MODES = choices.MODES
METRICS = ('emd', 'js')
SIGNATURE_KINDS = choices.SIGNATURE_KINDS
JS_VARIANTS = choices.JS_VARIANTS

ArrayLike = Union[np.ndarray, Sequence[float]]

_PROTOTYPE_JS_EPS = 1e-6


# ----------------------------------------------------------------------- distances


def wasserstein1(a: ArrayLike, b: ArrayLike, kind: str = 'features') -> float:
  """Wasserstein-1 (EMD) between two signatures; see the module doc for `kind`.

  kind='features': the flattened values of `a` and `b` are unweighted samples (the
    prototype's `wasserstein_distance(a.flatten(), b.flatten())`); sizes may differ.
  kind='histogram': `a` and `b` are masses over C nominal classes (same C),
    compared with the 0/1 ground metric: W1 = 0.5 * sum |p - q| after
    normalising each to sum 1.
  """
  a = np.asarray(a, np.float64).reshape(-1)
  b = np.asarray(b, np.float64).reshape(-1)
  if kind == 'features':
    return _w1_samples(np.sort(a), np.sort(b))
  if kind == 'histogram':
    if a.shape != b.shape:
      raise ValueError(f'histograms differ in length: {a.shape} vs {b.shape}.')
    if a.sum() <= 0 or b.sum() <= 0 or (a < 0).any() or (b < 0).any():
      raise ValueError('histograms need non-negative masses with a positive '
                       'sum.')
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())
  raise ValueError(f'Unknown signature kind {kind!r}; expected one of '
                   f'{SIGNATURE_KINDS}.')


def _w1_samples(a_sorted: np.ndarray, b_sorted: np.ndarray) -> float:
  """W1 between sorted 1-D samples; equal sizes: mean |a_(i) - b_(i)| (exact)."""
  if a_sorted.size == b_sorted.size:
    return float(np.mean(np.abs(a_sorted - b_sorted)))
  return float(stats.wasserstein_distance(a_sorted, b_sorted))


def _clip_normalise(x: np.ndarray) -> np.ndarray:
  """Clip at 0 and normalise over all entries: features are not distributions."""
  x = np.maximum(x, 0.0)
  total = x.sum()
  if total <= 0:
    raise ValueError('JS needs a signature with some positive entry.')
  return x / total


def jensen_shannon(a: ArrayLike, b: ArrayLike,
                   variant: str = 'standard') -> float:
  """Jensen-Shannon divergence (nats) between two same-shape signatures.

  Both are clipped at 0 and normalised over all entries (the prototype's step;
  histograms pass unchanged), then compared entry by entry.
  variant='standard': 0.5 KL(P||M) + 0.5 KL(Q||M), M = (P+Q)/2. In [0, ln 2].
  variant='prototype': the prototype's 0.5 (KL(M||P') + KL(M||Q')) / rows, with
    P' = P + 1e-6, Q' = Q + 1e-6 and rows = a.shape[0] (torch 'batchmean').
  """
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'JS compares entry by entry; shapes differ: {a.shape} vs '
                     f'{b.shape}.')
  rows = a.shape[0] if a.ndim else 1
  p = _clip_normalise(a.reshape(-1))
  q = _clip_normalise(b.reshape(-1))
  if variant == 'standard':
    m = 0.5 * (p + q)

    def kl(x, y):
      mask = x > 0
      return float(np.sum(x[mask] * np.log(x[mask] / y[mask])))

    return max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))
  if variant == 'prototype':
    p = p + _PROTOTYPE_JS_EPS
    q = q + _PROTOTYPE_JS_EPS
    m = 0.5 * (p + q)
    kl_mp = np.sum(m * (np.log(m) - np.log(p)))
    kl_mq = np.sum(m * (np.log(m) - np.log(q)))
    return max(0.0, float(0.5 * (kl_mp + kl_mq) / rows))
  raise ValueError(f'Unknown JS variant {variant!r}; expected one of '
                   f'{JS_VARIANTS}.')


def distance_matrix(signatures: Sequence[ArrayLike], metric: str,
                    kind: str = 'features',
                    js_variant: str = 'standard') -> np.ndarray:
  """(D, D) pairwise distances, metric 'emd' (W1) or 'js'; zero diagonal.

  `kind` ('features' | 'histogram') only changes W1 (see `wasserstein1`). Both
  metrics are symmetric, so only i < j is computed; feature W1 sorts each
  signature once (0.2 s per pair for 200 x 768 features otherwise).
  """
  if metric not in METRICS:
    raise ValueError(f'Unknown metric {metric!r}; expected one of {METRICS}.')
  if kind not in SIGNATURE_KINDS:
    raise ValueError(f'Unknown signature kind {kind!r}; expected one of '
                     f'{SIGNATURE_KINDS}.')
  sigs = [np.asarray(s) for s in signatures]
  num = len(sigs)
  if metric == 'emd' and kind == 'features':  # sort each signature once, not D^2 times
    sorted_values = [np.sort(np.asarray(s, np.float64).reshape(-1)) for s in sigs]
  dist = np.zeros((num, num), np.float64)
  for i in range(num):
    for j in range(i + 1, num):
      if metric == 'emd' and kind == 'features':
        d = _w1_samples(sorted_values[i], sorted_values[j])
      elif metric == 'emd':
        d = wasserstein1(sigs[i], sigs[j], kind)
      else:
        d = jensen_shannon(sigs[i], sigs[j], js_variant)
      dist[i, j] = dist[j, i] = d
  return dist


# --------------------------------------------------------------------- weights


def similarity(dist: ArrayLike) -> np.ndarray:
  """s = 1 / (1 + d): in (0, 1], 1 for identical signatures, unit-free."""
  dist = np.asarray(dist, np.float64)
  if np.any(dist < 0):
    raise ValueError('Distances must be non-negative.')
  return 1.0 / (1.0 + dist)


def symmetrise(sim: ArrayLike) -> np.ndarray:
  """sqrt(S * S^T): symmetric even if a distance was computed asymmetrically."""
  sim = np.asarray(sim, np.float64)
  return np.sqrt(sim * sim.T)


def aggregation_weights(sim: ArrayLike, temperature: float = 1.0,
                        self_weight: Optional[float] = None) -> np.ndarray:
  """Row-softmax(S / temperature); rows sum to 1.

  With similarities in (0, 1] and temperature 1 (the prototype) the rows are close
  to uniform; a lower temperature sharpens them. If `self_weight` is given, W[k, k]
  is set to it and the off-diagonal softmax mass of row k is rescaled to sum to
  1 - self_weight, so a device keeps a fixed share of its own importances whatever
  the similarities (with one device W = [[1]]).
  """
  sim = np.asarray(sim, np.float64)
  if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
    raise ValueError(f'similarity must be square, got {sim.shape}.')
  if not temperature > 0:
    raise ValueError(f'temperature must be > 0, got {temperature}.')
  logits = sim / temperature
  logits = logits - logits.max(axis=1, keepdims=True)
  w = np.exp(logits)
  w /= w.sum(axis=1, keepdims=True)
  if self_weight is None:
    return w
  if not 0.0 <= self_weight <= 1.0:
    raise ValueError(f'self_weight must be in [0, 1], got {self_weight}.')
  num = w.shape[0]
  if num == 1:
    return np.ones((1, 1))
  off = w * (1.0 - np.eye(num))
  off *= (1.0 - self_weight) / off.sum(axis=1, keepdims=True)
  return off + self_weight * np.eye(num)


def mode_weights(mode: str, *, signatures: Optional[Sequence[ArrayLike]] = None,
                 data_sizes: Optional[ArrayLike] = None,
                 num_devices: Optional[int] = None,
                 signature_kind: str = 'features',
                 temperature: float = 1.0,
                 self_weight: Optional[float] = None,
                 js_variant: str = 'standard') -> Optional[np.ndarray]:
  """The (D, D) aggregation matrix of one comparison mode (docs/method.md 6).

  wo_pruning: None (local training only: no aggregation, no pruning).
  pruning_alone: identity (each device prunes by its own importances).
  pruning_avg: every row = data_sizes / sum (one shared average, as in FedAvg).
  pruning_per_js / pruning_per_emd (ACME): row-softmax of the symmetrised
    similarity of the signatures; `temperature`, `self_weight` apply only here.
  D comes from `signatures`, `data_sizes` or `num_devices`, whichever is given.
  """
  if mode not in MODES:
    raise ValueError(f'Unknown aggregation mode {mode!r}; expected one of {MODES}.')
  if mode == 'wo_pruning':
    return None
  if mode == 'pruning_alone':
    sizes = [len(x) for x in (signatures, data_sizes) if x is not None]
    num = num_devices if num_devices is not None else (sizes[0] if sizes else None)
    if num is None:
      raise ValueError('pruning_alone needs num_devices, signatures or data_sizes.')
    return np.eye(num)
  if mode == 'pruning_avg':
    if data_sizes is None:
      raise ValueError('pruning_avg needs data_sizes.')
    sizes = np.asarray(data_sizes, np.float64).reshape(-1)
    if sizes.size == 0 or np.any(sizes < 0) or sizes.sum() <= 0:
      raise ValueError(f'data_sizes must be non-negative with a positive sum, '
                       f'got {sizes}.')
    return np.tile(sizes / sizes.sum(), (sizes.size, 1))
  if signatures is None:
    raise ValueError(f'{mode} needs signatures.')
  metric = 'js' if mode == 'pruning_per_js' else 'emd'
  dist = distance_matrix(signatures, metric, signature_kind, js_variant)
  return aggregation_weights(symmetrise(similarity(dist)), temperature,
                             self_weight)

