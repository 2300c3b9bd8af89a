"""Import Hugging Face BERT weights into our `Bert`: `BertModel` and
`BertForSequenceClassification` (pre-training saves load without `cls.*`).

A checkpoint is a directory with `config.json` and `model.safetensors` (or a
sharded `model.safetensors.index.json`), as `save_pretrained` writes it; the
file reading is `hf_import`'s. Every name variant in the wild maps to one
canonical name first:

* a leading `bert.` (task-model saves) is stripped; `BertModel` saves have
  none. `classifier.*` sits outside the prefix either way;
* `LayerNorm.gamma` / `LayerNorm.beta` (classic and TF-converted
  checkpoints) become `LayerNorm.weight` / `LayerNorm.bias`;
* the buffers `embeddings.position_ids` / `embeddings.token_type_ids` (saved
  by transformers 3.x-4.30) and the pre-training heads `cls.*` are dropped.

Mapping (torch `nn.Linear` stores (out, in); embedding tables stay (rows, D)):

  embeddings.{word,position,token_type}_embeddings -> {...}_embeddings
  embeddings.LayerNorm -> ln_embed
  layer i: attention.self.{query,key,value} -> attn/{query,key,value}
    (D, H, Dh), attention.output.dense -> attn/out (H, Dh, D),
    attention.output.LayerNorm -> ln_attn, intermediate.dense -> fc1,
    output.dense -> fc2, output.LayerNorm -> ln_mlp
  pooler.dense -> pooler, classifier -> head.

Anything else left over is an error (a config that does not match the
weights would otherwise load silently wrong).
"""
import json
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from acme_jax.models import hf_import
from acme_jax.models.bert import Bert

_PREFIX = 'bert.'
_BUFFERS = ('embeddings.position_ids', 'embeddings.token_type_ids')
_DROPPED_PREFIXES = ('cls.',)  # MLM / NSP pre-training heads
_RENAMES = (('LayerNorm.gamma', 'LayerNorm.weight'),
            ('LayerNorm.beta', 'LayerNorm.bias'))
# Heads whose `classifier` reads the pooled output, as our `head` does.
_SEQUENCE_HEADS = ('BertForSequenceClassification',)


def _sizes(hf_config: dict) -> dict:
  """Model sizes from an HF BERT config, with HF's defaults; refuses the
  variants our model does not compute."""
  model_type = hf_config.get('model_type', 'bert')
  if model_type != 'bert':
    raise ValueError(f"model_type {model_type!r} is not 'bert'")
  act = hf_config.get('hidden_act', 'gelu')
  if act != 'gelu':
    raise ValueError(f'hidden_act {act!r} is not supported: our BERT uses '
                     "the exact GELU (HF 'gelu')")
  position = hf_config.get('position_embedding_type') or 'absolute'
  if position != 'absolute':
    raise ValueError(f'position_embedding_type {position!r} is not '
                     "supported (only 'absolute')")
  if hf_config.get('is_decoder') or hf_config.get('add_cross_attention'):
    raise ValueError('decoder BERT configs (is_decoder / '
                     'add_cross_attention) are not supported')
  hidden = int(hf_config.get('hidden_size', 768))
  heads = int(hf_config.get('num_attention_heads', 12))
  if hidden % heads:
    raise ValueError(f'hidden_size {hidden} is not a multiple of '
                     f'num_attention_heads {heads}')
  pad = hf_config.get('pad_token_id')
  return dict(hidden=hidden, heads=heads, head_dim=hidden // heads,
              layers=int(hf_config.get('num_hidden_layers', 12)),
              mlp=int(hf_config.get('intermediate_size', 3072)),
              vocab=int(hf_config.get('vocab_size', 30522)),
              positions=int(hf_config.get('max_position_embeddings', 512)),
              types=int(hf_config.get('type_vocab_size', 2)),
              eps=float(hf_config.get('layer_norm_eps', 1e-12)),
              pad=0 if pad is None else int(pad))


def _is_sequence_classifier(hf_config: dict) -> bool:
  return any(a in _SEQUENCE_HEADS for a in hf_config.get('architectures')
             or ())


def bert_from_hf_config(hf_config: dict, num_classes: Optional[int] = None,
                        pooler: bool = True) -> Bert:
  """Our Bert with the sizes of an HF BERT config.

  Args:
    hf_config: the parsed `config.json`.
    num_classes: classifier width; None: the config's label count for a
      `BertForSequenceClassification`, else 0 (no head: an encoder).
    pooler: whether the checkpoint has a pooler (a `BertForMaskedLM` has
      none); `load_hf_bert` sets it from the weights.
  """
  s = _sizes(hf_config)
  if num_classes is None:
    num_classes = (hf_import.num_labels(hf_config)
                   if _is_sequence_classifier(hf_config) else 0)
  return Bert(num_classes=int(num_classes), vocab_size=s['vocab'],
              hidden_size=s['hidden'], num_layers=s['layers'],
              num_heads=s['heads'], mlp_dim=s['mlp'], head_dim=s['head_dim'],
              max_positions=s['positions'], type_vocab_size=s['types'],
              layer_norm_eps=s['eps'], pad_id=s['pad'], pooler=bool(pooler))


def canonical_names(state: dict) -> dict:
  """Canonical name -> (name in the file, array), buffers and `cls.*` left
  out. Two file names that map to one canonical name are an error."""
  out = {}
  for original, value in state.items():
    name = original[len(_PREFIX):] if original.startswith(_PREFIX) else original
    for old, new in _RENAMES:
      if name.endswith(old):
        name = name[:-len(old)] + new
    if name in _BUFFERS or name.startswith(_DROPPED_PREFIXES):
      continue
    if name in out:
      raise ValueError(f'tensors {out[name][0]!r} and {original!r} both '
                       f'map to {name!r}')
    out[name] = (original, value)
  return out


