"""ACME's rounds on causal language-model headers (device/lm_rounds.py)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acme_jax.device import causal_header
from acme_jax.device import lm_rounds
from acme_jax.device import personal_lm as plm
from acme_jax.device import prune
from acme_jax.federated import acme

D, V, T, C, N = 8, 11, 6, 4, 2
SPEC = causal_header.Spec(D, C, N)
# Node 0: sep3 on prev, sep5 on cur; node 1: identity on node 0, avg pool.
ARCH = np.array([[0, 0, 1, 1], [2, 4, 2, 2]], np.int32)


def lm_head(hidden, w):
  return hidden @ w


def _data(seed, rows=12):
  rng = np.random.default_rng(seed)
  hidden = rng.standard_normal((rows, T, D)).astype(np.float32)
  ids = rng.integers(1, V, (rows, T)).astype(np.int32)
  mask = np.ones((rows, T), np.float32)
  mask[:, -1] = 0
  return hidden, ids, mask


def _params(seed=0):
  params = causal_header.init_variables(SPEC, seed)['params']
  # A non-zero output projection, so the gates matter to the loss.
  params['out_w'] = jnp.asarray(np.random.default_rng(seed + 7)
                                .standard_normal((C, D)), jnp.float32)
  return params


APPLY = jax.jit(causal_header.apply)
W = jnp.asarray(np.random.default_rng(3).standard_normal((D, V)), jnp.float32)


def test_all_on_gates_equal_the_ungated_header_and_stay_causal():
  hidden, _, _ = _data(0, 2)
  params = _params()
  full = causal_header.full_gates(SPEC)
  np.testing.assert_allclose(APPLY(params, hidden, ARCH),
                             APPLY(params, hidden, ARCH, full), atol=1e-6)
  gates = jax.tree.map(np.copy, full)
  gates['cells'][0, 0, 1, 2, :2] = 0
  later = hidden.copy()
  later[:, 4:] += 5.0
  a = APPLY(params, hidden, ARCH, gates)
  b = APPLY(params, later, ARCH, gates)
  np.testing.assert_array_equal(a[:, :4], b[:, :4])
  assert not np.allclose(a, APPLY(params, hidden, ARCH))


def test_a_pruned_channel_has_no_effect_at_all():
  """Off after a sep conv's first LayerNorm: scaling the weights that feed
  only that channel (its 1x1 column) changes nothing, the norm's statistics
  included; on, it changes the output."""
  hidden, _, _ = _data(2, 2)
  params = _params(4)
  gates = jax.tree.map(np.copy, causal_header.full_gates(SPEC))
  gates['cells'][0, 0, 0, 1, 2] = 0    # layer 0, node 0, branch 0: ln1
  scaled = dict(params)
  # Node 0 branch 0 reads input 0 (prev) with sep3, first repeat's 1x1.
  pw = np.array(params['sep3_pw'])
  pw[0, 0, 0, 0, 0, :, 2] *= 10.0
  scaled['sep3_pw'] = jnp.asarray(pw)
  np.testing.assert_allclose(APPLY(params, hidden, ARCH, gates),
                             APPLY(scaled, hidden, ARCH, gates), atol=1e-5)
  full = causal_header.full_gates(SPEC)
  assert not np.allclose(APPLY(params, hidden, ARCH, full),
                         APPLY(scaled, hidden, ARCH, full), atol=1e-3)


def test_active_gates_are_the_sep_convs_stem_and_outputs():
  active = causal_header.active_gates(SPEC, ARCH)
  # Node 0's two branches are sep convs, node 1's identity and pool are not.
  assert active['cells'][0, 0].sum() == 2 * 4 * C
  assert active['cells'][0, 1].sum() == 0
  assert active['stem'].sum() == C and active['final'].sum() == C


def test_taylor_terms_are_gate_times_the_finite_difference_slope():
  """t = g * dL/dg: checked at gates of 1 and 0.5 against a central finite
  difference of the loss, and 0 for a gate that is off."""
  hidden, ids, mask = _data(1, 4)
  params = _params(1)
  tx, step = lm_rounds.taylor_step(lm_head, 1e-3)
  gates = jax.tree.map(np.copy, causal_header.full_gates(SPEC))
  gates['stem'][1] = 0.5
  gates['cells'][0, 0, 1, 3, 2] = 0.5
  gates['cells'][0, 0, 0, 0, 1] = 0.0
  zeros = jax.tree.map(jnp.zeros_like, gates)
  _, _, (squared, linear), loss = step(
      params, tx.init(params), (zeros, zeros), gates, (hidden, ids, mask),
      ARCH, (W,))

  def loss_at(where, value):
    g = jax.tree.map(np.array, gates)
    g[where[0]][where[1:]] = value
    logits = lm_head(APPLY(params, hidden, ARCH, g), W)
    return float(plm.lm_loss(logits, ids, mask))

  # A gate also weighs its channel in its LayerNorm's statistics, so the
  # loss curves fast in it: a small step (float32 still resolves it).
  eps = 1e-3
  for where in [('stem', 1), ('stem', 3), ('cells', 0, 0, 1, 3, 2),
                ('final', 0, 3)]:
    g = float(gates[where[0]][where[1:]])
    slope = (loss_at(where, g + eps) - loss_at(where, g - eps)) / (2 * eps)
    got = float(linear[where[0]][where[1:]])
    assert abs(got - g * slope) < 2e-3 + 0.05 * abs(g * slope), (where, got)
    assert float(squared[where[0]][where[1:]]) == pytest.approx(got ** 2)
  assert float(linear['cells'][0, 0, 0, 0, 1]) == 0.0
  assert abs(loss_at(('stem', 0), 1.0) - float(loss)) < 1e-5


def _hparams(mode, rounds=2, ratio=0.5, **kw):
  hp = dataclasses.replace(
      acme.RoundsHparams.from_config(_config(), mode), gates=SPEC,
      rounds=rounds, prune_ratio=ratio, local_epochs=1, finetune_epochs=1,
      criterion_momentum=0.0, **kw)
  return hp


def _config():
  from configs import default
  return default.get_config()


def _devices(same_data: bool):
  out = []
  for i in range(2):
    train = _data(5 if same_data else 5 + i)
    out.append(lm_rounds.LMDevice(
        device=i, edge=0, arch=ARCH, params=_params(2), start=2,
        train=train, signature=lm_rounds.token_histogram(train[1], train[2],
                                                         V)))
  return out


LOCAL = lm_rounds.LocalHparams(batch_size=4, learning_rate=1e-2, seed=0)
PRUNABLE = sum(int(a.sum()) for a in jax.tree.leaves(
    causal_header.active_gates(SPEC, ARCH)))   # 4 + 2 * 4 * 4 + 4 = 40


def test_epoch_batches_cover_every_row_once_per_epoch():
  batches = lm_rounds.epoch_batches(10, 4, np.random.default_rng(0))
  assert [len(b) for b in batches] == [4, 4, 4]
  rows = np.concatenate(batches)
  assert sorted(rows[:10]) == list(range(10))
  np.testing.assert_array_equal(rows[10:], rows[:2])


def test_wo_pruning_keeps_every_gate_and_pruning_follows_the_ramp():
  kept, _ = lm_rounds.run(_hparams('wo_pruning'), LOCAL, _devices(False),
                          lm_head, (W,))
  assert all(lm_rounds.live_share(SPEC, d) == 1.0 for d in kept.values())
  assert PRUNABLE == 40
  # Round 0 of 2 turns off floor(0.25 * 40) = 10 channels, round 1 20.
  one, _ = lm_rounds.run(_hparams('pruning_alone', rounds=1, ratio=0.25),
                         LOCAL, _devices(False), lm_head, (W,))
  two, history = lm_rounds.run(_hparams('pruning_alone'), LOCAL,
                               _devices(False), lm_head, (W,))
  for d in one.values():
    assert lm_rounds.live_share(SPEC, d) == 30 / 40
  for d in two.values():
    assert lm_rounds.live_share(SPEC, d) == 20 / 40
    # Channels the architecture does not use are off.
    assert not np.any(d.gates['cells'][0, 1])
  assert [h['pruned'] for h in history[0]] == [True, True]


def test_separable_pruning_leaves_the_stem_and_cell_outputs_alone():
  after, _ = lm_rounds.run(_hparams('pruning_alone', prune_set='separable'),
                           LOCAL, _devices(False), lm_head, (W,))
  for d in after.values():
    assert d.gates['stem'].all() and d.gates['final'].all()
    # floor(0.5 * 32) of node 0's 32 sep-conv channels are off.
    assert d.gates['cells'][0, 0].sum() == 16


def test_without_a_last_fine_tuning_the_pruned_header_is_not_trained():
  hp = _hparams('pruning_alone', rounds=1, finetune_last=False)
  clients = lm_rounds.LMClients(hp, LOCAL, _devices(False), lm_head, (W,))
  reports = clients.train(0, [0, 1], set())
  trained = {i: clients.devices[i].params for i in (0, 1)}
  clients.finetune(0, [0, 1], {i: reports[i].importance for i in (0, 1)})
  for i in (0, 1):
    assert jax.tree.all(jax.tree.map(np.array_equal, trained[i],
                                     clients.devices[i].params))
    assert lm_rounds.live_share(SPEC, clients.devices[i]) == 20 / 40


def test_averaging_mixes_the_importances_of_devices_with_one_start_only():
  """pruning_avg: each device prunes by the mean of the two importances
  (equal data sizes) where both have the channel as the same channel; a
  device with another start keeps its own."""
  for starts, mixed in (((2, 2), True), ((2, 3), False)):
    devices = [dataclasses.replace(d, start=s)
               for d, s in zip(_devices(False), starts)]
    hp = _hparams('pruning_avg', rounds=1)
    clients = lm_rounds.LMClients(hp, LOCAL, devices, lm_head, (W,))
    state = acme.init()
    sent = {}
    train = clients.train

    def spy(r, members, introduce):
      reports = train(r, members, introduce)
      sent.update({i: rep.importance for i, rep in reports.items()})
      return reports

    clients.train = spy
    acme.apply(hp, state, clients)
    for i in (0, 1):
      want = (jax.tree.map(lambda a, b: (a + b) / 2, sent[0], sent[1])
              if mixed else sent[i])
      for got, exp, used in zip(
          jax.tree.leaves(clients.devices[i].criterion),
          jax.tree.leaves(want),
          jax.tree.leaves(causal_header.active_gates(SPEC, ARCH))):
        np.testing.assert_allclose(got * used, exp * used, rtol=1e-5,
                                   atol=1e-12)


def test_shared_gates_do_not_share_an_identity_branch():
  other = ARCH.copy()
  other[0, 1] = 4  # node 0's first branch: identity instead of sep3
  layouts = [prune.Layout(0, 1, ARCH), prune.Layout(0, 1, other)]
  shared = prune.shared_gates(SPEC, layouts)
  assert shared['cells'][0, 1, 0, 0, 0].sum() == 0   # the branch that differs
  assert shared['cells'][0, 1, 0, 0, 1].all()        # the sep5 both keep
  assert shared['cells'][1, 1, 0, 0, 0].sum() == 0   # identity has no gates
  assert not shared['final'][0, 1].any()             # different cells


def test_signatures():
  ids = np.array([[1, 2, 2, 0], [3, 3, 3, 3]])
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
  np.testing.assert_allclose(lm_rounds.token_histogram(ids, mask, 5),
                             [0, 0.2, 0.4, 0.4, 0])
  hidden = np.zeros((2, 3, 2), np.float32)
  hidden[0, :, 0] = [1, 2, 3]      # RMS-normalised: (sqrt 2, 0)
  hidden[1, :, 1] = [-4, 5, 6]     # (0, -+sqrt 2), the last padded
  sig = lm_rounds.feature_signature(hidden, [[1, 1, 1], [1, 1, 0]])
  np.testing.assert_allclose(sig, [3 * 2 ** .5 / 5, 0], atol=1e-5)


def test_the_experiment_summarizes_geometric_means_and_paired_log_differences():
  """personal_lm.summarize: an arm's perplexity per repeat is the geometric
  mean over devices; differences are paired over repeats in log perplexity;
  each rounds arm is paired with wo_pruning; live shares are averaged."""
  from acme_jax import report
  from experiments import personal_lm

  def row(scale, live):
    base = {'backbone': 100.0 * scale, 'adapter': 50.0 * scale,
            'adapter_same_size': 80.0 * scale, 'searched': 40.0 * scale,
            'rounds:wo_pruning': 20.0 * scale,
            'rounds:wo_pruning:live': 1.0,
            'rounds:pruning_avg': 10.0 * scale,
            'rounds:pruning_avg:live': live}
    return dict(base, header_params=1, arch=[[0]])

  repeats = [[row(1.0, 0.5), row(4.0, 0.7)], [row(2.0, 0.6), row(2.0, 0.6)]]
  summary = personal_lm.summarize(repeats)
  assert personal_lm.arms_of(repeats[0]) == [
      'backbone', 'adapter', 'adapter_same_size', 'searched',
      'rounds:wo_pruning', 'rounds:pruning_avg']
  # Geometric mean over the two devices: 100 * sqrt(1 * 4) = 200 per repeat.
  assert summary['perplexity']['backbone']['mean'] == pytest.approx(200.0)
  d = summary['log_perplexity_difference']
  assert d['searched - adapter']['mean'] == pytest.approx(np.log(40 / 50))
  assert d['rounds:pruning_avg - rounds:wo_pruning']['mean'] == pytest.approx(
      np.log(0.5))
  assert d['rounds:wo_pruning - searched']['mean'] == pytest.approx(
      np.log(0.5))
  assert summary['live_share']['rounds:pruning_avg']['mean'] == pytest.approx(
      0.6)
  table = report.personal_lm_table(summary)
  assert '| rounds:pruning_avg | 20.00 |' in table
