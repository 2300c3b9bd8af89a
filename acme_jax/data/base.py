"""The in-memory dataset interface every loader returns.

Images are float32 NHWC, normalised per the loader; labels int32; `index` is the
sample's position in its source split, so tests can prove no sample is in two
places. Small research datasets fit in memory; the loaders keep that promise
by resizing once at load time.
"""
import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray   # (N, H, W, C) float32, normalised
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
    each: what the centralized baseline uploads (ACME.md 7)."""
    if self.raw_nbytes is None:
      return int(np.prod(self.images.shape)) + 4 * len(self)
    return int(np.sum(self.raw_nbytes)) + 4 * len(self)


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  num_classes: int
  train: Split
  validation: Split
  test: Split

  @property
  def image_shape(self):
    return tuple(self.train.images.shape[1:])
