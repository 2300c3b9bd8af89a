"""KV-cached decoding for the decoder supernet and any subnet.

One jitted program per (batch, prompt length, new tokens, model): the prompt
fills the cache in one pass, then a `lax.scan` appends one token per step.
Prompts are right-padded; row b's first new token goes to position len_b, so
rows of different lengths decode together exactly as each would alone (a
key at slot s is visible from position p iff s <= p; a row's padding slots
are overwritten by its own new tokens before they become visible).

Sampling: greedy (temperature 0), or temperature with nucleus (top-p)
filtering: the smallest set of most probable tokens whose mass reaches p.
"""
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from acme_jax.models import decoder as decoder_lib


class Sampling(NamedTuple):
  """How the next token is chosen: temperature 0 is greedy."""
  temperature: float = 0.0
  top_p: float = 1.0


GREEDY = Sampling()


def top_p_filter(logits, top_p: float):
  """Logits with every token outside the nucleus set to -inf."""
  order = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  # A token stays when the mass before it is below p (the first always).
  before = jnp.cumsum(probs, axis=-1) - probs
  keep_sorted = before < top_p
  keep = jnp.zeros_like(keep_sorted).at[
      jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
  return jnp.where(keep, logits, -jnp.inf)


def choose(logits, key, temperature: float, top_p: float):
  """The next token per row from (B, V) float32 logits."""
  if temperature <= 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_p < 1.0:
    logits = top_p_filter(logits, top_p)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens',
                                             'sampling'))
def _generate(model, params, input_ids, attention_mask, masks, key, *,
              max_new_tokens, sampling):
  batch, length = input_ids.shape
  lengths = jnp.sum(attention_mask > 0, axis=1).astype(jnp.int32)
  cache = decoder_lib.empty_cache(model, batch, length + max_new_tokens)
  run = functools.partial(model.apply, {'params': params}, masks=masks)
  # The prompt pass projects only each row's last real token onto the
  # vocabulary, not all (B, T, V) logits.
  out = model.clone(lm_head=False).apply(
      {'params': params}, input_ids, masks=masks,
      attention_mask=attention_mask, cache=cache)
  last = jnp.maximum(lengths - 1, 0)
  logits = decoder_lib.lm_logits_from(
      model, params, out['prenorm'][jnp.arange(batch), last])

  def step(carry, step_key):
    cache, logits, position = carry
    token = choose(logits, step_key, sampling.temperature, sampling.top_p)
    out = run(token[:, None], attention_mask=jnp.ones((batch, 1), jnp.int32),
              positions=position[:, None], cache=cache)
    return (out['cache'], out['lm_logits'][:, 0], position + 1), token

  keys = jax.random.split(key, max_new_tokens)
  _, tokens = jax.lax.scan(step, (out['cache'], logits, lengths), keys)
  return tokens.T


def generate(model: decoder_lib.Decoder, params, input_ids, attention_mask,
             max_new_tokens: int, masks=None, key=None,
             sampling: Sampling = GREEDY):
  """(B, max_new_tokens) int32 new tokens after each row's real prompt.

  `masks` runs a subnet of the supernet; an extracted subnet runs as its
  own `model` with `masks=None`. The last step's forward pass is spent on
  a token nobody reads; it keeps the scan body one shape."""
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
  if not 0 < sampling.top_p <= 1:
    raise ValueError(f'top_p must be in (0, 1], got {sampling.top_p}')
  key = jax.random.key(0) if key is None else key
  return _generate(model, params, jnp.asarray(input_ids, jnp.int32),
                   jnp.asarray(attention_mask, jnp.int32), masks, key,
                   max_new_tokens=int(max_new_tokens),
                   sampling=Sampling(float(sampling.temperature),
                                     float(sampling.top_p)))


def recompute_greedy(model, params, input_ids, attention_mask,
                     max_new_tokens: int, masks=None) -> Optional[jax.Array]:
  """Greedy decoding without a cache: the whole prefix recomputed for every
  token (the reference `generate` is tested against)."""
  ids = jnp.asarray(input_ids, jnp.int32)
  lengths = jnp.sum(jnp.asarray(attention_mask) > 0, axis=1)
  ids = jnp.pad(ids, ((0, 0), (0, max_new_tokens)))
  rows = jnp.arange(ids.shape[0])
  # One compile: the padded ids keep their shape, the mask is data.
  forward = jax.jit(lambda p, x, m, a: model.apply(
      {'params': p}, x, masks=m, attention_mask=a)['lm_logits'])
  tokens = []
  for i in range(max_new_tokens):
    mask = jnp.arange(ids.shape[1])[None] < (lengths + i)[:, None]
    logits = forward(params, ids, masks, mask)
    token = jnp.argmax(logits[rows, lengths + i - 1], axis=-1)
    ids = ids.at[rows, lengths + i].set(token.astype(jnp.int32))
    tokens.append(token)
  return jnp.stack(tokens, axis=1).astype(jnp.int32)
