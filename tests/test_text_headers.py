"""On text the device stage reads a 1-D token grid: a BERT backbone's
features feed the NAS header, the fixed heads and the signatures unchanged."""
import jax
import numpy as np
import pytest

from acme_jax.data.base import Split
from acme_jax.device import features, heads, local_data, nas
from acme_jax.device import header as header_lib
from acme_jax.device import signature as signature_lib
from acme_jax.device import stage as device_stage
from acme_jax.models import bert, subnet
from configs import default

CLASSES, T, D = 3, 9, 8
LEARNING_RATES = {'linear': 3e-2, 'mlp': 1e-2, 'mixer': 1e-2,
                  'cnn_project': 1e-2}


def separable_tokens(n, seed):
  """(N, T, D) token features whose class shows in every token."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, CLASSES, n).astype(np.int32)
  means = np.random.default_rng(7).normal(0, 1, (CLASSES, D))
  x = rng.normal(0, 1, (n, T, D)) + 1.5 * means[y][:, None, :]
  a, b = int(0.6 * n), int(0.8 * n)
  x = x.astype(np.float32)
  return features.LocalFeatures(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:],
                                x[:a, 0])


@pytest.fixture(scope='module')
def config():
  c = default.get_config()
  c.model.family = 'bert'      # a 1-D grid of D-wide token features
  c.model.hidden_size = D
  c.data.text.max_length = T + 1
  c.header.num_channels = 8
  c.header.num_nodes = 2
  return c


def test_bert_features_are_a_token_sequence(config):
  model = bert.Bert(num_classes=0, vocab_size=50, hidden_size=D, num_layers=2,
                    num_heads=2, mlp_dim=16, max_positions=16, pooler=False)
  params = bert.init_params(model, jax.random.key(0), T)
  rng = np.random.default_rng(0)

  def split(n):
    ids = rng.integers(1, 50, (n, T)).astype(np.int32)
    ids[:, 6:] = 0  # right padding
    return Split(ids, rng.integers(0, CLASSES, n).astype(np.int32),
                 np.arange(n))

  sub = subnet.for_model(model, 0.5, 0.5)
  train = split(6)
  hp = device_stage.DeviceHparams.from_config(config, CLASSES)
  (local,) = device_stage.local_features(
      hp, model, params, [sub], [(train, split(3), split(4))])
  # The extracted backbone's last hidden state: [CLS] and the tokens after.
  small, dense = subnet.extract(model, params, sub)
  hidden = small.apply({'params': dense}, train.images)['hidden'][-1]
  np.testing.assert_allclose(local.x_train, hidden[:, 1:], atol=1e-5)
  np.testing.assert_allclose(local.cls_train, hidden[:, 0], atol=1e-5)
  assert hp.nas.spec.grid_rank == 1 and local.x_train.ndim == 3


# Slow (~65 s cold); test_bert_features_are_a_token_sequence stays default.
@pytest.mark.slow
def test_nas_header_fixed_heads_and_signatures_learn_on_1d_grids(config):
  locals_ = [separable_tokens(n, i) for i, n in enumerate((40, 60))]
  cfg = device_stage.DeviceHparams.from_config(config, CLASSES).nas
  padded = local_data.device_data(locals_)
  smallest = int(header_lib.param_count(
      cfg.spec, header_lib.smallest_arch(cfg.spec.num_nodes), 3))
  hp = nas.SearchHparams(epochs=3, batch_size=16,
                         controller_steps_per_epoch=2)
  found = nas.search(cfg, hp, padded,
                     [nas.Device(jax.random.key(i), smallest + 2000, 3)
                      for i in (0, 1)], 'loop')
  for result in found:
    header_lib.validate_arch(result['arch'], cfg.spec.num_nodes)
    assert result['header_params'] <= smallest + 2000
  assert np.mean([r['val_accuracy'] for r in found]) > 1 / CLASSES + 0.15
  for kind in heads.BASELINES:
    out = heads.train_and_test(kind, CLASSES, locals_, epochs=20,
                               batch_size=8, learning_rate=LEARNING_RATES[kind],
                               seed=0, strategy='loop')
    assert np.mean(out['test_accuracy']) > 1 / CLASSES + 0.2, kind
  sig = signature_lib.feature_signature(locals_[0].cls_train, 16, seed=0,
                                        labels=locals_[0].y_train)
  assert sig.shape[1] == D
