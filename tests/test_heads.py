"""Fixed-head baselines through the client engine."""
import dataclasses

import numpy as np
import pytest

from acme_jax.device import heads
from acme_jax.device.features import LocalFeatures


def _device_data(num=3, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for d in range(num):
    n = 40 + 7 * d  # unequal local data: the engine pads with no-op steps
    y = rng.integers(0, 3, n)
    # The class shifts one channel (a constant shift of all channels would be
    # erased by the Mixer's LayerNorms).
    x = rng.normal(size=(n, 2, 2, 8))
    x[np.arange(n), :, :, y] += 3.0
    x = x.astype(np.float32)
    out.append(LocalFeatures(x[:30], y[:30], x[30:35], y[30:35], x[35:],
                             y[35:], x[:30, 0, 0]))
  return out


def test_padded_batches_mark_padding_and_cover_every_sample():
  x = np.arange(10, dtype=np.float32)[:, None]
  batches = heads.make_batches(x, np.arange(10), batch_size=4, epochs=1,
                               seed=0)
  assert [b['w'].sum() for b in batches] == [4, 4, 2]
  seen = np.concatenate([b['y'][b['w'] > 0] for b in batches])
  assert sorted(seen) == list(range(10))


# The mixer and the CNN head (~20 s together) run with the slow tests: the
# suite's 10 minutes.
@pytest.mark.parametrize('kind, learning_rate', [
    ('linear', 5e-2), ('mlp', 1e-2),
    pytest.param('mixer', 1e-2, marks=pytest.mark.slow),
    pytest.param('cnn_project', 1e-2, marks=pytest.mark.slow)])
def test_each_head_learns_separable_features(kind, learning_rate):
  out = heads.train_and_test(kind, 3, _device_data(), epochs=40,
                             batch_size=8, learning_rate=learning_rate, seed=0)
  assert len(out['test_accuracy']) == 3 and min(out['params']) > 0
  assert np.mean(out['test_accuracy']) > 0.8  # chance is 1/3


def test_devices_smaller_than_a_batch_share_the_compiled_step():
  # Local data on both sides of the batch size (the engine needs one shape).
  data = [dataclasses.replace(d, x_train=d.x_train[:n], y_train=d.y_train[:n])
          for d, n in zip(_device_data(), (5, 30, 12))]
  out = heads.train_and_test('mlp', 3, data, epochs=2, batch_size=16,
                             learning_rate=1e-2, seed=0)
  assert len(out['test_accuracy']) == 3
  batches = heads.make_batches(data[0].x_train, data[0].y_train, 16, 1, 0)
  assert len(batches) == 1 and batches[0]['x'].shape[0] == 16
  assert batches[0]['w'].sum() == 5


def test_strategies_agree():
  data = _device_data()
  loop = heads.train_and_test('mlp', 3, data, epochs=3, batch_size=8,
                              learning_rate=1e-2, seed=1, strategy='loop')
  vmap = heads.train_and_test('mlp', 3, data, epochs=3, batch_size=8,
                              learning_rate=1e-2, seed=1, strategy='vmap')
  assert loop['test_accuracy'] == vmap['test_accuracy']
