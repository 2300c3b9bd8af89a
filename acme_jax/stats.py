"""Means with 95% confidence intervals, and paired differences (the repeats
of the comparison experiments)."""
import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict:
  """{mean, ci (half-width of the t interval; None for n < 2), n, values}."""
  values = [float(v) for v in values]
  n = len(values)
  if n == 0:
    raise ValueError('no values')
  mean = float(np.mean(values))
  ci = None
  if n > 1:
    sd = float(np.std(values, ddof=1))
    ci = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))
  return {'mean': mean, 'ci': ci, 'n': n, 'values': values}


def paired(a: Sequence[float], b: Sequence[float],
           level: float = 0.95) -> dict:
  """Mean and CI of a_i - b_i; `holds` = the CI excludes 0 (sign: `sign`)."""
  if len(a) != len(b):
    raise ValueError(f'{len(a)} vs {len(b)} paired values')
  out = mean_ci([x - y for x, y in zip(a, b)], level)
  low = None if out['ci'] is None else out['mean'] - out['ci']
  high = None if out['ci'] is None else out['mean'] + out['ci']
  out['holds'] = bool(low is not None and (low > 0 or high < 0))
  out['sign'] = (0 if not out['holds'] else (1 if out['mean'] > 0 else -1))
  return out


def fmt(cell: dict, digits: int = 3) -> str:
  """'0.842 ± 0.012' (or '0.842' when n < 2)."""
  text = f"{cell['mean']:.{digits}f}"
  return text if cell['ci'] is None else f"{text} ± {cell['ci']:.{digits}f}"


def fmt_diff(cell: dict, digits: int = 3) -> str:
  """'+0.012 ± 0.010*' with * where the CI excludes 0."""
  text = f"{cell['mean']:+.{digits}f}"
  if cell['ci'] is not None:
    text += f" ± {cell['ci']:.{digits}f}"
  return text + ('*' if cell.get('holds') else '')
