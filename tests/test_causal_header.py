"""The causal header and personal language modelling: causality, identity at
init, perplexity by hand, exact sizes, the adapter's budget, training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acme_jax.device import causal_header as ch
from acme_jax.device import personal_lm as plm

DIM, CHANNELS, NODES, LAYERS, VOCAB, LENGTH = 8, 4, 3, 2, 11, 9
SPEC = ch.Spec(feature_dim=DIM, num_channels=CHANNELS, num_nodes=NODES,
               num_layers=LAYERS)
# Every op at least once, sep convs fed by nodes and by the cell inputs.
ALL_OPS = np.array([[0, 1, 1, 0], [2, 3, 0, 2], [3, 4, 2, 1]], np.int32)

_APPLY = jax.jit(ch.apply)


def random_arch(rng):
  return np.array([[rng.integers(0, n + 2), rng.integers(0, ch.NUM_OPS),
                    rng.integers(0, n + 2), rng.integers(0, ch.NUM_OPS)]
                   for n in range(NODES)], np.int32)


def perturbed_params(seed):
  """Init params with every leaf jittered: out_w non-zero, norms not trivial."""
  rng = np.random.default_rng(seed)
  params = ch.init_variables(SPEC, seed)['params']
  return jax.tree.map(lambda a: a + 0.3 * rng.standard_normal(a.shape).astype(
      a.dtype), params)


def test_output_at_t_ignores_every_later_token():
  rng = np.random.default_rng(0)
  params = perturbed_params(1)
  x = rng.standard_normal((2, LENGTH, DIM)).astype(np.float32)
  for arch in [ALL_OPS] + [random_arch(rng) for _ in range(3)]:
    ch.validate_arch(arch, NODES)
    base = np.asarray(_APPLY(params, x, arch))
    for t in range(LENGTH - 1):
      y = x.copy()
      y[:, t + 1:] += 10 * rng.standard_normal(y[:, t + 1:].shape)
      out = np.asarray(_APPLY(params, y, arch))
      np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-6,
                                 err_msg=f'arch {arch.tolist()} at t={t}')
      # The check has teeth: the header's own term (past the residual) does
      # change at later positions.
      assert not np.allclose(out[:, t + 1:] - y[:, t + 1:],
                             base[:, t + 1:] - x[:, t + 1:], atol=1e-3)
    # No statistics across the batch either: another row's tokens are
    # invisible (a BatchNorm in training mode would mix them in).
    y = x.copy()
    y[1] = rng.standard_normal(y[1].shape)
    np.testing.assert_allclose(_APPLY(params, y, arch)[0], base[0], atol=1e-6)


def test_every_op_is_causal_alone():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((1, 6, 3)).astype(np.float32)
  p = {op: {'dw': rng.standard_normal((2, k, 3)).astype(np.float32),
            'pw': rng.standard_normal((2, 3, 3)).astype(np.float32),
            'scale': np.ones((2, 3), np.float32),
            'bias': np.zeros((2, 3), np.float32)}
       for op, k in ch.SEP_KERNELS.items()}
  apply_op = jax.jit(ch.apply_op)
  for op in range(ch.NUM_OPS):
    base = np.asarray(apply_op(op, x, p))
    for t in range(5):
      y = x.copy()
      y[:, t + 1:] += 5.0
      np.testing.assert_allclose(apply_op(op, y, p)[:, :t + 1],
                                 base[:, :t + 1], atol=1e-6, err_msg=ch.OPS[op])
  # The sep convs' taps by hand: kernel 3 reads t-2, t-1, t.
  seq = np.arange(1.0, 6.0, dtype=np.float32)[None, :, None]
  np.testing.assert_allclose(
      ch.causal_depthwise(seq, np.array([[100.0], [10.0], [1.0]]))[0, :, 0],
      [1, 12, 123, 234, 345])
  # Causal pools by hand: position 0 averages itself only.
  np.testing.assert_allclose(ch.causal_pool(seq, 'avg')[0, :, 0],
                             [1, 1.5, 2, 3, 4])
  np.testing.assert_allclose(ch.causal_pool(-seq, 'max')[0, :, 0],
                             [-1, -1, -1, -2, -3])


def test_untrained_header_and_adapter_are_the_backbone_alone():
  x = np.random.default_rng(3).standard_normal((2, LENGTH, DIM)).astype(
      np.float32)
  params = ch.init_variables(SPEC, 0)['params']
  for arch in (ALL_OPS, ch.smallest_arch(NODES)):
    np.testing.assert_array_equal(_APPLY(params, x, arch), x)
  np.testing.assert_array_equal(
      plm.adapter_apply(plm.init_adapter(DIM, 200), x), x)


def test_perplexity_and_loss_by_hand():
  logits = np.array([[[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0],
                      [5.0, -5.0, 0.0]],
                     [[0.3, 0.2, 0.1], [-2.0, 4.0, 0.0], [9.0, 9.0, 9.0],
                      [0.0, 0.0, 0.0]]], np.float32)
  ids = np.array([[0, 2, 2, 1], [1, 1, 0, 2]], np.int32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int32)

  def log_softmax(z):
    z = z.astype(np.float64)
    return z - z.max() - np.log(np.exp(z - z.max()).sum())
  # Pairs (t -> t+1) with both tokens real: row 0 t=0,1; row 1 t=0.
  nll = [-log_softmax(logits[0, 0])[2], -log_softmax(logits[0, 1])[2],
         -log_softmax(logits[1, 0])[1]]
  # One program for all three (eager, each primitive would compile alone).
  ppl, loss, (total, count, correct) = jax.jit(lambda *a: (
      plm.perplexity(*a), plm.lm_loss(*a), plm.token_sums(*a)))(
          logits, ids, mask)
  np.testing.assert_allclose(ppl, np.exp(np.sum(nll) / 3), rtol=1e-6)
  np.testing.assert_allclose(loss, np.mean(nll), rtol=1e-6)
  np.testing.assert_allclose(total, np.sum(nll), rtol=1e-6)
  # Argmaxes 0, 2, 0 against targets 2, 2, 1: one right.
  assert float(count) == 3 and float(correct) == 1


def independent_count(params, arch):
  """Sizes of the parameter slices `arch` reads, found by walking it."""
  arch = np.asarray(arch)
  total = sum(params[k].size for k in ('stem_w', 'stem_scale', 'stem_bias',
                                       'out_w'))
  read = set(arch[:, 0].tolist()) | set(arch[:, 2].tolist())
  for layer in range(LAYERS):
    total += params['final_scale'][layer].size
    total += params['final_bias'][layer].size
    total += sum(params['final_conv'][layer, i].size
                 for i in range(NODES + 2) if i not in read)
    for node, row in enumerate(arch):
      for branch in (0, 1):
        inp, op = row[2 * branch], row[2 * branch + 1]
        if op in ch.SEP_KERNELS:
          k = ch.SEP_KERNELS[op]
          total += sum(params[f'sep{k}_{part}'][layer, node, inp, branch].size
                       for part in ('dw', 'pw', 'scale', 'bias'))
  return total


def test_param_count_is_exact():
  params = jax.tree.map(np.asarray, ch.init_variables(SPEC, 0)['params'])
  rng = np.random.default_rng(4)
  archs = [ALL_OPS, ch.smallest_arch(NODES), random_arch(rng),
           random_arch(rng)]
  counted = jax.jit(jax.vmap(lambda a: ch.param_count(SPEC, a)))  # traced
  expected = [independent_count(params, arch) for arch in archs]
  assert np.asarray(counted(np.stack(archs))).tolist() == expected
  assert int(ch.param_count(SPEC, ALL_OPS)) == expected[0]  # numpy arch


@pytest.mark.parametrize('budget', [3 * DIM + 1, 100, 1000, 12345])
def test_adapter_is_the_largest_that_fits(budget):
  rank = plm.adapter_rank(DIM, budget)
  params = plm.init_adapter(DIM, budget)
  count = sum(a.size for a in jax.tree.leaves(params))
  assert count == plm.adapter_param_count(DIM, rank) <= budget
  assert plm.adapter_param_count(DIM, rank + 1) > budget


def test_adapter_budget_below_rank_one_raises():
  with pytest.raises(ValueError, match='below the smallest adapter'):
    plm.adapter_rank(DIM, 3 * DIM)


def tiny_task(seed=0, rows=16):
  """Backbone = a random token embedding, LM head = a random projection;
  the user's text counts up mod VOCAB, right-padded to LENGTH."""
  rng = np.random.default_rng(seed)
  embed = rng.standard_normal((VOCAB, DIM)).astype(np.float32)
  start = rng.integers(0, VOCAB, rows)
  ids = (start[:, None] + np.arange(LENGTH)) % VOCAB
  lengths = rng.integers(3, LENGTH + 1, rows)
  mask = (np.arange(LENGTH) < lengths[:, None]).astype(np.int32)
  ids = (ids * mask).astype(np.int32)
  w = rng.standard_normal((DIM, VOCAB)).astype(np.float32)
  return (embed[ids], ids, mask), (lambda h, w: h @ w), (jnp.asarray(w),)


