"""Sizes that follow from a config alone: no data, no training.

The supernet's architecture, the device count, the exact parameter count of
every trained grid subnet, the header's feature shape and the smallest
header. Config validation, the plan tool and the loop all size things here,
so an impossible budget is caught before any work and every tool counts the
same way.

A leaf below the tiers: it imports no tier (the data tier takes its image
channels from here; the smallest header's count is the closed form of
`device.header.param_count`, which tests/test_config.py ties to it).
"""
import numpy as np

from acme_jax import choices
from acme_jax.selection import costs

# Image channels per dataset, needed before loading (config validation, plan).
_CHANNELS = {'digits': 1, 'cifar10': 3, 'cifar100': 3, 'cars196': 3}


def is_bert(config) -> bool:
  return config.model.get('family', 'vit') == 'bert'


def is_decoder(config) -> bool:
  return config.model.get('family', 'vit') == 'decoder'


def is_text_model(config) -> bool:
  """A family that reads token ids (BERT, decoder)."""
  return is_bert(config) or is_decoder(config)


def decoder_head_dim(model_config) -> int:
  """config.model.head_dim, or (0 / absent) hidden_size / num_heads."""
  return int(model_config.get('head_dim') or
             model_config.hidden_size // model_config.num_heads)


def like(data_config) -> str:
  """The dataset whose shapes `data_config` has (a synthetic source's
  `like`)."""
  if data_config.name == 'synthetic':
    return data_config.synthetic.like
  return data_config.name


def channels(data_config) -> int:
  if data_config.name in choices.TEXT_DATASETS:
    raise ValueError(f'{data_config.name!r} is text: it has no image '
                     f'channels (see model_input_bytes)')
  return _CHANNELS[like(data_config)]


def architecture(config, num_classes: int):
  """The supernet's ViTArchitecture or BertArchitecture."""
  model = config.model
  if is_decoder(config):
    return costs.DecoderArchitecture(
        num_layers=model.num_layers, num_heads=model.num_heads,
        num_kv_heads=model.num_kv_heads, hidden_size=model.hidden_size,
        mlp_dim=model.mlp_dim, vocab_size=model.vocab_size,
        head_dim=decoder_head_dim(model), num_classes=num_classes,
        tie_word_embeddings=bool(model.get('tie_word_embeddings', False)),
        qkv_bias=bool(model.get('qkv_bias', False)))
  if is_bert(config):
    return costs.BertArchitecture(num_layers=model.num_layers,
                                  num_heads=model.num_heads,
                                  hidden_size=model.hidden_size,
                                  mlp_dim=model.mlp_dim,
                                  vocab_size=model.vocab_size,
                                  max_positions=model.max_positions,
                                  type_vocab_size=model.type_vocab_size,
                                  num_classes=num_classes)
  return costs.ViTArchitecture.for_images(config.data.image_size,
                                          num_layers=model.num_layers,
                                          num_heads=model.num_heads,
                                          hidden_size=model.hidden_size,
                                          mlp_dim=model.mlp_dim,
                                          patch_size=model.patch_size,
                                          channels=channels(config.data),
                                          num_classes=num_classes)


def devices_per_edge(config) -> list:
  """Devices under each edge: one count for all, or one per edge."""
  per_edge = tuple(config.system.devices_per_edge)
  edges = config.system.num_edges
  return list(per_edge) * edges if len(per_edge) == 1 else list(per_edge)


def num_devices(config) -> int:
  return sum(devices_per_edge(config))


def grid(config) -> list:
  """Every trained (depth, width) subnet with its exact backbone size."""
  # A backbone has no classifier: the class count enters neither its
  # parameters nor its FLOPs, so any count (1) sizes it.
  arch = architecture(config, num_classes=1)
  tokens = feature_shape(config)[1:-1]
  seq_len = int(np.prod(tokens)) + (0 if is_decoder(config) else 1)  # [CLS]
  return [{'depth_mult': d, 'width_mult': w,
           'params': costs.exact_param_count(arch, d, w),
           'flops_per_token': costs.flops_per_token(arch, d, w, seq_len)}
          for d in sorted(config.cloud.depth_mults, reverse=True)
          for w in sorted(config.cloud.width_mults, reverse=True)]


def smallest_backbone(config) -> int:
  return min(g['params'] for g in grid(config))


def feature_shape(config) -> tuple:
  """(1, *grid, D) of the features a header reads: the patch grid, or
  for text the token sequence after [CLS] (a decoder's: every token)."""
  if is_decoder(config):
    return (1, config.data.text.max_length, config.model.hidden_size)
  if is_bert(config):
    return (1, config.data.text.max_length - 1, config.model.hidden_size)
  side = config.data.image_size // config.model.patch_size
  return (1, side, side, config.model.hidden_size)


def max_header_cells(config) -> int:
  """Cells a header holds: `header.num_layers` (0: the prototype's rule,
  at most 3) + 2, the prototype child's count."""
  return (config.header.num_layers or 3) + 2


def smallest_header(config, cells: int, num_classes: int) -> int:
  """Parameters of the cheapest header (all pools) with `cells` cells and
  every channel: `device.header.param_count` of `smallest_arch`, in closed
  form. Pools hold no weights, so only the stem (1x1 conv D -> C and its
  BatchNorm), each cell's final 1x1 conv over its one loose end (the last
  node of the chain) with its BatchNorm, and the classifier remain."""
  c, d = config.header.num_channels, config.model.hidden_size
  stem = d * c + 2 * c
  cell = c * c + 2 * c
  return int(stem + cells * cell + c * num_classes + num_classes)
