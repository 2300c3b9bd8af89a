"""Hugging Face decoders both ways: import Llama / Qwen2 / Mistral, export any
subnet as an ordinary, smaller model of the same architecture.

Import reads a local directory (config.json, model.safetensors or a sharded
index; bfloat16 weights become float32: safetensors reads them as
ml_dtypes' bfloat16). Config fields are read as
transformers 4 writes them (`rope_theta`, `rope_scaling`) and as 5 does
(`rope_parameters`). A feature whose computation is not ours (another
activation, Qwen2's per-layer sliding window, a rope type we do not
compute) is refused in one line naming it.

Mapping (torch Linear weights are (out, in)):

  model.embed_tokens            -> embed/embedding (V, D)
  model.layers.i.input_layernorm / post_attention_layernorm
                                -> block_i/ln_attn, ln_mlp (scale)
  self_attn.{q,k,v}_proj        -> attn/{q,k,v} kernel (D, N, hd), bias (N, hd)
  self_attn.o_proj              -> attn/o kernel (H, hd, D)
  mlp.{gate,up,down}_proj       -> gate, up, down (Dense)
  model.norm -> final_norm; lm_head -> lm_head (absent when tied);
  score (…ForSequenceClassification) -> head

Export writes the inverse: config.json with the subnet's sizes (its layer
count, query and KV heads and intermediate size; per-layer sizes must be
uniform, as HF's config has one of each), model.safetensors, and the
checkpoint's tokenizer files when there are some.
"""
import json
import os
import pathlib
import shutil
from typing import Optional

import numpy as np

from acme_jax.models import decoder as decoder_lib
from acme_jax.models import hf_import
from acme_jax.models.encoder import per_layer

ARCHITECTURES = {'llama': 'LlamaForCausalLM', 'qwen2': 'Qwen2ForCausalLM',
                 'mistral': 'MistralForCausalLM'}
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json',
                   'special_tokens_map.json', 'generation_config.json')


def _rope(hf_config: dict):
  """(theta, scaling as sorted pairs or None) from either config style."""
  params = dict(hf_config.get('rope_parameters') or {})
  legacy = hf_config.get('rope_scaling') or {}
  theta = float(params.get('rope_theta', hf_config.get('rope_theta', 10000.0)))
  scaling = {k: v for k, v in (params or legacy).items() if k != 'rope_theta'}
  kind = scaling.get('rope_type', scaling.get('type', 'default'))
  if kind not in decoder_lib.ROPE_TYPES:
    raise ValueError(f'rope_type {kind!r} is not supported (one of '
                     f'{", ".join(decoder_lib.ROPE_TYPES)})')
  if kind == 'default':
    return theta, None
  needed = {'linear': ('factor',),
            'llama3': ('factor', 'low_freq_factor', 'high_freq_factor',
                       'original_max_position_embeddings')}[kind]
  missing = [k for k in needed if k not in scaling]
  if missing:
    raise ValueError(f'rope_type {kind!r} needs {", ".join(missing)}')
  # HF reads original_max_position_embeddings as an integer.
  typed = lambda k, v: int(v) if k.startswith('original_') else float(v)  # noqa: E731
  return theta, tuple(sorted([('rope_type', kind)] +
                             [(k, typed(k, scaling[k])) for k in needed]))


def unsupported(hf_config: dict) -> list:
  """What in an HF decoder config our computation does not do."""
  out = []
  model_type = hf_config.get('model_type')
  if model_type not in ARCHITECTURES:
    out.append(f'model_type {model_type!r} (one of {", ".join(ARCHITECTURES)})')
  act = hf_config.get('hidden_act', 'silu')
  if act != 'silu':
    out.append(f'hidden_act {act!r} (SwiGLU with silu only)')
  if model_type == 'qwen2' and hf_config.get('use_sliding_window'):
    out.append('use_sliding_window true (per-layer windows)')
  if float(hf_config.get('partial_rotary_factor', 1.0)) != 1.0:
    out.append(f'partial_rotary_factor {hf_config["partial_rotary_factor"]}')
  heads = hf_config.get('num_attention_heads', 1)
  groups = hf_config.get('num_key_value_heads') or heads
  if heads % groups:
    out.append(f'num_attention_heads {heads} not a multiple of '
               f'num_key_value_heads {groups}')
  return out


