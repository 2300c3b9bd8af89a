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
"""
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.models.vit import ViT, full_masks
from acme_jax.parallel import mesh


def importance_scores(model: ViT, params, data: Split, batch_size: int,
                      max_batches: int, par: Optional[mesh.Parallel] = None):
  """(head importance (L, H), neuron importance (L, F)) on `data`, each
  batch split over `par`'s mesh."""
  par = par or mesh.single_device()
  masks = full_masks(model)

  @jax.jit
  def batch_terms(params, cumulative, images, labels, weights):
    def loss_fn(p, head_mask):
      out = model.apply({'params': p}, images, masks._replace(heads=head_mask))
      losses = training.cross_entropy(out['logits'], labels)
      return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)

    grads = jax.grad(loss_fn, argnums=(0, 1))(params, masks.heads)
    cumulative = jax.tree.map(jnp.add, cumulative, grads)
    g_params, g_heads = cumulative
    neurons = []
    for layer in range(model.num_layers):
      p, g = params[f'block_{layer}'], g_params[f'block_{layer}']
      incoming = (jnp.sum(p['fc1']['kernel'] * g['fc1']['kernel'], 0) +
                  p['fc1']['bias'] * g['fc1']['bias'])
      outgoing = jnp.sum(p['fc2']['kernel'] * g['fc2']['kernel'], 1)
      neurons.append(jnp.abs(incoming) + jnp.abs(outgoing))
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


def reorder(model: ViT, params, head_score, neuron_score):
  """Params with every layer's heads and neurons sorted by decreasing importance."""
  params = jax.tree.map(np.asarray, params)
  new = dict(params)
  for layer in range(model.num_layers):
    # Stable sort on -score keeps the original order among ties.
    head_order = np.argsort(-head_score[layer], kind='stable')
    neuron_order = np.argsort(-neuron_score[layer], kind='stable')
    new[f'block_{layer}'] = permute_block(params[f'block_{layer}'], head_order,
                                          neuron_order)
  return new
