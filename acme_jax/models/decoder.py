"""Weight-sharing decoder language model (Llama / Qwen2 / Mistral computation).

Token embedding; per layer RMSNorm -> grouped-query self-attention with
rotary position embeddings -> residual, RMSNorm -> SwiGLU MLP -> residual;
a final RMSNorm and an LM head (tied to the embedding or its own). The
tensor semantics are Hugging Face's `LlamaForCausalLM` (Qwen2 adds q/k/v
biases): RMSNorm in float32 then scaled, `rotate_half` RoPE on (cos, sin)
of `cat(freqs, freqs)`, query head h reading key/value group
h // (num_heads / num_kv_heads).

The same roles as the encoders: the supernet runs with `Masks` (a query-head
mask (L, H), an MLP-neuron mask (L, F), layer gates (L,)) as data; elastic
attention keeps whole KV groups, so a head mask is always whole groups (see
`models/subnet.py`); an extracted subnet has per-layer head, group and
neuron counts. With `layer_gates` a dropped layer is skipped at run time.

Positions and the KV cache are explicit: `positions` (B, T) index RoPE and,
with a cache, the cache slot each token is written to; a key at slot s is
visible to a query at position p iff s <= p (and p - s < sliding_window).
Right-padded prompts therefore decode row by row from their own lengths
(`models/generate.py`).
"""
import functools
import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from acme_jax.models import encoder
from acme_jax.models.encoder import IntOrPerLayer, Masks, per_layer

ROPE_TYPES = ('default', 'linear', 'llama3')


def rope_inverse_frequencies(head_dim: int, theta: float,
                             scaling: Optional[Tuple] = None) -> np.ndarray:
  """(head_dim / 2,) float32 inverse frequencies, with HF's `linear` or
  `llama3` rope scaling (`scaling`: sorted (key, value) pairs)."""
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64)
                         .astype(np.float32) / head_dim))
  inv = inv.astype(np.float32)
  params = dict(scaling or ())
  kind = params.get('rope_type', 'default')
  if kind == 'default':
    return inv
  factor = np.float32(params['factor'])
  if kind == 'linear':
    return (inv / factor).astype(np.float32)
  if kind != 'llama3':
    raise ValueError(f'rope_type {kind!r} is not supported (one of '
                     f'{", ".join(ROPE_TYPES)})')
  low, high = float(params['low_freq_factor']), float(params['high_freq_factor'])
  old = float(params['original_max_position_embeddings'])
  low_wavelen, high_wavelen = old / low, old / high
  wavelen = 2 * math.pi / inv
  scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
  smooth = (old / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def rope(x, positions, inv_freq):
  """HF's apply_rotary_pos_emb on x (B, T, N, hd) at positions (B, T)."""
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # (B, T, hd/2)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  cos = jnp.cos(emb).astype(x.dtype)[:, :, None]
  sin = jnp.sin(emb).astype(x.dtype)[:, :, None]
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


class RMSNorm(nn.Module):
  eps: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    weight = self.param('scale', nn.initializers.ones, (x.shape[-1],))
    h = x.astype(jnp.float32)
    h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
    return (weight * h.astype(self.dtype)).astype(self.dtype)


def key_bias(positions, key_slots, key_valid=None, window=None,
             dtype=jnp.float32):
  """(B, 1, T, S) additive bias: 0 where the key at slot s is visible from the
  query at position p (s <= p, in the window, a real key), else finfo.min."""
  visible = key_slots[None, None, :] <= positions[:, :, None]
  if window is not None:
    visible &= positions[:, :, None] - key_slots[None, None, :] < window
  if key_valid is not None:
    visible &= key_valid[:, None, :]
  return jnp.where(visible, 0.0, jnp.finfo(dtype).min).astype(dtype)[:, None]


class Attention(nn.Module):
  num_heads: int
  num_kv_heads: int
  head_dim: int
  hidden_size: int
  qkv_bias: bool
  o_bias: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, inv_freq, bias, head_mask=None,
               cache=None):
    dense = lambda n, name, b: nn.DenseGeneral(  # noqa: E731
        (n, self.head_dim), use_bias=b, dtype=self.dtype, name=name)(x)
    q = rope(dense(self.num_heads, 'q', self.qkv_bias), positions, inv_freq)
    k = rope(dense(self.num_kv_heads, 'k', self.qkv_bias), positions, inv_freq)
    v = dense(self.num_kv_heads, 'v', self.qkv_bias)
    new_cache = None
    if cache is not None:  # write this step's keys at their slots
      rows = jnp.arange(x.shape[0])[:, None]
      k = cache[0].at[rows, positions].set(k.astype(cache[0].dtype))
      v = cache[1].at[rows, positions].set(v.astype(cache[1].dtype))
      new_cache = (k, v)
    group = self.num_heads // self.num_kv_heads
    q = q.reshape(q.shape[:2] + (self.num_kv_heads, group, self.head_dim))
    logits = jnp.einsum('bqgrd,bkgd->bgrqk', q, k.astype(q.dtype))
    logits = logits.astype(jnp.float32) / jnp.sqrt(jnp.float32(self.head_dim))
    logits = logits + bias[:, :, None]
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    heads = jnp.einsum('bgrqk,bkgd->bqgrd', weights, v.astype(self.dtype))
    heads = heads.reshape(heads.shape[:2] + (self.num_heads, self.head_dim))
    if head_mask is not None:
      heads = heads * head_mask[None, None, :, None].astype(heads.dtype)
    out = nn.DenseGeneral(self.hidden_size, axis=(-2, -1), use_bias=self.o_bias,
                          dtype=self.dtype, name='o')(heads)
    return out, new_cache


