"""Device-side training FLOPs, counted from the subnet each step trains
(2 FLOPs per multiply-add; a training step is three forward passes'
worth: forward, and the backward pass's two)."""
import numpy as np

from acme_jax.models import subnet as subnet_lib
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


def forward_flops(model, masks: Masks, t: int, lm: bool = False) -> float:
  """Forward FLOPs of one sample of `t` tokens through the layers `masks`
  keeps (query, key, value and output projections, attention scores and
  mixing, the MLP) and the classifier; a decoder counts its KV groups (a
  kept query head keeps its group's key and value heads), its gated MLP's
  three projections and, with `lm` (a loss that reads the next-token
  logits; otherwise XLA drops them), its LM head over every token."""
  heads, neurons, layers = (np.asarray(m) > 0 for m in masks)
  d = model.hidden_size
  decoder = hasattr(model, 'num_kv_heads')
  head_dim = (model.resolved_head_dim() if decoder
              else d // model.num_heads)
  group = (heads.shape[1] // _first(model.num_kv_heads)) if decoder else 1
  mlp_matrices = 3 if decoder else 2
  total = 0.0
  for l in np.flatnonzero(layers):
    inner = heads[l].sum() * head_dim
    kv = -(-heads[l].sum() // group) * head_dim  # whole groups
    projections = 2 * d * inner + 2 * d * kv
    total += t * (2 * (projections + mlp_matrices * d * neurons[l].sum()) +
                  4 * t * inner)
  total += 2 * d * model.num_classes
  if lm and decoder and model.lm_head:
    total += 2 * t * d * model.vocab_size
  return total


def _first(value) -> int:
  return value[0] if isinstance(value, (tuple, list)) else value


def acme_phase_flops(model, supernet, config, record: dict) -> dict:
  """ACME's device-side FLOPs for one device (its main-job `record`),
  estimated by phase: `setup`, the backbone run once over the local data
  (the cached features), the header search and its final training at each
  rate; `round`, one aggregation round's header training (local epochs and
  fine-tuning). A header step costs 2 FLOPs per header weight per token,
  three times for a training step."""
  sub = subnet_lib.for_model(model, record['width_mult'],
                             record['depth_mult'])
  samples = sum(record['local_samples'])
  t = tokens(model)
  backbone = (embed_flops(model, supernet, t) +
              forward_flops(model, subnet_lib.masks(model, sub), t))
  positions = t - 1
  per_sample = 2.0 * record['nas_header_params'] * positions
  header, rounds = config.header, config.aggregation
  train = record['local_samples'][0]
  search = header.search_epochs * (TRAIN_FACTOR * train + header.batch_size *
                                   header.controller_steps_per_epoch)
  final = (TRAIN_FACTOR * train * header.finetune_epochs *
           len(header.finetune_lrs))
  per_round = TRAIN_FACTOR * train * (rounds.local_epochs +
                                      rounds.finetune_epochs)
  return {'setup': backbone * samples + per_sample * (search + final),
          'round': per_sample * per_round}
