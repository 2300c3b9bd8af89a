"""Edge-side importance aggregation and per-device channel pruning (ACME.md 6).

Each round every device reports its channel importances; the edge returns
I'_k = sum_i W[k, i] I_i with W from `acme_jax.edge.similarity.mode_weights`, and
device k keeps its highest-I'_k channels. Both steps are single jitted calls over
arrays stacked along a leading device axis, so a round costs one dispatch each and
repeated rounds with the same shapes reuse one compiled program.
"""
import functools
import math

import jax
import jax.numpy as jnp


@jax.jit
def aggregate_importances(weights, stacked_importances):
  """I'_k = sum_i W[k, i] I_i for every leaf of a pytree with a leading device axis.

  Args:
    weights: (D, D) aggregation matrix, rows = receiving devices.
    stacked_importances: pytree whose leaves are (D, ...) importances, e.g. one
      (D, C_l) leaf per gated conv.

  Returns:
    The same pytree structure with each leaf (D, ...) mixed across devices.
  """
  weights = jnp.asarray(weights)
  if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
    raise ValueError(f'weights must be (D, D), got {weights.shape}.')

  def mix(leaf):
    if leaf.shape[:1] != weights.shape[1:]:
      raise ValueError(f'leaf leading axis {leaf.shape[:1]} does not match '
                       f'{weights.shape[1]} devices.')
    dtype = jnp.result_type(weights.dtype, leaf.dtype, jnp.float32)
    return jnp.einsum('ki,i...->k...', weights.astype(dtype), leaf.astype(dtype),
                      precision=jax.lax.Precision.HIGHEST)

  return jax.tree.map(mix, stacked_importances)


def num_kept(num_channels: int, ratio: float) -> int:
  """Channels kept at prune `ratio`: C - floor(ratio * C), at least 1.

  The 1e-9 guards float error (0.29 * 100 = 28.999...) so that the count pruned
  is exactly the requested fraction when it is a whole number of channels.
  """
  if not 0.0 <= ratio <= 1.0:
    raise ValueError(f'prune ratio must be in [0, 1], got {ratio}.')
  pruned = int(math.floor(ratio * num_channels + 1e-9))
  return max(1, num_channels - pruned)


@functools.partial(jax.jit, static_argnames='ratio')
def prune_masks(importances, ratio: float):
  """0/1 masks keeping each device's top `num_kept(C, ratio)` channels.

  Args:
    importances: (D, C) aggregated importances (rows = devices), or a pytree of
      such leaves; each leaf (layer) is pruned on its own along its last axis.
    ratio: fraction of channels to remove (static: one compile per ratio).

  Returns:
    Masks of the importances' shape (float, 1 = keep). Ties keep the lower
    channel index; NaN importances rank last, so they are pruned first.
  """

  def mask(leaf):
    keep = num_kept(leaf.shape[-1], ratio)
    scores = leaf.astype(jnp.result_type(leaf.dtype, jnp.float32))
    order = jnp.argsort(-scores, axis=-1, stable=True)
    ranks = jnp.argsort(order, axis=-1)
    return (ranks < keep).astype(scores.dtype)

  return jax.tree.map(mask, importances)