class _Reader(hf_import.TorchModules):
  """Takes tensors by canonical name, checking shapes; remembers the used."""

  def __init__(self, state: dict):
    self.state = canonical_names(state)
    self.used = set()

  def has(self, name: str) -> bool:
    return name in self.state

  def get(self, name: str, shape: tuple) -> np.ndarray:
    if name not in self.state:
      raise ValueError(f'missing tensor {name!r} (or {_PREFIX + name!r}), '
                       f'expected shape {tuple(shape)}')
    original, value = self.state[name]
    value = np.asarray(value)
    if value.shape != tuple(shape):
      raise ValueError(f'tensor {original!r} has shape {value.shape}, '
                       f'expected {tuple(shape)} from config.json')
    self.used.add(name)
    return value.astype(np.float32)

  def unused(self) -> list:
    return sorted(original for name, (original, _) in self.state.items()
                  if name not in self.used)


def convert_hf_bert(state: dict, hf_config: dict) -> dict:
  """Maps an HF BERT state dict (name -> numpy array) to our param tree.

  Args:
    state: the checkpoint's tensors, in any of the name variants above.
    hf_config: the parsed `config.json`; it fixes every expected shape.

  Returns:
    The params of `bert_from_hf_config(hf_config)`, float32 numpy; `pooler`
    and `head` only where the checkpoint has them.

  Raises:
    ValueError: a tensor is missing, has an unexpected shape, or is unused.
  """
  s = _sizes(hf_config)
  d, h, dh, f = s['hidden'], s['heads'], s['head_dim'], s['mlp']
  r = _Reader(state)

  layer_norm = lambda name: r.layer_norm(name, d)  # noqa: E731
  dense = r.dense

  def qkv(name):
    return {'kernel': r.get(f'{name}.weight', (h * dh, d)).T.reshape(d, h, dh),
            'bias': r.get(f'{name}.bias', (h * dh,)).reshape(h, dh)}

  def table(name, rows):
    return {'embedding': r.get(f'embeddings.{name}.weight', (rows, d))}

  params = {
      'word_embeddings': table('word_embeddings', s['vocab']),
      'position_embeddings': table('position_embeddings', s['positions']),
      'token_type_embeddings': table('token_type_embeddings', s['types']),
      'ln_embed': layer_norm('embeddings.LayerNorm'),
  }
  for i in range(s['layers']):
    p = f'encoder.layer.{i}.'
    out = r.get(f'{p}attention.output.dense.weight', (d, h * dh))
    params[f'block_{i}'] = {
        'attn': {
            'query': qkv(f'{p}attention.self.query'),
            'key': qkv(f'{p}attention.self.key'),
            'value': qkv(f'{p}attention.self.value'),
            'out': {'kernel': out.T.reshape(h, dh, d),
                    'bias': r.get(f'{p}attention.output.dense.bias', (d,))}},
        'ln_attn': layer_norm(f'{p}attention.output.LayerNorm'),
        'fc1': dense(f'{p}intermediate.dense', d, f),
        'fc2': dense(f'{p}output.dense', f, d),
        'ln_mlp': layer_norm(f'{p}output.LayerNorm'),
    }
  if r.has('pooler.dense.weight'):
    params['pooler'] = dense('pooler.dense', d, d)
  if r.has('classifier.weight'):
    archs = hf_config.get('architectures') or ()
    if archs and not _is_sequence_classifier(hf_config):
      raise ValueError(f'the classifier of {list(archs)} is not supported '
                       f'(only {", ".join(_SEQUENCE_HEADS)}: logits from '
                       f'the pooled output)')
    params['head'] = dense('classifier', d, hf_import.num_labels(hf_config))
  unused = r.unused()
  if unused:
    raise ValueError(f'{len(unused)} checkpoint tensors were not used (does '
                     f'config.json match the weights?): {unused[:10]}')
  return params


def load_hf_bert(path, num_classes: Optional[int] = None, key=None):
  """Our Bert and its params from an HF BERT checkpoint.

  Args:
    path: a directory with `config.json` and `model.safetensors` (or a
      sharded index), or the weights file with `config.json` beside it.
    num_classes: classifier width. None: the checkpoint's classifier, or no
      head when it has none (an encoder such as all-MiniLM-L6-v2). 0: no
      head. Any other width than the checkpoint's gets a fresh head:
      normal(initializer_range) kernel, zero bias.
    key: PRNG key for a fresh head; defaults to `jax.random.key(0)`.

  Returns:
    (model, params): params is a tree of float32 jax arrays.
  """
  config_path, weights = hf_import.checkpoint_files(path)
  with open(config_path) as f:
    try:
      hf_config = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{config_path} is not valid JSON ({e.msg})') from e
  try:
    params = convert_hf_bert(hf_import.load_state(weights), hf_config)
  except ValueError as e:
    raise ValueError(f'{weights} (with {config_path}): {e}') from e
  have = params['head']['bias'].shape[0] if 'head' in params else 0
  num_classes = have if num_classes is None else int(num_classes)
  model = bert_from_hf_config(hf_config, num_classes,
                              pooler='pooler' in params)
  if num_classes == 0:
    params.pop('head', None)
  elif num_classes != have:
    if key is None:
      key = jax.random.key(0)
    std = float(hf_config.get('initializer_range', 0.02))
    params['head'] = {
        'kernel': nn.initializers.normal(std)(key, (model.hidden_size,
                                                    num_classes)),
        'bias': np.zeros((num_classes,), np.float32)}
  return model, jax.tree.map(jnp.asarray, params)
