"""Subnets of the supernet: description, masks, extraction, exact sizes (docs/method.md 3.1, 3.4).

Generic over the encoder families (`ViT`, `Bert`): only the shared sizes
(num_layers, num_heads, mlp_dim, head_dim, hidden_size) and the `block_{i}`
params are touched; every other param is the family's own and kept whole.

A `SubnetConfig` lists the kept layer indices and, per kept layer, how many
heads and MLP neurons it keeps. Heads and neurons are kept from the front,
which is why the supernet is reordered by importance before elastic training.

A decoder's attention is elastic in whole KV groups: its `heads` count query
heads and is always a whole number of groups (heads / group size KV heads
are kept), and its MLP width is its own: round(F * w) neurons.
"""
import dataclasses
import math
from typing import Tuple, Union

import jax
import numpy as np

from acme_jax.models import shapes
from acme_jax.models.bert import Bert
from acme_jax.models.decoder import Decoder
from acme_jax.models.encoder import Masks, per_layer as _per_layer
from acme_jax.models.vit import ViT

Encoder = Union[ViT, Bert, Decoder]
# Params that only feed the classifier: a device's header replaces them.
HEAD_PARAMS = ('head', 'pooler')


@dataclasses.dataclass(frozen=True)
class SubnetConfig:
  layers: Tuple[int, ...]   # kept layer indices, increasing
  heads: Tuple[int, ...]    # heads kept, one per kept layer
  neurons: Tuple[int, ...]  # MLP neurons kept, one per kept layer

  def __post_init__(self):
    if not (len(self.layers) == len(self.heads) == len(self.neurons)):
      raise ValueError(f'inconsistent SubnetConfig {self}')
    if not self.layers:
      raise ValueError('a subnet keeps at least one layer')
    if list(self.layers) != sorted(set(self.layers)):
      raise ValueError(f'kept layers must increase: {self.layers}')
    if min(self.heads) < 1 or min(self.neurons) < 1:
      raise ValueError(f'every kept layer needs >= 1 head and neuron: {self}')


def num_kept_heads(num_heads: int, width_mult: float) -> int:
  """round(H * w), Python rounding as in the prototype."""
  return int(round(num_heads * width_mult))


def kept_layer_indices(num_layers: int, depth_mult: float) -> Tuple[int, ...]:
  """n = round(d * L) layers at floor(i / d): evenly spread, first kept."""
  n = int(round(depth_mult * num_layers))
  # The epsilon guards floor() against 3 / 0.75 = 3.9999999.
  return tuple(int(math.floor(i / depth_mult + 1e-9)) for i in range(n))


def from_multipliers(num_layers: int, num_heads: int, mlp_dim: int,
                     width_mult: float, depth_mult: float) -> SubnetConfig:
  """The (width, depth) subnet of docs/method.md 3.1; widths snap to whole heads."""
  heads = num_kept_heads(num_heads, width_mult)
  neurons = int(heads / num_heads * mlp_dim)
  layers = kept_layer_indices(num_layers, depth_mult)
  if layers and layers[-1] >= num_layers:
    raise ValueError(f'depth_mult {depth_mult} keeps layer {layers[-1]} of '
                     f'{num_layers}')
  return SubnetConfig(layers, (heads,) * len(layers), (neurons,) * len(layers))


def for_model(model: Encoder, width_mult: float,
              depth_mult: float) -> SubnetConfig:
  if isinstance(model, Decoder):
    heads, neurons = shapes.decoder_width(model.num_heads, model.num_kv_heads,
                                          model.mlp_dim, width_mult)
    layers = kept_layer_indices(model.num_layers, depth_mult)
    return SubnetConfig(layers, (heads,) * len(layers),
                        (neurons,) * len(layers))
  return from_multipliers(model.num_layers, model.num_heads, model.mlp_dim,
                          width_mult, depth_mult)


def group_size(model: Encoder) -> int:
  """Query heads per elastic attention unit: a decoder's KV group, else 1."""
  if isinstance(model, Decoder):
    return model.num_heads // model.num_kv_heads
  return 1


