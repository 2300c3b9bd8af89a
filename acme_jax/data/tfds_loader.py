"""TFDS image datasets (cifar10, cifar100, cars196), read without TensorFlow.

Samples come from `tfds.data_source` (random access into array_record files), so
the dataset must already be prepared in `data_dir` in array_record format:
nothing is downloaded. The validation split is a seeded held-out fraction of the
TFDS train split; `index` is the position in the TFDS split (`source`) a sample
came from. Images stay uint8 as stored (CIFAR 32x32x3); datasets whose images
differ in size (Cars) are resized once on the host to `source_size`, with
the bilinear weights of jax.image.resize. The model's resize to its input
side and the normalisation to [-1, 1] ((x / 255 - 0.5) / 0.5, the
google/vit-base-patch16-224 preprocessing) happen per batch on the
accelerator (`InputSpec`).
"""
import functools
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from acme_jax.data import base
from acme_jax.data.base import Dataset, InputSpec, Split

SUPPORTED = ('cifar10', 'cifar100', 'cars196')
VARIABLE_SIZE = ('cars196',)  # stored at `source_size`; others as they are
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


def _read(source, split: str, index: np.ndarray,
          source_size: Optional[int]) -> Split:
  """Reads the samples `index` of a data source as uint8 images.

  Images keep their stored resolution when every image has the same shape
  (CIFAR); otherwise (Cars) each is resized once on the host to
  source_size x source_size. `raw_nbytes` is each image's decoded uint8
  size at its native resolution.
  """
  images, labels = None, np.empty((len(index),), np.int32)
  native = np.empty((len(index),), np.int64)
  # Read in ascending index order (sequential in the file), store in `index`
  # order.
  order = np.argsort(index, kind='stable')
  for start in range(0, len(order), _CHUNK):
    positions = order[start:start + _CHUNK]
    examples = [source[int(i)] for i in index[positions]]
    labels[positions] = [int(ex['label']) for ex in examples]
    native[positions] = [int(np.prod(ex['image'].shape)) for ex in examples]
    for pos, ex in zip(positions, examples):
      image = ex['image']
      if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'{split}: expected an RGB image, got shape '
                         f'{image.shape}')
      if images is None:
        side = source_size or image.shape[0]
        images = np.empty((len(index), side, side, 3), np.uint8)
      if image.shape[:2] != images.shape[1:3]:
        if not source_size:
          raise ValueError(
              f'{split}: images differ in size ({image.shape[:2]} vs '
              f'{images.shape[1:3]}); set config.data.source_size')
        image = np.clip(np.round(_resize(image[None], source_size)[0]), 0,
                        255).astype(np.uint8)
      images[pos] = image
  if images is None:
    images = np.zeros((0, source_size or 1, source_size or 1, 3), np.uint8)
  return Split(images, labels, index.astype(np.int64), split, native)


def load(name: str, image_size: int, seed: int,
         validation_fraction: float = 0.1, data_dir: str | None = None,
         max_examples_per_split: int | None = None,
         source_size: int | None = None) -> Dataset:
  """Loads a TFDS image dataset into memory, as stored (uint8).

  Args:
    name: one of `SUPPORTED`.
    image_size: side of the model's square input (see `InputSpec`).
    seed: seeds the train/validation split and the order of every split.
    validation_fraction: fraction of the TFDS train split held out.
    data_dir: TFDS data directory holding the prepared (array_record) dataset.
    max_examples_per_split: if set, each split keeps at most this many
      (randomly chosen) samples; for smoke runs.
    source_size: side to store images at when they differ in size (Cars);
      fixed-size datasets keep their native resolution.

  Returns:
    The dataset; train and validation both index into the TFDS 'train' split,
    test into 'test'.
  """
  base.check_tfds_args(name, SUPPORTED, validation_fraction,
                       max_examples_per_split)
  try:
    train_source, test_source = tfds.data_source(
        name, split=['train', 'test'], data_dir=data_dir, download=False)
  except (NotImplementedError, KeyError, AssertionError,
          FileNotFoundError) as e:  # TFDS's errors when the data is absent
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
    splits[part] = _read(source, split, index,
                         source_size if name in VARIABLE_SIZE else None)
  return Dataset(name, NUM_CLASSES[name], splits['train'],
                 splits['validation'], splits['test'], InputSpec(image_size))
