"""The selection tier of the loop (docs/method.md 4): the cloud's coarse choice on
the measured grid, and what it offers the edges.

A quadratic accuracy predictor over (depth, width), the cost model, the
Pareto Front Grid and its baselines on the fine G x G grid of ratios; then
the trained subnets themselves, each with its measured (or predicted)
per-class accuracy and exact size, flagged when on their exact
non-dominated set: the candidates the edges choose among.
"""
import dataclasses
from typing import NamedTuple

import numpy as np

from acme_jax.selection import costs, pareto, predictor


@dataclasses.dataclass(frozen=True)
class SelectionHparams:
  """config.selection, typed, with the device profile of the cost model."""
  cost_model: str
  grid_size: int
  cells: int
  sigma: float
  size_constraint: float
  front: str
  edge_accuracy: str
  baselines_realisable_only: bool
  profile: costs.DeviceProfile
  seed: int

  @classmethod
  def from_config(cls, config) -> 'SelectionHparams':
    selection = config.selection
    return cls(cost_model=selection.cost_model, grid_size=selection.grid_size,
               cells=selection.cells, sigma=selection.sigma,
               size_constraint=selection.size_constraint, front=selection.front,
               edge_accuracy=selection.edge_accuracy,
               baselines_realisable_only=selection.baselines_realisable_only,
               profile=device_profile(config), seed=config.seed)


def device_profile(config) -> costs.DeviceProfile:
  return costs.DeviceProfile(**config.system.profile.to_dict())


def _point(c: pareto.Candidates, i: int, score_table) -> dict:
  return {'depth_mult': float(c.depth_mult[i]),
          'width_mult': float(c.width_mult[i]),
          'accuracy': float(c.accuracy[i]), 'size': float(c.size[i]),
          'latency': float(c.latency[i]), 'energy': float(c.energy[i]),
          'realisable': bool(c.realisable[i]) if c.realisable is not None
          else True,
          **{k: _finite(v[i]) for k, v in score_table.items()}}


def _finite(x):
  return float(x) if np.isfinite(x) else None


def run(hp: SelectionHparams, grid_records, arch, between_grid=(),
        hardware_costs=None) -> dict:
  """Predictor, costs, PFG and baselines on the fine grid (docs/method.md 4.1-4.3),
  and the edges' candidates (4.4). `arch` is the supernet's architecture
  (`sizes.architecture`). `between_grid`: measured records of shapes
  between the trained grid's points, offered to the edges too (flagged
  `between_grid`); the predictor is fitted on the grid alone.
  `hardware_costs(depths, widths) -> (ms, bytes)`: a latency table's
  predictions (`hardware.fleet.Fleet.backbone_costs`); then the latency
  axis is predicted milliseconds and each candidate carries its
  `latency_ms` and `memory_bytes`."""
  depth = np.array([r['depth_mult'] for r in grid_records])
  width = np.array([r['width_mult'] for r in grid_records])
  overall = predictor.fit(depth, width,
                          np.array([r['accuracy'] for r in grid_records]),
                          reduce_degree=True)
  per_class = predictor.fit(depth, width, np.array([
      [r['accuracy'] if a is None else a for a in r['per_class_accuracy']]
      for r in grid_records]), reduce_degree=True)
  d, w, acc = predictor.predict_grid(overall, hp.grid_size)
  model = with_measured_latency(
      costs.make_cost_model(hp.cost_model, hp.profile, arch), hardware_costs)
  raw = model(d, w)
  realisable = (raw.heads >= 1) & (raw.layers >= 1)
  grid = pareto.candidates(d, w, acc, raw.size, raw.latency, raw.energy,
                           realisable=realisable)
  picked = pareto.select_all(grid, hp.size_constraint, hp.cells, hp.sigma,
                             hp.seed,
                             realisable_only=hp.baselines_realisable_only)
  score_table = pareto.scores(grid.accuracy, grid.size, grid.energy)
  front = (picked.front if hp.front == 'pfg' else
           pareto.non_dominated(grid.accuracy, grid.latency, grid.energy))
  picks = {name: _point(grid, i, score_table)
           for name, i in picked.picks.items()}
  gain = pareto.relative_gain(picks['pfg']['tradeoff'],
                              picks['highest_accuracy']['tradeoff'])
  on_front = np.zeros(len(grid), bool)
  on_front[front] = True
  return {
      'picks': picks,
      'tradeoff_gain_vs_highest_accuracy': gain,
      'front': [_point(grid, i, score_table) for i in front],
      'grid': {'depth_mult': d.tolist(), 'width_mult': w.tolist(),
               'accuracy': acc.tolist(), 'params': raw.size.tolist(),
               'on_front': on_front.tolist(),
               'realisable': realisable.tolist()},
      'candidates': edge_candidates(hp, list(grid_records) +
                                    list(between_grid), model, overall,
                                    per_class, len(grid_records)),
  }


