"""Latency and memory predictors fitted on measured models, chosen and scored
on models they were never fitted on (docs/hardware.md).

Two kinds per part and target, each linear in its features and fitted to
minimise the squared *relative* error (a budget is met or missed by a share
of it). Latency:

  backbone  `features`   1, FLOPs, parameters, layers
            `per_layer`  a fixed cost plus one cost per kept layer that
                         depends on the layer's width: a piecewise-linear
                         function of its MLP neurons (one per width in every
                         family, a decoder's KV-grouped heads included) with
                         a knot at every width fitted on (nn-Meter's sum
                         over kernels, with the block as the kernel)
  header    `features`   1, FLOPs, parameters, cells
            `per_op`     the stem and classifier, then per cell its final
                         conv (over every loose end) and each op it runs,
                         sep convs scaled by the share of channels their
                         gates keep (pools run every channel)

Peak memory: `features` as above, or what a program holds: the backbone's
`activations` (1, parameters, tokens x neurons for the MLP's hidden layer,
tokens x heads x sequence length for the attention weights), the header's
`weights` (1, parameters: its activations stay C channels wide whatever it
keeps).

Models are split by architecture: a held-out share is set aside first and
never fitted on; the kind is chosen by leave-one-out relative error on the
rest (validation), refitted on all of the rest, and reported on the
held-out models: RMSE, the share of predictions within 10% of the
measurement, the largest relative error.
"""
import dataclasses
from typing import Dict, Sequence, Tuple

import numpy as np

from acme_jax.device import header as header_lib

# The kinds tried per target and part.
KINDS = {'median_ms': {'backbone': ('features', 'per_layer'),
                       'header': ('features', 'per_op')},
         'peak_memory_bytes': {'backbone': ('features', 'activations'),
                               'header': ('features', 'weights')}}


def _hats(values, knots: Sequence[float], xp=np):
  """(N, K) weights of piecewise-linear interpolation at `values` between
  `knots` (constant past the ends)."""
  knots = np.asarray(sorted(knots), np.float64)
  eye = np.eye(len(knots))
  return xp.stack([xp.interp(values, knots, eye[k])
                   for k in range(len(knots))], axis=1)


def design(part: str, kind: str, rows: Sequence[dict],
           knots: Tuple[float, ...] = (), xp=np):
  """(N, F) features of `rows` for predictor `kind` of `part`; with
  `xp=jax.numpy` the rows' values may be traced (the header search's
  limit)."""
  dtype = np.float64 if xp is np else np.float32
  if xp is np:
    col = lambda name: np.array([r[name] for r in rows], dtype)  # noqa: E731
  else:
    col = lambda name: xp.stack([xp.asarray(r[name], dtype)  # noqa: E731
                                 for r in rows])
  ones = xp.ones(len(rows), dtype)
  if kind == 'features':
    depth = col('layers') if part == 'backbone' else col('n_layers')
    return xp.stack([ones, col('flops'), col('params'), depth], axis=1)
  if part == 'backbone' and kind == 'per_layer':
    return xp.concatenate([ones[:, None], col('layers')[:, None] *
                           _hats(col('neurons'), knots, xp)], axis=1)
  if part == 'backbone' and kind == 'activations':
    tokens = col('batch') * col('seq_len')
    return xp.stack([ones, col('params'), tokens * col('neurons'),
                     tokens * col('heads') * col('seq_len')], axis=1)
  if part == 'header' and kind == 'weights':
    return xp.stack([ones, col('params')], axis=1)
  if part == 'header' and kind == 'per_op':
    # Sep convs run on the channels kept; pools and identity C wide; each
    # cell's final conv reads every loose end.
    keep = col('keep')
    per_op = [col(f'ops_{name}') * (keep if name.startswith('sep') else 1.0)
              for name in header_lib.OPS]
    return xp.stack([ones, col('n_layers') * col('loose_ends') * keep] +
                    per_op, axis=1)
  raise ValueError(f'no predictor kind {kind!r} for the {part}')


@dataclasses.dataclass(frozen=True)
class Fitted:
  """One fitted predictor: y = design(rows) @ coefficients."""
  part: str
  kind: str
  target: str
  knots: Tuple[float, ...]
  coefficients: Tuple[float, ...]

  def __call__(self, rows: Sequence[dict], xp=np):
    return design(self.part, self.kind, rows, self.knots, xp) @ xp.asarray(
        np.asarray(self.coefficients, np.float64 if xp is np else np.float32))

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> 'Fitted':
    return cls(d['part'], d['kind'], d['target'], tuple(d['knots']),
               tuple(d['coefficients']))


