"""Device <-> edge aggregation rounds: pruning schedule, modes, ledger records."""
import jax
import numpy as np
import pytest

from acme_jax.device import features
from acme_jax.device import header as header_lib
from acme_jax.device import nas
from acme_jax.edge import rounds
from acme_jax.system.ledger import Ledger

C = 8  # header channels


def _devices(num=4, seed=0):
  rng = np.random.default_rng(seed)
  header = header_lib.Header(num_classes=3, num_channels=C, num_nodes=2,
                             num_layers=1)
  steps = nas.child_steps(header)
  state = nas.init_child(header, steps, (1, 2, 2, 6), seed)
  arch = header_lib.smallest_arch(2)
  arch[:, 1] = 0  # sep conv 3x3 everywhere: channels carry weights
  out = []
  for d in range(num):
    y = rng.integers(0, 3, 24)
    x = (rng.normal(size=(24, 2, 2, 6)) + y[:, None, None, None]).astype(
        np.float32)
    sig = rng.normal(size=(20, 6)).astype(np.float32) + d
    local = features.LocalFeatures(x[:16], y[:16], x[16:20], y[16:20],
                                   x[20:], y[20:], x[:16, 0, 0])
    out.append(rounds.DeviceHeader(
        d, d // 2, header, state, arch.copy(), np.ones(C, np.float32), local,
        sig))
  return out


@pytest.mark.parametrize('mode', ['pruning_alone', 'pruning_avg',
                                  'pruning_per_emd'])
def test_pruning_reaches_the_ratio_and_records_every_exchange(mode):
  ledger = Ledger()
  devices = rounds.run_rounds(_devices(), mode, rounds=2, prune_ratio=0.5,
                              local_epochs=1, finetune_epochs=1,
                              key=jax.random.key(0), ledger=ledger,
                              train_kwargs=dict(batch_size=8))
  for d in devices:
    assert d.gates.sum() == C // 2          # 25% after round 1, 50% after 2
    full = header_lib.header_param_count(d.arch, C, feature_dim=6,
                                         num_classes=3, grid_rank=2)
    assert d.header_params() < full
  kinds = [r.kind for r in ledger]
  assert kinds.count('importance') == 4 * 2 * 2  # 4 devices, 2 rounds, up+down
  assert kinds.count('signature') == (4 if mode == 'pruning_per_emd' else 0)
  assert 'raw_data' not in kinds
  for r in ledger:
    if r.kind == 'importance':
      assert r.bytes == C * 4               # one float32 per channel
      # Aggregation stays within each edge: devices 0,1 -> edge 0, 2,3 -> 1.
      device = r.src_id if r.src_tier == 'device' else r.dst_id
      edge = r.dst_id if r.src_tier == 'device' else r.src_id
      assert edge == device // 2


def test_without_pruning_nothing_is_pruned_or_exchanged():
  ledger = Ledger()
  devices = rounds.run_rounds(_devices(), 'wo_pruning', rounds=2,
                              prune_ratio=0.5, local_epochs=1,
                              finetune_epochs=1, key=jax.random.key(0),
                              ledger=ledger, train_kwargs=dict(batch_size=8))
  assert all(d.gates.sum() == C for d in devices)
  assert len(ledger) == 0


def test_unknown_mode_is_refused():
  with pytest.raises(ValueError, match='unknown mode'):
    rounds.run_rounds(_devices(1), 'fedprox', rounds=1, prune_ratio=0.1,
                      local_epochs=1, finetune_epochs=1, key=jax.random.key(0))


@pytest.mark.parametrize('mode', ['pruning_alone', 'pruning_avg',
                                  'pruning_per_emd'])
def test_each_device_prunes_by_its_edges_weighted_importances(mode,
                                                              monkeypatch):
  """The importance a device prunes by is sum_i W[k, i] I_i over its edge."""
  from acme_jax.device import prune
  from acme_jax.edge import similarity
  devices = _devices()
  own = {d.device: np.arange(C, dtype=np.float32)[::-1] * (d.device + 1) +
         np.eye(C, dtype=np.float32)[d.device] * 50 for d in devices}
  by_data = {id(d.data.x_train): d.device for d in devices}
  used = {}

  def fixed_importance(header, state, arch, x, y, **kwargs):
    return own[by_data[id(x)]], state

  def capture(header, state, arch, importance, ratio, x, *args, **kwargs):
    used[by_data[id(x)]] = np.asarray(importance)
    gates = prune.prune_gates(importance, ratio, kwargs.get('current_gates'))
    return {'gates': gates, 'state': state}

  monkeypatch.setattr(prune, 'taylor_importance', fixed_importance)
  monkeypatch.setattr(prune, 'prune_and_finetune', capture)
  rounds.run_rounds(devices, mode, rounds=1, prune_ratio=0.25, local_epochs=1,
                    finetune_epochs=1, key=jax.random.key(0))
  for edge in (0, 1):
    members = [d for d in devices if d.edge == edge]
    stacked = np.stack([own[m.device] for m in members])
    if mode == 'pruning_alone':
      weights = np.eye(2)
    elif mode == 'pruning_avg':
      sizes = np.array([len(m.data.y_train) for m in members], float)
      weights = np.tile(sizes / sizes.sum(), (2, 1))
    else:
      weights = similarity.mode_weights(
          mode, signatures=[m.signature for m in members])
      assert not np.allclose(weights, np.eye(2))
    for k, m in enumerate(members):
      np.testing.assert_allclose(used[m.device], weights[k] @ stacked,
                                 rtol=1e-5)
      expected_gates = prune.prune_gates(weights[k] @ stacked, 0.25)
      np.testing.assert_array_equal(m.gates, expected_gates)