def edge_candidates(hp: SelectionHparams, grid_records, cost_model, overall,
                    per_class, trained=None) -> list:
  """The trained subnets the edges choose among (docs/method.md 3.3, 4.4), each
  scored by its measured or predicted (per-class) validation accuracy and
  flagged when on their exact non-dominated set (accuracy, size, latency,
  energy). Records past the first `trained` are between the grid's
  points."""
  depth = np.array([r['depth_mult'] for r in grid_records])
  width = np.array([r['width_mult'] for r in grid_records])
  trained_costs = cost_model(depth, width)
  predicted = overall(depth, width)
  measured = hp.edge_accuracy == 'measured'
  candidates = []
  for i, r in enumerate(grid_records):
    measured_per_class = [r['accuracy'] if a is None else a
                          for a in r['per_class_accuracy']]
    predicted_per_class = per_class(depth[i:i + 1], width[i:i + 1])[0]
    candidates.append({
        'depth_mult': float(r['depth_mult']),
        'width_mult': float(r['width_mult']), 'params': int(r['params']),
        'measured_accuracy': float(r['accuracy']),
        'predicted_accuracy': float(predicted[i]),
        'accuracy': float(r['accuracy'] if measured else predicted[i]),
        'per_class': (measured_per_class if measured
                      else predicted_per_class.tolist()),
        'latency': float(trained_costs.latency[i]),
        'energy': float(trained_costs.energy[i])})
    if hasattr(trained_costs, 'memory_bytes'):
      candidates[-1].update(
          latency_ms=float(trained_costs.latency[i]),
          memory_bytes=float(trained_costs.memory_bytes[i]))
    if trained is not None and i >= trained:
      candidates[-1]['between_grid'] = True
  keep = set(pareto.non_dominated_min(
      -np.array([c['accuracy'] for c in candidates]),
      np.array([c['params'] for c in candidates], float),
      trained_costs.latency, trained_costs.energy).tolist())
  for i, c in enumerate(candidates):
    c['on_front'] = i in keep
  return candidates


class MeasuredCosts(NamedTuple):
  """A cost model's costs with the latency a latency table predicts (ms)
  and its predicted peak memory (bytes)."""
  size: np.ndarray
  latency: np.ndarray
  energy: np.ndarray
  heads: np.ndarray
  layers: np.ndarray
  memory_bytes: np.ndarray


def with_measured_latency(cost_model, hardware_costs):
  """`cost_model` with its latency replaced by `hardware_costs`' predicted
  milliseconds (as is when None). Shapes that keep no head or no layer
  are not realisable: they get the largest realisable latency, so they
  neither stretch the normalisation nor win on latency."""
  if hardware_costs is None:
    return cost_model

  def model(depth, width):
    raw = cost_model(depth, width)
    ok = (np.asarray(raw.heads) >= 1) & (np.asarray(raw.layers) >= 1)
    ms = np.zeros(len(ok))
    nbytes = np.zeros(len(ok))
    if ok.any():
      got = hardware_costs(np.asarray(depth)[ok], np.asarray(width)[ok])
      ms[ok], nbytes[ok] = got
      ms[~ok], nbytes[~ok] = ms[ok].max(), nbytes[ok].max()
    return MeasuredCosts(raw.size, ms, raw.energy, raw.heads, raw.layers,
                         nbytes)
  return model
