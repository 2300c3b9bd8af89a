"""Channel pruning of the final header by first-order Taylor importance (ACME.md 6).

Every conv of the header has a 0/1 gate per output channel
(`header.gate_shapes`); the importance of a gate channel is the NVlabs
Taylor criterion on the gate (their method 22, which the prototype's
`pruning_engine.py` runs): (g_c * dL/dg_c)^2 per minibatch, averaged over
the minibatches of local training (`state.train_fixed`). The unsquared
|sum g dL/dg| is kept as an option (`squared=False`), computed from the same
gradients.

All devices share one gate layout (stem, cells by layer/node/branch/conv,
cell outputs), so the edge can mix their importance pytrees position by
position, whatever each device's architecture; a device then prunes only
gates its own architecture uses. Pruning ranks all of a device's live gate
channels together (NVlabs' one global threshold across layers) and turns off
the lowest until the requested fraction of them is off.
"""
import jax
import numpy as np

from acme_jax.device import header as header_lib


def num_pruned(num_units: int, ratio: float) -> int:
  """floor(ratio * n) (the 1e-9 guards 0.29 * 100 = 28.999...), < n."""
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f'prune ratio must be in [0, 1), got {ratio}')
  return min(int(np.floor(ratio * num_units + 1e-9)), max(num_units - 1, 0))


def prune_gates(importance, active, ratio: float, current=None) -> dict:
  """0/1 gates (numpy pytree) pruning `ratio` of the `active` gate channels.

  `importance`, `active` and `current` share the gate pytree structure.
  Channels already off in `current` stay off and count towards the ratio.
  Ties prune the channel that comes first in the flattened layout.
  """
  imp, treedef = jax.tree.flatten(jax.tree.map(
      lambda a: np.asarray(a, np.float64), importance))
  act = [np.asarray(a) > 0 for a in jax.tree.leaves(active)]
  cur = ([np.asarray(c) > 0 for c in jax.tree.leaves(current)]
         if current is not None else act)
  flat_imp = np.concatenate([i.ravel() for i in imp])
  flat_act = np.concatenate([a.ravel() for a in act])
  flat_cur = np.concatenate([c.ravel() for c in cur]) & flat_act
  candidates = np.flatnonzero(flat_act)
  target = num_pruned(candidates.size, ratio)
  off_already = int((~flat_cur[candidates]).sum())
  score = np.where(flat_cur, flat_imp, -np.inf)[candidates]
  order = candidates[np.argsort(score, kind='stable')]
  keep = flat_cur.copy()
  keep[order[:max(target, off_already)]] = False
  gates, start = [], 0
  for a in act:
    gates.append(keep[start:start + a.size].reshape(a.shape).astype(
        np.float32))
    start += a.size
  return jax.tree.unflatten(treedef, gates)


def active_gates(spec: header_lib.Spec, arch, n_layers: int) -> dict:
  """Numpy pytree: 1 for gate channels `arch` with `n_layers` uses."""
  return jax.tree.map(np.asarray, header_lib.active_gates(
      spec, np.asarray(arch), n_layers))
