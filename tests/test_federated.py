"""The federated baselines (acme_jax/federated/): hierarchical averaging
against hand computations and slow loops over dense submodels, FjORD's
nesting, DepthFL's objective, FedPer's personal heads, budgets, and the
engine's strategies."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acme_jax.data.base import Split
from acme_jax.federated import (depthfl, fedavg, fedper, heterofl, fjord,
                                hierarchical, local)
from acme_jax.federated import algorithm as algorithm_lib
from acme_jax.federated import holdings as holdings_lib
from acme_jax.federated.method import FederatedHparams
from acme_jax.hierarchy import topology as topology_lib
from acme_jax.hierarchy.ledger import Ledger
from acme_jax.models import subnet as subnet_lib
from acme_jax.parallel import engine
from acme_jax import training

WIDTHS = (0.25, 0.5, 1.0)
DEPTHS = (1 / 3, 2 / 3, 1.0)
METHODS = {'fedavg': fedavg, 'fedper': fedper, 'heterofl': heterofl,
           'fjord': fjord, 'depthfl': depthfl}


def hparams(**overrides) -> FederatedHparams:
  fields = dict(rounds=1, local_epochs=1, cloud_every=1, batch_size=4,
                lrs=(0.05,), lr=0.05, momentum=0.9, weight_decay=5e-4,
                finetune_epochs=1, kd_weight=0.5, kd_temperature=2.0,
                strategy=engine.Options('loop', 0), seed=0)
  fields.update(overrides)
  return FederatedHparams(**fields)


def world(budgets, edges=(0, 0, 1), samples=(9, 6, 13), classes=5, seed=0):
  """A topology over `budgets` and per device (train, val, test) splits of
  random 8x8 images; device i's train split has `samples[i]` rows."""
  rng = np.random.default_rng(seed)
  topology = topology_lib.Topology(
      tuple(sorted(set(edges))),
      tuple(topology_lib.Device(i, e, b)
            for i, (e, b) in enumerate(zip(edges, budgets))))

  def split(n, labels):
    return Split(rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
                 rng.choice(labels, n).astype(np.int32), np.arange(n))
  splits = []
  for i, n in enumerate(samples):
    labels = np.arange(classes) if i % 2 == 0 else np.arange(2)
    splits.append((split(n, labels), split(5, labels), split(7, labels)))
  return topology, splits


def sizes(model, params):
  """Deployed size of every grid subnet, smallest first."""
  return sorted(holdings_lib.held_count(holdings_lib.grid_holding(
      model, params, w, d).holder) for w in WIDTHS for d in DEPTHS)


def setup(name, model, params, budgets, **world_args):
  module = METHODS[name]
  topology, splits = world(budgets, **world_args)
  trained, holdings = module.setup(model, params, budgets)
  devices = local.devices(topology, splits, holdings, model.num_classes,
                          module.METHOD.label_split)
  return module, trained, devices


# ------------------------------------------------------------- holdings


@pytest.mark.parametrize('width,depth', [(1.0, 1.0), (0.5, 2 / 3),
                                         (0.25, 1 / 3)])
def test_held_count_is_the_extracted_dense_subnet(tiny_vit, width, depth):
  model, params = tiny_vit
  holding = holdings_lib.grid_holding(model, params, width, depth)
  cfg = subnet_lib.for_model(model, width, depth)
  _, dense = subnet_lib.extract(model, params, cfg, with_head=True)
  assert holdings_lib.held_count(holding.holder) == \
      subnet_lib.param_count(dense)


# The smallest model each method can deploy (heads, layers it keeps),
# counted independently from the dense extracted subnet.
SMALLEST = {'fedavg': (1, 1), 'fedper': (1, 1), 'heterofl': (1, 3),
            'fjord': (1, 3), 'depthfl': (4, 1)}


