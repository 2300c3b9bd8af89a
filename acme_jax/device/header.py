"""Device headers on cached backbone features (ACME.md 5, 6).

Features are `tokens[:, 1:]` of the frozen backbone shaped (B, *grid, D): a
(P, P) patch grid for images or a (T,) token sequence for text. Every conv and
pool takes its rank from the grid, so the same code serves both.

`Header` is the ENAS micro-cell search space. The architecture is an integer
array (num_nodes, 4) = (input_a, op_a, input_b, op_b) per node, passed as data:
inputs are picked with `jnp.take` and ops with `nn.switch`, so one compiled
program runs every architecture. The same module with `fixed_arch` set builds
only the ops an architecture uses (the extracted header), with the same
parameter names, so `extract` is a slice of the shared weights.

One gate vector g (C,) multiplies every C-channel feature (stem and every op),
so a zero gate prunes that channel everywhere and all devices share one (C,)
importance layout.
"""
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

OPS = ('sep_conv_3x3', 'sep_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3',
       'sep_conv_1x1', 'identity')
NUM_OPS = len(OPS)
# Kernel size of each separable-conv op (others have no parameters).
SEP_KERNELS = {0: 3, 1: 5, 4: 1}
_SEP_NAMES = {0: 'sep3', 1: 'sep5', 4: 'sep1'}

Arch = Sequence[Sequence[int]]


def _grid_rank(features) -> int:
  rank = features.ndim - 2
  if rank not in (1, 2):
    raise ValueError(f'features must be (B, T, D) or (B, P, P, D), got '
                     f'{features.shape}')
  return rank


def _pool(x, kind: str):
  window = (3,) * (x.ndim - 2)
  strides = (1,) * (x.ndim - 2)
  if kind == 'avg':
    return nn.avg_pool(x, window, strides, padding='SAME',
                       count_include_pad=False)
  return nn.max_pool(x, window, strides, padding='SAME')


def default_num_layers(width_mult: float, depth_mult: float) -> int:
  """Prototype rule: a large backbone needs a shallow header."""
  return 1 if width_mult * depth_mult > 0.25 else 3


def validate_arch(arch, num_nodes: int) -> np.ndarray:
  """Check an architecture's shape and index ranges; return it as numpy."""
  arch = np.asarray(arch)
  if arch.shape != (num_nodes, 4):
    raise ValueError(f'arch must have shape ({num_nodes}, 4), got {arch.shape}')
  for node, (in_a, op_a, in_b, op_b) in enumerate(arch.tolist()):
    if not (0 <= in_a < node + 2 and 0 <= in_b < node + 2):
      raise ValueError(f'node {node} inputs must be in [0, {node + 2}): {arch}')
    if not (0 <= op_a < NUM_OPS and 0 <= op_b < NUM_OPS):
      raise ValueError(f'node {node} ops must be in [0, {NUM_OPS}): {arch}')
  return arch


def loose_ends(arch) -> jax.Array:
  """1.0 for nodes no later node reads: the cell output averages them."""
  arch = jnp.asarray(arch)
  num_nodes = arch.shape[0]
  inputs = jnp.concatenate([arch[:, 0], arch[:, 2]])
  used = (inputs[None, :] == jnp.arange(2, num_nodes + 2)[:, None]).any(1)
  return 1.0 - used.astype(jnp.float32)


def header_param_count(arch, num_channels_kept: int, *, feature_dim: int,
                       num_classes: int, grid_rank: int = 2,
                       num_layers: int = 1) -> int:
  """Exact trainable parameter count of the extracted header.

  Stem: 1x1 conv without bias (D*K) + norm scale/bias (2K). Each used separable
  conv (per layer, node and branch): depthwise k^rank*K + pointwise K*K + norm
  2K. Pools and identity: 0. Classifier: K*classes + classes. Norm running
  statistics are buffers, not counted.
  """
  k = int(num_channels_kept)
  arch = np.asarray(arch)
  total = feature_dim * k + 2 * k + k * num_classes + num_classes
  per_cell = 0
  for op in np.concatenate([arch[:, 1], arch[:, 3]]).tolist():
    if op in SEP_KERNELS:
      per_cell += SEP_KERNELS[op] ** grid_rank * k + k * k + 2 * k
  return int(total + num_layers * per_cell)


