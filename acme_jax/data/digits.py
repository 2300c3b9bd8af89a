"""Offline default: scikit-learn's bundled digits (1,797 real 8x8 images, 10 classes).

Stored as sklearn ships them (values 0..16, one byte each); the model's input
is the image upsampled to `image_size` and normalised to [-1, 1]
(`InputSpec(image_size, scale=1/16)`).
"""
import numpy as np
from sklearn import datasets as sk_datasets

from acme_jax.data.base import Dataset, InputSpec, Split

# Fixed split fractions of the 1,797 images: train / validation / test.
VALIDATION_FRACTION = 0.15
TEST_FRACTION = 0.15
_SPLIT_SEED = 0  # the split is fixed, independent of config.seed


def load(image_size: int) -> Dataset:
  raw = sk_datasets.load_digits()
  images = raw.images.astype(np.uint8)[..., None]  # (N, 8, 8, 1), 0..16
  labels = raw.target.astype(np.int32)
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
  n_val = int(round(VALIDATION_FRACTION * len(labels)))
  n_test = int(round(TEST_FRACTION * len(labels)))
  parts = {'validation': order[:n_val], 'test': order[n_val:n_val + n_test],
           'train': order[n_val + n_test:]}
  # `index` refers to the position in sklearn's array: one source, 'digits'.
  splits = {name: Split(images[idx], labels[idx], idx.astype(np.int64),
                        'digits')
            for name, idx in parts.items()}
  return Dataset('digits', 10, splits['train'], splits['validation'],
                 splits['test'], InputSpec(image_size, scale=1 / 16))
