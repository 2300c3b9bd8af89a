"""Edge-side importance aggregation (docs/method.md 6): one jitted tree operation.

Each round every device reports its gate importances; the edge returns
I'_k = sum_i W[k, i] I_i with W from `acme_jax.edge.similarity.mode_weights`,
over the devices that share each channel (`aggregate_shared`).
The importances of an edge's devices are stacked along a leading device axis,
so a round is one dispatch, and repeated rounds with the same shapes reuse one
compiled program.
"""
import jax
import jax.numpy as jnp


@jax.jit
def aggregate_importances(weights, stacked_importances):
  """I'_k = sum_i W[k, i] I_i for every leaf of a pytree with a leading device axis.

  Args:
    weights: (D, D) aggregation matrix, rows = receiving devices.
    stacked_importances: pytree whose leaves are (D, ...) importances, e.g. one
      leaf per group of gates.

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


@jax.jit
def aggregate_shared(weights, stacked_importances, shared):
  """I'_k = sum_i W[k, i] S[k, i] I_i / sum_i W[k, i] S[k, i] per gate
  channel, S[k, i] = 1 where devices k and i have that channel as the same
  channel (`prune.shared_gates`): the weights renormalised over the devices
  that share it. A channel device k shares with no one keeps its own
  importance; one it does not use (a zero row) keeps its own too.

  Args:
    weights: (D, D) aggregation matrix, rows = receiving devices.
    stacked_importances: pytree of (D, ...) importances.
    shared: the same pytree of (D, D, ...) 0/1 masks.
  """
  weights = jnp.asarray(weights)

  def mix(leaf, mask):
    dtype = jnp.result_type(weights.dtype, leaf.dtype, jnp.float32)
    w = weights.astype(dtype).reshape(weights.shape + (1,) * (leaf.ndim - 1))
    wm = w * mask.astype(dtype)
    total = wm.sum(axis=1)
    num = jnp.einsum('ki...,i...->k...', wm, leaf.astype(dtype),
                     precision=jax.lax.Precision.HIGHEST)
    return jnp.where(total > 0, num / jnp.where(total > 0, total, 1.0),
                     leaf.astype(dtype))

  return jax.tree.map(mix, stacked_importances, shared)
