"""The decoder against transformers' own outputs, and its elastic forms.

References: the torch fixtures of tests/fixtures/make_hf_decoder_fixture.py
(logits, hidden states and greedy tokens computed by transformers 5.24.0);
decoding without a cache; the masked supernet for every extracted form.
"""
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acme_jax import training
from acme_jax.cloud import importance
from acme_jax.models import decoder as decoder_lib
from acme_jax.models import generate
from acme_jax.models import hf_decoder
from acme_jax.models import subnet as subnet_lib

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
NAMES = ('hf_llama_tiny', 'hf_qwen2_tiny', 'hf_mistral_tiny',
         'hf_mistral_window_tiny')


def _load(name):
  folder = FIXTURES / name
  model, params = hf_decoder.load(folder)
  return name, model, params, dict(np.load(folder / 'expected.npz'))


@pytest.fixture(scope='module', params=NAMES)
def fixture(request):
  return _load(request.param)


# The elastic forms on Llama (GQA) in the default suite; Qwen2 (biases,
# tying) and Mistral (one KV group) repeat them in the slow one.
@pytest.fixture(scope='module', params=NAMES[:1] + tuple(
    pytest.param(name, marks=pytest.mark.slow) for name in NAMES[1:3]))
def elastic(request):
  return _load(request.param)


def _real(expected):
  return expected['attention_mask'].astype(bool)


def test_logits_and_hidden_states_equal_transformers(fixture):
  _, model, params, e = fixture
  out = model.apply({'params': params}, e['input_ids'],
                    attention_mask=e['attention_mask'])
  real = _real(e)
  np.testing.assert_allclose(np.asarray(out['lm_logits'])[real],
                             e['logits'][real], atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out['embeddings'])[real],
                             e['hidden'][0][real], atol=1e-6)
  for layer in range(model.num_layers - 1):  # HF's last one is after the norm
    np.testing.assert_allclose(np.asarray(out['hidden'][layer])[real],
                               e['hidden'][layer + 1][real], atol=2e-5)
  np.testing.assert_allclose(np.asarray(out['tokens'])[real],
                             e['hidden'][-1][real], atol=2e-5)


def test_greedy_tokens_equal_transformers_generate(fixture):
  _, model, params, e = fixture
  tokens = generate.generate(model, params, e['input_ids'],
                             e['attention_mask'], e['greedy'].shape[1])
  np.testing.assert_array_equal(np.asarray(tokens), e['greedy'])


def test_sequence_classifier_equals_transformers():
  """LlamaForSequenceClassification: the score of the last real token."""
  folder = FIXTURES / 'hf_llama_cls_tiny'
  model, params = hf_decoder.load(folder)
  e = np.load(folder / 'expected.npz')
  assert model.num_classes == 3 and not model.lm_head
  out = model.apply({'params': params}, e['input_ids'],
                    attention_mask=e['attention_mask'])
  np.testing.assert_allclose(np.asarray(out['logits']), e['logits'],
                             atol=2e-5)


def test_base_model_names_load(tmp_path):
  """A LlamaModel checkpoint (tensor names without 'model.')."""
  from safetensors.numpy import load_file, save_file
  folder = tmp_path / 'base'
  shutil.copytree(FIXTURES / 'hf_llama_tiny', folder)
  state = load_file(str(folder / 'model.safetensors'))
  save_file({k[len('model.'):]: v for k, v in state.items()
             if k.startswith('model.')}, str(folder / 'model.safetensors'))
  model, params = hf_decoder.load(folder)
  assert not model.lm_head and 'lm_head' not in params
  full = hf_decoder.load(FIXTURES / 'hf_llama_tiny')[1]
  np.testing.assert_array_equal(params['block_2']['gate']['kernel'],
                                full['block_2']['gate']['kernel'])


def test_features_of_each_family_are_read():
  llama = hf_decoder.load(FIXTURES / 'hf_llama_tiny')[0]
  qwen = hf_decoder.load(FIXTURES / 'hf_qwen2_tiny')[0]
  mistral = hf_decoder.load(FIXTURES / 'hf_mistral_tiny')[0]
  assert dict(llama.rope_scaling)['rope_type'] == 'llama3'
  assert not llama.tie_word_embeddings and not llama.qkv_bias
  assert qwen.tie_word_embeddings and qwen.qkv_bias and not qwen.o_bias
  assert dict(mistral.rope_scaling) == {'rope_type': 'linear', 'factor': 2.0}
  assert (llama.num_heads, llama.num_kv_heads) == (4, 2)
  assert (mistral.num_heads, mistral.num_kv_heads) == (4, 1)
  assert mistral.sliding_window is None
  assert hf_decoder.load(
      FIXTURES / 'hf_mistral_window_tiny')[0].sliding_window == 4


