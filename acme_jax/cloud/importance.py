"""Importance reordering before elastic training (ACME.md 3.3).

Heads and MLP neurons are permuted within each layer, most important first, so
that "keep the first k" keeps the k most important. The permutation is
function-preserving: the full model's outputs do not change.
"""
import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.models.vit import ViT, full_masks


def importance_scores(model: ViT, params, data: Split, batch_size: int,
                      max_batches: int):
  """(head importance (L, H), neuron importance (L, F)) on `data`.

  Heads: sum over batches of |dL/dm_h| at head mask m = 1.
  Neurons: |sum w * dL/dw| over the neuron's fc1 column, fc1 bias and fc2 row,
  with gradients accumulated over the batches.
  """
  masks = full_masks(model)

  @jax.jit
  def grads(params, images, labels, weights):
    def loss_fn(p, head_mask):
      out = model.apply({'params': p}, images, masks._replace(heads=head_mask))
      return jnp.sum(training.cross_entropy(out['logits'], labels) * weights)

    return jax.grad(loss_fn, argnums=(0, 1))(params, masks.heads)

  head_score = np.zeros(masks.heads.shape, np.float64)
  param_grads = None
  for i, (idx, weights) in enumerate(training.padded_batches(len(data),
                                                             batch_size)):
    if i >= max_batches:
      break
    g_params, g_heads = grads(params, data.images[idx], data.labels[idx],
                              weights)
    head_score += np.abs(np.asarray(g_heads))
    param_grads = g_params if param_grads is None else jax.tree.map(
        jnp.add, param_grads, g_params)

  neuron_score = np.zeros(masks.neurons.shape, np.float64)
  for layer in range(model.num_layers):
    p = params[f'block_{layer}']
    g = param_grads[f'block_{layer}']
    w_times_g = (np.sum(np.asarray(p['fc1']['kernel'] * g['fc1']['kernel']), 0)
                 + np.asarray(p['fc1']['bias'] * g['fc1']['bias'])
                 + np.sum(np.asarray(p['fc2']['kernel'] * g['fc2']['kernel']), 1))
    neuron_score[layer] = np.abs(w_times_g)
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
