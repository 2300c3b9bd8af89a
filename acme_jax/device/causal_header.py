"""A causal searched header for personal language modelling.

The device's header sits between a frozen decoder's final hidden states
(B, T, D) and its frozen LM head, and must never let position t see a later
token. It keeps `header.py`'s ENAS search structure over a 1-D token grid:

    stem      D -> C projection, LayerNorm over channels
    layers    num_layers cells; carry (prev, cur) starts as (stem, stem)
    cell      N nodes; node n adds two branches, each one op applied to an
              input picked from {prev, cur, nodes < n}; every sep conv has
              its own weights per (layer, node, branch, input); the loose
              ends are summed through one C x C block each (ReLU first),
              LayerNorm
    output    hidden + rms(hidden) * (cur @ out_w) (C -> D, rms per token,
              `token_rms`), out_w zero-initialised, so an untrained header
              is exactly the backbone alone

Ops (all causal): sep_conv_3 / sep_conv_5 = (ReLU, causal depthwise conv
left-padded by k - 1, 1x1 conv, LayerNorm) twice; avg_pool_3 / max_pool_3
over tokens t-2..t (the average divides by the real tokens in the window, so
position 0 is not shrunk by padding); identity.

Optional 0/1 channel gates (`gate_shapes`, the ENAS header's layout) serve
the aggregation rounds' pruning (`device/lm_rounds.py`): the stem's after
its LayerNorm, four per sep conv (after each depthwise conv and each
LayerNorm) and each cell's output after its LayerNorm. A gated LayerNorm
takes its statistics over the live channels only, so a channel turned off
has no effect at all. Without gates (the search, the final training) every
channel is live.

Normalisation is per token (LayerNorm over channels), never BatchNorm: a
BatchNorm's statistics over batch and time mix every position of the batch
into each output, so a later token (of the same or another sequence) would
change an earlier position's output, leaking the future that next-token
training must not see. Per-token norms also make right padding harmless: a
padded position can only influence positions after it.

The arch encoding is header.py's: an int array (N, 4) = (input_a, op_a,
input_b, op_b) per node, traced data, so one compiled program serves every
architecture. Op ids 0-3 mean what they mean in `header.OPS`; identity is 4
(header.py's 4 is a 1x1 sep conv, which is left out here). The sep convs are
the first two ops, so `controller.Controller`'s prior (+10 on ops 0 and 1)
favours them as it does in header.py; build it with `controller(spec)`
(num_ops = NUM_OPS = 5). Every cell uses the same arch, as in header.py.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax.device import controller as controller_lib
from acme_jax.device import header as header_lib
from acme_jax.device.header import loose_ends

OPS = ('sep_conv_3', 'sep_conv_5', 'avg_pool_3', 'max_pool_3', 'identity')
NUM_OPS = len(OPS)
SEP_KERNELS = {0: 3, 1: 5}             # sep conv op id -> kernel size
AVG_POOL, MAX_POOL, IDENTITY = 2, 3, 4
POOL_WINDOW = 3
LN_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static shape of a causal header: one compiled program per Spec."""
  feature_dim: int
  num_channels: int = 64
  num_nodes: int = 5
  num_layers: int = 1

  @property
  def max_inputs(self) -> int:
    """Entries the last node may read (node n reads one of n + 2)."""
    return self.num_nodes + 1

  # The gate layout's vocabulary, shared with `header.Spec` so that
  # `prune.shared_gates` reads either header's layouts.
  @property
  def max_layers(self) -> int:
    return self.num_layers

  @property
  def sep_ops(self) -> tuple:
    return tuple(SEP_KERNELS)


def controller(spec: Spec, **kwargs) -> controller_lib.Controller:
  """The ENAS controller over this header's ops (`Controller` takes num_ops)."""
  return controller_lib.Controller(spec.num_nodes, num_ops=NUM_OPS, **kwargs)