def test_transformers_4_config_style_loads_the_same(tmp_path):
  """rope_theta + rope_scaling (as published checkpoints write them)."""
  folder = tmp_path / 'legacy'
  shutil.copytree(FIXTURES / 'hf_llama_tiny', folder)
  config = json.loads((folder / 'config.json').read_text())
  rope = config.pop('rope_parameters')
  config['rope_theta'] = rope.pop('rope_theta')
  config['rope_scaling'] = rope
  (folder / 'config.json').write_text(json.dumps(config))
  assert hf_decoder.load(folder)[0] == hf_decoder.load(
      FIXTURES / 'hf_llama_tiny')[0]


@pytest.mark.parametrize('change, named', [
    ({'hidden_act': 'gelu'}, 'hidden_act'),
    ({'rope_parameters': {'rope_type': 'yarn', 'factor': 2.0}}, 'yarn'),
    ({'model_type': 'gpt2'}, 'model_type'),
    ({'num_key_value_heads': 3}, 'num_key_value_heads'),
])
def test_unsupported_config_is_one_line_naming_it(change, named):
  config = json.loads((FIXTURES / 'hf_llama_tiny' / 'config.json').read_text())
  config.update(change)
  with pytest.raises(ValueError) as info:
    hf_decoder.decoder_from_hf_config(config)
  assert named in str(info.value) and '\n' not in str(info.value)


def test_llama3_rope_scaling_formula():
  """HF's llama3 rule, evaluated by hand for three regimes of wavelength."""
  inv = decoder_lib.rope_inverse_frequencies(
      8, 500.0, (('factor', 8.0), ('high_freq_factor', 4.0),
                 ('low_freq_factor', 1.0),
                 ('original_max_position_embeddings', 16.0),
                 ('rope_type', 'llama3')))
  base = 1.0 / 500.0 ** (np.arange(0, 8, 2) / 8)
  wavelen = 2 * np.pi / base
  expect = []
  for f, w in zip(base, wavelen):
    if w < 16 / 4:
      expect.append(f)
    elif w > 16 / 1:
      expect.append(f / 8)
    else:
      smooth = (16 / w - 1) / (4 - 1)
      expect.append((1 - smooth) * f / 8 + smooth * f)
  np.testing.assert_allclose(inv, expect, rtol=1e-6)


def test_cached_decoding_equals_recomputing_the_prefix(elastic):
  _, model, params, e = elastic
  sub = subnet_lib.for_model(model, 0.5, 2 / 3)
  masks = subnet_lib.masks(model, sub)
  for m in (None, masks):
    cached = generate.generate(model, params, e['input_ids'],
                               e['attention_mask'], 4, masks=m)
    again = generate.recompute_greedy(model, params, e['input_ids'],
                                      e['attention_mask'], 4, masks=m)
    np.testing.assert_array_equal(np.asarray(cached), np.asarray(again))


def test_masked_equals_width_sliced_equals_extracted(elastic):
  _, model, params, e = elastic
  real = _real(e)
  for width, depth in ((0.5, 2 / 3), (1.0, 1 / 3), (0.5, 1.0)):
    sub = subnet_lib.for_model(model, width, depth)
    assert sub.heads[0] % subnet_lib.group_size(model) == 0
    masked = model.apply({'params': params}, e['input_ids'],
                         subnet_lib.masks(model, sub))['lm_logits']
    sub_model, dense = subnet_lib.extract(model, params, sub, with_head=True)
    extracted = sub_model.apply({'params': dense}, e['input_ids'])['lm_logits']
    static_model, sliced, gates = subnet_lib.static_form(model, params, sub)
    static = static_model.apply({'params': sliced}, e['input_ids'],
                                layer_gates=gates)['lm_logits']
    for other in (extracted, static):
      np.testing.assert_allclose(np.asarray(other)[real],
                                 np.asarray(masked)[real], atol=2e-5)
    cached = generate.generate(sub_model, dense, e['input_ids'],
                               e['attention_mask'], 3)
    np.testing.assert_array_equal(
        np.asarray(cached), np.asarray(generate.generate(
            model, params, e['input_ids'], e['attention_mask'], 3,
            masks=subnet_lib.masks(model, sub))))


def test_reordering_groups_and_neurons_keeps_the_function(elastic):
  _, model, params, e = elastic
  rng = np.random.default_rng(0)
  heads = rng.random((model.num_layers, model.num_heads))
  neurons = rng.random((model.num_layers, model.mlp_dim))
  new = importance.reorder(model, params, heads, neurons)
  before = model.apply({'params': params}, e['input_ids'])['lm_logits']
  after = model.apply({'params': new}, e['input_ids'])['lm_logits']
  np.testing.assert_allclose(np.asarray(after), np.asarray(before), atol=2e-5)
  groups = importance.group_scores(heads, subnet_lib.group_size(model))
  first = np.argmax(groups[0])
  np.testing.assert_array_equal(
      new['block_0']['attn']['k']['kernel'][:, 0],
      np.asarray(params['block_0']['attn']['k']['kernel'])[:, first])


