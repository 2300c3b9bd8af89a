"""Pareto Front Grid, exact non-dominated set, baselines, scores (docs/method.md 4.3).

Every function takes plain arrays over the fine grid: predicted accuracy and
min-max normalised size, latency and energy (see `candidates`). Picks are
indices into those arrays. Ties are broken deterministically and documented per
function; the last resort is always grid order (the first point wins).

Prototype quirk kept on purpose (docs/method.md 4.3 says to follow the formulas): on
the minimised axes I - N = -1, so r < 0 and a normalised latency or energy of
exactly 0 falls in cell 0 and one of exactly 1 in cell K + 1. Only cells 1..K
are searched, so those extreme points (e.g. subnets with no heads or no layers,
and the full model) never join the grid front. `non_dominated` has no such gap.
"""
import dataclasses
from typing import Dict, Optional

import numpy as np

IDEAL = np.array([1.0, 0.0, 0.0])  # (accuracy, latency, energy)
NADIR = np.array([0.0, 1.0, 1.0])
_BLOCK = 1024  # non_dominated's comparison block
BASELINES = ('highest_accuracy', 'largest_size', 'random', 'traverse', 'worst')


def min_max_normalise(values) -> np.ndarray:
  """(x - min) / (max - min); a constant array maps to zeros (not NaN)."""
  values = np.asarray(values, np.float64)
  low, high = np.min(values), np.max(values)
  if high == low:
    return np.zeros_like(values)
  return (values - low) / (high - low)


@dataclasses.dataclass(frozen=True)
class Candidates:
  """Fine-grid points: ratios, predicted accuracy, normalised costs, and
  whether each ratio pair realises a real subnet (>= 1 head and layer)."""
  depth_mult: np.ndarray
  width_mult: np.ndarray
  accuracy: np.ndarray
  size: np.ndarray
  latency: np.ndarray
  energy: np.ndarray
  realisable: Optional[np.ndarray] = None

  def __len__(self):
    return int(self.accuracy.shape[0])


def candidates(depth_mult, width_mult, accuracy, size, latency,
               energy, realisable=None) -> Candidates:
  """Normalises raw size, latency and energy over the grid (accuracy as is)."""
  arrays = [np.asarray(a, np.float64).reshape(-1)
            for a in (depth_mult, width_mult, accuracy, size, latency, energy)]
  if len({a.shape for a in arrays}) != 1 or arrays[0].size == 0:
    raise ValueError('candidate arrays must be non-empty and of equal length')
  depth, width, acc, size, latency, energy = arrays
  if realisable is not None:
    realisable = np.asarray(realisable, bool).reshape(-1)
  return Candidates(depth, width, acc, min_max_normalise(size),
                    min_max_normalise(latency), min_max_normalise(energy),
                    realisable)


def grid_cells(accuracy, latency, energy, cells: int = 10,
               sigma: float = 1e-6) -> np.ndarray:
  """(N, 3) cells ceil((I - x + sigma) / r) with r = (I - N + 2 sigma) / K."""
  if cells < 1:
    raise ValueError(f'cells must be >= 1, got {cells}')
  points = np.stack([np.asarray(a, np.float64).reshape(-1)
                     for a in (accuracy, latency, energy)], axis=1)
  r = (IDEAL - NADIR + 2 * sigma) / cells
  return np.ceil((IDEAL - points + sigma) / r).astype(np.int64)


def distance_to_ideal(accuracy, latency, energy) -> np.ndarray:
  """Euclidean distance to I = (1, 0, 0) in the normalised space."""
  points = np.stack([np.asarray(a, np.float64).reshape(-1)
                     for a in (accuracy, latency, energy)], axis=1)
  return np.linalg.norm(points - IDEAL, axis=1)


def pareto_front_grid(accuracy, latency, energy, cells: int = 10,
                      sigma: float = 1e-6) -> np.ndarray:
  """Indices of the PFG front: per occupied cell, the point nearest to I.

  Cells outside 1..K on any axis are ignored (see the module docstring). The
  result is ordered by cell (accuracy, latency, energy cell, lexicographic);
  equal distances within a cell keep the first point in grid order.
  """
  cell = grid_cells(accuracy, latency, energy, cells, sigma)
  distance = distance_to_ideal(accuracy, latency, energy)
  inside = np.all((cell >= 1) & (cell <= cells), axis=1)
  best: Dict[tuple, int] = {}
  for index in np.flatnonzero(inside):
    key = tuple(cell[index])
    if key not in best or distance[index] < distance[best[key]]:
      best[key] = int(index)
  return np.array([best[key] for key in sorted(best)], np.int64)