class Block(nn.Module):
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  hidden_size: int
  eps: float
  qkv_bias: bool
  o_bias: bool
  mlp_bias: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, inv_freq, bias, head_mask=None,
               neuron_mask=None, gate=None, cache=None):
    attention = Attention(self.num_heads, self.num_kv_heads, self.head_dim,
                          self.hidden_size, self.qkv_bias, self.o_bias,
                          self.dtype, name='attn')
    y, new_cache = attention(RMSNorm(self.eps, self.dtype, name='ln_attn')(x),
                             positions, inv_freq, bias, head_mask, cache)
    x = x + (y if gate is None else y * gate.astype(y.dtype))
    h = RMSNorm(self.eps, self.dtype, name='ln_mlp')(x)
    dense = lambda n, name: nn.Dense(  # noqa: E731
        n, use_bias=self.mlp_bias, dtype=self.dtype, name=name)
    h = nn.silu(dense(self.mlp_dim, 'gate')(h)) * dense(self.mlp_dim, 'up')(h)
    if neuron_mask is not None:
      h = h * neuron_mask.astype(h.dtype)
    y = dense(self.hidden_size, 'down')(h)
    x = x + (y if gate is None else y * gate.astype(y.dtype))
    return x, new_cache


class Decoder(nn.Module):
  """Causal LM (and classifier). Returns a dict with

  * `embeddings` (B, T, D), the token embeddings (HF's hidden state 0);
  * `hidden` (L, B, T, D), every block's output (before the final norm);
  * `prenorm` (B, T, D), the last block's output: what a device's
    language-model header reads;
  * `tokens` (B, T, D), after the final RMSNorm (HF's last_hidden_state);
  * `lm_logits` (B, T, V) float32, when `lm_head`;
  * `logits` (B, classes) float32, when `num_classes > 0`: a bias-free score
    of the last real token (LlamaForSequenceClassification);
  * `token_mask` (B, T) float32, 1 on real tokens (for the losses);
  * `cache`, the updated KV cache, when one is passed.
  """
  num_classes: int
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: IntOrPerLayer
  num_kv_heads: IntOrPerLayer
  mlp_dim: IntOrPerLayer
  head_dim: Optional[int] = None
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: Optional[Tuple] = None   # sorted (key, value) pairs
  qkv_bias: bool = False                 # Qwen2: True
  o_bias: bool = False
  mlp_bias: bool = False
  tie_word_embeddings: bool = False
  sliding_window: Optional[int] = None   # Mistral v0.1
  max_positions: int = 2048
  pad_id: int = 0
  lm_head: bool = True
  input_spec: Optional[Any] = None
  dtype: Any = jnp.float32

  def resolved_head_dim(self) -> int:
    if self.head_dim is not None:
      return self.head_dim
    return self.hidden_size // per_layer(self.num_heads, self.num_layers)[0]

  @nn.compact
  def __call__(self, input_ids, masks: Optional[Masks] = None,
               layer_gates=None, attention_mask=None, positions=None,
               cache=None):
    """`masks` / `layer_gates` as the encoders'. `attention_mask` (B, T)
    defaults to ids != pad_id (right padding); `positions` to arange(T).
    `cache`, one (k, v) per layer, each (B, S, G, hd): keys at slots
    0..S-1 are visible up to each query's position."""
    if self.input_spec is not None:
      input_ids = self.input_spec.prepare(input_ids)
    input_ids = jnp.asarray(input_ids).astype(jnp.int32)
    batch, length = input_ids.shape
    if attention_mask is None:
      attention_mask = input_ids != self.pad_id
    attention_mask = jnp.asarray(attention_mask) > 0
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    hd = self.resolved_head_dim()
    inv_freq = jnp.asarray(rope_inverse_frequencies(hd, self.rope_theta,
                                                    self.rope_scaling))
    embed = nn.Embed(self.vocab_size, self.hidden_size, dtype=self.dtype,
                     embedding_init=nn.initializers.normal(0.02),
                     name='embed')
    x = embed(input_ids)
    embeddings = x
    if cache is None:
      bias = key_bias(positions, jnp.arange(length), attention_mask,
                      self.sliding_window)
    else:
      bias = key_bias(positions, jnp.arange(cache[0][0].shape[1]), None,
                      self.sliding_window)
    heads = per_layer(self.num_heads, self.num_layers)
    groups = per_layer(self.num_kv_heads, self.num_layers)
    mlp = per_layer(self.mlp_dim, self.num_layers)
    hidden, new_cache = [], []
    for layer in range(self.num_layers):
      block = Block(heads[layer], groups[layer], hd, mlp[layer],
                    self.hidden_size, self.rms_norm_eps, self.qkv_bias,
                    self.o_bias, self.mlp_bias, self.dtype,
                    name=f'block_{layer}')
      layer_cache = None if cache is None else tuple(cache[layer])
      if masks is not None:
        x, c = block(x, positions, inv_freq, bias, masks.heads[layer],
                     masks.neurons[layer], masks.layers[layer], layer_cache)
      elif layer_gates is not None and not self.is_initializing():
        x, c = nn.cond(
            layer_gates[layer] > 0,
            lambda mdl, x, c: mdl(x, positions, inv_freq, bias, cache=c),
            lambda mdl, x, c: (x, c), block, x, layer_cache)
      else:
        x, c = block(x, positions, inv_freq, bias, cache=layer_cache)
      hidden.append(x)
      new_cache.append(c)
    out = {'embeddings': embeddings, 'hidden': jnp.stack(hidden),
           'prenorm': x, 'token_mask': attention_mask.astype(jnp.float32)}
    x = RMSNorm(self.rms_norm_eps, self.dtype, name='final_norm')(x)
    out['tokens'] = x
    if self.lm_head:
      if self.tie_word_embeddings:
        logits = embed.attend(x)
      else:
        logits = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype,
                          name='lm_head')(x)
      out['lm_logits'] = logits.astype(jnp.float32)
    if self.num_classes:
      last = last_real_index(attention_mask)
      pooled = x[jnp.arange(batch), last]
      out['logits'] = nn.Dense(self.num_classes, use_bias=False,
                               dtype=self.dtype, name='head')(
                                   pooled).astype(jnp.float32)
    if cache is not None:
      out['cache'] = tuple(new_cache)
    return out