def test_decoder_importance_scores_are_finite_differences():
  """One batch: a head's score is |dL/d mask|, a neuron's |dL/d alpha_in| +
  |dL/d alpha_out| (alpha scaling its gate and up columns, or its down
  row), each checked against a central finite difference of the loss."""
  model, params = hf_decoder.load(FIXTURES / 'hf_llama_tiny')
  model = model.clone(num_classes=3)
  params = dict(params, head={'kernel': 0.1 * np.asarray(
      jax.random.normal(jax.random.key(0), (48, 3)))})
  from acme_jax.data.base import Split
  e = np.load(FIXTURES / 'hf_llama_tiny' / 'expected.npz')
  labels = np.array([0, 1, 2])
  data = Split(images=e['input_ids'], labels=labels, index=np.arange(3))
  heads, neurons = importance.importance_scores(model, params, data, 3, 1)
  full = decoder_lib.full_masks(model)

  # Jitted once: the finite differences evaluate it many times.
  jitted = jax.jit(lambda p, m: training.task_loss(
      model.apply({'params': p}, e['input_ids'], m), labels,
      e['input_ids'], 0))

  def loss(p, masks=full):
    return float(jitted(p, masks))

  def scaled(layer, name, index, axis, alpha):
    block = dict(params[f'block_{layer}'])
    kernel = np.array(block[name]['kernel'])
    if axis == 1:
      kernel[:, index] *= alpha
    else:
      kernel[index] *= alpha
    block[name] = {'kernel': kernel}
    return dict(params, **{f'block_{layer}': block})

  eps = 1e-2
  for layer, head in ((0, 1), (2, 3)):
    mask = lambda v: full._replace(heads=full.heads.at[layer, head].set(v))  # noqa: E731
    fd = (loss(params, mask(1 + eps)) - loss(params, mask(1 - eps))) / (2 * eps)
    np.testing.assert_allclose(heads[layer, head], abs(fd), rtol=2e-2)
  for layer, j in ((0, 5), (1, 40)):
    def incoming(alpha):
      p = scaled(layer, 'gate', j, 1, alpha)
      block = dict(p[f'block_{layer}'])
      up = np.array(block['up']['kernel'])
      up[:, j] *= alpha
      block['up'] = {'kernel': up}
      return loss(dict(p, **{f'block_{layer}': block}))
    fd_in = (incoming(1 + eps) - incoming(1 - eps)) / (2 * eps)
    fd_out = (loss(scaled(layer, 'down', j, 0, 1 + eps)) -
              loss(scaled(layer, 'down', j, 0, 1 - eps))) / (2 * eps)
    np.testing.assert_allclose(neurons[layer, j], abs(fd_in) + abs(fd_out),
                               rtol=2e-2)


def test_next_token_loss_is_a_hand_computation():
  ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
  logits = np.random.default_rng(1).normal(size=(2, 4, 10)).astype(np.float32)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  pairs = [(0, 0, 6), (0, 1, 7), (1, 0, 9)]
  expect = -np.mean([logp[b, t, y] for b, t, y in pairs])
  got = training.next_token_loss(jnp.asarray(logits), ids, pad_id=0)
  np.testing.assert_allclose(float(got), expect, rtol=1e-6)


def test_top_p_keeps_the_smallest_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = np.isfinite(np.asarray(generate.top_p_filter(logits, 0.75)))
  np.testing.assert_array_equal(kept, [[True, True, False, False]])
  kept = np.isfinite(np.asarray(generate.top_p_filter(logits, 0.81)))
  np.testing.assert_array_equal(kept, [[True, True, True, False]])
  model, params = hf_decoder.load(FIXTURES / 'hf_llama_tiny')
  e = np.load(FIXTURES / 'hf_llama_tiny' / 'expected.npz')
  draw = lambda sampling, seed: np.asarray(generate.generate(  # noqa: E731
      model, params, e['input_ids'], e['attention_mask'], 5,
      key=jax.random.key(seed), sampling=sampling))
  # A nucleus of one token is greedy decoding, whatever the temperature.
  np.testing.assert_array_equal(draw(generate.Sampling(5.0, 1e-6), 1),
                                e['greedy'])
  # Sampling is the key's: the same key draws the same tokens, another
  # key (at a high temperature over 97 tokens) others.
  hot = generate.Sampling(5.0, 1.0)
  np.testing.assert_array_equal(draw(hot, 3), draw(hot, 3))
  assert (draw(hot, 3) != draw(hot, 4)).any()
