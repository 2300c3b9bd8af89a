"""A searched header made dense (docs/method.md 6): only the ops its arch uses and
the channels its gates keep, with the gated header's outputs in evaluation
mode. What a device deploys after pruning; `header.param_count` counts the
same parameters without building it.
"""
import dataclasses
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from acme_jax.device import header
from acme_jax.device import ops


@dataclasses.dataclass(frozen=True)
class Extracted:
  """Static description of a dense header: its arch and live channels."""
  spec: header.Spec
  arch: Tuple[Tuple[int, ...], ...]
  n_layers: int
  stem: Tuple[int, ...]
  final: Tuple[Tuple[int, ...], ...]             # per layer
  # per (layer, node, branch) with a sep op: (dw1, pw1, dw2 = pw1 & dw2, pw2)
  sep: Tuple[Tuple[Tuple[int, ...], ...], ...]


def _live(g) -> Tuple[int, ...]:
  return tuple(int(i) for i in np.flatnonzero(np.asarray(g) > 0))


class ExtractedHeader(nn.Module):
  """The dense header `extract` returns: only used ops and live channels.

  Tensors between ops stay C wide (a channel pruned in one op may be live in
  another that writes the same node), so each op reads its live input
  channels and scatters its live outputs back; its output equals the gated
  search-space header's in evaluation mode.
  """
  layout: Extracted

  @nn.compact
  def __call__(self, features, weights=None):
    lay, s = self.layout, self.layout.spec
    c = s.num_channels
    weights = (jnp.ones(features.shape[:1], features.dtype) if weights is None
               else weights)
    stem = np.array(lay.stem, np.int32)

    def scatter(y, live):
      return jnp.zeros(y.shape[:-1] + (c,), y.dtype).at[..., live].set(y)

    x = features @ self.param('stem', nn.initializers.zeros,
                              (s.feature_dim, len(stem)))
    mean = self.variable('batch_stats', 'stem_mean',
                         lambda: jnp.zeros(len(stem))).value
    var = self.variable('batch_stats', 'stem_var',
                        lambda: jnp.ones(len(stem))).value
    x = (x - mean) * jax.lax.rsqrt(var + ops.BN_EPS) * self.param(
        'stem_scale', nn.initializers.ones, (len(stem),)) + self.param(
            'stem_bias', nn.initializers.zeros, (len(stem),))
    x = scatter(x, stem)
    arch = np.asarray(lay.arch)
    with jax.ensure_compile_time_eval():  # static under jit too
      loose = np.flatnonzero(np.asarray(header.loose_ends(arch)) > 0)
    prev = cur = x
    sep_iter = iter(lay.sep)
    for layer in range(lay.n_layers):
      nodes = [prev, cur]
      for node in range(s.num_nodes):
        total = 0.0
        for branch in (0, 1):
          inp = nodes[int(arch[node, 2 * branch])]
          op = int(arch[node, 2 * branch + 1])
          if op in header.SEP_KERNELS:
            total = total + self._sep(
                inp, next(sep_iter), header.SEP_KERNELS[op], weights,
                f'cell{layer}_node{node}_{branch}')
          elif op == 2:
            total = total + ops.pool(inp, 'avg')
          elif op == 3:
            total = total + ops.pool(inp, 'max')
          else:
            total = total + inp
        nodes.append(total)
      live = np.array(lay.final[layer], np.int32)
      y = sum(jax.nn.relu(nodes[i]) @ self.param(
          f'cell{layer}_final{i}', nn.initializers.zeros, (c, len(live)))
              for i in loose)
      y = ops.batch_norm(y, self.param(f'cell{layer}_final_scale',
                                   nn.initializers.ones, (len(live),)),
                     self.param(f'cell{layer}_final_bias',
                                nn.initializers.zeros, (len(live),)), weights)
      prev, cur = cur, scatter(y, live)
    last = np.array(lay.final[lay.n_layers - 1], np.int32)
    pooled = jax.nn.relu(cur[..., last]).mean(axis=tuple(range(1, cur.ndim -
                                                               1)))
    return nn.Dense(s.num_classes, name='classifier')(pooled)

  def _sep(self, x, live, k, weights, name):
    dw1, pw1, dw2, pw2 = (np.array(v, np.int32) for v in live)
    c = self.layout.spec.num_channels
    rank = self.layout.spec.grid_rank
    p = lambda suffix, init, shape: self.param(  # noqa: E731
        f'{name}_{suffix}', init, shape)
    zeros, ones = nn.initializers.zeros, nn.initializers.ones
    y = ops.depthwise(jax.nn.relu(x)[..., dw1],
                   p('dw1', zeros, (k,) * rank + (len(dw1),)))
    y = y @ p('pw1', zeros, (len(dw1), len(pw1)))
    y = ops.batch_norm(y, p('scale1', ones, (len(pw1),)),
                   p('bias1', zeros, (len(pw1),)), weights)
    # dw2 reads only channels live after pw1; `dw2` indexes into `pw1`.
    y = ops.depthwise(jax.nn.relu(y)[..., dw2],
                   p('dw2', zeros, (k,) * rank + (len(dw2),)))
    y = y @ p('pw2', zeros, (len(dw2), len(pw2)))
    y = ops.batch_norm(y, p('scale2', ones, (len(pw2),)),
                   p('bias2', zeros, (len(pw2),)), weights)
    return jnp.zeros(y.shape[:-1] + (c,), y.dtype).at[..., pw2].set(y)


