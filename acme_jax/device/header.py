"""The searched header: the prototype's ENAS child (`micro_child.py`), docs/method.md 5-6.

The header reads frozen backbone features (B, *grid, D), a (P, P) patch grid
for images or a (T,) token sequence for text; every conv and pool takes its
rank from the grid.

    stem      1x1 conv D -> C, BatchNorm (running statistics), gate
    layers    n_layers = num_layers + 2 normal cells (no reduction cells);
              carry (prev, cur) starts as (stem, stem)
    cell      N nodes; node n adds two branches, each one op applied to an
              input picked from {prev, cur, nodes < n}; every conv op has its
              own weights per (node, branch, input); the loose ends (entries
              no node reads, the two cell inputs included) are concatenated,
              ReLU, 1x1 conv, BatchNorm, gate
    output    ReLU, global average pool, dropout, linear

Ops: sep_conv 3x3 / 5x5 / 1x1 = (ReLU, depthwise, 1x1 conv, BN) twice;
avg_pool 3x3 (zero padding counted, as torch's default); max_pool 3x3;
identity. Cell BatchNorms always use batch statistics (the prototype's
`track_running_stats=False`); only the stem keeps running statistics.
BatchNorm statistics are weighted by a per-sample weight, so padded rows of a
static-size batch never enter them.

Choices are data, so one compiled program serves every architecture, layer
count, pruning state and device: `arch` is an int array (N, 4) = (input_a,
op_a, input_b, op_b) per node, `n_layers` an int (cells past it are skipped
with `lax.cond`), and `gates` a pytree of 0/1 channel gates (`gate_shapes`).
Vmapped over devices (the engine's `vmap` and `sharded` strategies) an op
that is a batched value runs as one sep conv with each device's weights
selected (`apply_op`), not as all six ops and a select.

Gates (docs/method.md 6): one per channel after each conv of the header: the stem,
each sep conv's two depthwise convs (before the following 1x1 conv) and two
1x1 convs (after their BatchNorm), and each cell's final 1x1 conv (after its
BatchNorm). `header_extract.extract` turns a gated header into the dense
header that keeps only live channels; `param_count` counts its parameters
exactly.

Deliberate differences from the prototype, each for a stated reason:
* the cell's final 1x1 conv holds one C x C block per possible loose end; the
  prototype reshapes a (N + 2, C * C) tensor to (C, loose * C), which ties
  different weights to an input depending on how many loose ends a sampled
  cell has. Same function class, stable weight sharing;
* dropout only in training (the prototype's `F.dropout2d` call is active at
  evaluation too);
* the calibration 1x1 convs of each layer are never built: they apply only
  when an input has a channel count other than C, and after the C-channel
  stem no input ever does (true in the prototype as well).
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from acme_jax.device.op_choice import SEP_KERNELS, apply_op
from acme_jax.device.ops import BN_EPS, batch_moments, batch_norm, kaiming

OPS = ('sep_conv_3x3', 'sep_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3',
       'sep_conv_1x1', 'identity')
NUM_OPS = len(OPS)
SEP_NAMES = {0: 'sep3', 1: 'sep5', 4: 'sep1'}
GATES_PER_SLOT = 4  # dw1, pw1 (after BN), dw2, pw2 (after BN)
BN_MOMENTUM = 0.9   # flax convention; torch momentum 0.1


def default_num_layers(width_mult: float, depth_mult: float) -> int:
  """Prototype rule (`run_nas.sh`): a large backbone needs a shallow header."""
  return 1 if width_mult * depth_mult > 0.25 else 3


def validate_arch(arch, num_nodes: int, num_ops: int = NUM_OPS) -> np.ndarray:
  """Check an architecture's shape and index ranges; return it as numpy."""
  arch = np.asarray(arch)
  if arch.shape != (num_nodes, 4):
    raise ValueError(f'arch must have shape ({num_nodes}, 4), got {arch.shape}')
  for node, (in_a, op_a, in_b, op_b) in enumerate(arch.tolist()):
    if not (0 <= in_a < node + 2 and 0 <= in_b < node + 2):
      raise ValueError(f'node {node} inputs must be in [0, {node + 2}): {arch}')
    if not (0 <= op_a < num_ops and 0 <= op_b < num_ops):
      raise ValueError(f'node {node} ops must be in [0, {num_ops}): {arch}')
  return arch.astype(np.int32)