def non_dominated(accuracy, latency, energy) -> np.ndarray:
  """Indices (ascending) of the exact non-dominated set.

  j dominates i when acc_j >= acc_i, lat_j <= lat_i, en_j <= en_i with one
  strict. Points with identical objectives do not dominate each other.
  """
  acc, lat, en = (np.asarray(a, np.float64).reshape(-1)
                  for a in (accuracy, latency, energy))
  dominated = np.zeros(acc.shape, bool)
  # Blocks of candidates i keep the (N, block) comparisons small on big grids.
  for start in range(0, acc.size, _BLOCK):
    i = slice(start, start + _BLOCK)
    # no_worse[j, i]: j is at least as good as i on every objective.
    no_worse = ((acc[:, None] >= acc[None, i]) & (lat[:, None] <= lat[None, i])
                & (en[:, None] <= en[None, i]))
    better = ((acc[:, None] > acc[None, i]) | (lat[:, None] < lat[None, i])
              | (en[:, None] < en[None, i]))
    dominated[i] = np.any(no_worse & better, axis=0)
  return np.flatnonzero(~dominated)


def non_dominated_min(*objectives) -> np.ndarray:
  """Indices (ascending) not dominated when every objective is minimised.

  j dominates i when it is no worse on every objective and better on one;
  points with identical objectives do not dominate each other.
  """
  points = np.stack([np.asarray(o, np.float64).reshape(-1)
                     for o in objectives], axis=1)
  no_worse = np.all(points[:, None, :] <= points[None, :, :], axis=2)
  better = np.any(points[:, None, :] < points[None, :, :], axis=2)
  return np.flatnonzero(~np.any(no_worse & better, axis=0))


def check_size_constraint(size_constraint: float) -> float:
  """A normalised size budget must be a number in [0, 1]."""
  value = float(size_constraint)
  if not 0.0 <= value <= 1.0:
    raise ValueError(f'size_constraint must lie in [0, 1] (normalised size), '
                     f'got {size_constraint}')
  return value


def feasible(size, size_constraint: float, among=None,
             what: str = 'grid point') -> np.ndarray:
  """Indices (of `among`, default all) with normalised size <= constraint."""
  size_constraint = check_size_constraint(size_constraint)
  size = np.asarray(size, np.float64).reshape(-1)
  if among is None:
    among = np.arange(size.size)
  else:
    among = np.asarray(among)
    # A mask is read before any cast: cast first, it became indices 0 and 1.
    among = (np.flatnonzero(among) if among.dtype == bool
             else among.astype(np.int64))
  chosen = among[size[among] <= size_constraint]
  if chosen.size == 0:
    smallest = f'{size[among].min():.4g}' if among.size else 'none'
    raise ValueError(f'no {what} satisfies size_constraint={size_constraint} '
                     f'(normalised size <= {size_constraint}; the smallest '
                     f'is {smallest})')
  return chosen


def _first_best(indices: np.ndarray, *keys: np.ndarray) -> int:
  """The index minimising keys lexicographically (first key most important);
  remaining ties go to the first index in grid order."""
  indices = np.asarray(indices, np.int64)
  order = np.lexsort([indices] + [np.asarray(k)[indices] for k in keys[::-1]])
  return int(indices[order[0]])


def select_from_front(front, accuracy, size, size_constraint: float) -> int:
  """PFG pick: the feasible front point with the highest predicted accuracy.

  Ties go to the smaller size, then grid order.
  """
  acc, size = np.asarray(accuracy), np.asarray(size)
  chosen = feasible(size, size_constraint, among=front,
                    what='Pareto-front point')
  return _first_best(chosen, -acc, size)


def highest_accuracy(accuracy, size, size_constraint: float,
                     among=None) -> int:
  """Feasible grid point with the highest accuracy; ties -> smaller size.

  `among` (indices or a mask) restricts every baseline to those points, e.g.
  the realisable ones; default all (the prototype)."""
  acc, size = np.asarray(accuracy), np.asarray(size)
  return _first_best(feasible(size, size_constraint, among), -acc, size)


