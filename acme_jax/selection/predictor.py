"""Accuracy predictor over (depth_mult, width_mult) (docs/method.md 4.1).

The cloud measures only a coarse grid (prototype: 16 points); selection needs a
fine one (prototype: 20 x 20). A degree-2 polynomial fitted by least squares
fills the gap, for the overall accuracy and for the per-class accuracies the
edge uses (docs/method.md 4.4) alike: one fit, any number of outputs.
"""
import dataclasses
from typing import Tuple

import numpy as np

# Features 1, d, w, d^2, dw, w^2: sklearn's PolynomialFeatures(2) order.
NUM_FEATURES = 6


def features(depth_mult, width_mult) -> np.ndarray:
  """(N, 6) quadratic features of the ratio pairs."""
  d = np.asarray(depth_mult, np.float64).reshape(-1)
  w = np.asarray(width_mult, np.float64).reshape(-1)
  if d.shape != w.shape:
    raise ValueError(f'{d.size} depth ratios but {w.size} width ratios')
  return np.stack([np.ones_like(d), d, w, d * d, d * w, w * w], axis=1)


@dataclasses.dataclass(frozen=True)
class QuadraticSurface:
  """A fitted acc(d, w); coefficients (6,) for one output or (6, C) for C."""
  coefficients: np.ndarray

  def __call__(self, depth_mult, width_mult, clip: bool = True) -> np.ndarray:
    """Predictions (N,) or (N, C), clipped to [0, 1] as accuracies are."""
    values = features(depth_mult, width_mult) @ self.coefficients
    return np.clip(values, 0.0, 1.0) if clip else values


def _kept_terms(depth, width) -> np.ndarray:
  """Which of 1, d, w, d^2, dw, w^2 the measured levels can determine.

  An axis measured at 2 levels supports a linear term only; at 1 level, no
  term at all (and no cross term).
  """
  d_levels, w_levels = len(np.unique(depth)), len(np.unique(width))
  return np.array([True, d_levels > 1, w_levels > 1, d_levels > 2,
                   d_levels > 1 and w_levels > 1, w_levels > 2])


def fit(depth_mult, width_mult, accuracy,
        reduce_degree: bool = False) -> QuadraticSurface:
  """Least-squares quadratic through the measured points.

  Args:
    depth_mult: (N,) measured depth ratios.
    width_mult: (N,) measured width ratios.
    accuracy: (N,) accuracies, or (N, C) per-class accuracies.
    reduce_degree: drop the terms an axis with fewer than 3 measured levels
      cannot determine (e.g. widths (0.5, 1.0) fit linearly in w) instead of
      raising; the dropped coefficients are 0.

  Raises:
    ValueError: fewer than 6 points, non-finite values, or points that do not
      determine a quadratic (e.g. only two distinct depths), unless
      `reduce_degree`.
  """
  if reduce_degree:
    x = features(depth_mult, width_mult)
    kept = _kept_terms(x[:, 1], x[:, 2])
    y = np.asarray(accuracy, np.float64)
    solved, *_ = np.linalg.lstsq(x[:, kept], y, rcond=None)
    coefficients = np.zeros((NUM_FEATURES,) + y.shape[1:])
    coefficients[kept] = solved
    return QuadraticSurface(coefficients)
  x = features(depth_mult, width_mult)
  y = np.asarray(accuracy, np.float64)
  if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
    raise ValueError(f'accuracy has shape {y.shape}; expected ({x.shape[0]},) '
                     f'or ({x.shape[0]}, C)')
  if x.shape[0] < NUM_FEATURES:
    raise ValueError(f'a degree-2 predictor needs at least {NUM_FEATURES} '
                     f'measured points, got {x.shape[0]}')
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError('measured ratios and accuracies must be finite numbers')
  rank = np.linalg.matrix_rank(x)
  if rank < NUM_FEATURES:
    raise ValueError(f'the {x.shape[0]} measured points do not determine a '
                     f'quadratic (feature rank {rank} < {NUM_FEATURES}); '
                     'measure at least 3 distinct depths and 3 distinct widths')
  coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
  return QuadraticSurface(coefficients)


def ratio_grid(grid_size: int = 20) -> Tuple[np.ndarray, np.ndarray]:
  """Flattened (depth, width) of the G x G grid linspace(0, 1, G) per axis.

  Width is the outer loop and depth the inner one, the prototype's row order;
  it matters only for ties and for the seeded random baseline.
  """
  if grid_size < 2:
    raise ValueError(f'grid size must be >= 2, got {grid_size}')
  ratios = np.linspace(0.0, 1.0, grid_size)
  width, depth = np.meshgrid(ratios, ratios, indexing='ij')
  return depth.reshape(-1), width.reshape(-1)


def predict_grid(surface: QuadraticSurface, grid_size: int = 20):
  """(depth, width, clipped predictions) over the fine grid."""
  depth, width = ratio_grid(grid_size)
  return depth, width, surface(depth, width)