@pytest.mark.slow  # ~14 s: the suite's 10 minutes
def test_training_steps_reduce_the_loss():
  data, lm_head, lm_params = tiny_task()
  heads = [(ch.apply, ch.init_variables(SPEC, 5)['params'], ALL_OPS),
           (plm.adapter_apply, plm.init_adapter(DIM, 200), None)]
  for head_apply, params, arch in heads:
    t = plm.trainer(head_apply, lm_head, learning_rate=3e-2)
    opt_state = t.init(params)
    losses = []
    for _ in range(40):
      params, opt_state, loss = t.step(params, opt_state, *data, arch,
                                       lm_params)
      losses.append(float(loss))
    assert losses[-1] < 0.75 * losses[0], losses
  # Whole-split evaluation (the adapter's: a cheap program) in batches of 6
  # over 16 rows equals one pass over all rows: padded rows count nothing.
  ppl = plm.evaluate(t, params, data, arch, lm_params, batch_size=6)
  assert ppl['tokens'] == int(np.sum(data[2][:, :-1] * data[2][:, 1:]))
  logits = lm_head(plm.adapter_apply(params, data[0]), *lm_params)
  np.testing.assert_allclose(ppl['perplexity'], plm.perplexity(
      logits, data[1], data[2]), rtol=1e-5)


@pytest.mark.slow
def test_search_returns_a_header_within_budget():
  data, lm_head, lm_params = tiny_task(rows=12)
  train = tuple(a[:8] for a in data)
  val = tuple(a[8:] for a in data)
  smallest = int(ch.param_count(SPEC, ch.smallest_arch(NODES)))
  budget = smallest + 2 * (3 * CHANNELS + CHANNELS ** 2 + 2 * CHANNELS)
  hp = plm.SearchHparams(epochs=2, child_steps=3, controller_steps=2,
                         batch_size=4, num_final_archs=4)
  found = plm.search(SPEC, train, val, lm_head, budget, hp, lm_params)
  ch.validate_arch(found['arch'], NODES)
  assert found['header_params'] <= budget
  assert found['header_params'] == int(ch.param_count(SPEC, found['arch']))
  assert np.isfinite(found['val_perplexity']) and len(found['history']) == 2