def largest_size(accuracy, size, size_constraint: float, among=None) -> int:
  """Feasible grid point of largest size; ties -> higher accuracy."""
  acc, size = np.asarray(accuracy), np.asarray(size)
  return _first_best(feasible(size, size_constraint, among), -size, -acc)


def random_pick(size, size_constraint: float, seed: int = 0,
                among=None) -> int:
  """Uniform over feasible grid points, seeded.

  RandomState(seed).choice(n, 1, replace=False) is what the prototype's
  pandas `sample(n=1, random_state=seed)` draws, so with the prototype's row
  order (width outer, depth inner) the same seed gives the same point.
  """
  chosen = feasible(size, size_constraint, among)
  draw = np.random.RandomState(seed).choice(chosen.size, 1, replace=False)
  return int(chosen[draw[0]])


def traverse(accuracy, size, energy, size_constraint: float,
             among=None) -> int:
  """Feasible grid point minimising E + S - A; ties -> grid order."""
  acc, size, en = (np.asarray(a, np.float64) for a in (accuracy, size, energy))
  return _first_best(feasible(size, size_constraint, among), en + size - acc)


def worst(accuracy, size, energy, size_constraint: float, among=None) -> int:
  """Lowest accuracy, then highest energy, then largest size.

  As in the prototype, points predicted at exactly 0 accuracy (clipped, i.e.
  degenerate) are skipped; if every feasible point is at 0, all are kept.
  """
  acc, size, en = (np.asarray(a, np.float64) for a in (accuracy, size, energy))
  chosen = feasible(size, size_constraint, among)
  nonzero = chosen[acc[chosen] > 0]
  return _first_best(nonzero if nonzero.size else chosen, acc, -en, -size)


def scores(accuracy, size, energy) -> Dict[str, np.ndarray]:
  """trade-off = A - (S + E) / 2, MER = A / S, EER = A / E (normalised).

  S or E is 0 at the cheapest grid point: the ratios then follow IEEE
  division, +inf when A > 0 and NaN when A == 0 (no warning). Callers that
  serialise them should write non-finite values as null.
  """
  acc, size, en = (np.asarray(a, np.float64) for a in (accuracy, size, energy))
  with np.errstate(divide='ignore', invalid='ignore'):
    return {'tradeoff': acc - 0.5 * (size + en),
            'mer': acc / size,
            'eer': acc / en}


def relative_gain(value: float, reference: float) -> Optional[float]:
  """(value - reference) / |reference|; None when the reference is 0."""
  if reference == 0:
    return None
  return float((value - reference) / abs(reference))


@dataclasses.dataclass(frozen=True)
class Selection:
  """Indices into the candidates: the PFG front and every method's pick."""
  front: np.ndarray
  picks: Dict[str, int]   # 'pfg' and each of BASELINES


def select_all(grid: Candidates, size_constraint: float, cells: int = 10,
               sigma: float = 1e-6, seed: int = 0,
               realisable_only: bool = False) -> Selection:
  """PFG pick and the five baselines under one normalised size constraint.

  `realisable_only` restricts the baselines to grid points that realise a
  real subnet (`grid.realisable`); off reproduces the prototype, whose
  baselines may land on ratios with 0 heads or layers. The PFG front never
  holds such points (their latency and energy normalise to 0).
  """
  check_size_constraint(size_constraint)
  among = (grid.realisable if realisable_only and grid.realisable is not None
           else None)
  front = pareto_front_grid(grid.accuracy, grid.latency, grid.energy, cells,
                            sigma)
  picks = {
      'pfg': select_from_front(front, grid.accuracy, grid.size,
                               size_constraint),
      'highest_accuracy': highest_accuracy(grid.accuracy, grid.size,
                                           size_constraint, among),
      'largest_size': largest_size(grid.accuracy, grid.size, size_constraint,
                                   among),
      'random': random_pick(grid.size, size_constraint, seed, among),
      'traverse': traverse(grid.accuracy, grid.size, grid.energy,
                           size_constraint, among),
      'worst': worst(grid.accuracy, grid.size, grid.energy, size_constraint,
                     among),
  }
  return Selection(front, picks)
