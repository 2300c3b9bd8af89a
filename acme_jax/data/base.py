"""The in-memory dataset interface every loader returns.

Images are float32 NHWC, normalised per the loader; labels int32; `index` is the
sample's position in its source split, so tests can prove no sample is in two
places. Small research datasets fit in memory; the loaders keep that promise
by resizing once at load time.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray   # (N, H, W, C) float32, normalised
  labels: np.ndarray   # (N,) int32
  index: np.ndarray    # (N,) int64, position in the source split
  source: str = ''     # which source split `index` refers to ('train', ...)

  def __len__(self):
    return int(self.labels.shape[0])

  def take(self, positions) -> 'Split':
    positions = np.asarray(positions, np.int64)
    return Split(self.images[positions], self.labels[positions],
                 self.index[positions], self.source)

  def raw_bytes(self) -> int:
    """Bytes of these samples as stored on a device: uint8 pixels + int32 labels."""
    return int(np.prod(self.images.shape)) + 4 * len(self)


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
