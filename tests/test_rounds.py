"""Device <-> edge aggregation rounds: pruning schedule, modes, ledger records,
independence from the other devices."""
import dataclasses

import jax
import numpy as np
import pytest

from conftest import live_fraction, tiny_nas

from acme_jax.device import features
from acme_jax.device import header as header_lib
from acme_jax.device import local_data, nas, prune
from acme_jax.device import state as state_lib
from acme_jax.federated import acme
from acme_jax.parallel import engine
from acme_jax.hierarchy.ledger import Ledger

SPEC, CFG = tiny_nas()
CLASSES, DIM, CHANNELS, NODES = (SPEC.num_classes, SPEC.feature_dim,
                                 SPEC.num_channels, SPEC.num_nodes)
SCHEDULE = state_lib.Schedule(batch_size=8)
ARCHS = [np.array([[0, 0, 1, 2], [2, 4, 0, 5]], np.int32),
         np.array([[1, 4, 0, 0], [0, 1, 2, 3]], np.int32)]


def devices(num=4, seed=0):
  rng = np.random.default_rng(seed)
  locals_ = []
  for d in range(4):
    n = 16 + 4 * d  # unequal data sizes, padded to one shape
    y = rng.integers(0, CLASSES, n + 8).astype(np.int32)
    x = (rng.standard_normal((n + 8, 3, 3, DIM)) +
         y[:, None, None, None]).astype(np.float32)
    locals_.append(features.LocalFeatures(x[:n], y[:n], x[n:n + 4],
                                          y[n:n + 4], x[n + 4:], y[n + 4:],
                                          x[:n, 0, 0]))
  data, sizes = local_data.device_data(locals_)
  out = []
  for d in range(num):
    out.append(state_lib.DeviceHeader(
        device=d, edge=d // 2,
        state=nas.init_state(CFG, jax.random.key(d), 10**6, 2 + d % 2,
                             arch=ARCHS[d % 2]),
        lr=0.05, data=data[d], sizes=sizes[d],
        signature=rng.standard_normal((20, 6)).astype(np.float32) + d))
  return out


def hparams(mode, rounds_=2, ratio=0.5, temperature=1.0):
  return acme.RoundsHparams(
      mode=mode, rounds=rounds_, prune_ratio=ratio, local_epochs=1,
      finetune_epochs=1, taylor='squared', signature_kind='features',
      temperature=temperature, self_weight=None, js_variant='standard',
      schedule=SCHEDULE, strategy=engine.Options('loop'))


def run(devs, mode, ledger=None, rounds_=2, ratio=0.5):
  return acme.run(hparams(mode, rounds_, ratio), CFG, devs,
                  jax.random.key(0), ledger=ledger)[0]



@pytest.mark.parametrize('mode', ['pruning_alone', 'pruning_per_emd'])
def test_pruning_reaches_the_ratio_and_records_every_exchange(mode):
  ledger = Ledger()
  devs = run(devices(), mode, ledger)
  for d in devs:
    active = prune.active_gates(SPEC, d.arch, d.n_layers)
    assert live_fraction(d.gates, active) == pytest.approx(0.5,
                                                                 abs=0.02)
    full = int(header_lib.param_count(SPEC, d.arch, d.n_layers))
    assert d.header_params(SPEC) < full
  kinds = [r.kind for r in ledger]
  assert kinds.count('importance') == 4 * 2 * 2  # 4 devices, 2 rounds, up+down
  assert kinds.count('signature') == (4 if mode == 'pruning_per_emd' else 0)
  units = sum(int(np.prod(s)) for s in header_lib.gate_shapes(SPEC).values())
  for r in ledger:
    if r.kind == 'importance':
      assert r.bytes == 4 * units  # one float32 per gate channel
      # Aggregation stays within each edge: devices 0,1 -> edge 0, 2,3 -> 1.
      device = r.src_id if r.src_tier == 'device' else r.dst_id
      edge = r.dst_id if r.src_tier == 'device' else r.src_id
      assert edge == device // 2


def test_wo_pruning_never_prunes_and_trains_as_long():
  devs = run(devices(2), 'wo_pruning')
  for d in devs:
    assert all(np.all(g == 1) for g in jax.tree.leaves(d.gates))


def test_a_device_alone_does_not_depend_on_its_neighbours():
  """pruning_alone: each device's result is the same whether it runs with
  others or alone, and in any order (keys are folded from its id)."""
  together = run(devices(4), 'pruning_alone', rounds_=1)
  alone = run([devices(4)[2]], 'pruning_alone', rounds_=1)
  for a, b in zip(jax.tree.leaves(together[2].gates),
                  jax.tree.leaves(alone[0].gates)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(together[2].state.child.params),
                  jax.tree.leaves(alone[0].state.child.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_personalized_weights_follow_signature_similarity():
  """With pruning_per_emd at a sharp temperature, a device whose signature
  equals its neighbour's prunes like it; pruning_alone need not."""
  devs = devices(2)
  devs[1] = dataclasses.replace(
      devs[1], signature=devs[0].signature,
      state=devs[1].state._replace(arch=devs[0].state.arch,
                                   n_layers=devs[0].state.n_layers))
  out, _ = acme.run(hparams('pruning_per_emd', rounds_=1,
                            temperature=1e-3), CFG, devs, jax.random.key(0))
  # Identical signatures: W is uniform over the two, so both receive the
  # same aggregated importance and prune the same channels.
  for a, b in zip(jax.tree.leaves(out[0].gates), jax.tree.leaves(out[1].gates)):
    np.testing.assert_array_equal(a, b)