def loose_ends(arch) -> jax.Array:
  """(N + 2,) 1.0 for entries (cell inputs and nodes) that no node reads."""
  arch = jnp.asarray(arch)
  num_nodes = arch.shape[0]
  inputs = jnp.concatenate([arch[:, 0], arch[:, 2]])
  used = (inputs[None, :] == jnp.arange(num_nodes + 2)[:, None]).any(1)
  return 1.0 - used.astype(jnp.float32)


def smallest_arch(num_nodes: int) -> np.ndarray:
  """The cheapest cell: avg-pools in a chain, so only the last node is loose."""
  arch = np.zeros((num_nodes, 4), np.int32)
  arch[:, 1] = arch[:, 3] = OPS.index('avg_pool_3x3')
  arch[0, 0], arch[0, 2] = 0, 1
  for node in range(1, num_nodes):
    arch[node, 0] = arch[node, 2] = node + 1
  return arch


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static shape of a header: one compiled program per Spec."""
  num_classes: int
  feature_dim: int
  grid_rank: int = 2
  num_channels: int = 256
  num_nodes: int = 5
  max_layers: int = 3       # cells held; a device uses n_layers <= this
  dropout_rate: float = 0.1

  @property
  def max_inputs(self) -> int:
    """Entries the last node may read (node n reads one of n + 2)."""
    return self.num_nodes + 1

  @property
  def sep_ops(self) -> tuple:
    """The op ids that carry gates (`prune.shared_gates`)."""
    return tuple(SEP_KERNELS)


def gate_shapes(spec: Spec) -> dict:
  c, n, l = spec.num_channels, spec.num_nodes, spec.max_layers
  return {'stem': (c,), 'cells': (l, n, 2, GATES_PER_SLOT, c), 'final': (l, c)}


def full_gates(spec: Spec) -> dict:
  return {k: np.ones(s, np.float32) for k, s in gate_shapes(spec).items()}


def active_gates(spec: Spec, arch, n_layers) -> dict:
  """1.0 for every gate channel the header (arch, n_layers) actually uses."""
  arch = jnp.asarray(arch)
  layer_on = (jnp.arange(spec.max_layers) < n_layers).astype(jnp.float32)
  ops = jnp.stack([arch[:, 1], arch[:, 3]], axis=1)  # (N, 2)
  is_sep = sum(ops == op for op in spec.sep_ops) > 0
  c = spec.num_channels
  cells = (layer_on[:, None, None, None, None] *
           is_sep.astype(jnp.float32)[None, :, :, None, None] *
           jnp.ones((1, 1, 1, GATES_PER_SLOT, c)))
  return {'stem': jnp.ones((c,)), 'cells': cells,
          'final': layer_on[:, None] * jnp.ones((1, c))}


def param_count(spec: Spec, arch, n_layers, gates=None) -> jax.Array:
  """Exact parameter count of `extract`'s dense header (a jnp scalar).

  Stem D*s + 2s (s live stem channels); per used sep conv of kernel k:
  k^r*k1 + k1*k2 + 2*k2 + k^r*k23 + k23*k4 + 2*k4, where k1..k4 are the live
  channels of its four gates and k23 those live in both the second and third
  (a depthwise channel whose input is pruned carries nothing); per cell:
  loose*C*f + 2f (final 1x1 conv and BN, f live channels); classifier
  f_last*classes + classes. BatchNorm running statistics are buffers, not
  parameters. Works on numpy or traced arrays.
  """
  gates = full_gates(spec) if gates is None else gates
  arch = jnp.asarray(arch)
  live = jax.tree.map(lambda g, a: (jnp.asarray(g) > 0) * a, gates,
                      active_gates(spec, arch, n_layers))
  c, r = spec.num_channels, spec.grid_rank
  stem = jnp.sum(live['stem'])
  total = spec.feature_dim * stem + 2 * stem
  ops = jnp.stack([arch[:, 1], arch[:, 3]], axis=1)  # (N, 2)
  kernel = jnp.select([ops == 0, ops == 1, ops == 4], [3, 5, 1], 0) ** r
  k = jnp.sum(live['cells'], axis=-1)  # (L, N, 2, 4)
  k1, k2, k4 = k[..., 0], k[..., 1], k[..., 3]
  k23 = jnp.sum(live['cells'][..., 1, :] * live['cells'][..., 2, :], axis=-1)
  sep = (kernel * k1 + k1 * k2 + 2 * k2 + kernel * k23 + k23 * k4 + 2 * k4)
  total += jnp.sum(sep)
  f = jnp.sum(live['final'], axis=-1)  # (L,)
  loose = jnp.sum(loose_ends(arch))
  total += jnp.sum(loose * c * f + 2 * f)
  f_last = jnp.take(f, jnp.maximum(jnp.asarray(n_layers) - 1, 0))
  return (total + f_last * spec.num_classes + spec.num_classes).astype(
      jnp.int32)


class Header(nn.Module):
  """The search-space header; `__call__(x, arch, n_layers, gates, weights, train)`.

  Returns logits (B, classes). With `train` the stem BatchNorm uses batch
  statistics and updates its running ones (apply with
  `mutable=['batch_stats']`) and dropout is on (a 'dropout' rng is needed).
  """
  spec: Spec

  def _sep_params(self, name, k):
    s, c = self.spec, self.spec.num_channels
    # layer, node, input, branch, repeat: node n uses inputs < n + 2 only.
    lead = (s.max_layers, s.num_nodes, s.max_inputs, 2, 2)
    kshape = (k,) * s.grid_rank
    return {
        'dw': self.param(f'{name}_dw', lambda key: kaiming(
            key, lead + kshape + (c,), k ** s.grid_rank)),
        'pw': self.param(f'{name}_pw', lambda key: kaiming(
            key, lead + (c, c), c)),
        'scale': self.param(f'{name}_scale', nn.initializers.ones,
                            lead + (c,)),
        'bias': self.param(f'{name}_bias', nn.initializers.zeros,
                           lead + (c,)),
    }

  @nn.compact
  def __call__(self, features, arch, n_layers, gates, weights=None,
               train: bool = False):
    s, c = self.spec, self.spec.num_channels
    if features.ndim - 2 != s.grid_rank or features.shape[-1] != s.feature_dim:
      raise ValueError(f'features {features.shape} do not fit {s}')
    weights = (jnp.ones(features.shape[:1], features.dtype) if weights is None
               else weights)
    arch = jnp.asarray(arch, jnp.int32)

    stem_kernel = self.param('stem', lambda key: kaiming(
        key, (s.feature_dim, c), s.feature_dim))
    stem_scale = self.param('stem_scale', nn.initializers.ones, (c,))
    stem_bias = self.param('stem_bias', nn.initializers.zeros, (c,))
    running_mean = self.variable('batch_stats', 'stem_mean',
                                 lambda: jnp.zeros((c,)))
    running_var = self.variable('batch_stats', 'stem_var',
                                lambda: jnp.ones((c,)))
    x = features @ stem_kernel
    if train:
      mean, var, count = batch_moments(x, weights)
      if not self.is_initializing():
        unbiased = var * count / jnp.maximum(count - 1, 1)
        running_mean.value = (BN_MOMENTUM * running_mean.value +
                              (1 - BN_MOMENTUM) * mean)
        running_var.value = (BN_MOMENTUM * running_var.value +
                             (1 - BN_MOMENTUM) * unbiased)
    else:
      mean, var = running_mean.value, running_var.value
    x = (x - mean) * jax.lax.rsqrt(var + BN_EPS) * stem_scale + stem_bias
    x = x * gates['stem']

    sep = {op: self._sep_params(SEP_NAMES[op], k)
           for op, k in SEP_KERNELS.items()}
    final_conv = self.param('final_conv', lambda key: 0.01 * jax.random.normal(
        key, (s.max_layers, s.num_nodes + 2, c, c)))
    final_scale = self.param('final_scale', nn.initializers.ones,
                             (s.max_layers, c))
    final_bias = self.param('final_bias', nn.initializers.zeros,
                            (s.max_layers, c))
    loose = loose_ends(arch)

    def run_op(op, x, p, g):
      return apply_op(op, x, p, g, weights)

    def cell(prev, cur, layer_sep, layer_gates, conv, scale, bias, gate):
      """One normal cell (ENAS `_enas_layer`). Every parameter arrives as a
      scan slice or an explicit operand, never a closure over the stacked
      weights, so the backward pass writes per-layer slices only."""
      buffer = jnp.zeros((s.num_nodes + 2,) + cur.shape, cur.dtype)
      buffer = buffer.at[0].set(prev).at[1].set(cur)

      def node_step(buffer, xs):
        row, node_sep, node_gates = xs
        total = 0.0
        for branch in (0, 1):
          index, op = row[2 * branch], row[2 * branch + 1]
          inp = jax.lax.dynamic_index_in_dim(buffer, index, 0, False)
          p = jax.tree.map(lambda a: a[branch], node_sep)
          total = total + run_op(op, inp, p, node_gates[branch])
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, total, row[4], 0)
        return buffer, None

      # Each row also carries the buffer entry its node writes.
      rows = jnp.concatenate([arch, jnp.arange(2, s.num_nodes + 2)[:, None]],
                             axis=1)
      buffer, _ = jax.lax.scan(node_step, buffer,
                               (rows, layer_sep, layer_gates))
      out = jnp.einsum('i,i...c,icd->...d', loose, jax.nn.relu(buffer), conv)
      return batch_norm(out, scale, bias, weights) * gate

    def layer_step(carry, xs):
      prev, cur = carry
      layer, layer_sep, layer_gates, conv, scale, bias, gate = xs
      new = jax.lax.cond(
          layer < n_layers,
          lambda: (cur, cell(prev, cur, layer_sep, layer_gates, conv, scale,
                             bias, gate)),
          lambda: (prev, cur))
      return new, None

    # Each (node, branch) reads its chosen input's weights, selected for the
    # whole header at once by a one-hot contraction: dense in both passes
    # (XLA's CPU gathers and scatters cost ~10 ms per weight array here).
    chosen = jax.nn.one_hot(arch[:, jnp.array([0, 2])], s.max_inputs,
                            dtype=features.dtype)  # (N, 2, inputs)
    selected = jax.tree.map(
        lambda a: jnp.einsum('nbi,lnib...->lnb...', chosen, a), sep)
    xs = (jnp.arange(s.max_layers), selected, gates['cells'], final_conv,
          final_scale, final_bias, gates['final'])
    (_, x), _ = jax.lax.scan(layer_step, (x, x), xs)
    x = jax.nn.relu(x).mean(axis=tuple(range(1, x.ndim - 1)))
    x = nn.Dropout(s.dropout_rate, deterministic=not train)(x)
    return nn.Dense(s.num_classes, name='classifier',
                    kernel_init=nn.initializers.variance_scaling(
                        2.0, 'fan_in', 'normal'))(x)


@functools.lru_cache(maxsize=None)
def _variable_shapes(spec: Spec):
  x = jax.ShapeDtypeStruct((2,) + (3,) * spec.grid_rank + (spec.feature_dim,),
                           jnp.float32)
  return jax.eval_shape(lambda x: Header(spec).init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x,
      smallest_arch(spec.num_nodes), 1, full_gates(spec)), x)


def init_variables(spec: Spec, seed: int = 0) -> dict:
  """{'params', 'batch_stats'} drawn on the host, as `Header.init` would
  (torch's kaiming_normal_ for convs and the classifier, N(0, 0.01^2) for the
  cells' final convs, unit norm scales, zero biases). Compiling the module's
  init takes tens of seconds; drawing on the host takes milliseconds."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'final_conv':
      value = 0.01 * rng.standard_normal(leaf.shape)
    elif name.endswith('_dw'):
      fan_in = int(np.prod(leaf.shape[-1 - spec.grid_rank:-1]))
      value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
    elif name.endswith('_pw') or name in ('stem', 'kernel'):
      value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / leaf.shape[-2])
    elif name.endswith('scale') or name.endswith('var'):
      value = np.ones(leaf.shape)
    else:
      value = np.zeros(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, _variable_shapes(spec))
