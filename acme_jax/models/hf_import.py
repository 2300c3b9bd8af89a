"""Import Hugging Face `ViTForImageClassification` weights into our ViT.

The checkpoint is a directory in the layout of google/vit-base-patch16-224:
`config.json` plus `model.safetensors` (or a sharded
`model.safetensors.index.json`). Tensor names are the ones `save_pretrained`
writes (`vit.encoder.layer.{i}.attention.attention.query.weight`, ...); the
names transformers >= 5 uses in memory (`vit.layers.{i}.attention.q_proj`,
...) are accepted too. A `ViTModel` checkpoint (no `vit.` prefix, no
classifier) also loads, with a fresh head.

Mapping (torch `nn.Linear` stores (out, in); NCHW conv kernels (D, C, p, p)):

  embeddings.patch_embeddings.projection  -> patch_embed  (p, p, C, D)
  embeddings.cls_token / position_embeddings -> cls / pos_embed
  layer i: layernorm_before -> ln_attn, attention.{query,key,value} ->
    attn/{query,key,value} (D, H, Dh), attention.output.dense -> attn/out
    (H, Dh, D), layernorm_after -> ln_mlp, intermediate.dense -> fc1,
    output.dense -> fc2
  layernorm -> ln_final, classifier -> head; the pooler is ignored.

Our model takes NHWC images; HF takes NCHW `pixel_values`. Pre-processing
(resize, normalisation) is the caller's job, as with HF.
"""
import json
import os
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

from acme_jax.models.vit import ViT

CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'
WEIGHTS_INDEX_NAME = 'model.safetensors.index.json'

# Tensors that exist in some ViT checkpoints and that our model has no use for.
_IGNORED_PREFIXES = ('pooler.', 'embeddings.mask_token')

# Per-layer tensor names: ours -> (save_pretrained name, transformers >= 5
# in-memory name), both relative to `encoder.layer.{i}.` / `layers.{i}.`.
_LAYER_NAMES = {
    'ln_attn': ('layernorm_before', 'layernorm_before'),
    'query': ('attention.attention.query', 'attention.q_proj'),
    'key': ('attention.attention.key', 'attention.k_proj'),
    'value': ('attention.attention.value', 'attention.v_proj'),
    'out': ('attention.output.dense', 'attention.o_proj'),
    'ln_mlp': ('layernorm_after', 'layernorm_after'),
    'fc1': ('intermediate.dense', 'mlp.fc1'),
    'fc2': ('output.dense', 'mlp.fc2'),
}


def _image_size(hf_config: dict) -> tuple:
  size = hf_config.get('image_size', 224)
  if isinstance(size, (list, tuple)):
    return int(size[0]), int(size[1])
  return int(size), int(size)


