"""Weight-sharing Vision Transformer supernet (docs/method.md 3.1, 3.2).

One module serves two roles:

* the **supernet**: uniform heads / MLP width per layer, run with a `Masks` set
  of arrays (heads, neurons, layer gates). Masks are data, so one compiled
  program runs every subnet, and a stack of masks can be vmapped;
* the **extracted subnet**: per-layer head and neuron counts given as tuples and
  no masks (see `models/subnet.py:extract`).

Pre-LN encoder blocks (`models/encoder.py`, shared with BERT) as in
google/vit-base-patch16-224: LayerNorm, attention, residual, LayerNorm, MLP
(exact GELU), residual. A dropped layer is the identity.
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from acme_jax.models import encoder
from acme_jax.models.encoder import IntOrPerLayer, Masks  # noqa: F401


class ViT(nn.Module):
  """ViT classifier. Returns a dict with

  * `logits` (B, classes), from the CLS token after the final LayerNorm
    (absent with `num_classes=0`: an extracted backbone ships no head);
  * `embeddings` (B, T, D), the patch + CLS + position embeddings (HF's
    hidden state 0; T = 1 + patches);
  * `hidden` (L, B, T, D), the output of every encoder block (HF's hidden
    states 1..L); `hidden[-1]` is what the prototype's header reads;
  * `tokens` (B, T, D), the final LayerNorm's output.
  """
  num_classes: int
  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: IntOrPerLayer
  mlp_dim: IntOrPerLayer
  head_dim: Optional[int] = None
  layer_norm_eps: float = 1e-12
  # Stored images -> model input inside the jitted call (data.InputSpec);
  # None: the caller passes preprocessed float pixels (as HF's models).
  input_spec: Optional[Any] = None
  dtype: Any = jnp.float32  # compute dtype; params stay float32

  @nn.compact
  def __call__(self, images, masks: Optional[Masks] = None,
               layer_gates=None):
    """`masks`: a subnet as data, computed at full size. `layer_gates` (L,)
    without masks: dropped layers (gate 0) are skipped at run time
    (`nn.cond`), so their FLOPs are not spent; widths then come from the
    params' own shapes (a width-sliced model, `subnet.width_slice`)."""
    if self.input_spec is not None:
      images = self.input_spec.prepare(images)
    init = nn.initializers.normal(0.02)
    x = nn.Conv(self.hidden_size, (self.patch_size, self.patch_size),
                strides=(self.patch_size, self.patch_size), padding='VALID',
                dtype=self.dtype, name='patch_embed')(images.astype(self.dtype))
    b = x.shape[0]
    x = x.reshape(b, -1, self.hidden_size)
    cls = self.param('cls', init, (1, 1, self.hidden_size)).astype(self.dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.hidden_size)), x], 1)
    x = x + self.param('pos_embed', init, (1, x.shape[1], self.hidden_size)
                       ).astype(self.dtype)
    embeddings = x
    x, hidden = encoder.run_layers(self, x, pre_norm=True, masks=masks,
                                   layer_gates=layer_gates)
    tokens = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype,
                          name='ln_final')(x)
    out = {'embeddings': embeddings, 'hidden': hidden, 'tokens': tokens}
    if self.num_classes:
      out['logits'] = nn.Dense(self.num_classes, dtype=self.dtype,
                               name='head')(tokens[:, 0]).astype(jnp.float32)
    return out


def full_masks(model: ViT) -> Masks:
  """Masks that keep everything (the full supernet)."""
  return encoder.full_masks(model.num_layers, model.num_heads, model.mlp_dim)


def vit_from_config(model_config, num_classes: int) -> ViT:
  """The supernet described by `config.model`."""
  return ViT(num_classes=num_classes,
             patch_size=model_config.patch_size,
             hidden_size=model_config.hidden_size,
             num_layers=model_config.num_layers,
             num_heads=model_config.num_heads,
             mlp_dim=model_config.mlp_dim,
             head_dim=model_config.hidden_size // model_config.num_heads,
             layer_norm_eps=model_config.layer_norm_eps,
             dtype=jnp.dtype(model_config.get('dtype', 'float32')))


def input_size(model: ViT, image_shape) -> tuple:
  """(H, W) the model computes on: its input spec's side, or the images'."""
  if model.input_spec is not None:
    return (model.input_spec.image_size,) * 2
  return tuple(image_shape[:2])


def init_params(model: ViT, key, image_shape):
  """Initial parameters for (stored) images of shape (H, W, C)."""
  return model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32))[
      'params']
