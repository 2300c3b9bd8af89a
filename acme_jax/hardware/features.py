"""What a latency predictor knows of a model before it runs: the
architecture features of a backbone subnet and of a header, computed in
closed form (no weights, no compile), the same at measurement and at
prediction time."""
import jax.numpy as jnp
import numpy as np

from acme_jax.device import header as header_lib
from acme_jax.selection import costs


def backbone_row(arch, depth: float, width: float, seq_len: int,
                 batch: int) -> dict:
  """A backbone subnet's features: its multipliers, kept layers, heads and
  neurons per layer, parameters (the extracted backbone's) and forward FLOPs
  over `batch` inputs of `seq_len` tokens (a decoder's without its LM
  head: the header reads the tokens before it)."""
  heads, neurons, layers = costs.subnet_shape(arch, depth, width)
  return {'part': 'backbone', 'depth': float(depth), 'width': float(width),
          'layers': int(layers), 'heads': int(heads), 'neurons': int(neurons),
          'seq_len': int(seq_len), 'batch': int(batch),
          'params': int(costs.exact_param_count(arch, depth, width)),
          'flops': float(batch * seq_len * costs.flops_per_token(
              arch, depth, width, seq_len, lm_head=False))}


def keep_gates(spec: header_lib.Spec, keep: float) -> dict:
  """Gates keeping the first ceil(keep * C) channels of every gated conv
  (at least one): a header pruned to `keep` of its width."""
  gates = {}
  for name, shape in header_lib.gate_shapes(spec).items():
    g = np.zeros(shape, np.float32)
    g[..., :max(1, int(np.ceil(keep * shape[-1])))] = 1.0
    gates[name] = g
  return gates


def header_terms(spec: header_lib.Spec, arch, n_layers, gates, batch: int,
                 positions: int) -> dict:
  """`header_row`'s numbers as jnp scalars, traceable in `arch` and
  `n_layers`: what the header search's latency limit reads (`cost_fits`)."""
  arch = jnp.asarray(arch)
  params = header_lib.param_count(spec, arch, n_layers, gates)
  ops = jnp.concatenate([arch[:, 1], arch[:, 3]])
  active = header_lib.active_gates(spec, arch, n_layers)
  live = sum(jnp.sum(jnp.asarray(g) * a) for g, a in zip(
      (gates['cells'], gates['final']), (active['cells'], active['final'])))
  held = sum(jnp.sum(a) for a in (active['cells'], active['final']))
  n_layers = jnp.asarray(n_layers, jnp.float32)
  pools = n_layers * jnp.sum(
      (ops == header_lib.OPS.index('avg_pool_3x3')) |
      (ops == header_lib.OPS.index('max_pool_3x3')))
  terms = {'n_layers': n_layers,
           'keep': jnp.where(held > 0, live / jnp.maximum(held, 1.0), 1.0),
           'batch': jnp.float32(batch), 'positions': jnp.float32(positions),
           'params': params,
           # A 3x3 pool reads 9 values per output: it runs C wide whatever
           # the gates keep (tensors between ops stay C wide).
           'flops': ((2.0 * params + 9.0 * pools * spec.num_channels) *
                     positions * batch),
           'loose_ends': jnp.sum(header_lib.loose_ends(arch)),
           # Integer counts header_row makes its floats from, exactly.
           '_live': live, '_held': held, '_pools': pools}
  for op, name in enumerate(header_lib.OPS):
    terms[f'ops_{name}'] = n_layers * jnp.sum(ops == op)
  return terms


def header_row(spec: header_lib.Spec, arch, n_layers: int, gates,
               batch: int, positions: int) -> dict:
  """A header's features: its cells, the ops its cell uses (counted over
  the cells it runs), the share of channels its gates keep, parameters
  (`header.param_count`) and a FLOP estimate: every conv weight is used
  once per position (1x1 and depthwise convs at stride 1), 2 FLOPs each,
  and every 3x3 pool reads 9 values per channel and position, over `batch`
  inputs of `positions` grid positions."""
  arch = header_lib.validate_arch(arch, spec.num_nodes)
  terms = header_terms(spec, arch, n_layers, gates, batch, positions)
  counts = {name: int(np.rint(np.asarray(value)))
            for name, value in terms.items() if name not in ('keep', 'flops')}
  live, held, pools = (counts.pop(k) for k in ('_live', '_held', '_pools'))
  row = {'part': 'header', **counts}
  row['keep'] = live / held if held else 1.0
  row['flops'] = float((2 * row['params'] + 9 * pools * spec.num_channels) *
                       positions * batch)
  order = ('part', 'n_layers', 'keep', 'batch', 'positions', 'params',
           'flops', 'loose_ends')
  return {k: row[k] for k in order + tuple(
      f'ops_{name}' for name in header_lib.OPS)}
