"""What each device holds of the shared supernet, as data.

A `Holding` is a device's largest subnet (masks over heads, neurons and
layers) and a 0/1 pytree over the parameters it holds: the part it
downloads, trains, uploads and deploys. One compiled program serves every
holding (masked execution); the 0/1 tree decides which parameters a step
may change and which a transfer carries.
"""
from typing import NamedTuple, Optional, Sequence

import jax
import numpy as np

from acme_jax.models import subnet as subnet_lib
from acme_jax.models.encoder import Masks


class Holding(NamedTuple):
  """What one device holds and trains."""
  masks: Masks          # its largest subnet (heads, neurons, layers), numpy
  holder: dict          # 0/1 per parameter it holds (the params' pytree)
  widths: tuple = ()    # FjORD: the width multipliers it samples per step
  exits: int = 0        # DepthFL: classifiers after its first `exits` blocks


def subnet_masks(model, heads: Sequence[int], neurons: Sequence[int],
                 layers: Sequence[int]) -> Masks:
  """Masks keeping the first `heads[l]` heads and `neurons[l]` neurons of
  each layer l in `layers` (numpy)."""
  return subnet_lib.masks(model, subnet_lib.SubnetConfig(
      tuple(layers), tuple(heads[l] for l in layers),
      tuple(neurons[l] for l in layers)))


# Holder trees are read-only broadcast views (no memory per element), so
# sizing many candidate subnets of a large model stays cheap.


def _full(tree, value):
  return jax.tree.map(
      lambda a: np.broadcast_to(np.float32(value), np.shape(a)), tree)


def _along(values, shape, axis):
  """`values` (one per index of `axis`) broadcast to `shape`."""
  view = [1] * len(shape)
  view[axis] = -1
  return np.broadcast_to(np.reshape(values, view), shape)


def holder_mask(params, masks: Masks, exits: int = 0) -> dict:
  """0/1 per parameter element a device with `masks` holds: the kept heads'
  query, key, value and output weights, the kept neurons' MLP weights and
  the kept layers' norms and biases; everything outside the encoder blocks
  (embeddings, final norm, head); DepthFL's first `exits` classifiers."""
  heads, neurons, layers = (np.asarray(m, np.float32) for m in masks)
  out = {}
  for name, value in params.items():
    if name.startswith('block_'):
      l = int(name.split('_')[1])
      h, f, g = heads[l] * layers[l], neurons[l] * layers[l], layers[l]
      if 'gate' in value:  # a decoder block
        out[name] = _decoder_block(value, h, f, g)
        continue
      attn = value['attn']
      block = {'ln_attn': _full(value['ln_attn'], g),
               'ln_mlp': _full(value['ln_mlp'], g), 'attn': {}}
      for n in ('query', 'key', 'value'):  # kernel (D, H, d), bias (H, d)
        block['attn'][n] = {
            'kernel': _along(h, attn[n]['kernel'].shape, 1),
            'bias': _along(h, attn[n]['bias'].shape, 0)}
      block['attn']['out'] = {  # kernel (H, d, D)
          'kernel': _along(h, attn['out']['kernel'].shape, 0),
          'bias': _full(attn['out']['bias'], g)}
      block['fc1'] = {'kernel': _along(f, value['fc1']['kernel'].shape, 1),
                      'bias': f}
      block['fc2'] = {'kernel': _along(f, value['fc2']['kernel'].shape, 0),
                      'bias': _full(value['fc2']['bias'], g)}
      out[name] = block
    elif name == 'exits':
      keep = (np.arange(len(layers)) < exits).astype(np.float32)
      out[name] = jax.tree.map(lambda a: _along(keep, a.shape, 0), value)
    else:
      out[name] = _full(value, 1.0)
  return out