@pytest.mark.parametrize('name', list(METHODS))
def test_every_deployed_model_fits_its_budget(tiny_vit, name):
  model, params = tiny_vit
  grid = sizes(model, params)
  budgets = [grid[0], grid[len(grid) // 2], grid[-1] + 10]
  module = METHODS[name]
  _, holdings = module.setup(model, params, budgets)
  heads, layers = SMALLEST[name]
  cfg = subnet_lib.SubnetConfig(
      tuple(range(layers)), (heads,) * layers,
      (heads * model.mlp_dim // model.num_heads,) * layers)
  _, dense = subnet_lib.extract(model, params, cfg, with_head=True)
  smallest = subnet_lib.param_count(dense)
  if name == 'depthfl':  # its exits replace the final norm and head
    d, c = model.hidden_size, model.num_classes
    smallest += 2 * d + d * c + c - (2 * d)
  for budget, holding in zip(budgets, holdings):
    if holding is None:
      assert budget < smallest, (name, budget, smallest)
    else:
      assert holdings_lib.held_count(holding.holder) <= budget
  deployed = [holdings_lib.held_count(h.holder) for h in holdings if h]
  assert deployed, name
  if name in ('heterofl', 'fjord', 'depthfl'):  # more budget, more model
    assert deployed[0] < deployed[-1]


def test_heterofl_holds_the_head_of_its_classes_only(tiny_vit):
  model, params = tiny_vit
  budgets = [10**6] * 3
  _, _, devices = setup('heterofl', model, params, budgets)
  for d in devices:
    seen = np.unique(np.asarray(d.data.y[:d.sizes['train']]))
    np.testing.assert_array_equal(
        np.flatnonzero(d.holding.holder['head']['bias']), seen)


# ------------------------------------------------------------ averaging


def test_fedavg_aggregate_is_the_sample_weighted_mean(tiny_vit):
  """Edges average by samples every round and the cloud averages the edges
  by their samples, so the cloud's model is the flat sample-weighted mean
  of what every device trained (hand-computed here in numpy)."""
  model, params = tiny_vit
  hp = hparams()
  module, params, devices = setup('fedavg', model, params, [10**6] * 3)
  alg = module.algorithm(model, hp, params, devices)
  new, _ = alg.apply(alg.init(), devices)
  trained, _ = local.train(model, module.METHOD, hp, devices,
                           {d.id: params for d in devices},
                           jax.random.fold_in(jax.random.key(hp.seed), 0),
                           range(1), 1)
  n = np.array([d.sizes['train'] for d in devices], np.float64)
  expected = jax.tree.map(
      lambda *xs: sum(w * np.asarray(x, np.float64) for w, x in zip(n, xs))
      / n.sum(), *[trained[d.id] for d in devices])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               new.cloud, expected)
  # ... and every edge starts the next round from it.
  for e in (0, 1):
    jax.tree.map(np.testing.assert_array_equal, new.edges[e], new.cloud)


def test_heterofl_average_equals_a_loop_over_dense_submodels(tiny_vit):
  """Three devices of widths 1/4, 1/2 and 1 upload trees whose unheld
  entries are garbage; each parameter's average over its holders equals a
  slow loop that extracts every device's dense submodel and accumulates it
  into the corner it came from."""
  model, params = tiny_vit
  rng = np.random.default_rng(3)
  holdings = [holdings_lib.grid_holding(model, params, w, 1.0)
              for w in WIDTHS]
  uploads = [jax.tree.map(lambda a: rng.normal(size=a.shape)
                          .astype(np.float32), params) for _ in WIDTHS]
  previous = jax.tree.map(lambda a: rng.normal(size=a.shape)
                          .astype(np.float32), params)
  stack = lambda ts: jax.tree.map(lambda *xs: np.stack(xs), *ts)  # noqa
  got = hierarchical.average(stack(uploads),
                             stack([h.holder for h in holdings]), previous)

  total = jax.tree.map(np.zeros_like, params)
  count = jax.tree.map(np.zeros_like, params)
  for width, upload in zip(WIDTHS, uploads):
    heads = subnet_lib.num_kept_heads(model.num_heads, width)
    neurons = int(heads / model.num_heads * model.mlp_dim)
    _, dense = subnet_lib.width_slice(model, upload, heads, neurons)
    for path, leaf in jax.tree_util.tree_leaves_with_path(dense):
      corner = tuple(slice(0, s) for s in np.shape(leaf))
      for tree, add in ((total, np.asarray(leaf)), (count, 1.0)):
        target = _at(tree, path)
        target[corner] += add
  expected = jax.tree.map(
      lambda t, c, p: np.where(c > 0, t / np.maximum(c, 1), p),
      total, count, previous)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                       atol=1e-6),
               got, expected)


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


# ------------------------------------------------------------- methods


def test_fjord_samples_nested_widths(tiny_vit):
  """Every sampled width is the first p of every layer of the device's
  own subnet: the masked forward equals the dense width-p slice."""
  model, params = tiny_vit
  narrowest = holdings_lib.held_count(holdings_lib.grid_holding(
      model, params, 1 / model.num_heads, 1.0).holder)
  _, (small, widest) = fjord.setup(model, params, [narrowest, 10**6])
  assert widest.widths == (0.25, 0.5, 0.75, 1.0)
  rng = np.random.default_rng(0)
  x = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype(np.float32)
  masked = jax.jit(lambda m: model.apply({'params': params}, x, m)['logits'])
  seen, dense = set(), {}
  for _ in range(10):
    masks = local.step_masks(model, fjord.METHOD, widest, rng)
    kept = int(masks.heads[0].sum())
    seen.add(kept)
    for l in range(model.num_layers):
      np.testing.assert_array_equal(masks.heads[l],
                                    np.arange(model.num_heads) < kept)
      assert np.all(masks.neurons[l] <= widest.masks.neurons[l])
    neurons = int(masks.neurons[0].sum())
    if kept not in dense:
      sliced_model, sliced = subnet_lib.width_slice(model, params, kept,
                                                    neurons)
      dense[kept] = jax.jit(sliced_model.apply)({'params': sliced},
                                                x)['logits']
    np.testing.assert_allclose(masked(masks), dense[kept], atol=1e-5)
  assert seen == {1, 2, 3, 4}
  # The smallest budget's device samples only its own width.
  assert small.widths == (0.25,)


def test_depthfl_loss_is_its_formula():
  """Sum over a device's exits of CE + the mean over its other exits of
  KL(p_other || p_self) at temperature T (times T^2), on numbers."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 5)).astype(np.float32)  # exits, batch, C
  y = np.array([0, 3, 1, 4])
  w = np.array([1, 1, 1, 0], np.float32)  # the last row is padding
  on = np.array([1, 1, 0], np.float32)    # the device holds two exits
  t = 2.0

  def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  def ce(z):
    return -np.log(softmax(z)[np.arange(4), y])

  expected = 0.0
  for i in (0, 1):
    j = 1 - i
    p, q = softmax(logits[j] / t), softmax(logits[i] / t)
    kl = np.sum(p * (np.log(p) - np.log(q)), -1) * t * t
    expected += np.sum((ce(logits[i]) + kl) * w) / w.sum()

  def ce_of(z):
    return jnp.sum(training.cross_entropy(z, y) * w) / w.sum()

  def distil(a, b):
    return jnp.sum(local.kl(a, b, t) * w) / w.sum()

  loss = jax.jit(lambda z: local.depthfl_loss(z, on, ce_of, distil))
  np.testing.assert_allclose(float(loss(logits)), expected, rtol=1e-5)
  # The teacher side is held fixed: the gradient at exit 0 is that of its
  # own CE and its KL towards exit 1 only.
  grad = jax.jit(jax.grad(loss))(logits)
  own = jax.jit(jax.grad(lambda z0: ce_of(z0) + distil(logits[1], z0)))(
      logits[0])
  np.testing.assert_allclose(grad[0], own, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(grad[2], 0)


def test_fedper_heads_never_leave_the_device(tiny_vit):
  model, params = tiny_vit
  hp = hparams(rounds=2, cloud_every=1)
  module, params, devices = setup('fedper', model, params, [10**6] * 3)
  head = 4 * sum(np.size(a) for a in jax.tree.leaves(params['head']))
  full = 4 * holdings_lib.held_count(devices[0].holding.holder)
  ledger = Ledger()
  state, _ = algorithm_lib.run(module.algorithm(model, hp, params, devices),
                               devices, ledger)
  weights = [r for r in ledger if r.kind == 'weights']
  assert weights and all(r.bytes == full - head for r in weights)
  # The heads trained on the devices, and the cloud's never moved.
  jax.tree.map(np.testing.assert_array_equal, state.cloud['head'],
               params['head'])
  assert not np.allclose(state.personal[0]['head']['kernel'],
                         params['head']['kernel'])
  assert not np.allclose(state.personal[0]['head']['kernel'],
                         state.personal[1]['head']['kernel'])


def test_hierarchical_ledger_follows_the_rounds(tiny_vit):
  """Per round each device downloads and uploads what it holds; the cloud
  fetches and averages every `cloud_every` rounds and at the last."""
  model, params = tiny_vit
  hp = hparams(rounds=3, cloud_every=2)
  module, params, devices = setup('heterofl', model, params, [10**6] * 3)
  ledger = Ledger()
  state, _ = algorithm_lib.run(module.algorithm(model, hp, params, devices),
                               devices, ledger)
  by_round = {}
  for r in ledger:
    key = (r.round, r.src_tier, r.dst_tier)
    by_round[key] = by_round.get(key, 0) + 1
  for r in range(3):
    assert by_round[(r, 'edge', 'device')] == 3
    assert by_round[(r, 'device', 'edge')] == 3
  assert by_round[(0, 'cloud', 'edge')] == 2       # the first download
  assert (0, 'edge', 'cloud') not in by_round
  assert by_round[(1, 'edge', 'cloud')] == 2       # round 2 of cloud_every 2
  assert by_round[(2, 'edge', 'cloud')] == 2       # the last round
  traffic = ledger.by_device()
  for d in devices:
    held = 4 * holdings_lib.held_count(d.holding.holder)
    assert traffic[d.id] == {'down': 3 * held, 'up': 3 * held}


@pytest.mark.parametrize('name', [
    'heterofl', pytest.param('depthfl', marks=pytest.mark.slow),
    pytest.param('fjord', marks=pytest.mark.slow)])
def test_loop_and_vmap_strategies_agree(tiny_vit, name):
  model, params = tiny_vit
  grid = sizes(model, params)
  out = {}
  for strategy in ('loop', 'vmap'):
    hp = hparams(strategy=engine.Options(strategy, 0))
    module, start, devices = setup(name, model, params,
                                   [grid[0], grid[4], grid[-1] + 1])
    alg = module.algorithm(model, hp, start, devices)
    state, _ = alg.apply(alg.init(), devices)
    out[strategy] = (state.cloud, hierarchical.deploy(
        module.METHOD, model, hp, state, devices))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
               out['loop'][0], out['vmap'][0])
  assert out['loop'][1]['test'] == out['vmap'][1]['test']


def test_one_program_per_method_serves_every_rate_and_round(tiny_vit):
  model, params = tiny_vit
  module, start, devices = setup('heterofl', model, params, [10**6] * 3)
  before = engine.trace_counts()
  for lr in (0.01, 0.03):
    hp = hparams(lr=lr, rounds=2, seed=int(lr * 100))
    algorithm_lib.run(module.algorithm(model, hp, start, devices), devices)
  after = engine.trace_counts()
  assert after.get('loop.step', 0) - before.get('loop.step', 0) <= 1


def test_rate_anneals_to_the_end_of_the_rounds():
  rates = [local.cosine(0.1, s, 10) for s in range(10)]
  assert rates[0] == pytest.approx(0.1)
  assert all(a > b for a, b in zip(rates, rates[1:]))
  assert rates[-1] < 0.003
