"""The decoder family's config: validation, and sizes counted from the
config alone against the model the loop builds (an independent count)."""
import jax
import numpy as np
import pytest

from acme_jax import config as config_lib
from acme_jax import sizes
from acme_jax.errors import ConfigError
from acme_jax.models import decoder as decoder_lib
from acme_jax.models import subnet as subnet_lib
from configs import decoder_wordnet


@pytest.mark.parametrize('variant', ['full', 'smoke'])
def test_decoder_configs_validate(variant):
  config_lib.validate(decoder_wordnet.get_config(variant))


@pytest.mark.parametrize('field, value, named', [
    ('model.num_kv_heads', 3, 'model.num_kv_heads'),
    ('model.rope_theta', -1.0, 'model.rope_theta'),
    ('model.family', 'gpt', 'model.family'),
    ('cloud.pretrain.blocks', -2, 'cloud.pretrain.blocks'),
    ('cloud.lm_weight', float('nan'), 'cloud.lm_weight'),
    ('data.text.tokenizer', 'gcide-bpe:inf', 'data.text.tokenizer'),
    ('data.text.tokenizer', 'gcide-bpe:100', 'data.text.tokenizer'),
    # More tokens than the model's embedding rows.
    ('data.text.tokenizer', 'gcide-bpe:4096', 'data.text.tokenizer'),
    ('data.text.tokenizer', '/nonexistent/tokenizer.json',
     'data.text.tokenizer'),
])
def test_bad_decoder_fields_are_one_line(field, value, named):
  config = decoder_wordnet.get_config('smoke')
  section, name = field.rsplit('.', 1)
  parent = config
  for part in section.split('.'):
    parent = parent[part]
  parent[name] = value
  with pytest.raises(ConfigError) as info:
    config_lib.validate(config)
  assert named in str(info.value) and '\n' not in str(info.value)


# ~14 s: the suite's 10 minutes. test_selection checks the closed-form
# sizes against extracted ViT subnets in the default suite.
@pytest.mark.slow
def test_grid_sizes_equal_the_extracted_subnets():
  """sizes.grid's closed form against counting the leaves of each
  extracted subnet of the supernet the cloud builds."""
  config = decoder_wordnet.get_config('smoke')
  config.cloud.width_mults = (1.0, 0.75, 0.5, 0.25)
  config.cloud.depth_mults = (1.0, 0.5, 0.25)
  model = decoder_lib.decoder_from_config(config.model, num_classes=5)
  params = decoder_lib.init_params(model, jax.random.key(0), 8)
  for row in sizes.grid(config):
    sub = subnet_lib.for_model(model, row['width_mult'], row['depth_mult'])
    count, _ = subnet_lib.subnet_size(model, params, sub)
    assert row['params'] == count, row
    # Whole KV groups: the query heads kept are a multiple of the group.
    assert sub.heads[0] % (model.num_heads // model.num_kv_heads) == 0
  # The width rule: 2 KV groups at widths 1 and 0.75, one below.
  assert [subnet_lib.for_model(model, w, 1.0).heads[0]
          for w in (1.0, 0.75, 0.5, 0.25)] == [4, 4, 2, 2]


def test_decoder_feature_shape_keeps_every_token():
  config = decoder_wordnet.get_config('smoke')
  assert sizes.feature_shape(config) == (1, config.data.text.max_length,
                                         config.model.hidden_size)
  assert np.prod(sizes.feature_shape(config)) > 0


# The published config.json fields that fix each model's computation and
# shape (transcribed from the models' Hugging Face repositories).
PUBLISHED = {
    'smollm2_135m': dict(
        model_type='llama', architectures=['LlamaForCausalLM'],
        hidden_size=576, intermediate_size=1536, num_attention_heads=9,
        num_hidden_layers=30, num_key_value_heads=3, rms_norm_eps=1e-5,
        rope_theta=100000, tie_word_embeddings=True, vocab_size=49152,
        max_position_embeddings=8192, hidden_act='silu'),
    'qwen25_05b': dict(
        model_type='qwen2', architectures=['Qwen2ForCausalLM'],
        hidden_size=896, intermediate_size=4864, num_attention_heads=14,
        num_hidden_layers=24, num_key_value_heads=2, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True, vocab_size=151936,
        max_position_embeddings=32768, use_sliding_window=False,
        hidden_act='silu'),
    'llama32_1b': dict(
        model_type='llama', architectures=['LlamaForCausalLM'],
        hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
        num_hidden_layers=16, num_key_value_heads=8, head_dim=64,
        rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={'factor': 32.0, 'high_freq_factor': 4.0,
                      'low_freq_factor': 1.0,
                      'original_max_position_embeddings': 8192,
                      'rope_type': 'llama3'},
        tie_word_embeddings=True, vocab_size=128256,
        max_position_embeddings=131072, hidden_act='silu'),
}


def _folder(tmp_path, name, hf_config):
  import json
  folder = tmp_path / name
  folder.mkdir()
  (folder / 'config.json').write_text(json.dumps(hf_config))
  (folder / 'model.safetensors').write_bytes(b'')  # only config.json is read
  (folder / 'tokenizer.json').write_text('{}')
  return str(folder)


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_checkpoint_configs_fit_the_published_shapes(tmp_path, name):
  """Each variant validates against its model's published config.json and
  is refused, in one line, against another model's."""
  from configs import decoder_checkpoints
  config = decoder_checkpoints.get_config(name)
  config.model.init_checkpoint = _folder(tmp_path, name, PUBLISHED[name])
  from acme_jax import checkpoint_fit
  checkpoint_fit.validate(config)
  other = next(n for n in sorted(PUBLISHED) if n != name)
  config.model.init_checkpoint = _folder(tmp_path, other, PUBLISHED[other])
  with pytest.raises(ConfigError) as info:
    checkpoint_fit.validate(config)
  assert 'does not fit the config' in str(info.value)
  assert '\n' not in str(info.value)
