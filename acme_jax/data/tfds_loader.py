"""TFDS image datasets (cifar10, cifar100, cars196), read without TensorFlow.

Samples come from `tfds.data_source` (random access into array_record files), so
the dataset must already be prepared in `data_dir` in array_record format:
nothing is downloaded. The validation split is a seeded held-out fraction of the
TFDS train split; `index` is the position in the TFDS split (`source`) a sample
came from. Images are resized to `image_size` x `image_size` with bilinear
interpolation (numerically jax.image.resize(..., 'bilinear'), as digits.py) and
normalised to [-1, 1] as (x / 255 - 0.5) / 0.5, the google/vit-base-patch16-224
preprocessing.
"""
import functools

import numpy as np
import tensorflow_datasets as tfds

from acme_jax.data.base import Dataset, Split

SUPPORTED = ('cifar10', 'cifar100', 'cars196')
NUM_CLASSES = {'cifar10': 10, 'cifar100': 100, 'cars196': 196}

_CHUNK = 256        # images read and resized together
_DENSE_MAX_IN = 128  # axes up to this length resize by one dense matmul


@functools.lru_cache(maxsize=None)
def _weights(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) linear map of jax.image.resize(..., 'bilinear') on one axis.

  A numpy transcription of jax's antialiased triangle-kernel weights, so that no
  jax computation is compiled per image size (cars196 has hundreds of sizes).
  """
  scale = n_out / n_in
  kernel_scale = max(1.0 / scale, 1.0)  # widen the kernel when downsampling
  # Centres of the output pixels, in input pixel coordinates.
  sample = (np.arange(n_out) + 0.5) / scale - 0.5
  w = np.maximum(0.0, 1.0 - np.abs(sample[:, None] - np.arange(n_in)) /
                 kernel_scale)
  total = w.sum(axis=1, keepdims=True)
  w = np.where(total > 1000 * np.finfo(np.float32).eps,
               w / np.where(total != 0, total, 1), 0.0)
  inside = (sample >= -0.5) & (sample <= n_in - 0.5)
  return np.where(inside[:, None], w, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _taps(n_in: int, n_out: int):
  """The nonzero band of `_weights` as (n_out, K) source indices and weights."""
  w = _weights(n_in, n_out)
  nonzero = w != 0
  start = np.argmax(nonzero, axis=1)
  stop = n_in - np.argmax(nonzero[:, ::-1], axis=1)
  idx = start[:, None] + np.arange(int((stop - start).max()))
  valid = idx < n_in
  idx = np.minimum(idx, n_in - 1)
  taps = np.where(valid, np.take_along_axis(w, idx, axis=1), 0.0)
  return idx, taps.astype(np.float32)


def _resize_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
  """Bilinearly resizes axis 1 or 2 of a float32 (N, H, W, C) batch."""
  n, h, w, c = x.shape
  n_in = x.shape[axis]
  if n_in == size:
    return x
  if n_in <= _DENSE_MAX_IN:  # small axes: one BLAS matmul is fastest
    if axis == 1:
      return np.matmul(_weights(h, size), x.reshape(n, h, w * c)).reshape(
          n, size, w, c)
    return np.matmul(_weights(w, size), x.reshape(n * h, w, c)).reshape(
        n, h, size, c)
  # Large axes (downscaling big photos): sum over the few taps of the band.
  idx, taps = _taps(n_in, size)
  shape = [1] * 4
  shape[axis] = size
  out = None
  for k in range(idx.shape[1]):
    term = np.take(x, idx[:, k], axis=axis) * taps[:, k].reshape(shape)
    out = term if out is None else out + term
  return out


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W, C) -> float32 (N, size, size, C), values in [0, 255]."""
  x = images.astype(np.float32)
  return _resize_axis(_resize_axis(x, 1, size), 2, size)


def _read(source, split: str, index: np.ndarray, image_size: int) -> Split:
  """Reads the samples `index` of a data source, resized and normalised."""
  images = np.empty((len(index), image_size, image_size, 3), np.float32)
  labels = np.empty((len(index),), np.int32)
  native = np.empty((len(index),), np.int64)  # uint8 bytes at source size
  # Read in ascending index order (sequential in the file), store in `index`
  # order.
  order = np.argsort(index, kind='stable')
  for start in range(0, len(order), _CHUNK):
    positions = order[start:start + _CHUNK]
    examples = [source[int(i)] for i in index[positions]]
    labels[positions] = [int(ex['label']) for ex in examples]
    native[positions] = [int(np.prod(ex['image'].shape)) for ex in examples]
    by_shape = {}
    for pos, ex in zip(positions, examples):
      by_shape.setdefault(ex['image'].shape, []).append((pos, ex['image']))
    for shape, group in by_shape.items():
      if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f'{split}: expected an RGB image, got shape {shape}')
      pos = np.array([p for p, _ in group])
      batch = np.stack([image for _, image in group])
      resized = _resize(batch, image_size)
      resized *= 1.0 / 127.5  # (x / 255 - 0.5) / 0.5, in place
      resized -= 1.0
      images[pos] = np.clip(resized, -1.0, 1.0, out=resized)
  return Split(images, labels, index.astype(np.int64), split, native)


def load(name: str, image_size: int, seed: int,
         validation_fraction: float = 0.1, data_dir: str | None = None,
         max_examples_per_split: int | None = None) -> Dataset:
  """Loads a TFDS image dataset into memory.

  Args:
    name: one of `SUPPORTED`.
    image_size: side of the square output images.
    seed: seeds the train/validation split and the order of every split.
    validation_fraction: fraction of the TFDS train split held out.
    data_dir: TFDS data directory holding the prepared (array_record) dataset.
    max_examples_per_split: if set, each split keeps at most this many
      (randomly chosen) samples; for smoke runs.

  Returns:
    The dataset; train and validation both index into the TFDS 'train' split,
    test into 'test'.
  """
  if name not in SUPPORTED:
    raise ValueError(f'Unsupported TFDS dataset {name!r}; supported: '
                     f'{", ".join(SUPPORTED)}.')
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1), got '
                     f'{validation_fraction}.')
  if max_examples_per_split is not None and max_examples_per_split < 1:
    raise ValueError(f'max_examples_per_split must be positive, got '
                     f'{max_examples_per_split}.')
  try:
    train_source, test_source = tfds.data_source(
        name, split=['train', 'test'], data_dir=data_dir, download=False)
  except NotImplementedError as e:  # TFDS's error when no array_record files
    raise FileNotFoundError(
        f'TFDS {name!r} is not prepared in array_record format under data_dir='
        f'{data_dir or "(TFDS default)"}; nothing is downloaded at run time, '
        f'so prepare it beforehand (e.g. `tfds build {name} '
        f'--file_format=array_record`).') from e
  rng = np.random.default_rng(seed)
  train_order = rng.permutation(len(train_source))
  test_order = rng.permutation(len(test_source))
  n_val = int(round(validation_fraction * len(train_order)))
  parts = {'train': ('train', train_source, train_order[n_val:]),
           'validation': ('train', train_source, train_order[:n_val]),
           'test': ('test', test_source, test_order)}
  splits = {}
  for part, (split, source, index) in parts.items():
    index = index[:max_examples_per_split]
    splits[part] = _read(source, split, index, image_size)
  return Dataset(name, NUM_CLASSES[name], splits['train'],
                 splits['validation'], splits['test'])
