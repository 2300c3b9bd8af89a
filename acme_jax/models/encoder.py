"""The masked Transformer encoder every model family shares (docs/method.md 3.1-3.2).

A block is multi-head self-attention and a GELU MLP, pre-LayerNorm (ViT) or
post-LayerNorm (BERT). A subnet is data: a head mask (after the softmax), an
MLP-neuron mask and a layer gate per layer (`Masks`), so one compiled
program runs every subnet; a dropped layer is the identity. With width-sliced
params and `layer_gates` instead of masks, dropped layers are skipped at run
time (`nn.cond`) and every subnet costs its own FLOPs.

`dtype` is the compute dtype (bfloat16 for mixed precision); parameters stay
float32, and the softmax and LayerNorm statistics are computed in float32.
"""
from typing import Any, NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

IntOrPerLayer = Union[int, Sequence[int]]


class Masks(NamedTuple):
  """A subnet as data. Shapes: heads (L, H), neurons (L, F), layers (L,)."""
  heads: jax.Array
  neurons: jax.Array
  layers: jax.Array


def per_layer(value: IntOrPerLayer, num_layers: int) -> tuple:
  if isinstance(value, int):
    return (value,) * num_layers
  value = tuple(int(v) for v in value)
  if len(value) != num_layers:
    raise ValueError(f'expected {num_layers} per-layer values, got {value}')
  return value


def head_dim(model) -> int:
  """A model's head size: its `head_dim`, else hidden_size / num_heads
  (which per-layer head counts cannot give)."""
  if model.head_dim is not None:
    return model.head_dim
  if not isinstance(model.num_heads, int):
    raise ValueError('head_dim is required with per-layer head counts')
  return model.hidden_size // model.num_heads


class Attention(nn.Module):
  """Multi-head self-attention whose heads can be masked after the softmax.

  `bias` (B, 1, 1, T) is added to the logits: 0 on real keys, a large
  negative number on padding (BERT's extended attention mask).
  """
  num_heads: int
  head_dim: int
  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, head_mask=None, bias=None):
    qkv = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, self.head_dim), dtype=self.dtype, name=name)(x)
    q, k, v = qkv('query'), qkv('key'), qkv('value')
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(self.head_dim))
    if bias is not None:
      logits = logits + bias
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    heads = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
    if head_mask is not None:
      heads = heads * head_mask[None, None, :, None].astype(heads.dtype)
    return nn.DenseGeneral(self.hidden_size, axis=(-2, -1), dtype=self.dtype,
                           name='out')(heads)


class Block(nn.Module):
  """One encoder layer: pre-LN (ViT: x + f(LN(x))) or post-LN (BERT:
  LN(x + f(x))). Param names are shared: ln_attn, attn, ln_mlp, fc1, fc2."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  hidden_size: int
  layer_norm_eps: float
  pre_norm: bool = True
  dtype: Any = jnp.float32

  def _norm(self, name):
    return nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype,
                        name=name)

  @nn.compact
  def __call__(self, x, head_mask=None, neuron_mask=None, gate=None,
               bias=None):
    attention = Attention(self.num_heads, self.head_dim, self.hidden_size,
                          self.dtype, name='attn')

    def mlp(y):
      y = nn.Dense(self.mlp_dim, dtype=self.dtype, name='fc1')(y)
      y = nn.gelu(y, approximate=False)
      if neuron_mask is not None:
        y = y * neuron_mask.astype(y.dtype)
      return nn.Dense(self.hidden_size, dtype=self.dtype, name='fc2')(y)

    if self.pre_norm:
      y = attention(self._norm('ln_attn')(x), head_mask, bias)
      x = x + (y if gate is None else y * gate)
      y = mlp(self._norm('ln_mlp')(x))
      return x + (y if gate is None else y * gate)
    out = self._norm('ln_attn')(x + attention(x, head_mask, bias))
    out = self._norm('ln_mlp')(out + mlp(out))
    if gate is None:
      return out
    return gate * out + (1 - gate) * x  # a dropped post-LN layer: identity


def run_layers(parent: nn.Module, x, *, pre_norm: bool,
               masks: Optional[Masks] = None, layer_gates=None, bias=None):
  """The encoder's layers, as submodules `block_{i}` of `parent` (a ViT or
  Bert, whose sizes they take; call from its compact method). Returns (x,
  hidden states (L, B, T, D))."""
  num_layers = parent.num_layers
  heads = per_layer(parent.num_heads, num_layers)
  mlp = per_layer(parent.mlp_dim, num_layers)
  hidden = []
  for layer in range(num_layers):
    block = Block(heads[layer], head_dim(parent), mlp[layer],
                  parent.hidden_size, parent.layer_norm_eps, pre_norm,
                  parent.dtype, name=f'block_{layer}')
    if masks is not None:
      x = block(x, masks.heads[layer], masks.neurons[layer],
                masks.layers[layer], bias)
    elif layer_gates is not None and not parent.is_initializing():
      x = nn.cond(layer_gates[layer] > 0,
                  lambda mdl, x, bias: mdl(x, bias=bias),
                  lambda mdl, x, bias: x, block, x, bias)
    else:
      x = block(x, bias=bias)
    hidden.append(x)
  return x, jnp.stack(hidden)


def full_masks(num_layers: int, heads: IntOrPerLayer,
               mlp: IntOrPerLayer) -> Masks:
  """Masks that keep everything (the full supernet)."""
  heads = per_layer(heads, num_layers)
  mlp = per_layer(mlp, num_layers)
  return Masks(jnp.ones((num_layers, max(heads)), jnp.float32),
               jnp.ones((num_layers, max(mlp)), jnp.float32),
               jnp.ones((num_layers,), jnp.float32))
