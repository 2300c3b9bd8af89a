"""Offline default: scikit-learn's bundled digits (1,797 real 8x8 images, 10 classes)."""
import jax
import numpy as np
from sklearn import datasets as sk_datasets

from acme_jax.data.base import Dataset, Split

# Fixed split fractions of the 1,797 images: train / validation / test.
VALIDATION_FRACTION = 0.15
TEST_FRACTION = 0.15
_SPLIT_SEED = 0  # the split is fixed, independent of config.seed


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  if images.shape[1] == size:
    return images
  return np.asarray(jax.image.resize(
      images, (images.shape[0], size, size, images.shape[3]), 'bilinear'))


def load(image_size: int) -> Dataset:
  raw = sk_datasets.load_digits()
  images = (raw.images.astype(np.float32) / 16.0)[..., None]  # [0, 1], 1 channel
  labels = raw.target.astype(np.int32)
  images = (_resize(images, image_size) - 0.5) / 0.5           # [-1, 1]
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
  n_val = int(round(VALIDATION_FRACTION * len(labels)))
  n_test = int(round(TEST_FRACTION * len(labels)))
  parts = {'validation': order[:n_val], 'test': order[n_val:n_val + n_test],
           'train': order[n_val + n_test:]}
  # `index` refers to the position in sklearn's array: one source, 'digits'.
  # A device holds a digit as sklearn ships it: 8x8 values 0..16, one byte
  # each (64 bytes), not at the model's resolution.
  native = np.full(len(labels), int(np.prod(raw.images.shape[1:])), np.int64)
  splits = {name: Split(images[idx], labels[idx], idx.astype(np.int64),
                        'digits', native[idx])
            for name, idx in parts.items()}
  return Dataset('digits', 10, splits['train'], splits['validation'],
                 splits['test'])
