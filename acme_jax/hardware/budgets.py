"""What a device's latency and memory budgets allow (config.system.hardware),
through a latency table's predictors: the predicted cost of each candidate
backbone plus the header every device keeps room for, against each
device's budgets at its slowdown."""
import dataclasses
from typing import Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from acme_jax.device import header as header_lib
from acme_jax.hardware import features
from acme_jax.hardware import predictor as predictor_lib
from acme_jax.hardware import profile
from acme_jax.hardware import table as table_lib


def backbone_costs(table: dict, arch, shapes: Sequence[Tuple[float, float]],
                   seq_len: int, batch: int) -> Tuple[np.ndarray, np.ndarray]:
  """(predicted ms, predicted peak bytes) on the table's machine of the
  backbone subnets `shapes` ((depth, width) pairs) at `batch`."""
  rows = [features.backbone_row(arch, d, w, seq_len, batch)
          for d, w in shapes]
  return (table_lib.fitted(table, 'backbone', batch, 'latency')(rows),
          table_lib.fitted(table, 'backbone', batch, 'memory')(rows))


def header_reserve(table: dict, spec: header_lib.Spec, batch: int,
                   positions: int, cells: int = 1) -> Tuple[float, float]:
  """(ms, bytes) every device keeps for its header, as the parameter
  allowance does: the predicted cost of the cheapest header of `cells`
  cells (the smallest cell, every channel)."""
  row = features.header_row(spec, header_lib.smallest_arch(spec.num_nodes),
                            cells, header_lib.full_gates(spec), batch,
                            positions)
  return (float(table_lib.fitted(table, 'header', batch, 'latency')([row])[0]),
          float(table_lib.fitted(table, 'header', batch, 'memory')([row])[0]))


def feasible(devices: Sequence[profile.Hardware], backbone_ms, backbone_bytes,
             reserve: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
  """(D, N) whether candidate n, with the header reserve, meets device d's
  latency (at its slowdown) and memory budgets."""
  ms = np.asarray(backbone_ms, np.float64) + reserve[0]
  nbytes = np.asarray(backbone_bytes, np.float64) + reserve[1]
  return np.array([[hw.fits(m, b) for m, b in zip(ms, nbytes)]
                   for hw in devices], bool).reshape(len(devices), len(ms))


@dataclasses.dataclass(frozen=True)
class HeaderCost:
  """A header's predicted latency (ms) and peak memory (bytes) on a latency
  table's machine at `batch` over `positions` grid positions, traceable in
  the architecture: the header search's limits. Hashable (a static part of
  the search's config)."""
  latency: predictor_lib.Fitted
  memory: predictor_lib.Fitted
  batch: int
  positions: int

  @classmethod
  def from_table(cls, table: dict, batch: int, positions: int) -> 'HeaderCost':
    return cls(table_lib.fitted(table, 'header', batch, 'latency'),
               table_lib.fitted(table, 'header', batch, 'memory'),
               int(batch), int(positions))

  def __call__(self, spec: header_lib.Spec, arch, n_layers, gates=None):
    """(ms, bytes) as jnp scalars; `gates` default: every channel kept."""
    gates = header_lib.full_gates(spec) if gates is None else gates
    terms = features.header_terms(spec, arch, n_layers, gates, self.batch,
                                  self.positions)
    return (self.latency([terms], jnp)[0], self.memory([terms], jnp)[0])
