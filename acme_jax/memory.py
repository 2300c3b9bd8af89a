"""Memory estimates: sizes whose memory is known before any work, checked
against the machine's memory so that a typo (a grid of 100000 points a side,
a batch of 100000) is one line at the start, not minutes of swapping or an
allocation failure after the cloud stages.

Each estimate is a lower bound of the largest working set of one part of a
run (the dominant arrays only, float32), so a refused value could never
run; values near the limit may still pass and fail later. The machine's
memory is the host's (or the cgroup's limit, when lower): the check runs
before JAX starts (multi-host start-up must come first), so an
accelerator's own memory is not known here.
"""
import dataclasses
import os
from typing import List

from acme_jax import errors
from acme_jax import sizes

FLOAT = 4
GIB = 2**30
# The fine grid's arrays: predictions, costs, normalised values, fronts and
# masks per point (peak RSS / (8 G^2) measured at G = 1000 and 3000: 37).
GRID_ARRAYS = 40


@dataclasses.dataclass(frozen=True)
class Estimate:
  field: str       # the config field to blame (the one given most often)
  what: str        # what needs the memory, with the sizes that set it
  bytes: int


def machine_bytes() -> int:
  """Physical memory, or the cgroup's limit when it is lower."""
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  for limit in ('/sys/fs/cgroup/memory.max',
                '/sys/fs/cgroup/memory/memory.limit_in_bytes'):
    try:
      with open(limit) as f:
        text = f.read().strip()
    except OSError:
      continue
    if text.isdigit():
      total = min(total, int(text))
  return total


def _tokens(config) -> int:
  if sizes.is_text_model(config):
    return config.data.text.max_length
  return (config.data.image_size // config.model.patch_size)**2 + 1


def estimates(config) -> List[Estimate]:
  """The dominant working sets of a run on `config` (validated fields)."""
  m, h = config.model, config.header
  tokens = _tokens(config)
  # Per example and layer: q, k, v, attention output, MLP, the scores (a
  # decoder's attention is num_heads x head_dim wide, its own size).
  inner = (m.num_heads * sizes.decoder_head_dim(m) if sizes.is_decoder(config)
           else m.hidden_size)
  per_layer = tokens * (3 * inner + m.hidden_size + m.mlp_dim +
                        m.num_heads * tokens) * FLOAT
  grid = config.selection.grid_size
  out = [
      Estimate('selection.grid_size',
               f'the selection\'s {grid} x {grid} grid', grid * grid * 8 *
               GRID_ARRAYS),
      # Evaluation holds one layer's activations at a time.
      Estimate('cloud.eval_batch_size',
               f'evaluating {config.cloud.eval_batch_size} examples of '
               f'{tokens} tokens at once',
               config.cloud.eval_batch_size * per_layer),
      # Training keeps every layer's for the backward pass (remat: one).
      Estimate('cloud.batch_size',
               f'training on {config.cloud.batch_size} examples of {tokens} '
               f'tokens ({m.num_layers} layers kept for the gradient)',
               config.cloud.batch_size * per_layer *
               (1 if config.cloud.remat else m.num_layers)),
  ]
  if sizes.is_decoder(config):
    out += _decoder_estimates(config, tokens)
  cells = sizes.max_header_cells(config)
  nodes, channels = h.num_nodes, h.num_channels
  grid_cells = tokens - (0 if sizes.is_text_model(config) else 1)
  # Every node's two branches, each a sep conv of ~6 kept activations, for
  # the backward pass; every (node, branch, input) has its own weights
  # (3 kernels, two 1x1 convs each) with gradient and momentum.
  out.append(Estimate(
      'header.batch_size',
      f'the header search on batches of {h.batch_size} ({cells} cells of '
      f'{nodes} nodes, {channels} channels, {grid_cells} positions)',
      h.batch_size * grid_cells * channels * FLOAT * cells * nodes * 2 * 6))
  out.append(Estimate(
      'header.num_nodes',
      f'the header\'s shared weights ({cells} cells of {nodes} nodes, '
      f'{channels} channels)',
      cells * nodes * 2 * (nodes + 2) * 3 * 2 * channels * channels *
      FLOAT * 3))
  # An LSTM of `hidden` units: 4 gates over [input, state], with gradient
  # and two Adam moments.
  out.append(Estimate(
      'header.controller_hidden',
      f'the controller\'s LSTM of {h.controller_hidden} units',
      4 * h.controller_hidden * 2 * h.controller_hidden * FLOAT * 4))
  if config.data.name == 'synthetic':
    s = config.data.synthetic
    n = s.num_train + s.num_test
    out.append(Estimate(
        'data.synthetic.num_train',
        f'{n} synthetic images held in memory',
        n * config.data.image_size**2 * sizes.channels(config.data) * FLOAT))
  return out


def _decoder_estimates(config, tokens: int) -> List[Estimate]:
  """A language model's largest arrays: the vocabulary's."""
  m, batch = config.model, config.cloud.batch_size
  return [
      # Embedding (and an untied LM head) with gradient and two Adam moments.
      Estimate('model.vocab_size',
               f'the {m.vocab_size:,} x {m.hidden_size} embedding and LM '
               f'head with their gradients and Adam moments',
               m.vocab_size * m.hidden_size * FLOAT * 4 *
               (1 if m.get('tie_word_embeddings') else 2)),
      # Logits, their softmax and its gradient for a training batch.
      Estimate('cloud.batch_size',
               f'next-token logits of {batch} examples of {tokens} tokens '
               f'over {m.vocab_size:,} tokens',
               batch * tokens * m.vocab_size * FLOAT * 3),
  ]


def check(config, available: int = None):
  """Raises `ConfigError` for the first estimate above the machine's
  memory (`available`, default `machine_bytes()`)."""
  available = available or machine_bytes()
  for e in estimates(config):
    if e.bytes > available:
      value = config
      for part in e.field.split('.'):
        value = value[part]
      raise errors.ConfigError(
          e.field, value,
          f'{e.what} needs at least {e.bytes / GIB:,.1f} GiB and this '
          f'machine has {available / GIB:,.1f} GiB; lower it')