def smallest_arch(num_nodes: int) -> np.ndarray:
  """A parameter-free cell (avg-pool everywhere): the cheapest header."""
  arch = np.zeros((num_nodes, 4), np.int32)
  arch[:, 1] = arch[:, 3] = OPS.index('avg_pool_3x3')
  arch[:, 2] = 1
  return arch


class SepConv(nn.Module):
  """ReLU, depthwise k^rank conv, pointwise conv, norm (ENAS separable conv)."""
  num_channels: int
  kernel_size: int
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, use_running_average: bool):
    rank = x.ndim - 2
    x = nn.relu(x)
    x = nn.Conv(self.num_channels, (self.kernel_size,) * rank, padding='SAME',
                feature_group_count=self.num_channels, use_bias=False,
                name='depthwise')(x)
    x = nn.Dense(self.num_channels, use_bias=False, name='pointwise')(x)
    return nn.BatchNorm(use_running_average=use_running_average,
                        momentum=self.bn_momentum, name='norm')(x)


class Slot(nn.Module):
  """One branch of one node: all six ops, the one to run picked as data.

  With `fixed_op` set it holds only that op (the extracted header).
  """
  num_channels: int
  bn_momentum: float = 0.9
  fixed_op: Optional[int] = None

  def _branch(self, op: int, use_running_average: bool):
    if op in SEP_KERNELS:
      def conv(mdl, x):
        return SepConv(self.num_channels, SEP_KERNELS[op], self.bn_momentum,
                       name=_SEP_NAMES[op])(x, use_running_average)
      return conv
    if op == 2:
      return lambda mdl, x: _pool(x, 'avg')
    if op == 3:
      return lambda mdl, x: _pool(x, 'max')
    return lambda mdl, x: x

  @nn.compact
  def __call__(self, x, op, use_running_average: bool):
    if self.fixed_op is not None:
      return self._branch(self.fixed_op, use_running_average)(self, x)
    branches = [self._branch(i, use_running_average) for i in range(NUM_OPS)]
    if self.is_initializing():  # create every op's variables; no switch
      outs = jnp.stack([branch(self, x) for branch in branches])
      return jnp.take(outs, op, axis=0)
    return nn.switch(op, branches, self, x)


class Node(nn.Module):
  """One node (scanned over nodes): two slots on inputs picked from `buffer`.

  `buffer` (num_nodes + 2, B, *grid, C) holds the cell inputs then the nodes;
  node `index` writes entry 2 + index.
  """
  num_channels: int
  bn_momentum: float
  running: bool

  @nn.compact
  def __call__(self, buffer, row_and_index, gates):
    row, index = row_and_index
    total = 0.0
    for side, (col_in, col_op) in zip('ab', ((0, 1), (2, 3))):
      inp = jnp.take(buffer, row[col_in], axis=0)
      slot = Slot(self.num_channels, self.bn_momentum, name=side)
      total = total + slot(inp, row[col_op], self.running) * gates
    return jax.lax.dynamic_update_index_in_dim(buffer, total, index + 2,
                                               0), None


class Cell(nn.Module):
  """One micro cell (scanned over layers); carry = (previous, current)."""
  num_channels: int
  num_nodes: int
  bn_momentum: float
  running: bool

  @nn.compact
  def __call__(self, carry, arch, gates):
    prev, cur = carry
    buffer = jnp.zeros((self.num_nodes + 2,) + cur.shape, cur.dtype)
    buffer = buffer.at[0].set(prev).at[1].set(cur)
    nodes = nn.scan(Node, variable_axes={'params': 0, 'batch_stats': 0},
                    split_rngs={'params': True}, in_axes=(0, nn.broadcast),
                    length=self.num_nodes)
    buffer, _ = nodes(self.num_channels, self.bn_momentum, self.running,
                      name='nodes')(
                          buffer, (arch, jnp.arange(self.num_nodes)), gates)
    return (cur, _average_loose_ends(buffer[2:], loose_ends(arch))), None