def masks(model: Encoder, subnet: SubnetConfig) -> Masks:
  """Float32 numpy masks for the supernet `model` (heads/neurons from the front)."""
  heads = np.zeros((model.num_layers, model.num_heads), np.float32)
  neurons = np.zeros((model.num_layers, model.mlp_dim), np.float32)
  gates = np.zeros((model.num_layers,), np.float32)
  for layer, h, f in zip(subnet.layers, subnet.heads, subnet.neurons):
    if h > model.num_heads or f > model.mlp_dim or layer >= model.num_layers:
      raise ValueError(f'{subnet} does not fit the supernet')
    if h % group_size(model):
      raise ValueError(f'{subnet} keeps {h} query heads, not whole KV groups '
                       f'of {group_size(model)}')
    heads[layer, :h] = 1
    neurons[layer, :f] = 1
    gates[layer] = 1
  return Masks(heads, neurons, gates)


def stack_masks(mask_list) -> Masks:
  """Stack masks along a new leading axis (for vmap / scan over subnets)."""
  return Masks(*(np.stack(parts) for parts in zip(*mask_list)))


def _slice_decoder_block(block, heads: int, groups: int, neurons: int):
  attn = block['attn']
  cut = lambda p, n: {k: (v[:, :n] if k == 'kernel' else v[:n])  # noqa: E731
                      for k, v in p.items()}
  return {
      'ln_attn': block['ln_attn'], 'ln_mlp': block['ln_mlp'],
      'attn': {'q': cut(attn['q'], heads), 'k': cut(attn['k'], groups),
               'v': cut(attn['v'], groups),
               'o': dict(attn['o'], kernel=attn['o']['kernel'][:heads])},
      'gate': cut(block['gate'], neurons), 'up': cut(block['up'], neurons),
      'down': dict(block['down'], kernel=block['down']['kernel'][:neurons]),
  }


def slice_block(model: Encoder, block, heads: int, neurons: int):
  """One layer's params keeping the first `heads` (query) heads and
  `neurons` MLP neurons."""
  if isinstance(model, Decoder):
    return _slice_decoder_block(block, heads, heads // group_size(model),
                                neurons)
  return _slice_block(block, heads, neurons)


def _slice_block(block, heads: int, neurons: int):
  attn = block['attn']
  return {
      'ln_attn': block['ln_attn'],
      'ln_mlp': block['ln_mlp'],
      'attn': {
          name: {'kernel': attn[name]['kernel'][:, :heads],
                 'bias': attn[name]['bias'][:heads]}
          for name in ('query', 'key', 'value')
      } | {'out': {'kernel': attn['out']['kernel'][:heads],
                   'bias': attn['out']['bias']}},
      'fc1': {'kernel': block['fc1']['kernel'][:, :neurons],
              'bias': block['fc1']['bias'][:neurons]},
      'fc2': {'kernel': block['fc2']['kernel'][:neurons],
              'bias': block['fc2']['bias']},
  }


def width_slice(model: Encoder, params, heads: int, neurons: int):
  """The full-depth model keeping the first `heads` heads and `neurons` MLP
  neurons of every layer, and its params as static slices of `params`
  (traced arrays too: gradients flow back into the supernet's)."""
  head_dim = (model.head_dim if model.head_dim is not None else
              model.hidden_size // _per_layer(model.num_heads,
                                              model.num_layers)[0])
  sliced = {k: v for k, v in params.items() if not k.startswith('block_')}
  for layer in range(model.num_layers):
    sliced[f'block_{layer}'] = slice_block(model, params[f'block_{layer}'],
                                           heads, neurons)
  fields = dict(num_heads=heads, mlp_dim=neurons, head_dim=head_dim)
  if isinstance(model, Decoder):
    fields['num_kv_heads'] = heads // group_size(model)
  return model.clone(**fields), sliced


