"""Device <-> edge aggregation rounds: pruning schedule, modes, ledger records,
channel correspondence, the prototype's rounds, independence from the other
devices."""
import dataclasses

import jax
import numpy as np
import pytest

from conftest import live_fraction, tiny_nas, tiny_rounds

from acme_jax.device import child as child_lib
from acme_jax.device import features
from acme_jax.device import header as header_lib
from acme_jax.device import local_data, prune
from acme_jax.device import state as state_lib
from acme_jax.federated import acme
from acme_jax.hierarchy.ledger import Ledger

SPEC, CFG = tiny_nas()
CLASSES, DIM, CHANNELS, NODES = (SPEC.num_classes, SPEC.feature_dim,
                                 SPEC.num_channels, SPEC.num_nodes)
SCHEDULE = state_lib.Schedule(batch_size=8)
ARCHS = [np.array([[0, 0, 1, 2], [2, 4, 0, 5]], np.int32),
         np.array([[1, 4, 0, 0], [0, 1, 2, 3]], np.int32)]


def devices(num=4, seed=0, same_start=False):
  """Devices 0, 1 under edge 0 and 2, 3 under edge 1; archs alternate.
  Each header starts from its own seed, or all from one (`same_start`)."""
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
    start = 7 if same_start else 100 + d
    state = child_lib.init_state(CFG, jax.random.key(d), 10**6, 2 + d % 2,
                                 arch=ARCHS[d % 2])
    out.append(state_lib.DeviceHeader(
        device=d, edge=d // 2,
        state=state._replace(child=child_lib.init_child(CFG, start)),
        lr=0.05, data=data[d], sizes=sizes[d], start=start,
        signature=rng.standard_normal((20, 6)).astype(np.float32) + d))
  return out


def hparams(mode, **overrides):
  return tiny_rounds(mode, SPEC, SCHEDULE, **overrides)


def run(devs, mode, ledger=None, **overrides):
  return acme.run(hparams(mode, **overrides), CFG, devs, jax.random.key(0),
                  ledger=ledger)[0]


@pytest.mark.parametrize('mode', [
    pytest.param('pruning_alone', marks=pytest.mark.slow), 'pruning_per_emd'])
def test_pruning_reaches_the_ratio_and_records_every_exchange(mode):
  ledger = Ledger()
  devs = run(devices(), mode, ledger)
  for d in devs:
    active = prune.active_gates(SPEC, d.arch, d.n_layers)
    assert live_fraction(d.gates, active) == pytest.approx(0.5, abs=0.02)
    full = int(header_lib.param_count(SPEC, d.arch, d.n_layers))
    assert d.header_params(SPEC) < full
  kinds = [r.kind for r in ledger]
  if mode == 'pruning_alone':  # a device prunes by its own: nothing moves
    assert not kinds
    return
  assert kinds.count('importance') == 4 * 2 * 2  # 4 devices, 2 rounds, up+down
  assert kinds.count('signature') == 4           # once, in round 0
  assert kinds.count('header') == 4              # the layouts, likewise
  units = sum(int(np.prod(s)) for s in header_lib.gate_shapes(SPEC).values())
  for r in ledger:
    if r.kind == 'importance':
      assert r.bytes == 4 * units  # one float32 per gate channel
      # Aggregation stays within each edge: devices 0,1 -> edge 0, 2,3 -> 1.
      device = r.src_id if r.src_tier == 'device' else r.dst_id
      edge = r.dst_id if r.src_tier == 'device' else r.src_id
      assert edge == device // 2
    if r.kind == 'header':
      assert r.bytes == 4 * (2 + 4 * NODES) and r.round == 0


def test_wo_pruning_never_prunes_and_trains_as_long():
  devs = run(devices(2), 'wo_pruning')
  for d in devs:
    assert all(np.all(g == 1) for g in jax.tree.leaves(d.gates))


