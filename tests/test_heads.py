"""Fixed-head baselines through the client engine."""
import numpy as np
import pytest

from acme_jax.device import heads


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
    out.append((x[:30], y[:30], x[30:], y[30:]))
  return out


def test_padded_batches_mark_padding_and_cover_every_sample():
  x = np.arange(10, dtype=np.float32)[:, None]
  batches = heads.make_batches(x, np.arange(10), batch_size=4, epochs=1,
                               seed=0)
  assert [b['w'].sum() for b in batches] == [4, 4, 2]
  seen = np.concatenate([b['y'][b['w'] > 0] for b in batches])
  assert sorted(seen) == list(range(10))


@pytest.mark.parametrize('kind, learning_rate', [
    ('linear', 5e-2), ('mlp', 1e-2), ('mixer', 1e-2), ('cnn_project', 1e-2)])
def test_each_head_learns_separable_features(kind, learning_rate):
  acc, params = heads.train_and_test(kind, 3, _device_data(), epochs=40,
                                     batch_size=8, learning_rate=learning_rate,
                                     seed=0)
  assert len(acc) == 3 and min(params) > 0
  assert np.mean(acc) > 0.8  # chance is 1/3


def test_strategies_agree():
  data = _device_data()
  loop, _ = heads.train_and_test('mlp', 3, data, epochs=3, batch_size=8,
                                 learning_rate=1e-2, seed=1, strategy='loop')
  vmap, _ = heads.train_and_test('mlp', 3, data, epochs=3, batch_size=8,
                                 learning_rate=1e-2, seed=1, strategy='vmap')
  assert loop == vmap
