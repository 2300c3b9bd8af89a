"""Importance reordering before elastic training (docs/method.md 3.3).

Heads and MLP neurons are permuted within each layer, most important first, so
that "keep the first k" keeps the k most important. The permutation is
function-preserving: the full model's outputs do not change.

The scores are DynaBERT's, computed as the prototype's `cloud_func.py`
computes them: it calls `loss.backward()` once per batch (mean cross-entropy)
and never zeroes the gradients, so after batch t each `.grad` holds the
cumulative gradient G_t = g_1 + ... + g_t, and the scores add, per batch,

  heads:   |G_t(head mask)|
  neurons: |sum_in w1 * G_t(w1) + b1 * G_t(b1)| + |sum_out w2 * G_t(w2)|

(w1, b1 the neuron's fc1 column and bias, w2 its fc2 row): two separate
absolute terms, not one.

A decoder's SwiGLU neuron has two incoming columns (gate and up), both in
the incoming term; its attention is elastic in KV groups, so a group scores
the sum of its query heads' scores and moves whole: its query heads, its key
and value heads and its rows of the output projection together.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.models import decoder as decoder_lib
from acme_jax.models import subnet as subnet_lib
from acme_jax.models.vit import ViT, full_masks
from acme_jax.parallel import mesh


def _incoming(p, g, names):
  total = 0.0
  for name in names:
    total = total + jnp.sum(p[name]['kernel'] * g[name]['kernel'], 0)
    if 'bias' in p[name]:
      total = total + p[name]['bias'] * g[name]['bias']
  return total


def neuron_terms(model, p, g):
  """(F,) |incoming| + |outgoing| of one layer's params `p`, gradients `g`."""
  if isinstance(model, decoder_lib.Decoder):
    incoming, outgoing = _incoming(p, g, ('gate', 'up')), 'down'
  else:
    incoming, outgoing = _incoming(p, g, ('fc1',)), 'fc2'
  out = jnp.sum(p[outgoing]['kernel'] * g[outgoing]['kernel'], 1)
  return jnp.abs(incoming) + jnp.abs(out)


def importance_scores(model: ViT, params, data: Split, batch_size: int,
                      max_batches: int, par: Optional[mesh.Parallel] = None):
  """(head importance (L, H), neuron importance (L, F)) on `data`, each
  batch split over `par`'s mesh."""
  par = par or mesh.single_device()
  masks = (decoder_lib.full_masks(model)
           if isinstance(model, decoder_lib.Decoder) else full_masks(model))

  @jax.jit
  def batch_terms(params, cumulative, images, labels, weights):
    def loss_fn(p, head_mask):
      out = model.apply({'params': p}, images, masks._replace(heads=head_mask))
      loss = 0.0
      if 'logits' in out:  # a language model alone has no classifier
        losses = training.cross_entropy(out['logits'], labels)
        loss = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
      if 'lm_logits' in out:  # a decoder's task includes its next tokens
        loss = loss + training.next_token_loss(
            out['lm_logits'], images, model.pad_id, weights)
      return loss

    grads = jax.grad(loss_fn, argnums=(0, 1))(params, masks.heads)
    cumulative = jax.tree.map(jnp.add, cumulative, grads)
    g_params, g_heads = cumulative
    neurons = []
    for layer in range(model.num_layers):
      neurons.append(neuron_terms(model, params[f'block_{layer}'],
                                  g_params[f'block_{layer}']))
    return cumulative, jnp.abs(g_heads), jnp.stack(neurons)

  params = par.params(params)
  cumulative = jax.tree.map(jnp.zeros_like, (params, masks.heads))
  head_score = np.zeros(masks.heads.shape, np.float64)
  neuron_score = np.zeros(masks.neurons.shape, np.float64)
  for i, (idx, weights) in enumerate(training.padded_batches(
      len(data), batch_size, par.size)):
    if i >= max_batches:
      break
    cumulative, heads, neurons = batch_terms(
        params, cumulative, par.batch(data.images[idx]),
        par.batch(data.labels[idx]), par.batch(weights))
    head_score += mesh.host(heads)
    neuron_score += mesh.host(neurons)
  return head_score, neuron_score


def permute_block(block, head_order, neuron_order):
  """A block with heads and neurons permuted into the given orders."""
  attn = block['attn']
  new_attn = {name: {'kernel': attn[name]['kernel'][:, head_order],
                     'bias': attn[name]['bias'][head_order]}
              for name in ('query', 'key', 'value')}
  new_attn['out'] = {'kernel': attn['out']['kernel'][head_order],
                     'bias': attn['out']['bias']}
  return dict(block, attn=new_attn,
              fc1={'kernel': block['fc1']['kernel'][:, neuron_order],
                   'bias': block['fc1']['bias'][neuron_order]},
              fc2={'kernel': block['fc2']['kernel'][neuron_order],
                   'bias': block['fc2']['bias']})


def permute_decoder_block(block, group_order, group_size, neuron_order):
  """A decoder block with whole KV groups and SwiGLU neurons permuted."""
  attn = block['attn']
  head_order = (np.asarray(group_order)[:, None] * group_size +
                np.arange(group_size)[None]).reshape(-1)
  take = lambda p, order: {k: (v[:, order] if k == 'kernel' else v[order])  # noqa: E731
                           for k, v in p.items()}
  new_attn = {'q': take(attn['q'], head_order),
              'k': take(attn['k'], group_order),
              'v': take(attn['v'], group_order),
              'o': dict(attn['o'], kernel=attn['o']['kernel'][head_order])}
  return dict(block, attn=new_attn, gate=take(block['gate'], neuron_order),
              up=take(block['up'], neuron_order),
              down=dict(block['down'],
                        kernel=block['down']['kernel'][neuron_order]))


def group_scores(head_score, group_size: int):
  """(L, G) a KV group's score: the sum of its query heads' scores."""
  head_score = np.asarray(head_score)
  return head_score.reshape(head_score.shape[0], -1, group_size).sum(-1)


def reorder(model: ViT, params, head_score, neuron_score):
  """Params with every layer's heads and neurons sorted by decreasing importance."""
  params = jax.tree.map(np.asarray, params)
  new = dict(params)
  decoder = isinstance(model, decoder_lib.Decoder)
  if decoder:
    size = subnet_lib.group_size(model)
    head_score = group_scores(head_score, size)
  for layer in range(model.num_layers):
    # Stable sort on -score keeps the original order among ties.
    head_order = np.argsort(-head_score[layer], kind='stable')
    neuron_order = np.argsort(-neuron_score[layer], kind='stable')
    block = params[f'block_{layer}']
    new[f'block_{layer}'] = (
        permute_decoder_block(block, head_order, size, neuron_order) if decoder
        else permute_block(block, head_order, neuron_order))
  return new
