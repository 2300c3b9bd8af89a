"""The in-memory dataset interface every loader returns.

Images stay as a device stores them: uint8 NHWC at the source resolution
(8x8x1 digits, 32x32x3 CIFAR; Cars capped at a configured side). Resizing to
the model's resolution and normalising happen per batch inside the jitted
steps (`InputSpec.prepare`, applied by the model), so host memory is bounded
by the uint8 source, never by the model resolution (CIFAR-100 at 224: 150 MB,
not 36 GB). Labels int32; `index` is the sample's position in its source
split, so tests can prove no sample is in two places.
"""
import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """How a batch of stored images becomes the model's input (jit-able).

  x = resize(uint8 * scale, image_size) bilinear (jax.image.resize, with
  antialiasing when shrinking), then (x - mean) / std. scale maps stored
  values to [0, 1]: 1/255 for photos, 1/16 for digits.
  """
  image_size: int
  scale: float = 1 / 255
  mean: float = 0.5
  std: float = 0.5

  def prepare(self, images, dtype=jnp.float32):
    x = jnp.asarray(images).astype(jnp.float32) * self.scale
    b, h, w, c = x.shape
    if (h, w) != (self.image_size, self.image_size):
      x = jax.image.resize(x, (b, self.image_size, self.image_size, c),
                           'bilinear')
    return ((x - self.mean) / self.std).astype(dtype)


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray   # (N, H, W, C) uint8, as stored (see InputSpec)
  labels: np.ndarray   # (N,) int32
  index: np.ndarray    # (N,) int64, position in the source split
  source: str = ''     # which source split `index` refers to ('train', ...)
  # (N,) bytes of each sample as a device stores it (native resolution,
  # uint8 or the dataset's encoded bytes); None = the images' uint8 size.
  raw_nbytes: Optional[np.ndarray] = None

  def __len__(self):
    return int(self.labels.shape[0])

  def take(self, positions) -> 'Split':
    positions = np.asarray(positions, np.int64)
    return Split(self.images[positions], self.labels[positions],
                 self.index[positions], self.source,
                 None if self.raw_nbytes is None
                 else self.raw_nbytes[positions])

  def raw_bytes(self) -> int:
    """Bytes of these samples as stored on a device, plus an int32 label
    each: what the centralized baseline uploads (docs/method.md 7)."""
    if self.raw_nbytes is None:
      return int(self.images.nbytes) + 4 * len(self)
    return int(np.sum(self.raw_nbytes)) + 4 * len(self)


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  num_classes: int
  train: Split
  validation: Split
  test: Split
  input_spec: Optional[InputSpec] = None

  @property
  def image_shape(self):
    return tuple(self.train.images.shape[1:])


def check_tfds_args(name: str, supported, validation_fraction: float,
                    max_examples_per_split, kind: str = 'TFDS dataset'):
  """The argument checks every TFDS loader makes before reading data."""
  if name not in supported:
    raise ValueError(f'Unsupported {kind} {name!r}; supported: '
                     f'{", ".join(supported)}.')
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1), got '
                     f'{validation_fraction}.')
  if max_examples_per_split is not None and max_examples_per_split < 1:
    raise ValueError(f'max_examples_per_split must be positive, got '
                     f'{max_examples_per_split}.')
