"""Edge: fine-grained, data-aware backbone choice per device (docs/method.md 4.4).

The cloud sends each edge its front: candidate subnets with predicted overall
and per-class accuracy and exact sizes. Each device sends its label histogram.
For every device the edge keeps the candidates whose backbone plus the header
allowance fits the device's budget and ranks them by the histogram-weighted
predicted accuracy sum_c p_d(c) acc_c, so two devices with equal budgets but
different data can get different backbones. Ties go to the smaller model.
"""
import dataclasses
from typing import List, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Choice:
  candidate: int          # index into the candidate arrays
  score: float            # histogram-weighted predicted accuracy
  params: int             # backbone parameters
  fallback: bool          # True if no front point fit and any subnet was used


def choose_backbones(candidate_params: Sequence[int], per_class_accuracy,
                     histograms, budgets: Sequence[int], header_allowance: int,
                     on_front=None, feasible=None) -> List[Choice]:
  """One `Choice` per device.

  Args:
    candidate_params: (N,) exact backbone parameter counts.
    per_class_accuracy: (N, C) predicted per-class accuracy of each candidate.
    histograms: (D, C) label histograms (counts or frequencies).
    budgets: (D,) parameter budgets for backbone + header.
    header_allowance: parameters reserved for the header.
    on_front: (N,) bool; candidates off the front are used only when no front
      candidate fits a device (then `fallback` is True). Default: all on front.
    feasible: (D, N) bool; False where a candidate misses a device's latency
      or memory budget (`hardware.budgets.feasible`). Default: all feasible.

  Raises:
    ValueError: if some device's budget fits no candidate at all.
  """
  params = np.asarray(candidate_params, np.int64)
  acc = np.asarray(per_class_accuracy, np.float64)
  hist = np.asarray(histograms, np.float64)
  hist = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1e-12)
  front = (np.ones(len(params), bool) if on_front is None
           else np.asarray(on_front, bool))
  scores = hist @ acc.T  # (D, N)
  choices = []
  for device, budget in enumerate(budgets):
    fits = params + header_allowance <= budget
    if feasible is not None:
      if not (fits & np.asarray(feasible[device], bool)).any() and fits.any():
        raise ValueError(
            f'device {device}: no backbone within its parameter budget '
            f'{budget} meets its latency and memory budgets')
      fits = fits & np.asarray(feasible[device], bool)
    pool, fallback = fits & front, False
    if not pool.any():
      pool, fallback = fits, True
    if not pool.any():
      raise ValueError(
          f'device {device}: budget {budget} fits no backbone (smallest '
          f'{params.min()} + header allowance {header_allowance})')
    idx = np.flatnonzero(pool)
    # Highest score first, then fewer parameters, then candidate order.
    best = idx[np.lexsort((idx, params[idx], -scores[device, idx]))[0]]
    choices.append(Choice(int(best), float(scores[device, best]),
                          int(params[best]), fallback))
  return choices
