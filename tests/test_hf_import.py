"""Hugging Face ViT import against a torch-generated fixture (no torch needed).

The fixture (tests/fixtures/hf_vit_tiny/) comes from
tests/fixtures/make_hf_vit_fixture.py: a tiny random
`transformers.ViTForImageClassification` and its eval-mode outputs.

Matmuls run at 'highest' precision: on GPUs JAX's default float32 matmul
precision may use TF32/bf16 passes, whose ~1e-3 error is not the import's.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from acme_jax.models import hf_import, vit

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'hf_vit_tiny')
# float32 on both sides; measured max |diff| is ~5e-7 on CPU (torch's own
# float32 vs float64 difference is ~7e-7).
LOGIT_TOL = 1e-5


@pytest.fixture(scope='module')
def expected():
  return dict(np.load(os.path.join(FIXTURE, 'expected.npz')))


@pytest.fixture(scope='module')
def loaded():
  return hf_import.load_hf_vit(FIXTURE)


def _apply(model, params, images, masks=None):
  with jax.default_matmul_precision('highest'):
    return model.apply({'params': params}, jnp.asarray(images), masks)


def _state():
  return load_file(os.path.join(FIXTURE, 'model.safetensors'))


def _config():
  with open(os.path.join(FIXTURE, 'config.json')) as f:
    return json.load(f)


def _write_checkpoint(directory, state, config=None):
  os.makedirs(directory, exist_ok=True)
  save_file(state, os.path.join(directory, 'model.safetensors'))
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(_config() if config is None else config, f)
  return directory


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) -
                             np.asarray(b, np.float64))))


def test_model_sizes_from_config(loaded):
  model, _ = loaded
  assert (model.num_classes, model.patch_size, model.hidden_size,
          model.num_layers, model.num_heads, model.mlp_dim, model.head_dim,
          model.layer_norm_eps) == (5, 4, 32, 2, 4, 64, 8, 1e-12)


def test_param_shapes_match_init(loaded):
  model, params = loaded
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 16, 16, 3)))['params']
  assert (jax.tree.map(lambda x: (x.shape, x.dtype), params)
          == jax.tree.map(lambda x: (x.shape, x.dtype), shapes))


def test_logits_match_reference(loaded, expected):
  model, params = loaded
  out = _apply(model, params, expected['images'])
  diff = _max_diff(out['logits'], expected['logits'])
  print(f'max |logits - torch logits| = {diff:.3g}')
  assert diff <= LOGIT_TOL
  assert _max_diff(out['logits'], expected['logits_float64']) <= LOGIT_TOL
  # Per-layer outputs (HF hidden_states[0] is the embedding output) and the
  # final LayerNorm's output, to localise a mismatch.
  np.testing.assert_allclose(out['hidden'], expected['hidden_states'][1:],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out['tokens'], expected['last_hidden'],
                             rtol=1e-5, atol=1e-5)


def test_jit_matches_reference(loaded, expected):
  model, params = loaded
  with jax.default_matmul_precision('highest'):
    logits = jax.jit(lambda p, x: model.apply({'params': p}, x)['logits'])(
        params, jnp.asarray(expected['images']))
  assert _max_diff(logits, expected['logits']) <= LOGIT_TOL


def test_supernet_full_masks_same_logits(loaded, expected):
  model, params = loaded
  plain = _apply(model, params, expected['images'])
  masked = _apply(model, params, expected['images'], vit.full_masks(model))
  assert _max_diff(masked['logits'], expected['logits']) <= LOGIT_TOL
  np.testing.assert_allclose(masked['logits'], plain['logits'],
                             rtol=0, atol=1e-6)


def test_every_tensor_matters(loaded, expected):
  """Each imported tensor moves the logits: the fixture tests all the mapping.

  The key bias is the exception: it adds q . b_k to every logit of a query,
  which the softmax cancels, so no forward pass can check it; it goes through
  the same code as the query and value biases, which are checked.
  """
  model, params = loaded
  images = jnp.asarray(expected['images'])
  forward = jax.jit(lambda p: model.apply({'params': p}, images)['logits'])
  with jax.default_matmul_precision('highest'):
    base = forward(params)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  rng = np.random.default_rng(0)
  for i, (path, leaf) in enumerate(flat):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" in name:
      continue
    leaves = [x for _, x in flat]
    # Random, not constant: LayerNorm cancels a constant shift of all features.
    leaves[i] = leaf + 0.1 * rng.standard_normal(leaf.shape, np.float32)
    with jax.default_matmul_precision('highest'):
      logits = forward(jax.tree.unflatten(treedef, leaves))
    assert _max_diff(logits, base) > 100 * LOGIT_TOL, name


def test_new_head_for_other_num_classes(loaded):
  model, params = loaded
  model7, params7 = hf_import.load_hf_vit(FIXTURE, num_classes=7,
                                          key=jax.random.key(1))
  assert model7.num_classes == 7
  assert params7['head']['kernel'].shape == (32, 7)
  assert params7['head']['bias'].shape == (7,)
  np.testing.assert_array_equal(params7['head']['bias'], 0)
  std = float(jnp.std(params7['head']['kernel']))
  assert 0.005 < std < 0.05  # normal(initializer_range = 0.02)
  rest = {k: v for k, v in params.items() if k != 'head'}
  rest7 = {k: v for k, v in params7.items() if k != 'head'}
  assert jax.tree.all(jax.tree.map(
      lambda a, b: bool(jnp.array_equal(a, b)), rest, rest7))
  out = model7.apply({'params': params7}, jnp.zeros((2, 16, 16, 3)))
  assert out['logits'].shape == (2, 7)
  _, other = hf_import.load_hf_vit(FIXTURE, num_classes=7,
                                   key=jax.random.key(2))
  assert not jnp.array_equal(other['head']['kernel'],
                             params7['head']['kernel'])


def test_same_num_classes_keeps_head(loaded):
  _, params = loaded
  _, params5 = hf_import.load_hf_vit(FIXTURE, num_classes=5)
  np.testing.assert_array_equal(params5['head']['kernel'],
                                params['head']['kernel'])
  np.testing.assert_array_equal(
      params['head']['kernel'], _state()['classifier.weight'].T)


def test_load_from_file_path(loaded, expected):
  model, params = hf_import.load_hf_vit(
      os.path.join(FIXTURE, 'model.safetensors'))
  assert model == loaded[0]
  assert _max_diff(_apply(model, params, expected['images'])['logits'],
                   expected['logits']) <= LOGIT_TOL


def test_wrong_shape_is_a_clear_error(tmp_path):
  state = _state()
  name = 'vit.encoder.layer.1.intermediate.dense.weight'
  assert state[name].shape == (64, 32)
  state[name] = np.zeros((48, 32), np.float32)
  path = _write_checkpoint(str(tmp_path / 'bad'), state)
  with pytest.raises(ValueError) as info:
    hf_import.load_hf_vit(path)
  message = str(info.value)
  assert f"'{name}'" in message
  assert '(48, 32)' in message and '(64, 32)' in message


def test_missing_tensor_is_a_clear_error():
  state = _state()
  del state['vit.layernorm.bias']
  with pytest.raises(ValueError, match=r"missing tensor 'layernorm.bias'"):
    hf_import.convert_hf_vit(state, _config())


def test_config_weights_mismatch_is_an_error():
  config = dict(_config(), num_hidden_layers=1)
  with pytest.raises(ValueError, match='not used'):
    hf_import.convert_hf_vit(_state(), config)


def test_missing_files_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match='no such checkpoint'):
    hf_import.load_hf_vit(str(tmp_path / 'nowhere'))
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match='model.safetensors'):
    hf_import.load_hf_vit(str(empty))
  lonely = tmp_path / 'lonely'
  lonely.mkdir()
  shutil.copy(os.path.join(FIXTURE, 'model.safetensors'), lonely)
  with pytest.raises(ValueError, match='config.json'):
    hf_import.load_hf_vit(str(lonely))


def test_other_name_layouts(loaded):
  """No `vit.` prefix + a pooler (ViTModel), and transformers 5 names."""
  _, params = loaded
  state = _state()
  bare = {k[len('vit.'):] if k.startswith('vit.') else k: v
          for k, v in state.items()}
  bare['pooler.dense.weight'] = np.ones((32, 32), np.float32)
  bare['pooler.dense.bias'] = np.ones((32,), np.float32)
  renames = [('encoder.layer.', 'layers.'),
             ('attention.attention.query', 'attention.q_proj'),
             ('attention.attention.key', 'attention.k_proj'),
             ('attention.attention.value', 'attention.v_proj'),
             ('attention.output.dense', 'attention.o_proj'),
             ('intermediate.dense', 'mlp.fc1'),
             ('.output.dense', '.mlp.fc2')]
  renamed = {}
  for k, v in state.items():
    for old, new in renames:
      k = k.replace(old, new)
    renamed[k] = v
  assert 'vit.layers.0.mlp.fc2.weight' in renamed
  for other in (bare, renamed):
    converted = hf_import.convert_hf_vit(other, _config())
    assert jax.tree.all(jax.tree.map(
        lambda a, b: bool(np.array_equal(a, b)), converted, params))


def test_headless_checkpoint_gets_fresh_head(tmp_path):
  state = {k: v for k, v in _state().items()
           if not k.startswith('classifier.')}
  path = _write_checkpoint(str(tmp_path / 'headless'), state)
  model, params = hf_import.load_hf_vit(path, num_classes=3)
  assert params['head']['kernel'].shape == (32, 3)
  assert model.num_classes == 3


def test_sharded_checkpoint(tmp_path, loaded):
  state = _state()
  names = sorted(state)
  directory = tmp_path / 'sharded'
  directory.mkdir()
  weight_map = {}
  for j, part in enumerate((names[:10], names[10:])):
    shard = f'model-0000{j + 1}-of-00002.safetensors'
    save_file({n: state[n] for n in part}, str(directory / shard))
    weight_map.update({n: shard for n in part})
  with open(directory / 'model.safetensors.index.json', 'w') as f:
    json.dump({'metadata': {}, 'weight_map': weight_map}, f)
  shutil.copy(os.path.join(FIXTURE, 'config.json'), directory)
  _, params = hf_import.load_hf_vit(str(directory))
  assert jax.tree.all(jax.tree.map(
      lambda a, b: bool(jnp.array_equal(a, b)), params, loaded[1]))


def test_unsupported_activation():
  with pytest.raises(ValueError, match='gelu_new'):
    hf_import.vit_from_hf_config(dict(_config(), hidden_act='gelu_new'))


def test_header_features_are_hf_hidden_states_before_the_final_norm(
    loaded, expected):
  """What the header reads ('last_hidden', the prototype's) is Hugging
  Face's `hidden_states[-1]`, the last block's output before the final
  LayerNorm; 'final_norm' is HF's `last_hidden_state`. Checked against the
  torch reference, through the function the device stage calls."""
  from acme_jax.device import features
  from acme_jax.models import subnet
  model, params = loaded
  full = subnet.for_model(model, 1.0, 1.0)
  images = np.asarray(expected['images'], np.float32)
  with jax.default_matmul_precision('highest'):
    before = features.backbone_tokens(model, params, full, images)
    after = features.backbone_tokens(model, params, full, images,
                                     source='final_norm')
  np.testing.assert_allclose(before, expected['hidden_states'][-1],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(after, expected['last_hidden'], rtol=1e-5,
                             atol=1e-5)
  assert _max_diff(expected['hidden_states'][-1],
                   expected['last_hidden']) > 0.1  # the two differ