def validate_arch(arch, num_nodes: int) -> np.ndarray:
  """The ENAS header's check, over this header's ops."""
  return header_lib.validate_arch(arch, num_nodes, NUM_OPS)


def smallest_arch(num_nodes: int) -> np.ndarray:
  """The cheapest cell: avg-pools in a chain, so only the last node is loose."""
  arch = np.zeros((num_nodes, 4), np.int32)
  arch[:, 1] = arch[:, 3] = AVG_POOL
  arch[0, 0], arch[0, 2] = 0, 1
  for node in range(1, num_nodes):
    arch[node, 0] = arch[node, 2] = node + 1
  return arch


def param_count(spec: Spec, arch) -> jax.Array:
  """Exact parameters of the dense header that `arch` uses (an int32 scalar).

  Stem D*C + 2C (projection, LayerNorm); per layer, per branch whose op is a
  sep conv of kernel k: 2 * (k*C + C*C + 2C); per layer: loose*C*C + 2C (one
  block per loose end, LayerNorm); output C*D. Works on numpy or traced
  arrays, so `controller.sample_within` can test a budget inside jit.
  """
  arch = jnp.asarray(arch)
  c, d = spec.num_channels, spec.feature_dim
  ops = jnp.stack([arch[:, 1], arch[:, 3]], axis=1)  # (N, 2)
  kernel = jnp.select([ops == op for op in SEP_KERNELS],
                      list(SEP_KERNELS.values()), 0)
  sep = jnp.sum(jnp.where(kernel > 0, 2 * (kernel * c + c * c + 2 * c), 0))
  loose = jnp.sum(loose_ends(arch)).astype(jnp.int32)
  cell = sep + loose * c * c + 2 * c
  return (d * c + 2 * c + spec.num_layers * cell + c * d).astype(jnp.int32)


def fits(spec: Spec, budget):
  return lambda arch: param_count(spec, arch) <= budget


# ------------------------------------------------------------------ gates


def gate_shapes(spec: Spec) -> dict:
  """0/1 channel gates in `header.gate_shapes`' layout: the stem, four per
  sep conv (after each depthwise conv and each LayerNorm) per (layer, node,
  branch), and each cell's output (for the aggregation rounds' pruning,
  `device/lm_rounds.py`)."""
  return header_lib.gate_shapes(spec)


def full_gates(spec: Spec) -> dict:
  return header_lib.full_gates(spec)


def active_gates(spec: Spec, arch) -> dict:
  """1.0 (numpy) for every gate channel `arch` uses: the stem, the cells'
  outputs, and the gates of the branches whose op is a sep conv (pools and
  the identity have none)."""
  return jax.tree.map(np.asarray, header_lib.active_gates(
      spec, np.asarray(arch), spec.num_layers))


# ------------------------------------------------------------------ the ops


def token_rms(h):
  """(B, T, 1) root mean square of each token's hidden state.

  Heads add `token_rms(h) * delta` to h: the LM head's final RMSNorm sees
  only the direction of h + delta, so a correction relative to |h| means
  the same for any backbone, whose pre-norm hidden states may have norms in
  the hundreds. Per token, so causal."""
  return jnp.sqrt(jnp.mean(h * h, axis=-1, keepdims=True) + 1e-6)


def layer_norm(x, scale, bias, gate=None):
  """LayerNorm over channels only: each token normalised by itself (causal).

  With a 0/1 `gate` (C,) the statistics are over the live channels alone and
  the output is gated, so a channel turned off has no effect at all (as a
  header with that channel removed): a plain LayerNorm's mean and variance
  would still carry the pruned channel's values into every other one."""
  if gate is None:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * scale + bias
  live = jnp.maximum(jnp.sum(gate), 1.0)
  mean = jnp.sum(x * gate, axis=-1, keepdims=True) / live
  var = jnp.sum(gate * (x - mean) ** 2, axis=-1, keepdims=True) / live
  return ((x - mean) * jax.lax.rsqrt(var + LN_EPS) * scale + bias) * gate