def extract(spec: header.Spec, variables, arch, n_layers: int, gates=None):
  """(ExtractedHeader, its variables) for `arch` keeping live channels only."""
  arch = header.validate_arch(arch, spec.num_nodes)
  n_layers = int(n_layers)
  gates = jax.tree.map(np.asarray, header.full_gates(spec) if gates is None
                       else gates)
  params = jax.tree.map(np.asarray, variables['params'])
  stats = jax.tree.map(np.asarray, variables['batch_stats'])
  stem = _live(gates['stem'])
  out = {'stem': params['stem'][:, stem],
         'stem_scale': params['stem_scale'][list(stem)],
         'stem_bias': params['stem_bias'][list(stem)]}
  final, sep = [], []
  loose = np.flatnonzero(np.asarray(header.loose_ends(arch)) > 0)
  for layer in range(n_layers):
    for node in range(spec.num_nodes):
      for branch in (0, 1):
        index, op = int(arch[node, 2 * branch]), int(arch[node, 2 * branch + 1])
        if op not in header.SEP_KERNELS:
          continue
        g = gates['cells'][layer, node, branch]
        dw1, pw1, g3, pw2 = (_live(g[i]) for i in range(4))
        dw2_abs = [i for i in pw1 if i in set(g3)]
        dw2 = tuple(pw1.index(i) for i in dw2_abs)  # positions within pw1
        sep.append((dw1, pw1, dw2, pw2))
        name = header.SEP_NAMES[op]
        at = lambda a: a[layer, node, index, branch]  # noqa: E731
        dw, pw = at(params[f'{name}_dw']), at(params[f'{name}_pw'])
        scale, bias = at(params[f'{name}_scale']), at(params[f'{name}_bias'])
        prefix = f'cell{layer}_node{node}_{branch}'
        out.update({
            f'{prefix}_dw1': dw[0][..., list(dw1)],
            f'{prefix}_pw1': pw[0][np.ix_(dw1, pw1)],
            f'{prefix}_scale1': scale[0][list(pw1)],
            f'{prefix}_bias1': bias[0][list(pw1)],
            f'{prefix}_dw2': dw[1][..., dw2_abs],
            f'{prefix}_pw2': pw[1][np.ix_(dw2_abs, pw2)],
            f'{prefix}_scale2': scale[1][list(pw2)],
            f'{prefix}_bias2': bias[1][list(pw2)]})
    live = _live(gates['final'][layer])
    final.append(live)
    for i in loose:
      out[f'cell{layer}_final{i}'] = params['final_conv'][layer, i][:, live]
    out[f'cell{layer}_final_scale'] = params['final_scale'][layer, live]
    out[f'cell{layer}_final_bias'] = params['final_bias'][layer, live]
  out['classifier'] = {
      'kernel': params['classifier']['kernel'][list(final[-1])],
      'bias': params['classifier']['bias']}
  layout = Extracted(spec, tuple(tuple(int(v) for v in row) for row in arch),
                     n_layers, stem, tuple(final), tuple(sep))
  new_stats = {'stem_mean': stats['stem_mean'][list(stem)],
               'stem_var': stats['stem_var'][list(stem)]}
  return ExtractedHeader(layout), {'params': out, 'batch_stats': new_stats}


def count_params(params) -> int:
  return int(sum(np.size(p) for p in jax.tree.leaves(params)))
