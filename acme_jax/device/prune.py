"""Channel pruning of the final header by first-order Taylor importance (docs/method.md 6).

Every conv of the header has a 0/1 gate per output channel
(`header.gate_shapes`); the importance of a gate channel is the NVlabs
Taylor criterion on the gate (their method 22, which the prototype's
`pruning_engine.py` runs): (g_c * dL/dg_c)^2 per minibatch, averaged over
the minibatches of local training (`state.train_fixed`). The unsquared
|sum g dL/dg| is kept as an option (`squared=False`), computed from the same
gradients.

All devices share one gate layout (stem, cells by layer/node/branch/conv,
cell outputs), but a position is the same channel on two devices only when
both use it for the same thing from the same start: `shared_gates` says
where (the edge mixes importances there only). A device prunes only gates
its own architecture uses (all of them, or its separable convs' alone, the
prototype's set). Pruning ranks all of a device's prunable channels
together (NVlabs' one global threshold across layers) and turns off the
lowest until the requested fraction of them is off; equal scores (to
`TIE_PRECISION` relative) go to the channel first in the layout, so float
reassociation between engine strategies does not flip the order.
"""
from typing import NamedTuple, Sequence

import jax
import numpy as np

from acme_jax.device import header as header_lib

# Importances within this relative distance of each other rank as equal
# (NVlabs sorts the raw floats; float32 sums agree to ~1e-6 between the
# engine's strategies, so a coarser key keeps their pruning identical).
TIE_PRECISION = 1e-4


class Layout(NamedTuple):
  """What makes a device's gate channels what they are: the seed its header
  weights started from, its layer count and its architecture."""
  start: int
  n_layers: int
  arch: np.ndarray   # (N, 4)

  def pack(self) -> np.ndarray:
    """As it travels to the edge: int32 [start, n_layers, arch...]."""
    return np.concatenate([[self.start, self.n_layers],
                           np.asarray(self.arch).ravel()]).astype(np.int32)

  @classmethod
  def unpack(cls, packed, num_nodes: int) -> 'Layout':
    packed = np.asarray(packed)
    return cls(int(packed[0]), int(packed[1]),
               packed[2:].reshape(num_nodes, 4))


def shared_gates(spec, layouts: Sequence[Layout]) -> dict:
  """(D, D, *gate shape) 0/1 per gate channel: 1 where devices k and i both
  have that channel as the same channel, so mixing their importances there
  means something. Same channel: the same start (initial weights), and
  stem: always; a separable conv's gates: both use the layer, and the node's
  branch reads the same input with the same op (its weights are chosen by
  both); a cell's output gates: both use the layer with the same cell.
  Everything else (an unused gate, a different op, another start) is not
  shared; the diagonal is 1 wherever device k uses the gate. `spec` is a
  `header.Spec` or a `causal_header.Spec` (the same gate layout; its
  `sep_ops` say which ops carry gates)."""
  num = len(layouts)
  start = np.array([l.start for l in layouts])
  layers = np.arange(spec.max_layers)
  used = np.array([layers < l.n_layers for l in layouts])      # (D, L)
  arch = np.stack([np.asarray(l.arch) for l in layouts])       # (D, N, 4)
  same_start = start[:, None] == start[None, :]                # (D, D)
  both_layer = used[:, None] & used[None, :]                   # (D, D, L)
  branch = arch[..., [0, 1, 2, 3]].reshape(num, -1, 2, 2)      # (D, N, 2, 2)
  same_branch = np.all(branch[:, None] == branch[None, :], -1)  # (D,D,N,2)
  is_sep = np.isin(branch[..., 1], list(spec.sep_ops))         # (D, N, 2)
  cells = (same_start[..., None, None, None] & both_layer[..., None, None]
           & (same_branch & is_sep[:, None] & is_sep[None, :])[:, :, None])
  same_cell = np.all(arch[:, None] == arch[None, :], axis=(-1, -2))
  final = same_start[..., None] & both_layer & same_cell[..., None]
  c = spec.num_channels
  return {
      'stem': np.broadcast_to(same_start[..., None], (num, num, c)),
      'cells': np.broadcast_to(
          cells[..., None, None],
          cells.shape + (header_lib.GATES_PER_SLOT, c)),
      'final': np.broadcast_to(final[..., None], final.shape + (c,)),
  }


def num_pruned(num_units: int, ratio: float) -> int:
  """floor(ratio * n) (the 1e-9 guards 0.29 * 100 = 28.999...), < n."""
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f'prune ratio must be in [0, 1), got {ratio}')
  return min(int(np.floor(ratio * num_units + 1e-9)), max(num_units - 1, 0))


def prune_gates(importance, active, ratio: float, current=None,
                prunable=None) -> dict:
  """0/1 gates (numpy pytree) pruning `ratio` of the `prunable` gate
  channels (default: all `active` ones, those the header uses).

  `importance`, `active`, `current` and `prunable` share the gate pytree
  structure. Channels already off in `current` stay off and count towards
  the ratio; unused channels are off; used ones that may not be pruned keep
  their state. Ties prune the channel that comes first in the flattened
  layout.
  """
  imp, treedef = jax.tree.flatten(jax.tree.map(
      lambda a: np.asarray(a, np.float64), importance))
  act = [np.asarray(a) > 0 for a in jax.tree.leaves(active)]
  cur = ([np.asarray(c) > 0 for c in jax.tree.leaves(current)]
         if current is not None else act)
  flat_imp = np.concatenate([i.ravel() for i in imp])
  flat_act = np.concatenate([a.ravel() for a in act])
  flat_cur = np.concatenate([c.ravel() for c in cur]) & flat_act
  flat_prunable = (np.concatenate([np.asarray(p).ravel() > 0 for p in
                                   jax.tree.leaves(prunable)]) & flat_act
                   if prunable is not None else flat_act)
  candidates = np.flatnonzero(flat_prunable)
  target = num_pruned(candidates.size, ratio)
  off_already = int((~flat_cur[candidates]).sum())
  score = np.where(flat_cur, rank_key(flat_imp), -np.inf)[candidates]
  order = candidates[np.argsort(score, kind='stable')]
  keep = flat_cur.copy()
  keep[order[:max(target, off_already)]] = False
  gates, start = [], 0
  for a in act:
    gates.append(keep[start:start + a.size].reshape(a.shape).astype(
        np.float32))
    start += a.size
  return jax.tree.unflatten(treedef, gates)


def rank_key(scores: np.ndarray) -> np.ndarray:
  """Scores rounded to `TIE_PRECISION` relative to the largest, so scores
  that differ by float reassociation alone rank as ties (broken by layout
  position)."""
  scores = np.asarray(scores, np.float64)
  finite = scores[np.isfinite(scores)]
  top = np.max(np.abs(finite)) if finite.size else 0.0
  if top == 0:
    return scores
  quantum = top * TIE_PRECISION
  return np.where(np.isfinite(scores), np.round(scores / quantum), scores)


def active_gates(spec: header_lib.Spec, arch, n_layers: int,
                 separable_only: bool = False) -> dict:
  """Numpy pytree: 1 for gate channels `arch` with `n_layers` uses; with
  `separable_only`, the separable convs' gates alone (the prototype's
  prunable set: no stem or cell-output channel)."""
  active = jax.tree.map(np.asarray, header_lib.active_gates(
      spec, np.asarray(arch), n_layers))
  if separable_only:
    active['stem'] = np.zeros_like(active['stem'])
    active['final'] = np.zeros_like(active['final'])
  return active
