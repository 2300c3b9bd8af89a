"""One header op chosen by data (docs/method.md 5): `apply_op(op, ...)` runs
op `op` (an index into `header.OPS`) on a node's input.

Per device a `lax.switch` runs the chosen op only. Vmapped over devices (the
engine's `vmap` and `sharded` strategies) an op that is a batched value would
make that switch run all six ops and select; `apply_op`'s vmap rule instead
selects each device's sep conv weights and runs one sep conv.
"""
import functools

import jax
import jax.numpy as jnp

from acme_jax.device.ops import batch_norm, depthwise, pool

# Op ids (positions in header.OPS, which imports these).
SEP_KERNELS = {0: 3, 1: 5, 4: 1}      # sep conv op id -> kernel size
AVG_POOL, MAX_POOL, IDENTITY = 2, 3, 5


def _sep_conv(x, p, g, weights):
  """(ReLU, depthwise, gate, 1x1, BN, gate) twice; p holds both repeats."""
  for rep in (0, 1):
    x = depthwise(jax.nn.relu(x), p['dw'][rep]) * g[2 * rep]
    x = x @ p['pw'][rep]
    x = batch_norm(x, p['scale'][rep], p['bias'][rep], weights)
    x = x * g[2 * rep + 1]
  return x


def _sep_branch(op_id):
  def run(x, p, g, weights):
    return _sep_conv(x, p[op_id], g, weights)
  return run


# lax.switch branches, indexed by op id (OPS).
_BRANCHES = (_sep_branch(0), _sep_branch(1),
             lambda x, p, g, weights: pool(x, 'avg'),    # AVG_POOL
             lambda x, p, g, weights: pool(x, 'max'),    # MAX_POOL
             _sep_branch(4), lambda x, p, g, weights: x)  # IDENTITY
_SEP_MAX = max(SEP_KERNELS.values())


def _switched_op(op, x, p, g, weights):
  """One device's op: the chosen branch only."""
  return jax.lax.switch(op, _BRANCHES, x, p, g, weights)


def _merged_op(op, x, p, g, weights):
  """One device's op without branching on `op`: the chosen sep conv's
  weights are selected (kernels zero-padded to the largest), so the three
  sep convs cost one; both pools and the identity are cheap. Equals
  `_switched_op` for finite weights and inputs (a zero tap or a 0 x weight
  adds an exact zero); a NaN or inf in an unchosen op's weights would not
  be ignored as the switch ignores it."""
  def pad(dw):  # (repeat, *k, C) -> (repeat, *kmax, C), centred
    margin = (_SEP_MAX - dw.shape[1]) // 2
    return jnp.pad(dw, [(0, 0)] + [(margin, margin)] * (dw.ndim - 2) +
                   [(0, 0)])
  pick = {i: (op == i).astype(x.dtype) for i in SEP_KERNELS}
  merged = {name: sum(pick[i] * (pad(p[i][name]) if name == 'dw'
                                 else p[i][name]) for i in SEP_KERNELS)
            for name in ('dw', 'pw', 'scale', 'bias')}
  is_sep = sum(pick.values()) > 0
  out = jnp.where(op == AVG_POOL, pool(x, 'avg'),
                  jnp.where(op == MAX_POOL, pool(x, 'max'), x))
  return jnp.where(is_sep, _sep_conv(x, merged, g, weights), out)


def _batch_rule(switched, merged, axis_size, in_batched, op, *args):
  """A custom_vmap rule. `in_batched` holds a pytree of flags per operand
  (leaf by leaf: params or gates may be shared). An op that is not a batched
  value stays a switch, one branch under vmap; a batched op runs merged."""
  del axis_size
  axes = tuple(jax.tree.map(lambda batched: 0 if batched else None, flags)
               for flags in in_batched[1:])
  if in_batched[0]:
    out = jax.vmap(merged, in_axes=(0,) + axes)(op, *args)
  else:
    out = jax.vmap(functools.partial(switched, op), in_axes=axes)(*args)
  return out, jax.tree.map(lambda _: True, out)


def _op_vjp(op_fn):
  def vjp(op, x, p, g, weights, cotangent):
    _, pullback = jax.vjp(functools.partial(op_fn, op), x, p, g, weights)
    return pullback(cotangent)
  return vjp


_op_value = jax.custom_batching.custom_vmap(_switched_op)
_op_value.def_vmap(functools.partial(_batch_rule, _switched_op,
                                      _merged_op))
_switched_vjp = _op_vjp(_switched_op)
_op_grad = jax.custom_batching.custom_vmap(_switched_vjp)
_op_grad.def_vmap(functools.partial(_batch_rule, _switched_vjp,
                                     _op_vjp(_merged_op)))


@jax.custom_vjp
def apply_op(op, x, p, g, weights):
  """Op `op` (an OPS index) on x with the node's sep weights p, gates g and
  BatchNorm row weights.

  Per device (the loop strategy) a `lax.switch` runs the chosen op only.
  Under `vmap` or `sharded` a device's `op` is a batched value, where a
  switch would run all six ops and select; there the chosen sep conv's
  weights are selected first (`_merged_op`), so a device pays for one sep
  conv (padded to 5x5) besides both pools and the identity. The backward
  pass reruns the op from its inputs (no branch's intermediates are
  stored). Reverse mode only: forward-mode (`jax.jvp`, `jacfwd`) and
  second derivatives raise, as for any `custom_vjp` whose backward pass
  holds a `custom_vmap`.
  """
  return _op_value(op, x, p, g, weights)


def _apply_op_fwd(op, x, p, g, weights):
  return _op_value(op, x, p, g, weights), (op, x, p, g, weights)


def _apply_op_bwd(residuals, cotangent):
  op, x, p, g, weights = residuals
  return (None,) + tuple(_op_grad(op, x, p, g, weights, cotangent))


apply_op.defvjp(_apply_op_fwd, _apply_op_bwd)