def test_a_device_alone_does_not_depend_on_its_neighbours():
  """pruning_alone: each device's result is the same whether it runs with
  others or alone, and in any order (keys are folded from its id)."""
  together = run(devices(4), 'pruning_alone', rounds=1)
  alone = run([devices(4)[2]], 'pruning_alone', rounds=1)
  for a, b in zip(jax.tree.leaves(together[2].gates),
                  jax.tree.leaves(alone[0].gates)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(together[2].state.child.params),
                  jax.tree.leaves(alone[0].state.child.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_personalized_weights_follow_signature_similarity():
  """With pruning_per_emd, a device whose signature, architecture and start
  equal its neighbour's prunes like it."""
  devs = devices(2, same_start=True)
  devs[1] = dataclasses.replace(
      devs[1], signature=devs[0].signature,
      state=devs[1].state._replace(arch=devs[0].state.arch,
                                   n_layers=devs[0].state.n_layers))
  out = run(devs, 'pruning_per_emd', rounds=1, temperature=1e-3)
  # Identical signatures: W is uniform over the two, and every channel is
  # shared, so both receive the same importance and prune the same channels.
  for a, b in zip(jax.tree.leaves(out[0].gates), jax.tree.leaves(out[1].gates)):
    np.testing.assert_array_equal(a, b)


def _criteria(devs, mode, **overrides):
  """The criterion each device pruned by after one round."""
  out = run(devs, mode, rounds=1, **overrides)
  return [d.criterion for d in out]


def test_unrelated_channels_are_never_mixed():
  """Headers that started from different weights share no channel: every
  aggregating mode leaves each device its own importance, as pruning_alone;
  from one start, the same architectures' channels mix."""
  apart = devices(4)
  alone = _criteria(apart, 'pruning_alone')
  for mode in ('pruning_avg', 'pruning_per_emd'):
    for got, own in zip(_criteria(apart, mode), alone):
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(own)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
  together = devices(4, same_start=True)
  mixed = _criteria(together, 'pruning_avg')
  own = _criteria(together, 'pruning_alone')
  # Devices 0 and 2 (different edges) never mix; within edge 0, devices 0
  # and 1 share the stem (same start), so it mixes; their archs differ, so
  # the cells' output channels do not.
  assert not np.allclose(mixed[0]['stem'], own[0]['stem'])
  np.testing.assert_allclose(mixed[0]['final'], own[0]['final'], rtol=1e-6)


def test_aggregated_importance_is_the_weighted_mean_over_sharers():
  """I'_k at a channel = sum_i W[k, i] I_i / sum_i W[k, i] over the devices
  that share it, checked by a loop over devices and channels."""
  rng = np.random.default_rng(3)
  hp = hparams('pruning_avg')
  layouts = [prune.Layout(5, 2, ARCHS[0]), prune.Layout(5, 3, ARCHS[0]),
             prune.Layout(5, 2, ARCHS[1]), prune.Layout(6, 2, ARCHS[0])]
  shapes = header_lib.gate_shapes(hp.gates)
  own = [{k: rng.random(s).astype(np.float32) for k, s in shapes.items()}
         for _ in layouts]
  sizes = [10, 20, 30, 40]
  got = acme.aggregate_edge(hp, own, [None] * 4, sizes,
                            [l.pack() for l in layouts])
  shared = prune.shared_gates(hp.gates, layouts)
  w = np.array(sizes, float) / sum(sizes)
  for k in range(4):
    for name in shapes:
      mask = shared[name][k]                       # (D, *shape)
      num = sum(w[i] * mask[i] * own[i][name] for i in range(4))
      den = sum(w[i] * mask[i] for i in range(4))
      want = np.where(den > 0, num / np.where(den > 0, den, 1),
                      own[k][name])
      np.testing.assert_allclose(got[k][name], want, rtol=1e-5)


def test_shared_gates_follow_their_definition():
  """Stem: same start; a separable conv's gates: same start, both use the
  layer, same input and op on that branch; cell outputs: same start, both
  use the layer, the same cell."""
  layouts = [prune.Layout(1, 2, ARCHS[0]), prune.Layout(1, 3, ARCHS[0]),
             prune.Layout(1, 2, ARCHS[1]), prune.Layout(2, 2, ARCHS[0])]
  shared = prune.shared_gates(SPEC, layouts)
  sep = set(header_lib.SEP_KERNELS)
  for k, a in enumerate(layouts):
    for i, b in enumerate(layouts):
      same = a.start == b.start
      assert bool(shared['stem'][k, i].all()) == same
      for layer in range(SPEC.max_layers):
        both = layer < a.n_layers and layer < b.n_layers
        cell = same and both and np.array_equal(a.arch, b.arch)
        assert bool(shared['final'][k, i, layer].all()) == cell
        for node in range(NODES):
          for branch in range(2):
            ia, oa = a.arch[node, 2 * branch:2 * branch + 2]
            ib, ob = b.arch[node, 2 * branch:2 * branch + 2]
            want = same and both and ia == ib and oa == ob and oa in sep
            got = shared['cells'][k, i, layer, node, branch]
            assert bool(got.all()) == want and bool(got.any()) == want


@pytest.mark.slow  # ~46 s; the resume test's default case runs these options
def test_the_prototype_rounds_prune_separable_channels_by_a_smoothed_criterion():
  """optimizer sgd at a constant rate, only separable-conv gates pruned,
  the criterion an exponential average over rounds, no fine-tuning after
  the last prune."""
  devs = devices(2, same_start=True)
  hp = dict(optimizer='sgd', lr=0.01, momentum=0.5, prune_set='separable',
            criterion_momentum=0.9, finetune_epochs=0, finetune_last=False,
            local_epochs=1, prune_ratio=0.4, rounds=2)
  clients = acme.EngineClients(hparams('pruning_alone', **hp), CFG, devs,
                               jax.random.key(0))
  received = []
  for r in range(2):
    reports = clients.train(r, clients.members(), set())
    received.append({d: rep.importance for d, rep in reports.items()})
    clients.finetune(r, sorted(reports), received[-1])
  for d in clients.devices:
    # Stems and the used cells' outputs are never pruned.
    used = prune.active_gates(SPEC, d.arch, d.n_layers)
    assert np.all(d.gates['stem'] == 1)
    assert np.all(d.gates['final'][used['final'] > 0] == 1)
    active = prune.active_gates(SPEC, d.arch, d.n_layers, separable_only=True)
    assert live_fraction(d.gates, active) == pytest.approx(0.6, abs=0.02)
    # The criterion: 0.9 * round 0's + 0.1 * round 1's.
    for got, a, b in zip(jax.tree.leaves(d.criterion),
                         jax.tree.leaves(received[0][d.device]),
                         jax.tree.leaves(received[1][d.device])):
      np.testing.assert_allclose(got, 0.9 * a + 0.1 * b, rtol=1e-5)


@pytest.mark.slow  # ~32 s; the resume test's default case runs SGD rounds
def test_rounds_sgd_uses_a_fresh_optimizer_at_a_constant_rate():
  """The prototype's optimizer: momentum buffers start empty in round 0,
  whatever the final training left in them, and the rate is constant."""
  devs = devices(1)
  # Huge leftover momentum: were it kept, the first step would move the
  # weights by about lr * 1e6.
  leftover = jax.tree.map(lambda a: a + 1e6, devs[0].state.child.opt_state)
  devs[0] = dataclasses.replace(devs[0], state=devs[0].state._replace(
      child=devs[0].state.child._replace(opt_state=leftover)))
  clients = acme.EngineClients(
      hparams('wo_pruning', optimizer='sgd', lr=1e-3, momentum=0.5), CFG,
      devs, jax.random.key(0))
  clients.train(0, [0], set())
  moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
              for a, b in zip(jax.tree.leaves(clients.devices[0].state.child
                                              .params),
                              jax.tree.leaves(devs[0].state.child.params)))
  assert 0 < moved < 1.0
  assert clients.schedule.kind == 'constant' and clients.cfg.momentum == 0.5
  assert clients.devices[0].lr == 1e-3


def test_ties_in_importance_prune_by_layout_not_by_float_noise():
  """Scores equal up to float reassociation rank as ties, broken by layout
  position; genuinely smaller scores still go first."""
  active = {'a': np.ones(6)}
  base = np.array([1.0, 1.0, 1.0, 0.5, 1.0, 1.0])
  noisy = base * (1 + np.array([3e-7, -2e-7, 0, 0, 1e-7, -3e-7]))
  for scores in (base, noisy):
    gates = prune.prune_gates({'a': scores}, active, 0.34)
    # 2 off: the 0.5 first, then the first of the tied ones.
    assert gates['a'].tolist() == [0, 1, 1, 0, 1, 1]


# The default suite resumes the programs test_pruning_reaches_the_ratio
# compiled (~60 s saved on a cold compile cache); the optimizer, prune set
# and smoothed criterion of the other case are slow.
@pytest.mark.parametrize('mode,overrides', [
    ('pruning_per_emd', {}),
    pytest.param('pruning_alone', dict(
        optimizer='sgd', lr=0.01, momentum=0.5, prune_set='separable',
        criterion_momentum=0.9), marks=pytest.mark.slow)])
def test_interrupted_rounds_resume_byte_identical(tmp_path, monkeypatch, mode,
                                                  overrides):
  """Rounds killed after their second round resume from the saved state
  (headers, criteria, the edges' signatures and layouts, digests, ledger
  records) and end exactly as uninterrupted rounds do."""
  from acme_jax import resume
  hp = hparams(mode, rounds=3, **overrides)

  def rounds(partial=None):
    ledger = Ledger()
    ledger.send(('cloud', 0), ('edge', 0), 'front', 8)  # found at the start
    headers, digests = acme.run(hp, CFG, devices(), jax.random.key(0),
                                ledger=ledger, partial=partial)
    return headers, digests, ledger.to_records()

  through = rounds()
  real, calls = acme.apply, []

  def stop_in_the_third_round(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(acme, 'apply', stop_in_the_third_round)
  partial = lambda: resume.Partial(tmp_path / 'rounds', 1, {'x': 1})
  with pytest.raises(KeyboardInterrupt):
    rounds(partial())
  calls.clear()
  monkeypatch.setattr(acme, 'apply', lambda *a, **k: (calls.append(1),
                                                      real(*a, **k))[1])
  resumed = rounds(partial())
  assert len(calls) == 1  # only the third round ran again
  assert resumed[1] == through[1] and resumed[2] == through[2]
  for a, b in zip(resumed[0], through[0]):
    assert a.lr == b.lr
    assert (jax.tree.structure((a.state, a.criterion)) ==
            jax.tree.structure((b.state, b.criterion)))
    for x, y in zip(jax.tree.leaves((a.state, a.criterion)),
                    jax.tree.leaves((b.state, b.criterion))):
      x, y = (np.asarray(jax.random.key_data(v) if jax.dtypes.issubdtype(
          v.dtype, jax.dtypes.prng_key) else v) for v in (x, y))
      assert x.dtype == y.dtype and np.array_equal(x, y)
