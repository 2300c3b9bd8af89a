"""Weight-sharing BERT encoder supernet, the text counterpart of `vit.ViT`.

Same roles as the ViT: a supernet run with `Masks` (heads, neurons, layer
gates as data) and an extracted subnet with per-layer head / neuron counts
(`models/subnet.py:extract`). The blocks are the shared post-LN ones of
`models/encoder.py` (as google-bert/bert-base-uncased: attention, residual,
LayerNorm, MLP with the exact GELU, residual, LayerNorm), so a dropped layer
is the identity by construction of the gate.

Padding is a key mask only, as in Hugging Face: padded keys get a large
negative bias before the softmax, padded queries are computed like any other
(their rows are not zeroed), so every position matches HF's outputs.
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from acme_jax.models import encoder
from acme_jax.models.encoder import IntOrPerLayer, Masks  # noqa: F401


def padding_bias(attention_mask, dtype=jnp.float32):
  """(B, T) 1 = real, 0 = pad -> (B, 1, 1, T) bias added to the logits.

  finfo(dtype).min, not -inf, so a row with every key padded stays finite
  (a uniform softmax), exactly as HF's extended attention mask.
  """
  keep = jnp.asarray(attention_mask) > 0
  bias = jnp.where(keep, 0.0, jnp.finfo(dtype).min).astype(dtype)
  return bias[:, None, None, :]


class Bert(nn.Module):
  """BERT classifier / encoder. Returns a dict with

  * `embeddings` (B, T, D), word + position + token-type embeddings after
    their LayerNorm (HF's hidden state 0);
  * `hidden` (L, B, T, D), every block's output (HF's hidden states 1..L);
  * `tokens` (B, T, D), HF's last_hidden_state: post-LN blocks need no final
    LayerNorm, so it equals `hidden[-1]`;
  * `pooled` (B, D), tanh(dense(tokens[:, 0])), when `pooler`;
  * `logits` (B, classes) float32, when `num_classes > 0`: from `pooled`
    (BertForSequenceClassification), or from token 0 without a pooler.
  """
  num_classes: int
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: IntOrPerLayer
  mlp_dim: IntOrPerLayer
  head_dim: Optional[int] = None
  max_positions: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_id: int = 0
  pooler: bool = True
  # Stored ids -> model input inside the jitted call; kept for symmetry with
  # the ViT (None: the caller passes token ids).
  input_spec: Optional[Any] = None
  dtype: Any = jnp.float32  # compute dtype; params stay float32

  @nn.compact
  def __call__(self, input_ids, masks: Optional[Masks] = None,
               layer_gates=None, attention_mask=None, token_type_ids=None):
    """`masks` / `layer_gates` as in `ViT.__call__`. `attention_mask` (B, T)
    defaults to `input_ids != pad_id` (right-padded ids); `token_type_ids`
    to zeros (a single segment)."""
    if self.input_spec is not None:
      input_ids = self.input_spec.prepare(input_ids)
    input_ids = jnp.asarray(input_ids).astype(jnp.int32)
    length = input_ids.shape[1]
    if length > self.max_positions:
      raise ValueError(f'sequence length {length} exceeds max_positions '
                       f'{self.max_positions}')
    if attention_mask is None:
      attention_mask = input_ids != self.pad_id
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    init = nn.initializers.normal(0.02)
    embed = lambda n, name: nn.Embed(  # noqa: E731
        n, self.hidden_size, dtype=self.dtype, embedding_init=init, name=name)
    x = (embed(self.vocab_size, 'word_embeddings')(input_ids)
         + embed(self.max_positions, 'position_embeddings')(
             jnp.arange(length))[None]
         + embed(self.type_vocab_size, 'token_type_embeddings')(
             jnp.asarray(token_type_ids).astype(jnp.int32)))
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype,
                     name='ln_embed')(x)
    embeddings = x
    x, hidden = encoder.run_layers(self, x, pre_norm=False, masks=masks,
                                   layer_gates=layer_gates,
                                   bias=padding_bias(attention_mask))
    out = {'embeddings': embeddings, 'hidden': hidden, 'tokens': x}
    first = x[:, 0]
    if self.pooler:
      first = jnp.tanh(nn.Dense(self.hidden_size, dtype=self.dtype,
                                name='pooler')(first))
      out['pooled'] = first
    if self.num_classes:
      out['logits'] = nn.Dense(self.num_classes, dtype=self.dtype,
                               name='head')(first).astype(jnp.float32)
    return out


def full_masks(model: Bert) -> Masks:
  """Masks that keep everything (the full supernet)."""
  return encoder.full_masks(model.num_layers, model.num_heads, model.mlp_dim)


def bert_from_config(model_config, num_classes: int, vocab_size: int) -> Bert:
  """The supernet described by `config.model` (sizes a text dataset fixes,
  the vocabulary and classes, come from the data)."""
  get = model_config.get
  return Bert(num_classes=num_classes,
              vocab_size=vocab_size,
              hidden_size=model_config.hidden_size,
              num_layers=model_config.num_layers,
              num_heads=model_config.num_heads,
              mlp_dim=model_config.mlp_dim,
              head_dim=model_config.hidden_size // model_config.num_heads,
              max_positions=get('max_positions', 512),
              type_vocab_size=get('type_vocab_size', 2),
              layer_norm_eps=get('layer_norm_eps', 1e-12),
              pad_id=get('pad_id', 0),
              pooler=get('pooler', True),
              dtype=jnp.dtype(get('dtype', 'float32')))


def init_params(model: Bert, key, seq_len: int):
  """Initial parameters for (stored) id sequences of length `seq_len`."""
  return model.init(key, jnp.zeros((1, seq_len), jnp.int32))['params']