def _decoder_block(value, heads, neurons, gate) -> dict:
  """A decoder block's holder: the kept query heads' q and o, the KV groups
  any kept head reads (k, v), the kept SwiGLU neurons' gate, up and down."""
  attn = value['attn']
  groups = attn['k']['kernel'].shape[1]
  kv = np.asarray(heads).reshape(groups, -1).max(1)

  def along(p, values, axis):
    return {k: _along(values, v.shape, axis if k == 'kernel' else 0)
            for k, v in p.items()}
  block = {'ln_attn': _full(value['ln_attn'], gate),
           'ln_mlp': _full(value['ln_mlp'], gate),
           'attn': {'q': along(attn['q'], heads, 1),
                    'k': along(attn['k'], kv, 1),
                    'v': along(attn['v'], kv, 1),
                    'o': dict(along({'kernel': attn['o']['kernel']}, heads, 0),
                              **({'bias': _full(attn['o']['bias'], gate)}
                                 if 'bias' in attn['o'] else {}))},
           'gate': along(value['gate'], neurons, 1),
           'up': along(value['up'], neurons, 1)}
  block['down'] = dict(along({'kernel': value['down']['kernel']}, neurons, 0),
                       **({'bias': _full(value['down']['bias'], gate)}
                          if 'bias' in value['down'] else {}))
  return block


def held_count(holder, exclude: Sequence[str] = ()) -> int:
  """Parameters a holder mask keeps (its deployed size), less `exclude`."""
  return int(sum(float(np.sum(leaf)) for name, tree in holder.items()
                 if name not in exclude for leaf in jax.tree.leaves(tree)))


def with_classes(holding: Holding, classes: np.ndarray) -> Holding:
  """HeteroFL's label split: the head's columns of the classes the device
  has (`classes`, 0/1 per class) are all of the head it holds."""
  head = holding.holder['head']
  kept = {'kernel': head['kernel'] * classes[None, :]}
  if 'bias' in head:  # a decoder's classifier has none
    kept['bias'] = head['bias'] * classes
  holder = dict(holding.holder, head=kept)
  return holding._replace(holder=holder)


def scaled(masks: Masks) -> Masks:
  """HeteroFL's Scaler as mask values: a width-r subnet's attention and MLP
  outputs divided by r in training (r = kept heads / all heads per layer),
  so they keep the full model's scale."""
  heads, neurons, layers = (np.asarray(m, np.float32) for m in masks)
  rate = np.maximum(heads.sum(1, keepdims=True), 1) / heads.shape[1]
  return Masks(heads / rate, neurons / rate, layers)


def with_exits(params, num_layers: int):
  """DepthFL's classifiers, one after each block: a LayerNorm and a dense
  layer on the [CLS] state, each started from the model's final norm and
  head (so every exit starts where the full model's classifier is; a text
  encoder, whose blocks end in a norm, starts from the identity norm)."""
  d = params['head']['kernel'].shape[0]
  norm = params.get('ln_final', {'scale': np.ones(d, np.float32),
                                 'bias': np.zeros(d, np.float32)})
  tile = lambda a: np.repeat(np.asarray(a)[None], num_layers, 0)  # noqa
  return dict(params, exits={
      'scale': tile(norm['scale']), 'bias': tile(norm['bias']),
      'kernel': tile(params['head']['kernel']),
      'head_bias': tile(params['head'].get(
          'bias', np.zeros(params['head']['kernel'].shape[1], np.float32)))})


def levels(count: int) -> tuple:
  """Multipliers keeping 1, 2, ..., `count` of something: every width (in
  heads) or depth (in layers) a baseline may pick."""
  return tuple(k / count for k in range(1, count + 1))


def grid_holding(model, params, width: float, depth: float, *,
                 prefix: bool = False, exits: bool = False,
                 widths: tuple = ()) -> Holding:
  """The holding of the (width, depth) subnet: its layers spread as the
  supernet's grid keeps them, or the first ones (`prefix`, DepthFL)."""
  layers = (tuple(range(int(round(depth * model.num_layers)))) if prefix
            else subnet_lib.kept_layer_indices(model.num_layers, depth))
  widest = subnet_lib.for_model(model, width, 1.0)  # the family's width rule
  heads, neurons = widest.heads[0], widest.neurons[0]
  masks = subnet_masks(model, [heads] * model.num_layers,
                       [neurons] * model.num_layers, layers)
  k = len(layers) if exits else 0
  return Holding(masks, holder_mask(params, masks, k), widths, k)


def largest_fitting(holdings: Sequence[Holding],
                    budget: int) -> Optional[Holding]:
  """The holding with the most parameters within `budget` (its deployed
  size); None when none fits (the method cannot serve the device)."""
  fits = [h for h in holdings if held_count(h.holder) <= budget]
  return max(fits, key=lambda h: held_count(h.holder)) if fits else None
