"""A synthetic source with the shapes of a named dataset (docs/method.md 9).

It goes through exactly the pipeline the real data does (uint8 at the
source resolution, resized and normalised per batch), so a machine without
CIFAR-100 can run the paper's shapes: 100 classes, 32x32x3 uint8, 50k train
and 10k test samples (each count configurable).

Seeded, deterministic and cheap (vectorised numpy, ~1 s per 10k CIFAR-size
images), and learnable: every class has a fixed template, a random 4x4 RGB
pattern upsampled to the image size, and a sample is its class template
shifted by up to 2 pixels plus Gaussian noise (`noise` x 255 standard
deviation), clipped to uint8.
"""
import numpy as np

from acme_jax.data.base import Dataset, InputSpec, Split

# name -> (height, width, channels, classes, train, test)
SHAPES = {'cifar10': (32, 32, 3, 10, 50_000, 10_000),
          'cifar100': (32, 32, 3, 100, 50_000, 10_000),
          'digits': (8, 8, 1, 10, 1_527, 270)}
_CHUNK = 4096


def templates(like: str, seed: int) -> np.ndarray:
  """(classes, H, W, C) float32 class patterns in [0, 255]."""
  h, w, c, classes, _, _ = SHAPES[like]
  rng = np.random.default_rng([seed, 0])
  coarse = rng.uniform(0, 255, (classes, 4, 4, c))
  rows = np.minimum(np.arange(h) * 4 // h, 3)
  cols = np.minimum(np.arange(w) * 4 // w, 3)
  return coarse[:, rows][:, :, cols].astype(np.float32)


def _samples(like, labels, seed, stream, noise):
  h, w, c, _, _, _ = SHAPES[like]
  base = templates(like, seed)
  out = np.empty((len(labels), h, w, c), np.uint8)
  rng = np.random.default_rng([seed, stream])
  for start in range(0, len(labels), _CHUNK):
    part = labels[start:start + _CHUNK]
    shift = rng.integers(-2, 3, (len(part), 2))
    images = base[part]
    images = np.stack([np.roll(img, tuple(s), axis=(0, 1))
                       for img, s in zip(images, shift)])
    images += rng.normal(0.0, noise * 255.0, images.shape).astype(np.float32)
    out[start:start + len(part)] = np.clip(np.round(images), 0, 255)
  return out


def load(like: str, image_size: int, seed: int, num_train: int = 0,
         num_test: int = 0, noise: float = 0.25,
         validation_fraction: float = 0.1) -> Dataset:
  """A dataset shaped like `like` (one of SHAPES); 0 = the real counts."""
  if like not in SHAPES:
    raise ValueError(f'synthetic data can look like {", ".join(SHAPES)}, '
                     f'not {like!r}')
  _, _, c, classes, real_train, real_test = SHAPES[like]
  num_train = num_train or real_train
  num_test = num_test or real_test
  rng = np.random.default_rng([seed, 9])
  train_labels = rng.permutation(np.arange(num_train) % classes).astype(
      np.int32)
  test_labels = rng.permutation(np.arange(num_test) % classes).astype(
      np.int32)
  train_images = _samples(like, train_labels, seed, 1, noise)
  test_images = _samples(like, test_labels, seed, 2, noise)
  n_val = int(round(validation_fraction * num_train))
  order = rng.permutation(num_train)
  train, val = order[n_val:], order[:n_val]
  make = lambda images, labels, idx, source: Split(  # noqa: E731
      images[idx], labels[idx], idx.astype(np.int64), source)
  # Synthetic pixels span 0..255 whatever dataset they mimic (real digits
  # span 0..16), so one scale maps them all to [0, 1].
  scale = 1 / 255
  return Dataset(f'synthetic_{like}', classes,
                 make(train_images, train_labels, train, 'train'),
                 make(train_images, train_labels, val, 'train'),
                 make(test_images, test_labels, np.arange(num_test), 'test'),
                 InputSpec(image_size, scale=scale))
