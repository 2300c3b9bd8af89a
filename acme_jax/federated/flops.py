"""Device-side training FLOPs, counted from the subnet each step trains
(2 FLOPs per multiply-add; a training step is three forward passes'
worth: forward, and the backward pass's two)."""
import numpy as np

from acme_jax.models.encoder import Masks

TRAIN_FACTOR = 3


def tokens(model, sample_shape=None) -> int:
  """Sequence length the model computes on ([CLS] included): from its input
  spec (images resized to `image_size`, text padded to `max_length`), else
  from one stored sample's shape."""
  spec = model.input_spec
  if hasattr(model, 'patch_size'):
    size = spec.image_size if spec is not None else sample_shape[0]
    return (size // model.patch_size) ** 2 + 1
  return spec.max_length if spec is not None else sample_shape[0]


def embed_flops(model, params, t: int) -> float:
  """Forward FLOPs of a ViT's patch projection for one image of `t` tokens
  (0 for text: embedding lookups)."""
  if 'patch_embed' not in params:
    return 0.0
  return 2.0 * (t - 1) * np.size(params['patch_embed']['kernel'])


def forward_flops(model, masks: Masks, t: int) -> float:
  """Forward FLOPs of one sample of `t` tokens through the encoder layers
  `masks` keeps (query, key, value and output projections, attention
  scores and mixing, the MLP) and the classifier."""
  heads, neurons, layers = (np.asarray(m) > 0 for m in masks)
  d = model.hidden_size
  head_dim = d // model.num_heads
  total = 0.0
  for l in np.flatnonzero(layers):
    inner = heads[l].sum() * head_dim
    total += t * (2 * (4 * d * inner + 2 * d * neurons[l].sum()) +
                  4 * t * inner)
  return total + 2 * d * model.num_classes
