"""BERT: the supernet's masks vs extracted subnets, and the Hugging Face
import against torch-generated fixtures (no torch needed).

Fixtures (tests/fixtures/make_hf_bert_fixture.py): one tiny random
BertForSequenceClassification saved whole (hf_bert_tiny), sharded
(hf_bert_tiny_sharded) and as the bare BertModel without the 'bert.' prefix
(hf_bert_tiny_base). Classic names (LayerNorm.gamma/beta, the position_ids
buffer, cls.* pre-training heads) are made here by renaming the same
tensors, so every variant must give the same outputs.

Matmuls run at 'highest' precision: a GPU's default may use TF32 passes.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from acme_jax.models import bert, hf_bert, subnet

HERE = os.path.join(os.path.dirname(__file__), 'fixtures')
TINY = os.path.join(HERE, 'hf_bert_tiny')
BASE = os.path.join(HERE, 'hf_bert_tiny_base')
SHARDED = os.path.join(HERE, 'hf_bert_tiny_sharded')
# float32 on both sides; measured max |diff| ~1.6e-6 (hidden states),
# ~6e-7 (logits) on CPU.
TOL = 1e-5


def _expected(folder=TINY):
  name = BASE if folder == BASE else TINY
  return dict(np.load(os.path.join(name, 'expected.npz')))


def _config(folder=TINY):
  with open(os.path.join(folder, 'config.json')) as f:
    return json.load(f)


def _apply(model, params, e, **kw):
  with jax.default_matmul_precision('highest'):
    return model.apply({'params': params}, jnp.asarray(e['input_ids']),
                       attention_mask=jnp.asarray(e['attention_mask']),
                       token_type_ids=jnp.asarray(e['token_type_ids']), **kw)


def _close(a, b, tol=TOL):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=tol)


def _write(directory, state, config):
  os.makedirs(directory, exist_ok=True)
  save_file(state, os.path.join(directory, 'model.safetensors'))
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(config, f)
  return str(directory)


@pytest.fixture(scope='module')
def tiny():
  return hf_bert.load_hf_bert(TINY)


# --- Import: every layout against torch ---------------------------------


@pytest.mark.parametrize('folder', [TINY, SHARDED, BASE])
def test_import_matches_torch_at_every_position(folder):
  model, params = hf_bert.load_hf_bert(folder)
  e = _expected(folder)
  out = _apply(model, params, e)
  # Padded positions too: HF masks padding as keys only.
  _close(out['tokens'], e['last_hidden_state'])
  _close(out['hidden'][-1], out['tokens'], 0)
  _close(out['pooled'], e['pooler_output'])
  if folder == BASE:
    assert model.num_classes == 0 and 'head' not in params
    assert 'logits' not in out
  else:
    assert model.num_classes == 3
    _close(out['logits'], e['logits'])
    _close(out['logits'], e['logits_float64'])
    _close(out['embeddings'], e['hidden_states'][0])
    _close(out['hidden'], e['hidden_states'][1:])


def test_model_sizes_from_config(tiny):
  model, params = tiny
  assert (model.vocab_size, model.hidden_size, model.num_layers,
          model.num_heads, model.mlp_dim, model.head_dim, model.max_positions,
          model.type_vocab_size, model.layer_norm_eps, model.pad_id,
          model.pooler) == (99, 32, 2, 4, 64, 8, 40, 2, 1e-12, 0, True)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 5), jnp.int32))['params']
  assert (jax.tree.map(lambda x: (x.shape, x.dtype), params)
          == jax.tree.map(lambda x: (x.shape, x.dtype), shapes))


def test_default_mask_is_ids_not_pad_and_jit(tiny):
  model, params = tiny
  e = _expected()
  with jax.default_matmul_precision('highest'):
    out = jax.jit(lambda p, ids, types: model.apply(
        {'params': p}, ids, token_type_ids=types))(
            params, e['input_ids'], e['token_type_ids'])
  _close(out['tokens'], e['last_hidden_state'])
  _close(out['logits'], e['logits'])


def test_full_masks_and_layer_gates_give_the_same_outputs(tiny):
  model, params = tiny
  e = _expected()
  masked = _apply(model, params, e, masks=bert.full_masks(model))
  _close(masked['logits'], e['logits'])
  gated = _apply(model, params, e, layer_gates=jnp.ones((2,)))
  _close(gated['tokens'], e['last_hidden_state'])


def test_every_tensor_matters(tiny):
  """Each imported tensor moves the outputs, so the fixture checks the whole
  mapping. The key bias is the exception (q . b_k is constant along a
  softmax row, which cancels it), as are the unused rows of tables."""
  model, params = tiny
  e = _expected()
  forward = jax.jit(lambda p: _apply(model, p, e)['logits'])
  base = forward(params)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  rng = np.random.default_rng(0)
  for i, (path, leaf) in enumerate(flat):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" in name:
      continue
    leaves = [x for _, x in flat]
    leaves[i] = leaf + 0.1 * rng.standard_normal(leaf.shape, np.float32)
    assert float(jnp.abs(forward(jax.tree.unflatten(treedef, leaves))
                         - base).max()) > 100 * TOL, name


def test_classic_names_buffers_and_pretraining_heads(tmp_path):
  state = load_file(os.path.join(TINY, 'model.safetensors'))
  classic = {k.replace('LayerNorm.weight', 'LayerNorm.gamma')
             .replace('LayerNorm.bias', 'LayerNorm.beta'): v
             for k, v in state.items()}
  assert sum('gamma' in k for k in classic) == 5
  classic['bert.embeddings.position_ids'] = np.arange(40)[None].astype(
      np.int64)
  classic['bert.embeddings.token_type_ids'] = np.zeros((1, 40), np.int64)
  classic['cls.predictions.bias'] = np.zeros((99,), np.float32)
  classic['cls.predictions.transform.LayerNorm.gamma'] = np.ones(
      (32,), np.float32)
  classic['cls.seq_relationship.weight'] = np.zeros((2, 32), np.float32)
  model, params = hf_bert.load_hf_bert(
      _write(tmp_path / 'classic', classic, _config()))
  e = _expected()
  out = _apply(model, params, e)
  _close(out['tokens'], e['last_hidden_state'])
  _close(out['logits'], e['logits'])
  # The bare model, classic names, buffer and no prefix.
  base = {k[len('bert.'):]: v for k, v in classic.items()
          if k.startswith('bert.')}
  model, params = hf_bert.load_hf_bert(
      _write(tmp_path / 'classic_base', base, _config(BASE)))
  _close(_apply(model, params, e)['pooled'], e['pooler_output'])


def test_heads(tiny, tmp_path):
  e = _expected()
  model, params = hf_bert.load_hf_bert(TINY, num_classes=3)
  _close(params['head']['kernel'], tiny[1]['head']['kernel'], 0)
  model, params = hf_bert.load_hf_bert(TINY, num_classes=0)
  assert model.num_classes == 0 and 'head' not in params
  assert 'logits' not in _apply(model, params, e)
  model, params = hf_bert.load_hf_bert(TINY, num_classes=7,
                                       key=jax.random.key(3))
  assert params['head']['kernel'].shape == (32, 7)
  assert float(jnp.abs(params['head']['bias']).max()) == 0
  assert 0 < float(jnp.std(params['head']['kernel'])) < 0.05
  _close(_apply(model, params, e)['tokens'], e['last_hidden_state'])
  model, params = hf_bert.load_hf_bert(BASE, num_classes=4)
  assert _apply(model, params, e)['logits'].shape == (3, 4)
  # Without a pooler (a BertForMaskedLM save), logits read token 0.
  state = load_file(os.path.join(TINY, 'model.safetensors'))
  state = {k: v for k, v in state.items() if 'pooler' not in k}
  model, params = hf_bert.load_hf_bert(
      _write(tmp_path / 'nopool', state, _config()))
  assert not model.pooler and 'pooler' not in params
  out = _apply(model, params, e)
  assert 'pooled' not in out and out['logits'].shape == (3, 3)
  _close(out['tokens'], e['last_hidden_state'])


def test_clear_errors(tmp_path):
  state = load_file(os.path.join(TINY, 'model.safetensors'))
  missing = dict(state)
  del missing['bert.encoder.layer.1.output.LayerNorm.weight']
  path = _write(tmp_path / 'missing', missing, _config())
  with pytest.raises(ValueError, match=r"model.safetensors.*missing tensor "
                     r"'encoder.layer.1.output.LayerNorm.weight'"):
    hf_bert.load_hf_bert(path)
  extra = dict(state, **{'bert.encoder.layer.2.output.dense.bias':
                         np.zeros((32,), np.float32)})
  with pytest.raises(ValueError, match=r'not used.*layer\.2\.output'):
    hf_bert.load_hf_bert(_write(tmp_path / 'extra', extra, _config()))
  both = dict(state, **{'bert.embeddings.LayerNorm.gamma':
                        state['bert.embeddings.LayerNorm.weight']})
  with pytest.raises(ValueError, match='both map to'):
    hf_bert.convert_hf_bert(both, _config())
  with pytest.raises(ValueError, match=r"shape \(99, 32\), expected "
                     r"\(98, 32\)"):
    hf_bert.convert_hf_bert(state, dict(_config(), vocab_size=98))
  with pytest.raises(ValueError, match='gelu_new'):
    hf_bert.bert_from_hf_config(dict(_config(), hidden_act='gelu_new'))
  with pytest.raises(ValueError, match='relative_key'):
    hf_bert.bert_from_hf_config(
        dict(_config(), position_embedding_type='relative_key'))
  with pytest.raises(ValueError, match='BertForTokenClassification'):
    hf_bert.convert_hf_bert(
        state, dict(_config(), architectures=['BertForTokenClassification']))
  shards = shutil.copytree(SHARDED, tmp_path / 'shards')
  os.remove(shards / 'model-00002-of-00003.safetensors')
  with pytest.raises(ValueError, match='missing shard'):
    hf_bert.load_hf_bert(str(shards))


# --- The supernet: masks vs extraction ------------------------------------
# The imported fixture is the supernet (2 layers, 4 heads of 8, MLP 64): real
# random weights and padded inputs, and no init to compile.


def test_bert_from_config():
  cfg = ml_collections.ConfigDict(dict(
      hidden_size=16, num_layers=3, num_heads=4, mlp_dim=16,
      layer_norm_eps=1e-6, dtype='bfloat16'))
  model = bert.bert_from_config(cfg, num_classes=3, vocab_size=20)
  assert (model.head_dim, model.max_positions, model.layer_norm_eps,
          model.pad_id, model.dtype) == (4, 512, 1e-6, 0, jnp.bfloat16)
  cfg.max_positions = 10
  model = bert.bert_from_config(cfg, num_classes=3, vocab_size=20)
  params = jax.eval_shape(lambda k: bert.init_params(model, k, 10),
                          jax.random.key(0))
  assert params['position_embeddings']['embedding'].shape == (10, 16)
  assert params['word_embeddings']['embedding'].dtype == jnp.float32


_MASKED = {}


def _masked(model, params, e, masks):
  """One compiled masked forward per supernet: masks are data."""
  if model not in _MASKED:
    _MASKED[model] = jax.jit(lambda p, ids, mask, types, m: model.apply(
        {'params': p}, ids, masks=m, attention_mask=mask,
        token_type_ids=types))
  with jax.default_matmul_precision('highest'):
    return _MASKED[model](params, e['input_ids'], e['attention_mask'],
                          e['token_type_ids'], masks)


SUBNETS = [
    (1.0, 1.0), (0.5, 1.0), (0.75, 0.5), (0.25, 0.5),
    subnet.SubnetConfig((1,), (3,), (40,)),  # first layer dropped
    subnet.SubnetConfig((0, 1), (1, 4), (64, 5)),  # per-layer widths
]


@pytest.mark.parametrize('sub', SUBNETS, ids=str)
def test_masked_equals_extracted(tiny, sub):
  model, params = tiny
  e = _expected()
  cfg = sub if isinstance(sub, subnet.SubnetConfig) else subnet.for_model(
      model, *sub)
  masked = _masked(model, params, e, subnet.masks(model, cfg))
  sub_model, dense = subnet.extract(model, params, cfg, with_head=True)
  out = _apply(sub_model, dense, e)
  _close(out['hidden'], masked['hidden'][np.array(cfg.layers)])
  for name in ('embeddings', 'tokens', 'pooled', 'logits'):
    _close(out[name], masked[name])
  # The static form (width slice + skipped layers, or extraction for
  # per-layer widths) that grid measurement and features run.
  static_model, static, gates = subnet.static_form(model, params, cfg)
  out = _apply(static_model, static, e, layer_gates=jnp.asarray(gates))
  for name in ('tokens', 'pooled', 'logits'):
    _close(out[name], masked[name])
  _close(out['hidden'][-1], masked['hidden'][-1])
  backbone_model, backbone = subnet.extract(model, params, cfg)
  assert not backbone_model.pooler and backbone_model.num_classes == 0
  assert not {'pooler', 'head'} & set(backbone)
  out = _apply(backbone_model, backbone, e)
  assert not {'pooled', 'logits'} & set(out)
  _close(out['tokens'], masked['tokens'])


def test_dropped_layer_is_the_identity(tiny):
  model, params = tiny
  e = _expected()
  m = subnet.masks(model, subnet.SubnetConfig((0,), (2,), (30,)))
  out = _masked(model, params, e, m)
  _close(out['hidden'][1], out['hidden'][0], 0)
  _close(out['tokens'], out['hidden'][0], 0)
  # Skipped at run time (width-sliced, layer_gates) = masked.
  sliced_model, sliced = subnet.width_slice(model, params, 2, 32)
  m = subnet.masks(model, subnet.SubnetConfig((1,), (2,), (32,)))
  masked = _masked(model, params, e, m)
  gated = _apply(sliced_model, sliced, e, layer_gates=jnp.array([0., 1.]))
  _close(gated['tokens'], masked['tokens'])
  _close(gated['logits'], masked['logits'])
  assert float(jnp.abs(gated['tokens'] - out['tokens']).max()) > 0.1
