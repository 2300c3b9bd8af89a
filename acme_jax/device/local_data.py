"""A device's cached features as one static-size array, and its batches.

Every split of a device (train, then validation, then test) is stacked and
padded to a shared row bucket, so devices, stages and experiments with similar
data sizes share compiled programs; batches are row indices into it with
per-row weights (padding rows weigh 0).
"""
from typing import NamedTuple, Optional

import numpy as np

SPLITS = ('train', 'val', 'test')


class DeviceData(NamedTuple):
  """One device's cached features (consts): train rows, then validation,
  then test, then padding, to a row count shared by a group of devices."""
  x: np.ndarray
  y: np.ndarray


class Padded(NamedTuple):
  """Devices' padded features (`data`, the engine's consts) and each one's
  real rows per split (`sizes`, {'train': n, 'val': n, 'test': n})."""
  data: list
  sizes: list


def bucket(rows: int) -> int:
  """Rows padded to the next power of two, at least 256: devices, stages and
  experiments with similar data sizes then share compiled programs."""
  return max(256, 1 << (max(rows, 1) - 1).bit_length())


def split_rows(sizes: dict, split: str) -> np.ndarray:
  """The consts rows of `split` for a device with `sizes` real rows."""
  start = sum(sizes[s] for s in SPLITS[:SPLITS.index(split)])
  return np.arange(start, start + sizes[split], dtype=np.int32)


def device_data(locals_, dtype=np.float32) -> Padded:
  """(DeviceData per device, real sizes per device): every device's splits
  stacked in one array, padded (copies of row 0, weight 0) to one bucket."""
  sizes = [{s: len(getattr(l, f'y_{s}')) for s in SPLITS} for l in locals_]
  rows = bucket(max(sum(s.values()) for s in sizes))
  data = []
  for local in locals_:
    x = np.concatenate([np.asarray(getattr(local, f'x_{s}'), dtype)
                        for s in SPLITS])
    y = np.concatenate([np.asarray(getattr(local, f'y_{s}'), np.int32)
                        for s in SPLITS])
    pad = rows - len(y)
    data.append(DeviceData(np.concatenate([x, np.repeat(x[:1], pad, 0)]),
                           np.concatenate([y, np.repeat(y[:1], pad)])))
  return Padded(data, sizes)


def index_batches(rows: np.ndarray, batch_size: int,
                  rng: Optional[np.random.Generator], **fields) -> list:
  """Batches of `batch_size` consts rows (shuffled when `rng`), the last
  padded with rows[0] at weight 0; every batch carries `fields` too."""
  order = rng.permutation(rows) if rng is not None else np.asarray(rows)
  out = []
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    w = np.zeros(batch_size, np.float32)
    w[:len(idx)] = 1.0
    pad = np.full(batch_size - len(idx), order[0], np.int32)
    out.append({'idx': np.concatenate([idx, pad]).astype(np.int32), 'w': w,
                **fields})
  return out


def random_batch(rows: np.ndarray, batch_size: int,
                 rng: np.random.Generator) -> dict:
  """A batch of min(len(rows), batch_size) distinct random rows, padded."""
  take = min(len(rows), batch_size)
  idx = np.full(batch_size, rows[0], np.int32)
  idx[:take] = rng.choice(rows, take, replace=False)
  w = np.zeros(batch_size, np.float32)
  w[:take] = 1.0
  return {'idx': idx, 'w': w}
