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
  np.testing.assert_array_equal(APPLY(params, hidden, ARCH),
                                APPLY(params, hidden, ARCH, full))
  gates = jax.tree.map(np.copy, full)
  gates['cells'][0, 0, 1, 2, :2] = 0
  later = hidden.copy()
  later[:, 4:] += 5.0
  a = APPLY(params, hidden, ARCH, gates)
  b = APPLY(params, later, ARCH, gates)
  np.testing.assert_array_equal(a[:, :4], b[:, :4])
  assert not np.allclose(a, APPLY(params, hidden, ARCH))


def test_active_gates_are_the_sep_convs_stem_and_outputs():
  active = causal_header.active_gates(SPEC, ARCH)
  # Node 0's two branches are sep convs, node 1's identity and pool are not.
  assert active['cells'][0, 0].sum() == 2 * 4 * C
  assert active['cells'][0, 1].sum() == 0
  assert active['stem'].sum() == C and active['final'].sum() == C


def test_taylor_terms_are_gate_times_the_finite_difference_slope():
  hidden, ids, mask = _data(1, 4)
  params = _params(1)
  tx, step = lm_rounds.taylor_step(lm_head, 1e-3)
  gates = jax.tree.map(jnp.asarray, causal_header.full_gates(SPEC))
  _, _, loss, taylor = step(params, tx.init(params), gates, hidden, ids, mask,
                            ARCH, (W,))

  def loss_at(where, value):
    g = jax.tree.map(np.array, gates)
    g[where[0]][where[1:]] = value
    logits = lm_head(APPLY(params, hidden, ARCH, g), W)
    return float(plm.lm_loss(logits, ids, mask))

  assert abs(loss_at(('stem', 0), 1.0) - float(loss)) < 1e-5
  eps = 1e-2
  for where in [('stem', 1), ('cells', 0, 0, 1, 3, 2), ('final', 0, 3)]:
    slope = (loss_at(where, 1 + eps) - loss_at(where, 1 - eps)) / (2 * eps)
    got = float(taylor[where[0]][where[1:]])
    assert abs(got - slope) < 2e-3 + 0.05 * abs(slope), (where, got, slope)


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


LOCAL = lm_rounds.LocalHparams(steps_per_epoch=2, batch_size=4,
                               learning_rate=1e-2, seed=0)


def test_wo_pruning_keeps_every_gate_and_pruning_reaches_the_ratio():
  kept, _ = lm_rounds.run(_hparams('wo_pruning'), LOCAL, _devices(False),
                          lm_head, (W,))
  assert all(lm_rounds.live_share(SPEC, d) == 1.0 for d in kept.values())
  pruned, history = lm_rounds.run(_hparams('pruning_alone'), LOCAL,
                                  _devices(False), lm_head, (W,))
  prunable = sum(a.sum() for a in jax.tree.leaves(
      causal_header.active_gates(SPEC, ARCH)))
  expected = 1 - prune.num_pruned(int(prunable), 0.5) / prunable
  for d in pruned.values():
    assert lm_rounds.live_share(SPEC, d) == pytest.approx(expected)
    # Channels the architecture does not use are off.
    assert not np.any(d.gates['cells'][0, 1])
  assert [h['pruned'] for h in history[0]] == [True, True]


def test_devices_with_the_same_start_prune_alike_under_averaging():
  """pruning_avg sends both devices the same mix of their importances (equal
  data sizes: the plain mean), so two devices with the same architecture and
  start turn off the same channels."""
  hp = _hparams('pruning_avg', rounds=1)
  local = dataclasses.replace(LOCAL, seed=1)
  after, _ = lm_rounds.run(hp, local, _devices(True), lm_head, (W,))
  a, b = after[0].gates, after[1].gates
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_allclose(
      jax.tree.leaves(after[0].criterion)[0],
      jax.tree.leaves(after[1].criterion)[0], rtol=1e-6)


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