def _average_loose_ends(outs, mask):
  weights = mask.reshape((-1,) + (1,) * (outs.ndim - 1))
  return (outs * weights).sum(0) / mask.sum()


class Header(nn.Module):
  """ENAS micro-cell header; `__call__(features, arch, gates, train)` -> logits.

  Shared (search) mode scans one node body over nodes and layers, so compile
  time does not grow with the cell. With `fixed_arch` it is the extracted
  header: plain loops over only the used ops.

  `norm_from_batch` (default: `train`) makes norms use batch statistics; the
  search scores shared weights that way, since running statistics mix many
  architectures. It needs `mutable=['batch_stats']` at apply time.
  """
  num_classes: int
  num_channels: int = 256
  num_nodes: int = 5
  num_layers: int = 1
  dropout_rate: float = 0.1
  bn_momentum: float = 0.9
  fixed_arch: Optional[Tuple[Tuple[int, int, int, int], ...]] = None

  @nn.compact
  def __call__(self, features, arch=None, gates=None, train: bool = False,
               norm_from_batch: Optional[bool] = None):
    _grid_rank(features)
    running = not (train if norm_from_batch is None else norm_from_batch)
    c = self.num_channels
    gates = jnp.ones((c,), features.dtype) if gates is None else gates
    x = nn.Dense(c, use_bias=False, name='stem')(features)
    x = nn.BatchNorm(use_running_average=running, momentum=self.bn_momentum,
                     name='stem_norm')(x) * gates
    if self.fixed_arch is None:
      cells = nn.scan(Cell, variable_axes={'params': 0, 'batch_stats': 0},
                      split_rngs={'params': True},
                      in_axes=(nn.broadcast, nn.broadcast),
                      length=self.num_layers)
      (_, x), _ = cells(c, self.num_nodes, self.bn_momentum, running,
                        name='cells')((x, x), jnp.asarray(arch, jnp.int32),
                                      gates)
    else:
      x = self._fixed_cells(x, gates, running)
    x = nn.relu(x)
    x = x.mean(axis=tuple(range(1, x.ndim - 1)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='classifier')(x)

  def _fixed_cells(self, x, gates, running):
    arch = self.fixed_arch
    mask = loose_ends(np.asarray(arch))
    prev, cur = x, x
    for layer in range(self.num_layers):
      nodes = [prev, cur]
      for node, row in enumerate(arch):
        total = 0.0
        for side, (col_in, col_op) in zip('ab', ((0, 1), (2, 3))):
          slot = Slot(self.num_channels, self.bn_momentum, int(row[col_op]),
                      name=f'cell{layer}_node{node}_{side}')
          total = total + slot(nodes[int(row[col_in])], None, running) * gates
        nodes.append(total)
      prev, cur = cur, _average_loose_ends(jnp.stack(nodes[2:]), mask)
    return cur


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def init_variables(module: nn.Module, features_shape, seed: int = 0,
                   arch=None):
  """Variables built on the host (numpy), skipping a slow XLA init compile.

  Kernels: LeCun normal (var 1/fan_in); norm scale 1, biases 0; running mean 0,
  var 1. `features_shape` is a batch's (B, *grid, D); B does not matter.
  """
  x = jax.ShapeDtypeStruct((1,) + tuple(features_shape)[1:], jnp.float32)
  args = (x,)
  if isinstance(module, Header) and module.fixed_arch is None:
    arch = smallest_arch(module.num_nodes) if arch is None else arch
    args = (x, jnp.asarray(arch, jnp.int32))
  shapes = jax.eval_shape(
      lambda *a: module.init({'params': jax.random.key(0),
                              'dropout': jax.random.key(0)}, *a), *args)
  rng = np.random.default_rng(seed)

  def make(path, leaf):
    names = [getattr(p, 'key', str(p)) for p in path]
    if names[-1] == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      if 'cells' in names:  # stacked (layers, nodes, ...) kernels
        fan_in = int(np.prod(leaf.shape[2:-1]))
      value = rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape)
    elif names[-1] in ('scale', 'var'):
      value = np.ones(leaf.shape)
    else:
      value = np.zeros(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(make, shapes)


def extract(header: Header, variables, arch, gates):
  """The dense header for `arch` with only the kept channels, and its variables.

  Its eval-mode output equals the shared header's with these 0/1 `gates`.
  """
  arch = validate_arch(arch, header.num_nodes)
  kept = np.flatnonzero(np.asarray(gates) > 0)
  fixed = header.clone(num_channels=int(kept.size),
                       fixed_arch=tuple(tuple(int(v) for v in row)
                                        for row in arch.tolist()))

  def sliced(tree, name):
    out = {}
    for key, sub in tree.items():
      if hasattr(sub, 'items'):
        out[key] = sliced(sub, key)
        continue
      leaf = np.asarray(sub)
      if name == 'classifier':
        leaf = leaf[kept] if key == 'kernel' else leaf
      elif name == 'pointwise':
        leaf = leaf[kept][:, kept]
      else:  # stem kernel, depthwise kernel, norm vectors
        leaf = leaf[..., kept]
      out[key] = jnp.asarray(leaf)
    return out

  result = {}
  for collection, tree in variables.items():
    tree = dict(tree)
    nodes = tree.pop('cells', {}).get('nodes', {})
    out = sliced(tree, collection)
    for layer in range(header.num_layers):
      for node in range(header.num_nodes):
        for side, col_op in (('a', 1), ('b', 3)):
          name = _SEP_NAMES.get(int(arch[node, col_op]))
          if name is None:
            continue
          sub = jax.tree_util.tree_map(lambda a: a[layer, node],
                                       nodes[side][name])
          out[f'cell{layer}_node{node}_{side}'] = {name: sliced(sub, name)}
    result[collection] = out
  return fixed, result


def _mean_tokens(features):
  return features.mean(axis=tuple(range(1, features.ndim - 1)))


class Linear(nn.Module):
  """Early-exit baseline: mean-pool tokens, linear."""
  num_classes: int

  @nn.compact
  def __call__(self, features, train: bool = False):
    return nn.Dense(self.num_classes)(_mean_tokens(features))


class MLP(nn.Module):
  """Baseline: mean-pool, hidden layer, classes."""
  num_classes: int
  hidden: int = 256
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, features, train: bool = False):
    x = nn.relu(nn.Dense(self.hidden)(_mean_tokens(features)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


class Mixer(nn.Module):
  """Baseline: one MLP-Mixer block (token then channel mixing), pool, linear."""
  num_classes: int
  token_hidden: int = 64
  channel_hidden: int = 256

  @nn.compact
  def __call__(self, features, train: bool = False):
    _grid_rank(features)
    x = features.reshape(features.shape[0], -1, features.shape[-1])
    y = nn.LayerNorm()(x).swapaxes(1, 2)
    y = nn.Dense(x.shape[1])(nn.gelu(nn.Dense(self.token_hidden)(y)))
    x = x + y.swapaxes(1, 2)
    y = nn.LayerNorm()(x)
    x = x + nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.channel_hidden)(y)))
    return nn.Dense(self.num_classes)(nn.LayerNorm()(x).mean(1))


class CNNProject(nn.Module):
  """Baseline: 1x1 conv projection, 3x3 conv (3 for text), pool, linear."""
  num_classes: int
  channels: int = 128

  @nn.compact
  def __call__(self, features, train: bool = False):
    rank = _grid_rank(features)
    x = nn.relu(nn.Dense(self.channels)(features))
    x = nn.relu(nn.Conv(self.channels, (3,) * rank, padding='SAME')(x))
    return nn.Dense(self.num_classes)(_mean_tokens(x))


BASELINES = {'linear': Linear, 'mlp': MLP, 'mixer': Mixer,
             'cnn_project': CNNProject}