def is_uniform(subnet: SubnetConfig) -> bool:
  """Every kept layer keeps the same heads and neurons (every grid point)."""
  return len(set(subnet.heads)) == 1 and len(set(subnet.neurons)) == 1


def layer_gates(model: Encoder, subnet: SubnetConfig) -> np.ndarray:
  """(L,) 1.0 at the supernet's layers `subnet` keeps, 0.0 at dropped ones."""
  gates = np.zeros((model.num_layers,), np.float32)
  gates[list(subnet.layers)] = 1
  return gates


def static_form(model: Encoder, params, subnet: SubnetConfig):
  """`subnet` at its own cost: (model, params, layer_gates) to call as
  `model.apply({'params': params}, x, layer_gates=gates)`.

  A uniform-width subnet (every grid point) is the width-sliced supernet with
  its dropped layers skipped at run time, so subnets of one width share a
  compiled program; any other is extracted (gates all ones). Same outputs as
  the masked supernet, without the masked heads', neurons' and layers' FLOPs.
  """
  if is_uniform(subnet):
    sub_model, sliced = width_slice(model, params, subnet.heads[0],
                                    subnet.neurons[0])
    return sub_model, sliced, layer_gates(model, subnet)
  sub_model, dense = extract(model, params, subnet, with_head=True)
  return sub_model, dense, np.ones((len(subnet.layers),), np.float32)


def extract(model: Encoder, params, subnet: SubnetConfig,
            with_head: bool = False):
  """Dense sliced parameters of `subnet` and the model that runs them.

  The backbone a device receives has no classifier head (`with_head=False`):
  its header replaces the cloud's head, so shipping it would waste bytes.
  BERT's pooler only feeds that head, so it goes with it.
  """
  dense = {name: value for name, value in params.items()
           if not name.startswith('block_')
           and (with_head or name not in HEAD_PARAMS)}
  for new, (layer, h, f) in enumerate(
      zip(subnet.layers, subnet.heads, subnet.neurons)):
    dense[f'block_{new}'] = slice_block(model, params[f'block_{layer}'], h, f)
  head_dims = _per_layer(model.num_heads, model.num_layers)
  fields = dict(num_classes=model.num_classes if with_head and 'head' in
                params else 0,
                num_layers=len(subnet.layers),
                num_heads=tuple(subnet.heads),
                mlp_dim=tuple(subnet.neurons),
                head_dim=model.hidden_size // head_dims[0]
                if model.head_dim is None else model.head_dim)
  if hasattr(model, 'pooler'):
    fields['pooler'] = bool(model.pooler) and 'pooler' in dense
  if isinstance(model, Decoder):
    fields['num_kv_heads'] = tuple(h // group_size(model)
                                   for h in subnet.heads)
  sub_model = model.clone(**fields)
  dense = jax.tree.map(np.asarray, dense)
  return sub_model, dense


def as_supernet(model: Encoder, backbone, subnet: SubnetConfig):
  """A shipped backbone (`extract`, no head) laid out as the supernet, for
  `static_form`: kept layers at their indices, dropped ones zeros (their
  layer gates are 0, so they never run), no classifier. A device holding
  only its backbone then runs the very program the cloud's static form
  runs, and computes the same features to the bit."""
  fields = dict(num_classes=0)
  if hasattr(model, 'pooler'):
    fields['pooler'] = False
  params = {k: v for k, v in backbone.items() if not k.startswith('block_')}
  kept = {layer: k for k, layer in enumerate(subnet.layers)}
  filler = jax.tree.map(np.zeros_like, backbone['block_0'])
  for layer in range(model.num_layers):
    params[f'block_{layer}'] = (backbone[f'block_{kept[layer]}']
                                if layer in kept else filler)
  return model.clone(**fields), params


def param_count(params) -> int:
  return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def param_bytes(params) -> int:
  return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(params)))


def subnet_size(model: Encoder, params, subnet: SubnetConfig):
  """(exact parameter count, bytes) of the extracted backbone (no head)."""
  _, dense = extract(model, params, subnet)
  return param_count(dense), param_bytes(dense)
