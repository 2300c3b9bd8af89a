"""What a latency predictor knows of a model before it runs: the
architecture features of a backbone subnet and of a header, computed in
closed form (no weights, no compile), the same at measurement and at
prediction time."""
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


def header_row(spec: header_lib.Spec, arch, n_layers: int, gates,
               batch: int, positions: int) -> dict:
  """A header's features: its cells, the ops its cell uses (counted over
  the cells it runs), the share of channels its gates keep, parameters
  (`header.param_count`) and a FLOP estimate: every conv weight is used
  once per position (1x1 and depthwise convs at stride 1), 2 FLOPs each,
  and every 3x3 pool reads 9 values per channel and position, over `batch`
  inputs of `positions` grid positions."""
  arch = header_lib.validate_arch(arch, spec.num_nodes)
  params = int(header_lib.param_count(spec, arch, n_layers, gates))
  ops = np.concatenate([arch[:, 1], arch[:, 3]])
  active = header_lib.active_gates(spec, arch, n_layers)
  live = sum(float(np.sum(np.asarray(g) * np.asarray(a))) for g, a in zip(
      (gates['cells'], gates['final']), (active['cells'], active['final'])))
  held = sum(float(np.sum(np.asarray(a))) for a in (active['cells'],
                                                    active['final']))
  pools = int(n_layers) * int(np.sum(
      (ops == header_lib.OPS.index('avg_pool_3x3')) |
      (ops == header_lib.OPS.index('max_pool_3x3'))))
  row = {'part': 'header', 'n_layers': int(n_layers),
         'keep': live / held if held else 1.0, 'batch': int(batch),
         'positions': int(positions), 'params': params,
         # A 3x3 pool reads 9 values per output: it runs C wide whatever
         # the gates keep (tensors between ops stay C wide).
         'flops': float((2 * params + 9 * pools * spec.num_channels) *
                        positions * batch),
         'loose_ends': int(np.sum(np.asarray(header_lib.loose_ends(arch))))}
  for op, name in enumerate(header_lib.OPS):
    row[f'ops_{name}'] = int(n_layers) * int(np.sum(ops == op))
  return row