def causal_depthwise(x, kernel):
  """out[t] = sum_j kernel[j] * x[t - (k - 1) + j]: x (B, T, C), kernel (k, C);
  zeros stand in for tokens before the first."""
  k, length = kernel.shape[0], x.shape[1]
  padded = jnp.pad(x, ((0, 0), (k - 1, 0), (0, 0)))
  return sum(padded[:, j:j + length] * kernel[j] for j in range(k))


def causal_pool(x, kind: str, window: int = POOL_WINDOW):
  """Max or mean over tokens t - window + 1 .. t (the real ones only)."""
  length = x.shape[1]
  fill = -jnp.inf if kind == 'max' else 0.0
  padded = jnp.pad(x, ((0, 0), (window - 1, 0), (0, 0)), constant_values=fill)
  taps = [padded[:, j:j + length] for j in range(window)]
  if kind == 'max':
    return jnp.max(jnp.stack(taps), axis=0)
  count = jnp.minimum(jnp.arange(1, length + 1), window).astype(x.dtype)
  return sum(taps) / count[None, :, None]


def _sep_conv(x, p, g=None):
  """(ReLU, causal depthwise, gate, 1x1, LayerNorm, gate) twice; p holds
  both repeats on a leading axis, scanned (one body to compile); g (4, C)
  the gates, or None (no gating)."""
  def repeat(x, w):
    w, wg = w
    x = causal_depthwise(jax.nn.relu(x), w['dw'])
    if wg is not None:
      x = x * wg[0]
    return layer_norm(x @ w['pw'], w['scale'], w['bias'],
                      None if wg is None else wg[1]), None
  gates = None if g is None else g.reshape((2, 2) + g.shape[1:])
  return jax.lax.scan(repeat, x, (p, gates))[0]


_SEP_MAX = max(SEP_KERNELS.values())


def apply_op(op, x, p, g=None):
  """Op `op` (an OPS index, traced) on x (B, T, C); p maps sep op id ->
  weights; g the branch's (4, C) gates (None: ungated).

  Branch-free: the chosen sep conv's weights are selected first (kernels
  left-padded with zero taps to the largest, which is the same causal
  conv), so a node pays for one sep conv plus both pools, and the program
  vmaps over devices without running every op. A `lax.switch` here took
  1.5-2.5x longer to compile on XLA:CPU inside the scanned cells (forward
  and backward). Equals the chosen op for finite weights and inputs
  (unchosen weights enter as 0 * w, an exact zero).
  """
  pick = {i: jnp.asarray(op == i, x.dtype) for i in SEP_KERNELS}

  def pad(dw):  # (repeat, k, C) -> (repeat, kmax, C): zero taps in the past
    return jnp.pad(dw, ((0, 0), (_SEP_MAX - dw.shape[1], 0), (0, 0)))
  merged = {part: sum(pick[i] * (pad(p[i][part]) if part == 'dw'
                                 else p[i][part]) for i in SEP_KERNELS)
            for part in ('dw', 'pw', 'scale', 'bias')}
  out = jnp.where(op == AVG_POOL, causal_pool(x, 'avg'),
                  jnp.where(op == MAX_POOL, causal_pool(x, 'max'), x))
  return jnp.where(sum(pick.values()) > 0, _sep_conv(x, merged, g), out)


# ------------------------------------------------------------ params, apply


def _param_shapes(spec: Spec) -> dict:
  c, d, n, l = (spec.num_channels, spec.feature_dim, spec.num_nodes,
                spec.num_layers)
  lead = (l, n, spec.max_inputs, 2, 2)  # layer, node, input, branch, repeat
  shapes = {'stem_w': (d, c), 'stem_scale': (c,), 'stem_bias': (c,),
            'final_conv': (l, n + 2, c, c), 'final_scale': (l, c),
            'final_bias': (l, c), 'out_w': (c, d)}
  for k in SEP_KERNELS.values():
    shapes.update({f'sep{k}_dw': lead + (k, c), f'sep{k}_pw': lead + (c, c),
                   f'sep{k}_scale': lead + (c,), f'sep{k}_bias': lead + (c,)})
  return shapes