def last_real_index(attention_mask):
  """(B,) index of each row's last real token (0 for an all-pad row), as
  HF's sequence classifiers pick it under right padding."""
  mask = jnp.asarray(attention_mask) > 0
  return jnp.max(jnp.where(mask, jnp.arange(mask.shape[1]), 0), axis=1)


def lm_logits_from(model: Decoder, params, prenorm):
  """The frozen LM head (final RMSNorm + projection) on hidden states
  `prenorm` (..., D): what a language-model header's output goes through."""
  return frozen_lm_head(model.rms_norm_eps)(prenorm,
                                            *lm_head_params(model, params))


@functools.lru_cache(maxsize=None)
def frozen_lm_head(eps: float):
  """lm_head(hidden (..., D), norm_scale (D,), kernel (D, V)) -> float32
  logits: the final RMSNorm and the projection, with the weights passed as
  arguments (a device's header trains in front of them; as arguments, not
  constants, they are not baked into every compiled program). One function
  per epsilon, so programs keyed on it are reused."""
  def lm_head(hidden, scale, kernel):
    x = RMSNorm(eps).apply({'params': {'scale': scale}}, hidden)
    return jnp.einsum('...d,dv->...v', x, kernel).astype(jnp.float32)
  return lm_head


def lm_head_params(model: Decoder, params) -> tuple:
  """(final norm scale, (D, V) projection) for `frozen_lm_head`."""
  kernel = (params['embed']['embedding'].T if model.tie_word_embeddings
            else params['lm_head']['kernel'])
  return params['final_norm']['scale'], kernel


def full_masks(model: Decoder) -> Masks:
  """Masks that keep everything: query heads (L, H), neurons, layers."""
  return encoder.full_masks(model.num_layers, model.num_heads, model.mlp_dim)


def empty_cache(model: Decoder, batch: int, slots: int, dtype=jnp.float32):
  """A zero KV cache: per layer (k, v), each (B, slots, groups, hd)."""
  hd = model.resolved_head_dim()
  return tuple((jnp.zeros((batch, slots, g, hd), dtype),) * 2
               for g in per_layer(model.num_kv_heads, model.num_layers))


def decoder_from_config(model_config, num_classes: int,
                        input_spec=None) -> Decoder:
  """The supernet `config.model` describes (a fresh Llama-style decoder; the
  pad id is the tokenizer's)."""
  get = model_config.get
  heads = model_config.num_heads
  return Decoder(
      num_classes=num_classes, vocab_size=model_config.vocab_size,
      hidden_size=model_config.hidden_size,
      num_layers=model_config.num_layers, num_heads=heads,
      num_kv_heads=model_config.num_kv_heads, mlp_dim=model_config.mlp_dim,
      head_dim=get('head_dim') or None,
      rms_norm_eps=get('layer_norm_eps', 1e-6),
      rope_theta=get('rope_theta', 10000.0),
      qkv_bias=get('qkv_bias', False),
      tie_word_embeddings=get('tie_word_embeddings', False),
      max_positions=get('max_positions', 2048),
      pad_id=input_spec.pad_id if input_spec is not None else 0,
      input_spec=input_spec, dtype=jnp.dtype(get('dtype', 'float32')))


def init_params(model: Decoder, key, seq_len: int):
  return model.init(key, jnp.zeros((1, seq_len), jnp.int32))['params']
