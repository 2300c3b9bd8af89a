"""Accuracy predictor over (depth_mult, width_mult) (ACME.md 4.1).

The cloud measures only a coarse grid (prototype: 16 points); selection needs a
fine one (prototype: 20 x 20). A degree-2 polynomial fitted by least squares
fills the gap, for the overall accuracy and for the per-class accuracies the
edge uses (ACME.md 4.4) alike: one fit, any number of outputs.
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


def fit(depth_mult, width_mult, accuracy) -> QuadraticSurface:
  """Least-squares quadratic through the measured points.

  Args:
    depth_mult: (N,) measured depth ratios.
    width_mult: (N,) measured width ratios.
    accuracy: (N,) accuracies, or (N, C) per-class accuracies.

  Raises:
    ValueError: fewer than 6 points, non-finite values, or points that do not
      determine a quadratic (e.g. only two distinct depths).
  """
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
