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