def decoder_from_hf_config(hf_config: dict, num_classes: int = 0,
                           lm_head: bool = True) -> decoder_lib.Decoder:
  problems = unsupported(hf_config)
  if problems:
    raise ValueError('unsupported decoder config: ' + '; '.join(problems))
  theta, scaling = _rope(hf_config)
  model_type = hf_config['model_type']
  heads = int(hf_config['num_attention_heads'])
  window = hf_config.get('sliding_window') if model_type == 'mistral' else None
  pad = hf_config.get('pad_token_id')
  return decoder_lib.Decoder(
      num_classes=num_classes,
      vocab_size=int(hf_config['vocab_size']),
      hidden_size=int(hf_config['hidden_size']),
      num_layers=int(hf_config['num_hidden_layers']),
      num_heads=heads,
      num_kv_heads=int(hf_config.get('num_key_value_heads') or heads),
      mlp_dim=int(hf_config['intermediate_size']),
      head_dim=int(hf_config.get('head_dim') or
                   hf_config['hidden_size'] // heads),
      rms_norm_eps=float(hf_config.get('rms_norm_eps', 1e-6)),
      rope_theta=theta, rope_scaling=scaling,
      qkv_bias=(model_type == 'qwen2' or
                bool(hf_config.get('attention_bias', False))),
      o_bias=model_type == 'llama' and bool(hf_config.get('attention_bias')),
      mlp_bias=bool(hf_config.get('mlp_bias', False)),
      tie_word_embeddings=bool(hf_config.get('tie_word_embeddings', False)),
      sliding_window=None if window is None else int(window),
      max_positions=int(hf_config.get('max_position_embeddings', 2048)),
      pad_id=int(pad) if isinstance(pad, int) else 0,
      lm_head=lm_head)


class _Reader(hf_import.TorchModules):
  def __init__(self, state: dict):
    self.state = state
    self.used = set()

  def has(self, name):
    return name in self.state

  def get(self, name, shape):
    if name not in self.state:
      raise ValueError(f'missing tensor {name!r}, expected shape {shape}')
    value = np.asarray(self.state[name], np.float32)
    if value.shape != tuple(shape):
      raise ValueError(f'tensor {name!r} has shape {value.shape}, expected '
                       f'{tuple(shape)}')
    self.used.add(name)
    return value

  def linear(self, name, n_in, n_out, bias):
    out = {'kernel': self.get(f'{name}.weight', (n_out, n_in)).T}
    if bias:
      out['bias'] = self.get(f'{name}.bias', (n_out,))
    return out


def convert(state: dict, model: decoder_lib.Decoder) -> dict:
  """An HF decoder state dict (name -> array) as our param tree."""
  r = _Reader(state)
  d, hd, v = model.hidden_size, model.resolved_head_dim(), model.vocab_size
  params = {'embed': {'embedding': r.get('model.embed_tokens.weight', (v, d))},
            'final_norm': {'scale': r.get('model.norm.weight', (d,))}}
  heads = per_layer(model.num_heads, model.num_layers)
  groups = per_layer(model.num_kv_heads, model.num_layers)
  mlp = per_layer(model.mlp_dim, model.num_layers)
  for i in range(model.num_layers):
    p = f'model.layers.{i}.'
    attn = {}
    for name, n in (('q', heads[i]), ('k', groups[i]), ('v', groups[i])):
      lin = r.linear(f'{p}self_attn.{name}_proj', d, n * hd, model.qkv_bias)
      attn[name] = {'kernel': lin['kernel'].reshape(d, n, hd)}
      if model.qkv_bias:
        attn[name]['bias'] = lin['bias'].reshape(n, hd)
    o = r.linear(f'{p}self_attn.o_proj', heads[i] * hd, d, model.o_bias)
    attn['o'] = dict(o, kernel=o['kernel'].reshape(heads[i], hd, d))
    params[f'block_{i}'] = {
        'ln_attn': {'scale': r.get(f'{p}input_layernorm.weight', (d,))},
        'ln_mlp': {'scale': r.get(f'{p}post_attention_layernorm.weight',
                                  (d,))},
        'attn': attn,
        'gate': r.linear(f'{p}mlp.gate_proj', d, mlp[i], model.mlp_bias),
        'up': r.linear(f'{p}mlp.up_proj', d, mlp[i], model.mlp_bias),
        'down': r.linear(f'{p}mlp.down_proj', mlp[i], d, model.mlp_bias)}
  if model.lm_head and not model.tie_word_embeddings:
    params['lm_head'] = r.linear('lm_head', d, v, False)
  elif model.tie_word_embeddings and r.has('lm_head.weight'):
    r.get('lm_head.weight', (v, d))  # a tied copy some writers store
  if r.has('score.weight'):
    labels = np.asarray(state['score.weight']).shape[0]
    params['head'] = r.linear('score', d, labels, False)
  unused = sorted(set(state) - r.used)
  if unused:
    raise ValueError(f'{len(unused)} tensors were not used (does config.json '
                     f'match the weights?): {unused[:5]}')
  return params


def load(path, num_classes: Optional[int] = None):
  """(model, params) of an HF Llama / Qwen2 / Mistral directory (a causal
  LM, a sequence classifier, or a base model).

  `num_classes` None keeps a sequence classifier's `score` as `head`
  (none for a causal LM); a number adds no head here: the caller draws a
  fresh one (`cloud.stage.build_model`)."""
  _, weights = hf_import.checkpoint_files(path)
  hf_config = hf_import.read_config(path)
  state = hf_import.load_state(weights)
  if 'embed_tokens.weight' in state:  # a base model (LlamaModel): no prefix
    state = {f'model.{k}': v for k, v in state.items()}
  # A sequence classifier (…ForSequenceClassification) has no LM head.
  tied = bool(hf_config.get('tie_word_embeddings', False))
  model = decoder_from_hf_config(hf_config,
                                 lm_head=tied or 'lm_head.weight' in state)
  params = convert(state, model)
  if 'head' in params and num_classes is None:
    model = model.clone(num_classes=params['head']['kernel'].shape[1])
  else:
    params.pop('head', None)
  return model, params


def hf_config_for(model: decoder_lib.Decoder, base: dict) -> dict:
  """`base` (the imported checkpoint's config.json, or {}) with `model`'s
  sizes: what transformers builds the exported subnet from."""
  layers = model.num_layers
  sizes = {name: set(per_layer(value, layers)) for name, value in
           (('heads', model.num_heads), ('groups', model.num_kv_heads),
            ('mlp', model.mlp_dim))}
  ragged = [n for n, s in sizes.items() if len(s) != 1]
  if ragged:
    raise ValueError(f'a Hugging Face config has one size per model; this '
                     f'subnet varies per layer in {", ".join(ragged)}')
  out = dict(base)
  model_type = out.get('model_type') or ('qwen2' if model.qkv_bias and not
                                         model.o_bias else 'llama')
  theta = model.rope_theta
  rope = {'rope_theta': theta, 'rope_type': 'default'}
  rope.update(dict(model.rope_scaling or ()))
  out.update(model_type=model_type,
             architectures=[ARCHITECTURES[model_type]],
             vocab_size=model.vocab_size, hidden_size=model.hidden_size,
             num_hidden_layers=layers,
             num_attention_heads=sizes['heads'].pop(),
             num_key_value_heads=sizes['groups'].pop(),
             intermediate_size=sizes['mlp'].pop(),
             head_dim=model.resolved_head_dim(),
             rms_norm_eps=model.rms_norm_eps, hidden_act='silu',
             tie_word_embeddings=model.tie_word_embeddings,
             max_position_embeddings=model.max_positions,
             rope_theta=theta, rope_parameters=rope)
  out.pop('rope_scaling', None)
  if model.rope_scaling:
    out['rope_scaling'] = dict(model.rope_scaling)
  if model_type == 'llama':
    out.update(attention_bias=model.qkv_bias, mlp_bias=model.mlp_bias)
  if model_type == 'qwen2':
    out.update(use_sliding_window=False, max_window_layers=layers,
               layer_types=['full_attention'] * layers)
  out.pop('torch_dtype', None)
  out['dtype'] = 'float32'
  return out


def to_state(model: decoder_lib.Decoder, params) -> dict:
  """Our params as an HF causal-LM state dict (name -> float32 numpy)."""
  params = {k: v for k, v in params.items()}
  state = {'model.embed_tokens.weight': params['embed']['embedding'],
           'model.norm.weight': params['final_norm']['scale']}
  for i in range(model.num_layers):
    b, p = params[f'block_{i}'], f'model.layers.{i}.'
    state[f'{p}input_layernorm.weight'] = b['ln_attn']['scale']
    state[f'{p}post_attention_layernorm.weight'] = b['ln_mlp']['scale']
    for name in ('q', 'k', 'v'):
      kernel = np.asarray(b['attn'][name]['kernel'])
      state[f'{p}self_attn.{name}_proj.weight'] = kernel.reshape(
          kernel.shape[0], -1).T
      if 'bias' in b['attn'][name]:
        state[f'{p}self_attn.{name}_proj.bias'] = np.asarray(
            b['attn'][name]['bias']).reshape(-1)
    o = np.asarray(b['attn']['o']['kernel'])
    state[f'{p}self_attn.o_proj.weight'] = o.reshape(-1, o.shape[-1]).T
    if 'bias' in b['attn']['o']:
      state[f'{p}self_attn.o_proj.bias'] = b['attn']['o']['bias']
    for name in ('gate', 'up', 'down'):
      state[f'{p}mlp.{name}_proj.weight'] = np.asarray(b[name]['kernel']).T
      if 'bias' in b[name]:
        state[f'{p}mlp.{name}_proj.bias'] = b[name]['bias']
  if not model.tie_word_embeddings:
    state['lm_head.weight'] = np.asarray(params['lm_head']['kernel']).T
  return {k: np.ascontiguousarray(np.asarray(v, np.float32))
          for k, v in state.items()}


def export(model: decoder_lib.Decoder, params, output, base_config=None,
           tokenizer_dir=None) -> pathlib.Path:
  """Writes `model` (an extracted subnet, with its LM head) as an HF
  directory: into a temporary folder beside `output`, then renamed, so
  `output` is complete or absent."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  output = pathlib.Path(output)
  if output.exists():
    raise ValueError(f'{output} exists; give a new directory')
  config = hf_config_for(model, dict(base_config or {}))
  state = to_state(model, params)
  tmp = output.with_name(f'.{output.name}.acme-tmp')
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  try:
    with open(tmp / hf_import.CONFIG_NAME, 'w') as f:
      json.dump(config, f, indent=2, sort_keys=True)
      f.write('\n')
    save_file(state, str(tmp / hf_import.WEIGHTS_NAME),
              metadata={'format': 'pt'})
    if tokenizer_dir is not None:
      for name in TOKENIZER_FILES:
        source = pathlib.Path(tokenizer_dir) / name
        if source.is_file():
          shutil.copyfile(source, tmp / name)
    os.rename(tmp, output)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return output
