"""Weight-sharing Vision Transformer supernet (ACME.md 3.1, 3.2).

One module serves two roles:

* the **supernet**: uniform heads / MLP width per layer, run with a `Masks` set
  of arrays (heads, neurons, layer gates). Masks are data, so one compiled
  program runs every subnet, and a stack of masks can be vmapped;
* the **extracted subnet**: per-layer head and neuron counts given as tuples and
  no masks (see `models/subnet.py:extract`).

Pre-LN encoder blocks as in google/vit-base-patch16-224: LayerNorm, attention,
residual, LayerNorm, MLP (exact GELU), residual. A dropped layer is the identity:
its gate multiplies both residual branches by zero.
"""
from typing import NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

IntOrPerLayer = Union[int, Sequence[int]]


class Masks(NamedTuple):
  """A subnet as data. Shapes: heads (L, H), neurons (L, F), layers (L,)."""
  heads: jax.Array
  neurons: jax.Array
  layers: jax.Array


def _per_layer(value: IntOrPerLayer, num_layers: int) -> tuple:
  if isinstance(value, int):
    return (value,) * num_layers
  value = tuple(int(v) for v in value)
  if len(value) != num_layers:
    raise ValueError(f'expected {num_layers} per-layer values, got {value}')
  return value


class Attention(nn.Module):
  """Multi-head self-attention whose heads can be masked after the softmax."""
  num_heads: int
  head_dim: int
  hidden_size: int

  @nn.compact
  def __call__(self, x, head_mask=None):
    qkv = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, self.head_dim), name=name)(x)
    q, k, v = qkv('query'), qkv('key'), qkv('value')
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(
        jnp.asarray(self.head_dim, x.dtype))
    weights = jax.nn.softmax(logits, axis=-1)
    heads = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
    if head_mask is not None:
      heads = heads * head_mask[None, None, :, None]
    return nn.DenseGeneral(self.hidden_size, axis=(-2, -1), name='out')(heads)


class EncoderBlock(nn.Module):
  num_heads: int
  head_dim: int
  mlp_dim: int
  hidden_size: int
  layer_norm_eps: float

  @nn.compact
  def __call__(self, x, head_mask=None, neuron_mask=None, gate=None):
    y = nn.LayerNorm(epsilon=self.layer_norm_eps, name='ln_attn')(x)
    y = Attention(self.num_heads, self.head_dim, self.hidden_size,
                  name='attn')(y, head_mask)
    if gate is not None:
      y = y * gate
    x = x + y
    y = nn.LayerNorm(epsilon=self.layer_norm_eps, name='ln_mlp')(x)
    y = nn.Dense(self.mlp_dim, name='fc1')(y)
    y = nn.gelu(y, approximate=False)
    if neuron_mask is not None:
      y = y * neuron_mask
    y = nn.Dense(self.hidden_size, name='fc2')(y)
    if gate is not None:
      y = y * gate
    return x + y


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

  def _head_dim(self):
    if self.head_dim is not None:
      return self.head_dim
    if not isinstance(self.num_heads, int):
      raise ValueError('head_dim is required with per-layer head counts')
    return self.hidden_size // self.num_heads

  @nn.compact
  def __call__(self, images, masks: Optional[Masks] = None):
    heads = _per_layer(self.num_heads, self.num_layers)
    mlp = _per_layer(self.mlp_dim, self.num_layers)
    init = nn.initializers.normal(0.02)
    x = nn.Conv(self.hidden_size, (self.patch_size, self.patch_size),
                strides=(self.patch_size, self.patch_size), padding='VALID',
                name='patch_embed')(images)
    b = x.shape[0]
    x = x.reshape(b, -1, self.hidden_size)
    cls = self.param('cls', init, (1, 1, self.hidden_size))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.hidden_size)), x], 1)
    x = x + self.param('pos_embed', init, (1, x.shape[1], self.hidden_size))
    embeddings = x
    hidden = []
    for layer in range(self.num_layers):
      block = EncoderBlock(heads[layer], self._head_dim(), mlp[layer],
                           self.hidden_size, self.layer_norm_eps,
                           name=f'block_{layer}')
      if masks is None:
        x = block(x)
      else:
        x = block(x, masks.heads[layer], masks.neurons[layer],
                  masks.layers[layer])
      hidden.append(x)
    tokens = nn.LayerNorm(epsilon=self.layer_norm_eps, name='ln_final')(x)
    out = {'embeddings': embeddings, 'hidden': jnp.stack(hidden),
           'tokens': tokens}
    if self.num_classes:
      out['logits'] = nn.Dense(self.num_classes, name='head')(tokens[:, 0])
    return out


def full_masks(model: ViT) -> Masks:
  """Masks that keep everything (the full supernet)."""
  heads = _per_layer(model.num_heads, model.num_layers)
  mlp = _per_layer(model.mlp_dim, model.num_layers)
  return Masks(jnp.ones((model.num_layers, max(heads)), jnp.float32),
               jnp.ones((model.num_layers, max(mlp)), jnp.float32),
               jnp.ones((model.num_layers,), jnp.float32))


def vit_from_config(model_config, num_classes: int) -> ViT:
  """The supernet described by `config.model`."""
  return ViT(num_classes=num_classes,
             patch_size=model_config.patch_size,
             hidden_size=model_config.hidden_size,
             num_layers=model_config.num_layers,
             num_heads=model_config.num_heads,
             mlp_dim=model_config.mlp_dim,
             head_dim=model_config.hidden_size // model_config.num_heads,
             layer_norm_eps=model_config.layer_norm_eps)


def init_params(model: ViT, key, image_shape):
  """Initial parameters for images of shape (H, W, C)."""
  return model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32))[
      'params']
