"""The ENAS controller against a line-by-line transcription of the
prototype's `micro_controller.py` (numpy, Python lists, no scan)."""
import jax
import numpy as np
import pytest

from acme_jax.device import controller as controller_lib
from acme_jax.device import header as header_lib

NODES = 3


def reference_log_prob(ctrl, params, arch):
  """micro_controller.run_sampler with the decisions forced to `arch`:
  returns (sum of log-probs, sum of entropies) in float64."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731

  def lstm(x, h, c):
    z = x @ p['w_ih'] + p['b_ih'] + h @ p['w_hh'] + p['b_hh']
    i, f, g, o = np.split(z, 4)
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c

  def log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())

  h = c = np.zeros(ctrl.hidden)
  inputs = p['encoder'][0]
  anchors, anchors_w_1 = [], []
  for _ in range(2):
    h, c = lstm(inputs, h, c)
    anchors.append(np.zeros(ctrl.hidden))
    anchors_w_1.append(h @ p['w_attn_1'])
  log_prob = entropy = 0.0
  fixed = np.array([0.25, 0.25] + [-0.25] * (ctrl.num_ops - 2))
  for layer_id in range(2, NODES + 2):
    row = arch[layer_id - 2]
    for index in (row[0], row[2]):
      h, c = lstm(inputs, h, c)
      query = np.tanh(np.stack(anchors_w_1[:layer_id]) + h @ p['w_attn_2'])
      logits = query @ p['v_attn']
      logits = ctrl.tanh_constant * np.tanh(logits / ctrl.temperature)
      lp = log_softmax(logits)
      log_prob += lp[index]
      entropy -= np.sum(np.exp(lp) * lp)
      inputs = anchors[index]
    for op in (row[1], row[3]):
      h, c = lstm(inputs, h, c)
      logits = (h @ p['w_soft'] + p['b_soft']) / ctrl.temperature
      logits = ctrl.tanh_constant / ctrl.op_tanh_reduce * np.tanh(logits)
      logits = logits + fixed
      lp = log_softmax(logits)
      log_prob += lp[op]
      entropy -= np.sum(np.exp(lp) * lp)
      inputs = p['encoder'][op + 1]
    h, c = lstm(inputs, h, c)
    anchors.append(h)
    anchors_w_1.append(h @ p['w_attn_1'])
    inputs = p['encoder'][0]
  return log_prob, entropy


@pytest.fixture(scope='module')
def ctrl():
  return controller_lib.Controller(NODES, hidden=12)


def test_matches_the_prototype_transcription(ctrl):
  params = ctrl.init(0)
  # Larger weights than the init, so attention and the priors matter.
  params = {k: v * (3.0 if k != 'b_soft' else 1.0) for k, v in params.items()}
  run = jax.jit(lambda p, a: ctrl.run(p, arch=a))
  sample = jax.jit(ctrl.sample)
  for i in range(5):
    arch = np.asarray(sample(params, jax.random.key(i))[0])
    header_lib.validate_arch(arch, NODES)
    _, log_prob, entropy = run(params, arch)
    ref_lp, ref_ent = reference_log_prob(ctrl, params, arch)
    assert float(log_prob) == pytest.approx(ref_lp, rel=1e-5)
    assert float(entropy) == pytest.approx(ref_ent, rel=1e-5)


def test_b_soft_prior_favours_the_first_two_ops(ctrl):
  """b_soft starts at 10 on sep3 and sep5 (the prototype's prior)."""
  params = ctrl.init(1)
  assert np.asarray(params['b_soft']).tolist()[:3] == [10.0, 10.0, 0.0]
  archs = jax.vmap(lambda k: ctrl.sample(params, k)[0])(
      jax.random.split(jax.random.key(0), 400))
  ops = np.asarray(archs)[:, :, [1, 3]].ravel()
  share = np.mean((ops == 0) | (ops == 1))
  # Op logits: 0.44 * tanh((w h + b) / 5) + (+-0.25): with b = 10 the first
  # two ops get ~ +0.67, the others ~ -0.25: a share of ~0.5 (uniform: 1/3).
  assert 0.42 < share < 0.6


@pytest.mark.slow  # ~40 s here: the 10-minute budget of the default suite
def test_reinforce_raises_a_rewarded_arch(ctrl):
  params = ctrl.init(2)
  arch = np.asarray(ctrl.sample(params, jax.random.key(3))[0])
  tx = controller_lib.optimizer(0.0025)
  state = tx.init(params)
  before = float(ctrl.log_prob(params, arch))
  for _ in range(5):
    grads = controller_lib.reinforce_grads(ctrl, params, arch, 1.0)
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  assert float(ctrl.log_prob(params, arch)) > before


def test_sample_within_never_returns_an_arch_over_budget(ctrl):
  s = header_lib.Spec(num_classes=3, feature_dim=4, num_channels=4,
                      num_nodes=NODES, max_layers=3)
  smallest = header_lib.smallest_arch(NODES)
  limit = int(header_lib.param_count(s, smallest, 3)) + 60
  fits = lambda a: header_lib.param_count(s, a, 3) <= limit  # noqa: E731
  draw = jax.jit(lambda k: controller_lib.sample_within(
      ctrl, ctrl.init(0), k, fits, smallest))
  for i in range(10):
    arch = np.asarray(draw(jax.random.key(i)))
    assert int(header_lib.param_count(s, arch, 3)) <= limit
