"""A device's data signature (docs/method.md 6): what it tells its edge about its
data instead of the data, computed on the device.

'features' (the prototype's): the CLS features, through a common reference
backbone, of up to `signature_samples` random local training samples,
ordered by label; 'histogram': the normalised label histogram.
"""
import dataclasses
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from acme_jax import choices
from acme_jax.device import features as features_lib
from acme_jax.models import subnet as subnet_lib

ArrayLike = Union[np.ndarray, Sequence[float]]


@dataclasses.dataclass(frozen=True)
class SignatureHparams:
  """How devices make their signatures (config.aggregation)."""
  kind: str                          # choices.SIGNATURE_KINDS
  samples: int
  reference: Tuple[float, float]     # (width, depth) of the reference backbone
  features_from: str                 # choices.FEATURE_SOURCES
  batch_size: int                    # rows per feature batch
  seed: int

  @classmethod
  def from_config(cls, config) -> 'SignatureHparams':
    aggregation = config.aggregation
    return cls(kind=aggregation.signature,
               samples=aggregation.signature_samples,
               reference=reference_multipliers(config),
               features_from=config.header.features_from,
               batch_size=config.cloud.eval_batch_size,
               seed=config.seed)


def reference_multipliers(config) -> Tuple[float, float]:
  """(width, depth) of the common backbone of feature signatures: the full
  supernet (the prototype's `dynavit`) or the smallest grid subnet."""
  cloud = config.cloud
  if config.aggregation.reference_backbone == 'full':
    return 1.0, 1.0
  return min(cloud.width_mults), min(cloud.depth_mults)


def needs_reference(config) -> bool:
  """Whether devices need the reference backbone: feature signatures, in a
  mode that reads them."""
  aggregation = config.aggregation
  return aggregation.signature == 'features' and aggregation.mode in choices.PERSONALIZED_MODES


def histogram_signature(labels: ArrayLike, num_classes: int) -> np.ndarray:
  """Normalised label histogram (C,): the cheapest signature, C floats on the wire."""
  labels = np.asarray(labels).reshape(-1)
  if labels.size == 0:
    raise ValueError('histogram_signature needs at least one label.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be integers, got dtype {labels.dtype}.')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f'labels must lie in [0, {num_classes}), got '
                     f'[{labels.min()}, {labels.max()}].')
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  return counts / counts.sum()


def feature_signature(features: ArrayLike, max_samples: int = 200, seed: int = 0,
                      labels: Optional[ArrayLike] = None) -> np.ndarray:
  """Features of up to `max_samples` random local samples, as an (m, D) array.

  The caller computes `features` (n, D), e.g. CLS embeddings from the common
  reference backbone; this only picks the subset, so the signature is a fixed-size
  summary independent of the local dataset size. Sampling is without replacement
  and reproducible from `seed`. If `labels` (n,) are given, the chosen rows are
  ordered by label (stable), as in the prototype; this matters only for the
  entry-wise JS distance, not for W1 (which ignores order).
  """
  features = np.asarray(features)
  if features.ndim == 1:
    features = features[:, None]
  if features.ndim != 2 or features.shape[0] == 0:
    raise ValueError(f'features must be (n, D) with n > 0, got {features.shape}.')
  if max_samples < 1:
    raise ValueError(f'max_samples must be >= 1, got {max_samples}.')
  n = features.shape[0]
  rng = np.random.default_rng(seed)
  index = np.sort(rng.choice(n, size=min(n, max_samples), replace=False))
  if labels is not None:
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
      raise ValueError(f'{labels.shape[0]} labels for {n} feature rows.')
    index = index[np.argsort(labels[index], kind='stable')]
  return features[index]




def device_feature_signature(hp: SignatureHparams, cls, labels,
                             device_id: int) -> np.ndarray:
  """One device's feature signature from its train samples' reference CLS
  features. The prototype samples `samples` per device; smaller devices
  resample with replacement so every signature has the same shape (JS
  compares entry by entry)."""
  seed = hp.seed + device_id
  if len(labels) < hp.samples:
    idx = np.random.default_rng(seed).choice(len(labels), hp.samples,
                                             replace=True)
    cls, labels = cls[idx], labels[idx]
  return feature_signature(cls, hp.samples, seed, labels=labels)


def signatures(hp: SignatureHparams, model, supernet, trains,
               num_classes: int):
  """Every device's signature from its train split (`trains[d]`)."""
  if hp.kind == 'histogram':
    return [histogram_signature(t.labels, num_classes) for t in trains]
  # One stream of full batches through the reference backbone for all
  # devices, not a padded tail per device.
  reference = subnet_lib.for_model(model, *hp.reference)
  images = np.concatenate([t.images for t in trains])
  tokens = features_lib.summary_tokens(model, features_lib.backbone_tokens(
      model, supernet, reference, images, hp.batch_size,
      source=hp.features_from), images)
  bounds = np.cumsum([0] + [len(t) for t in trains])
  return [device_feature_signature(hp, tokens[bounds[d]:bounds[d + 1]],
                                   t.labels, d)
          for d, t in enumerate(trains)]