def fit(part: str, kind: str, rows: Sequence[dict],
        target: str = 'median_ms') -> Fitted:
  """Least squares on the relative error of `target` over `rows`."""
  knots = (tuple(sorted({float(r['neurons']) for r in rows}))
           if kind == 'per_layer' else ())
  x = design(part, kind, rows, knots)
  y = np.array([r[target] for r in rows], np.float64)
  if np.any(y <= 0):
    raise ValueError(f'{target} must be positive to fit relative error')
  # Columns scaled to unit size first: FLOPs and a constant differ by 1e9.
  scale = np.maximum(np.abs(x).max(axis=0), 1e-30)
  theta, *_ = np.linalg.lstsq(x / scale / y[:, None], np.ones(len(y)),
                              rcond=None)
  return Fitted(part, kind, target, knots, tuple((theta / scale).tolist()))


def errors(predicted, measured) -> dict:
  """RMSE, relative RMSE, share within 10%, largest and mean relative
  error."""
  predicted = np.asarray(predicted, np.float64)
  measured = np.asarray(measured, np.float64)
  relative = np.abs(predicted - measured) / measured
  return {'rmse': float(np.sqrt(np.mean((predicted - measured) ** 2))),
          'relative_rmse': float(np.sqrt(np.mean(relative ** 2))),
          'within_10pct': float(np.mean(relative <= 0.10)),
          'max_rel_error': float(relative.max()),
          'mean_rel_error': float(relative.mean()), 'n': int(len(measured))}


def leave_one_out(part: str, kind: str, rows: Sequence[dict],
                  target: str) -> np.ndarray:
  """Each row's prediction by the predictor fitted on every other row."""
  return np.array([fit(part, kind, rows[:i] + rows[i + 1:], target)(
      [rows[i]])[0] for i in range(len(rows))])


def held_out(keys: Sequence, share: float, seed: int) -> set:
  """The distinct `keys` (architectures) set aside: a seeded `share` of
  them, at least one, and at least two left to fit."""
  distinct = sorted(set(keys))
  if len(distinct) < 3:
    raise ValueError(f'{len(distinct)} distinct models measured; a '
                     f'predictor needs at least 3 (2 to fit, 1 to test)')
  count = min(max(1, int(round(share * len(distinct)))), len(distinct) - 2)
  order = np.random.default_rng(seed).permutation(len(distinct))
  return {distinct[i] for i in order[:count]}


def choose(part: str, rows: Sequence[dict], keys: Sequence, test: set,
           target: str = 'median_ms') -> dict:
  """Every kind's leave-one-out error on the rows not held out
  (`validation`) and error on the held-out ones (`test`); the kind with
  the lowest validation relative RMSE (what every kind minimises),
  refitted on all rows not held out."""
  pool = [r for r, k in zip(rows, keys) if k not in test]
  tested = [r for r, k in zip(rows, keys) if k in test]
  y_pool = [r[target] for r in pool]
  y_test = [r[target] for r in tested]
  validation, scored, fitted = {}, {}, {}
  kinds = KINDS[target][part]
  for kind in kinds:
    validation[kind] = errors(leave_one_out(part, kind, pool, target), y_pool)
    fitted[kind] = fit(part, kind, pool, target)
    scored[kind] = errors(fitted[kind](tested), y_test)
  # Chosen on the error each kind minimises: relative.
  kind = min(kinds, key=lambda k: validation[k]['relative_rmse'])
  return {'kind': kind, 'model': fitted[kind].to_dict(),
          'validation': validation, 'test': scored,
          'held_out': [dict(r, predicted=float(p)) for r, p in
                       zip(tested, fitted[kind](tested))]}


def by_group(rows: Sequence[dict], keys: Sequence, test: set,
             target: str = 'median_ms') -> Dict[str, dict]:
  """`choose` per part and batch: {'backbone@1': ..., 'header@32': ...}."""
  groups = {}
  for row, key in zip(rows, keys):
    groups.setdefault(f"{row['part']}@{row['batch']}", []).append((row, key))
  return {name: choose(members[0][0]['part'], [r for r, _ in members],
                       [k for _, k in members], test, target)
          for name, members in sorted(groups.items())}