def _sizes(hf_config: dict) -> dict:
  """Model sizes from an HF ViT config, with HF's defaults."""
  hidden = int(hf_config.get('hidden_size', 768))
  heads = int(hf_config.get('num_attention_heads', 12))
  head_dim = hf_config.get('head_dim')
  if head_dim is None:
    if hidden % heads:
      raise ValueError(f'hidden_size {hidden} is not a multiple of '
                       f'num_attention_heads {heads}')
    head_dim = hidden // heads
  patch = int(hf_config.get('patch_size', 16))
  height, width = _image_size(hf_config)
  if height % patch or width % patch:
    raise ValueError(f'image_size {(height, width)} is not a multiple of '
                     f'patch_size {patch}')
  return dict(hidden=hidden, heads=heads, head_dim=int(head_dim), patch=patch,
              channels=int(hf_config.get('num_channels', 3)),
              layers=int(hf_config.get('num_hidden_layers', 12)),
              mlp=int(hf_config.get('intermediate_size', 3072)),
              tokens=(height // patch) * (width // patch) + 1)


def num_labels(hf_config: dict) -> int:
  """The checkpoint's label count, as HF derives it (id2label wins)."""
  if hf_config.get('id2label'):
    return len(hf_config['id2label'])
  return int(hf_config.get('num_labels', 2))


def vit_from_hf_config(hf_config: dict,
                       num_classes: Optional[int] = None) -> ViT:
  """Our ViT with the sizes of an HF ViT config.

  Args:
    hf_config: the parsed `config.json`.
    num_classes: classifier width; defaults to the checkpoint's label count.

  Returns:
    A `ViT` (uniform heads / MLP width) that `convert_hf_vit` params fit.
  """
  act = hf_config.get('hidden_act', 'gelu')
  if act != 'gelu':
    raise ValueError(f'hidden_act {act!r} is not supported: our ViT uses the '
                     "exact GELU (HF 'gelu')")
  s = _sizes(hf_config)
  return ViT(num_classes=num_labels(hf_config) if num_classes is None
             else int(num_classes),
             patch_size=s['patch'],
             hidden_size=s['hidden'],
             num_layers=s['layers'],
             num_heads=s['heads'],
             mlp_dim=s['mlp'],
             head_dim=s['head_dim'],
             layer_norm_eps=float(hf_config.get('layer_norm_eps', 1e-12)))


class TorchModules:
  """torch modules as flax params, for a reader with `get(name, shape)`."""

  def layer_norm(self, name: str, dim: int) -> dict:
    """A torch LayerNorm `name` as flax LayerNorm params."""
    return {'scale': self.get(f'{name}.weight', (dim,)),
            'bias': self.get(f'{name}.bias', (dim,))}

  def dense(self, name: str, n_in: int, n_out: int) -> dict:
    """A torch Linear `name` ((out, in) weight) as flax Dense params."""
    return {'kernel': self.get(f'{name}.weight', (n_out, n_in)).T,
            'bias': self.get(f'{name}.bias', (n_out,))}


class _Reader(TorchModules):
  """Takes tensors out of a state dict by name, checking their shapes."""

  def __init__(self, state: dict):
    self.state, self.original = {}, {}
    for original, value in state.items():
      name = original[len('vit.'):] if original.startswith('vit.') else original
      if name in self.state:
        raise ValueError(f'tensor {name!r} appears with and without the '
                         "'vit.' prefix")
      self.state[name], self.original[name] = value, original
    self.used = set()

  def has(self, name: str) -> bool:
    return name in self.state

  def get(self, name: str, shape: tuple) -> np.ndarray:
    if name not in self.state:
      raise ValueError(f'missing tensor {name!r} (or {"vit." + name!r}), '
                       f'expected shape {tuple(shape)}')
    value = np.asarray(self.state[name])
    if value.shape != tuple(shape):
      raise ValueError(f'tensor {self.original[name]!r} has shape '
                       f'{value.shape}, expected {tuple(shape)}')
    self.used.add(name)
    return value.astype(np.float32)

  def first(self, prefix: str, names: tuple) -> str:
    """The first `prefix + name` with a weight (the first one if none has)."""
    return next((prefix + n for n in names if f'{prefix}{n}.weight'
                 in self.state), prefix + names[0])

  def unused(self) -> list:
    return sorted(self.original[n] for n in self.state if n not in self.used
                  and not n.startswith(_IGNORED_PREFIXES))


def convert_hf_vit(state: dict, hf_config: dict) -> dict:
  """Maps an HF ViT state dict (name -> numpy array) to our param tree.

  Args:
    state: the checkpoint's tensors, with or without the `vit.` prefix.
    hf_config: the parsed `config.json`; it fixes every expected shape.

  Returns:
    The `params` tree of `vit_from_hf_config(hf_config)`, float32 numpy. It
    has no `head` when the checkpoint has no classifier (a `ViTModel`).

  Raises:
    ValueError: a tensor is missing, has an unexpected shape, or is not used
      (other than the pooler).
  """
  s = _sizes(hf_config)
  d, h, dh, f = s['hidden'], s['heads'], s['head_dim'], s['mlp']
  p, c = s['patch'], s['channels']
  r = _Reader(state)

  layer_norm = lambda name: r.layer_norm(name, d)  # noqa: E731
  dense = r.dense

  def qkv(name):
    kernel = r.get(f'{name}.weight', (h * dh, d)).T.reshape(d, h, dh)
    if r.has(f'{name}.bias') or hf_config.get('qkv_bias', True):
      bias = r.get(f'{name}.bias', (h * dh,)).reshape(h, dh)
    else:  # qkv_bias=False: our DenseGeneral always has a bias.
      bias = np.zeros((h, dh), np.float32)
    return {'kernel': kernel, 'bias': bias}

  proj = 'embeddings.patch_embeddings.projection'
  params = {
      'patch_embed': {
          'kernel': r.get(f'{proj}.weight', (d, c, p, p)).transpose(2, 3, 1, 0),
          'bias': r.get(f'{proj}.bias', (d,))},
      'cls': r.get('embeddings.cls_token', (1, 1, d)),
      'pos_embed': r.get('embeddings.position_embeddings',
                         (1, s['tokens'], d)),
  }
  legacy = any(n.startswith('encoder.layer.') for n in r.state)
  for i in range(s['layers']):
    prefix = f'encoder.layer.{i}.' if legacy else f'layers.{i}.'
    name = lambda ours: r.first(prefix, _LAYER_NAMES[ours])  # noqa: E731
    out = r.get(name('out') + '.weight', (d, h * dh))
    params[f'block_{i}'] = {
        'ln_attn': layer_norm(name('ln_attn')),
        'attn': {
            'query': qkv(name('query')),
            'key': qkv(name('key')),
            'value': qkv(name('value')),
            'out': {'kernel': out.T.reshape(h, dh, d),
                    'bias': r.get(name('out') + '.bias', (d,))}},
        'ln_mlp': layer_norm(name('ln_mlp')),
        'fc1': dense(name('fc1'), d, f),
        'fc2': dense(name('fc2'), f, d),
    }
  params['ln_final'] = layer_norm('layernorm')
  if r.has('classifier.weight'):
    k = num_labels(hf_config)
    params['head'] = dense('classifier', d, k)
  unused = r.unused()
  if unused:
    raise ValueError(f'{len(unused)} checkpoint tensors were not used (does '
                     f'config.json match the weights?): {unused[:10]}')
  return params


def checkpoint_files(path) -> tuple:
  """(config.json, weights file) for a checkpoint directory or file (any
  HF model family; the weights may be a sharded index)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    directory = path
    weights = os.path.join(path, WEIGHTS_NAME)
    if not os.path.isfile(weights):
      index = os.path.join(path, WEIGHTS_INDEX_NAME)
      if os.path.isfile(index):
        weights = index
      else:
        raise ValueError(f'no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME}) in '
                         f'{path}')
  elif os.path.isfile(path):
    directory, weights = os.path.dirname(path), path
  else:
    raise ValueError(f'no such checkpoint file or directory: {path}')
  config = os.path.join(directory, CONFIG_NAME)
  if not os.path.isfile(config):
    raise ValueError(f'no {CONFIG_NAME} beside the weights in '
                     f'{directory or "."}')
  return config, weights


def _load_file(path: str) -> dict:
  try:
    return load_file(path)
  except Exception as e:  # pylint: disable=broad-except
    # safetensors' own error type is not a ValueError: name the file.
    raise ValueError(f'{path} is not a readable safetensors file '
                     f'({" ".join(str(e).split())})') from e


def load_state(weights: str) -> dict:
  """Name -> numpy array of a safetensors file or of every shard a
  `model.safetensors.index.json` names."""
  if not weights.endswith('.json'):
    return _load_file(weights)
  try:
    with open(weights) as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
  except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
    raise ValueError(f'{weights} is not a safetensors index (JSON with a '
                     f'"weight_map" of tensor name -> shard file)') from e
  state = {}
  for shard in shards:
    shard_path = os.path.join(os.path.dirname(weights), shard)
    if not os.path.isfile(shard_path):
      raise ValueError(f'missing shard {shard_path} named in {weights}')
    state.update(_load_file(shard_path))
  return state


def read_config(path) -> dict:
  """The checkpoint's parsed config.json (checks the weights file exists)."""
  config_path, _ = checkpoint_files(path)
  try:
    with open(config_path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{config_path} is not valid JSON ({e.msg})') from e


def mismatches(hf_config: dict, model_config, image_size: int,
               channels: int) -> list:
  """What in an HF ViT config disagrees with config.model and the data."""
  s = _sizes(hf_config)
  wanted = {'hidden_size': ('hidden', model_config.hidden_size),
            'num_hidden_layers': ('layers', model_config.num_layers),
            'num_attention_heads': ('heads', model_config.num_heads),
            'intermediate_size': ('mlp', model_config.mlp_dim),
            'patch_size': ('patch', model_config.patch_size)}
  out = [f'{name} {s[key]} vs config.model {value}'
         for name, (key, value) in wanted.items() if s[key] != value]
  if s['channels'] != channels:
    out.append(f'num_channels {s["channels"]} vs the data\'s {channels}')
  if _image_size(hf_config) != (image_size, image_size):
    out.append(f'image_size {_image_size(hf_config)} vs config.data.'
               f'image_size {image_size} (position embeddings are not '
               f'interpolated)')
  act = hf_config.get('hidden_act', 'gelu')
  if act != 'gelu':
    out.append(f'hidden_act {act!r} (only the exact GELU is supported)')
  return out


def load_hf_vit(path, num_classes: Optional[int] = None, key=None):
  """Our ViT and its params from an HF ViT checkpoint.

  Args:
    path: a directory with `config.json` and `model.safetensors`, or the
      `.safetensors` file with `config.json` beside it.
    num_classes: classifier width. If it differs from the checkpoint's label
      count (or the checkpoint has no classifier), `head` is replaced by a
      fresh one: normal(initializer_range) kernel, zero bias. This is how an
      ImageNet model is fine-tuned on, e.g., CIFAR-100.
    key: PRNG key for a fresh head; defaults to `jax.random.key(0)`.

  Returns:
    (model, params): params is a tree of float32 jax arrays.
  """
  config_path, weights = checkpoint_files(path)
  with open(config_path) as f:
    hf_config = json.load(f)
  params = convert_hf_vit(load_state(weights), hf_config)
  model = vit_from_hf_config(hf_config, num_classes)
  if 'head' not in params or params['head']['bias'].shape[0] != (
      model.num_classes):
    if key is None:
      key = jax.random.key(0)
    std = float(hf_config.get('initializer_range', 0.02))
    d = model.hidden_size
    params['head'] = {
        'kernel': nn.initializers.normal(std)(key, (d, model.num_classes)),
        'bias': np.zeros((model.num_classes,), np.float32)}
  return model, jax.tree.map(jnp.asarray, params)