def init_variables(spec: Spec, seed: int = 0) -> dict:
  """{'params': ...} drawn on the host: kaiming normal (fan in) for the
  projections and convs, unit norm scales, zero biases and a zero `out_w`.
  There are no batch statistics (no BatchNorm, see the module docstring)."""
  rng = np.random.default_rng(seed)
  params = {}
  for name, shape in _param_shapes(spec).items():
    if name == 'out_w' or name.endswith('bias'):
      value = np.zeros(shape)
    elif name.endswith('scale'):
      value = np.ones(shape)
    else:  # stem_w, final_conv, sepK_pw: fan in shape[-2]; sepK_dw: k
      value = rng.standard_normal(shape) * np.sqrt(2.0 / shape[-2])
    params[name] = jnp.asarray(value, jnp.float32)
  return {'params': params}


def apply(params, features, arch, gates=None):
  """The header on features (B, T, D) -> (B, T, D), in float32.

  `arch` (N, 4) int is traced data; `gates` a `gate_shapes` pytree of 0/1
  channel gates, or None (the search and the final training: no gating).
  Shapes (C, N, layers) come from the params, so no Spec is needed here.
  Output at position t depends on features at positions <= t only.
  """
  arch = jnp.asarray(arch, jnp.int32)
  num_nodes = params['final_conv'].shape[1] - 2
  features = features.astype(jnp.float32)
  x = layer_norm(features @ params['stem_w'], params['stem_scale'],
                 params['stem_bias'], None if gates is None else gates['stem'])

  # Each (node, branch) reads its chosen input's weights, selected for every
  # layer at once by a one-hot contraction (dense in both passes).
  chosen = jax.nn.one_hot(arch[:, jnp.array([0, 2])], num_nodes + 1,
                          dtype=x.dtype)  # (N, 2, inputs)
  selected = {op: {part: jnp.einsum('nbi,lnib...->lnb...', chosen,
                                    params[f'sep{k}_{part}'])
                   for part in ('dw', 'pw', 'scale', 'bias')}
              for op, k in SEP_KERNELS.items()}
  loose = loose_ends(arch)
  # Each row also carries the buffer entry its node writes.
  rows = jnp.concatenate([arch, jnp.arange(2, num_nodes + 2)[:, None]], axis=1)
  cell_gates = (None if gates is None else
                (gates['cells'], gates['final']))

  def cell(carry, xs):
    prev, cur = carry
    layer_sep, conv, scale, bias, layer_gates = xs
    node_gates, out_gate = (None, None) if layer_gates is None else layer_gates
    buffer = jnp.zeros((num_nodes + 2,) + cur.shape, cur.dtype)
    buffer = buffer.at[0].set(prev).at[1].set(cur)

    def node_step(buffer, xs):
      row, node_sep, branch_gates = xs
      # Both branches as one vmapped op.
      inputs = jnp.take(buffer, row[jnp.array([0, 2])], axis=0)
      out = jax.vmap(apply_op)(row[jnp.array([1, 3])], inputs, node_sep,
                               branch_gates)
      return jax.lax.dynamic_update_index_in_dim(buffer, out.sum(0), row[4],
                                                 0), None

    buffer, _ = jax.lax.scan(node_step, buffer, (rows, layer_sep, node_gates))
    out = jnp.einsum('i,i...c,icd->...d', loose, jax.nn.relu(buffer), conv)
    return (cur, layer_norm(out, scale, bias, out_gate)), None

  (_, x), _ = jax.lax.scan(cell, (x, x), (
      selected, params['final_conv'], params['final_scale'],
      params['final_bias'], cell_gates))
  return features + token_rms(features) * (x @ params['out_w'])
