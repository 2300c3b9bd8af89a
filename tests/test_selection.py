"""Tests for acme_jax.selection: predictor, costs, Pareto front, baselines."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acme_jax.selection import costs
from acme_jax.selection import pareto
from acme_jax.selection import predictor
from conftest import constructed_grid

# --------------------------------------------------------------------------
# Predictor

MEASURED_RATIOS = (1.0, 0.75, 0.5, 0.25)  # the prototype's 4 x 4 grid


def _measured_grid():
  d, w = np.meshgrid(MEASURED_RATIOS, MEASURED_RATIOS, indexing='ij')
  return d.reshape(-1), w.reshape(-1)


def test_predictor_recovers_exact_quadratic():
  # Order 1, d, w, d^2, dw, w^2.
  coefficients = np.array([0.1, 0.5, 0.3, -0.2, 0.1, -0.15])
  depth, width = _measured_grid()
  accuracy = predictor.features(depth, width) @ coefficients
  surface = predictor.fit(depth, width, accuracy)
  np.testing.assert_allclose(surface.coefficients, coefficients, atol=1e-12)
  fine_d, fine_w, predicted = predictor.predict_grid(surface, 20)
  np.testing.assert_allclose(
      predicted, predictor.features(fine_d, fine_w) @ coefficients, atol=1e-12)


def test_predictor_clips_to_unit_interval():
  # acc = 2 d - 0.5 (exact, linear): 1.5 at d = 1 and -0.5 at d = 0.
  depth, width = _measured_grid()
  surface = predictor.fit(depth, width, 2 * depth - 0.5)
  np.testing.assert_allclose(surface([1.0, 0.0], [0.5, 0.5], clip=False),
                             [1.5, -0.5], atol=1e-12)
  np.testing.assert_allclose(surface([1.0, 0.0], [0.5, 0.5]), [1.0, 0.0])


def test_predictor_fits_per_class_outputs_at_once():
  depth, width = _measured_grid()
  per_class = np.stack([0.2 + 0.5 * depth, 0.9 - 0.3 * width * width], axis=1)
  surface = predictor.fit(depth, width, per_class)
  assert surface.coefficients.shape == (6, 2)
  np.testing.assert_allclose(surface([0.4], [0.6]),
                             [[0.2 + 0.5 * 0.4, 0.9 - 0.3 * 0.36]], atol=1e-12)


def test_predictor_grid_order_is_width_outer_depth_inner():
  depth, width = predictor.ratio_grid(3)
  np.testing.assert_allclose(depth, [0, .5, 1, 0, .5, 1, 0, .5, 1])
  np.testing.assert_allclose(width, [0, 0, 0, .5, .5, .5, 1, 1, 1])


def test_predictor_needs_six_points():
  with pytest.raises(ValueError, match='at least 6 measured points, got 5'):
    predictor.fit([1, .75, .5, .25, 1], [1, .75, .5, .25, .5], [.9] * 5)


def test_predictor_rejects_points_that_do_not_fix_a_quadratic():
  # Two distinct depths only: d^2 is a combination of 1 and d.
  depth = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
  width = np.array([1.0, 0.5, 0.25, 1.0, 0.5, 0.25])
  with pytest.raises(ValueError, match='3 distinct depths'):
    predictor.fit(depth, width, np.linspace(0.3, 0.9, 6))


# --------------------------------------------------------------------------
# Costs


def test_paper_costs_by_hand():
  # w = 0.5 -> h = int(6.0) = 6; d = 0.25 -> l = int(3.0) = 3; h l = 18.
  # size = 6 * 768 + 3 * 3.06e6 = 4608 + 9_180_000 = 9_184_608
  # P = 100 + 10 * 18 + 128 * 50 = 6680; T = 1 + 0.1 * 18 = 2.8
  # E = 10 * 6680 * 2.8 = 187_040
  # w = 1/19 -> int(0.63) = 0 heads: size = l * 3.06e6, P = 6500, T = 1.
  result = costs.PaperCostModel()([0.25, 1.0], [0.5, 1 / 19])
  np.testing.assert_allclose(result.size, [9_184_608, 12 * 3.06e6])
  np.testing.assert_allclose(result.latency, [2.8, 1.0])
  np.testing.assert_allclose(result.energy, [187_040, 10 * 6500 * 1.0])
  np.testing.assert_array_equal(result.heads, [6, 0])
  np.testing.assert_array_equal(result.layers, [3, 12])


def test_cost_models_reject_ratios_outside_unit_interval():
  with pytest.raises(ValueError, match='width_mult'):
    costs.PaperCostModel()([0.5], [1.5])


TINY = costs.ViTArchitecture.for_images(
    image_size=8, patch_size=4, num_layers=3, num_heads=4, hidden_size=16,
    mlp_dim=32, channels=3, num_classes=5)


def test_exact_size_of_degenerate_points_is_what_remains():
  # d = 0 or w = 0: no blocks. patch conv 4*4*3*16 + 16 = 784, cls 16,
  # pos_embed (4 + 1) * 16 = 80, ln_final 32 -> 912 (a backbone ships no
  # head; with the 16 * 5 + 5 = 85 of the cloud's head: 997).
  model = costs.ExactCostModel(TINY)
  result = model([0.0, 1.0, 0.0], [1.0, 0.0, 0.0])
  np.testing.assert_array_equal(result.size, [912, 912, 912])
  assert costs.exact_param_count(TINY, 0.0, 1.0, with_head=True) == 997
  np.testing.assert_allclose(result.latency, 1.0)  # h l = 0


def test_exact_size_matches_extracted_subnet():
  from acme_jax.models import subnet  # pylint: disable=g-import-not-at-top
  from acme_jax.models import vit  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  model = vit.ViT(num_classes=5, patch_size=4, hidden_size=16, num_layers=3,
                  num_heads=4, mlp_dim=32)
  # Counts depend on shapes only: trace init_params abstractly (no compile,
  # 0.4 s instead of ~10 s eager on a CPU) and slice zeros of those shapes.
  shapes = jax.eval_shape(
      lambda key: vit.init_params(model, key, (8, 8, 3)), jax.random.PRNGKey(0))
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  assert subnet.param_count(params) == costs.exact_param_count(
      TINY, 1.0, 1.0, with_head=True)
  # 0.4 -> round(1.6) = 2 heads; 0.9 -> round(2.7) = 3 layers; 0.6 -> 2 layers.
  points = [(d, w) for d in (1 / 3, 0.5, 2 / 3, 0.6, 0.9, 1.0)
            for w in (0.25, 0.4, 0.5, 0.75, 1.0)]
  for depth, width in points:
    config = subnet.for_model(model, width, depth)
    expected = subnet.param_count(subnet.extract(model, params, config)[1])
    assert costs.exact_param_count(TINY, depth, width) == expected, (depth,
                                                                     width)
    heads, _, layers = costs.subnet_shape(TINY, depth, width)
    assert (heads, layers) == (config.heads[0], len(config.layers))


def test_make_cost_model():
  assert isinstance(costs.make_cost_model('paper'), costs.PaperCostModel)
  with pytest.raises(ValueError, match='architecture'):
    costs.make_cost_model('exact')
  with pytest.raises(ValueError, match='unknown cost model'):
    costs.make_cost_model('flops')


# --------------------------------------------------------------------------
# Normalisation, grid cells, fronts


def test_min_max_normalise():
  np.testing.assert_allclose(pareto.min_max_normalise([2, 4, 6]), [0, .5, 1])
  np.testing.assert_array_equal(pareto.min_max_normalise([3, 3]), [0, 0])


def test_grid_cells_by_hand():
  # K = 10, sigma = 1e-6.
  # accuracy: r = (1 - 0 + 2e-6) / 10 = 0.1000002,
  #   index ceil((1 - x + 1e-6) / r)
  #   x = 0.9 -> 0.100001 / 0.1000002 = 1.000008 -> 2 (x = 0.9 just misses 1)
  #   x = 0.1 -> 0.900001 / 0.1000002 = 8.99999  -> 9
  #   x = 0.0 -> 1.000001 / 0.1000002 = 9.99999  -> 10
  #   x = 1.0 -> 0.000001 / 0.1000002 = 1e-5     -> 1
  # latency / energy: r = (0 - 1 + 2e-6) / 10 = -0.0999998 (negative),
  #   index ceil((x - 1e-6) / 0.0999998)
  #   x = 0.1 -> 0.099999 / 0.0999998 = 0.99999  -> 1
  #   x = 0.9 -> 0.899999 / 0.0999998 = 9.000008 -> 10
  #   x = 1.0 -> 0.999999 / 0.0999998 = 10.00001 -> 11 (outside 1..K)
  #   x = 0.0 -> -1e-6 / 0.0999998   = -1e-5    -> 0  (outside 1..K)
  #   x = 0.5 -> 0.499999 / 0.0999998 = 4.99999  -> 5
  cells = pareto.grid_cells([0.9, 0.1, 0.0, 1.0], [0.1, 0.9, 1.0, 0.0],
                            [0.5, 0.5, 0.5, 0.5])
  np.testing.assert_array_equal(
      cells, [[2, 1, 5], [9, 10, 5], [10, 11, 5], [1, 0, 5]])


# (accuracy, latency, energy), already normalised.
FRONT_CASE = np.array([
    [0.95, 0.05, 0.05],  # 0: cells (1, 1, 1); distance sqrt(3 * .05^2) = .0866
    [0.92, 0.08, 0.02],  # 1: cells (1, 1, 1); sqrt(.0064+.0064+.0004) = .1149
    [0.55, 0.45, 0.45],  # 2: cells (5, 5, 5); alone in its cell
    [0.00, 0.00, 0.30],  # 3: latency 0 -> latency cell 0: never on the PFG
    [1.00, 1.00, 1.00],  # 4: latency 1 -> latency cell 11: never on the PFG
])


def test_pareto_front_grid_by_hand():
  acc, lat, en = FRONT_CASE.T
  np.testing.assert_array_equal(
      pareto.grid_cells(acc, lat, en),
      [[1, 1, 1], [1, 1, 1], [5, 5, 5], [10, 0, 3], [1, 11, 11]])
  # Cell (1, 1, 1) keeps 0 (nearer to I); 2 is alone; 3 and 4 are outside.
  np.testing.assert_array_equal(pareto.pareto_front_grid(acc, lat, en), [0, 2])


def test_pareto_front_grid_ties_keep_first_point():
  acc, lat, en = np.array([[0.95, 0.05, 0.05], [0.95, 0.05, 0.05]]).T
  np.testing.assert_array_equal(pareto.pareto_front_grid(acc, lat, en), [0])


def test_non_dominated_by_hand():
  # 2 is dominated by 0 (better on all three); 1 beats 0 on energy; 3 has the
  # lowest latency and 4 the highest accuracy, so both survive, unlike on PFG.
  acc, lat, en = FRONT_CASE.T
  np.testing.assert_array_equal(pareto.non_dominated(acc, lat, en),
                                [0, 1, 3, 4])


def _dominates(a, b):
  """a = (acc, lat, en) dominates b: no worse everywhere, better somewhere."""
  no_worse = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
  better = a[0] > b[0] or a[1] < b[1] or a[2] < b[2]
  return no_worse and better


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])] * 3),
                min_size=1, max_size=25))
def test_non_dominated_property(points):
  points = np.array(points)
  members = set(pareto.non_dominated(*points.T).tolist())
  assert members
  for i in members:
    assert not any(_dominates(points[j], points[i]) for j in range(len(points)))
  for i in set(range(len(points))) - members:
    assert any(_dominates(points[j], points[i]) for j in members)


# --------------------------------------------------------------------------
# Selection, baselines, scores

# (accuracy, normalised size, normalised energy).
BASELINE_CASE = np.array([
    [0.90, 1.0, 1.0],  # 0: infeasible at S = 0.7
    [0.80, 0.6, 0.5],  # 1: E + S - A = 0.3
    [0.70, 0.3, 0.2],  # 2: E + S - A = -0.2 (lowest)
    [0.35, 0.1, 0.1],  # 3: E + S - A = -0.15
    [0.00, 0.0, 0.0],  # 4: E + S - A = 0; accuracy 0 is skipped by `worst`
])


def test_baselines_by_hand():
  acc, size, en = BASELINE_CASE.T
  assert pareto.highest_accuracy(acc, size, 0.7) == 1
  assert pareto.largest_size(acc, size, 0.7) == 1
  assert pareto.traverse(acc, size, en, 0.7) == 2
  assert pareto.worst(acc, size, en, 0.7) == 3
  # S = 0: only point 4 fits; `worst` falls back to it though its acc is 0.
  assert pareto.worst(acc, size, en, 0.0) == 4
  assert pareto.highest_accuracy(acc, size, 1.0) == 0


def test_random_pick_is_seeded_and_feasible():
  acc, size, _ = BASELINE_CASE.T
  picks = {pareto.random_pick(size, 0.7, seed) for seed in range(40)}
  assert picks == {1, 2, 3, 4}
  assert pareto.random_pick(size, 0.7, 5) == pareto.random_pick(size, 0.7, 5)
  # RandomState(0).choice(4, 1, replace=False) = [2] -> feasible[2] = 3.
  assert pareto.random_pick(size, 0.7, 0) == 3


def test_baseline_ties():
  # Equal accuracy: the smaller size wins; equal size: the higher accuracy.
  acc = np.array([0.8, 0.8, 0.6, 0.7])
  size = np.array([0.5, 0.4, 0.9, 0.9])
  assert pareto.highest_accuracy(acc, size, 1.0) == 1
  assert pareto.largest_size(acc, size, 1.0) == 3


def test_select_from_front_respects_constraint():
  acc = np.array([0.9, 0.8, 0.7, 0.95])
  size = np.array([0.9, 0.5, 0.2, 0.1])
  front = np.array([0, 1, 2])  # 3 is not on the front
  assert pareto.select_from_front(front, acc, size, 0.6) == 1
  assert pareto.select_from_front(front, acc, size, 1.0) == 0
  with pytest.raises(ValueError,
                     match=r'size_constraint=0\.1.*smallest is 0\.2'):
    pareto.select_from_front(front, acc, size, 0.1)


def test_constraint_outside_unit_interval():
  for bad in (-0.1, 1.5):
    with pytest.raises(ValueError, match='size_constraint must lie in'):
      pareto.highest_accuracy([0.5], [0.5], bad)


def test_scores_by_hand():
  acc, size, en = BASELINE_CASE.T
  result = pareto.scores(acc, size, en)
  # Point 2: 0.7 - 0.5 (0.3 + 0.2) = 0.45; MER 0.7 / 0.3; EER 0.7 / 0.2 = 3.5.
  np.testing.assert_allclose(result['tradeoff'][2], 0.45)
  np.testing.assert_allclose(result['mer'][2], 0.7 / 0.3)
  np.testing.assert_allclose(result['eer'][2], 3.5)
  # Point 4: 0 / 0 -> NaN, no warning.
  assert np.isnan(result['mer'][4]) and np.isnan(result['eer'][4])
  assert np.isinf(pareto.scores([0.5], [0.0], [0.0])['mer'][0])


def test_relative_gain():
  assert pareto.relative_gain(0.26, 0.2) == pytest.approx(0.3)
  assert pareto.relative_gain(-0.1, -0.2) == pytest.approx(0.5)
  assert pareto.relative_gain(0.3, 0.0) is None


def test_select_all_on_a_measured_grid():
  depth_m, width_m, acc_m = np.array(constructed_grid()).T
  depth, width, acc = predictor.predict_grid(
      predictor.fit(depth_m, width_m, acc_m), 20)
  raw = costs.PaperCostModel()(depth, width)
  grid = pareto.candidates(depth, width, acc, raw.size, raw.latency,
                           raw.energy)
  selection = pareto.select_all(grid, 0.8)
  assert set(selection.picks) == {'pfg', *pareto.BASELINES}
  for index in selection.picks.values():
    assert grid.size[index] <= 0.8
  assert selection.picks['pfg'] in set(selection.front.tolist())
  # Highest accuracy is the most accurate feasible point; PFG picks from the
  # front, so it is never more accurate.
  assert (grid.accuracy[selection.picks['pfg']] <=
          grid.accuracy[selection.picks['highest_accuracy']])
  assert grid.accuracy[selection.picks['highest_accuracy']] == max(
      grid.accuracy[grid.size <= 0.8])
  # Every PFG front point is strictly inside the latency / energy range.
  assert np.all(grid.latency[selection.front] > 0)
  assert np.all(grid.latency[selection.front] < 1)


def test_reduced_degree_fit_with_two_widths():
  # Two measured widths cannot fix a w^2 term: the reduced fit drops it and
  # recovers an exact surface that is linear in w.
  depth, width = np.meshgrid([0.25, 0.5, 0.75, 1.0], [0.5, 1.0])
  depth, width = depth.ravel(), width.ravel()
  truth = 0.2 + 0.3 * depth - 0.1 * depth ** 2 + 0.4 * width + 0.05 * depth * width
  with pytest.raises(ValueError, match='quadratic'):
    predictor.fit(depth, width, truth)
  surface = predictor.fit(depth, width, truth, reduce_degree=True)
  assert surface.coefficients[5] == 0.0
  np.testing.assert_allclose(surface.coefficients,
                             [0.2, 0.3, 0.4, -0.1, 0.05, 0.0], atol=1e-10)


def test_flops_per_token_matches_xla_on_an_extracted_bert():
  """The analytic count against XLA's own cost analysis of the extracted
  backbone's forward pass (XLA also counts norms, softmax and GELU, a few
  percent more at this size)."""
  import jax
  import jax.numpy as jnp
  from acme_jax.models import bert, subnet
  from acme_jax.selection import costs as costs_lib
  arch = costs_lib.BertArchitecture(
      num_layers=4, num_heads=4, hidden_size=128, mlp_dim=512,
      vocab_size=100, max_positions=32, type_vocab_size=2, num_classes=3)
  model = bert.Bert(num_classes=0, vocab_size=100, hidden_size=128,
                    num_layers=4, num_heads=4, mlp_dim=512, max_positions=32,
                    pooler=False)
  seq = 32
  params = bert.init_params(model, jax.random.key(0), seq)
  for depth, width in ((1.0, 1.0), (0.5, 0.5)):
    small, dense = subnet.extract(model, params,
                                  subnet.for_model(model, width, depth))
    ids = jnp.ones((1, seq), jnp.int32)
    cost = jax.jit(lambda p: small.apply({'params': p}, ids)['tokens']).lower(
        dense).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    analytic = costs_lib.flops_per_token(arch, depth, width, seq) * seq
    assert 0.95 < cost['flops'] / analytic < 1.15, (depth, width)


def test_baselines_stay_within_a_boolean_mask_of_realisable_points():
  """A mask (e.g. `Candidates.realisable`) selects points by truth value,
  not as the indices 0 and 1."""
  acc = np.array([0.1, 0.2, 0.9, 0.5, 0.7])
  size = np.array([0.0, 0.1, 0.5, 0.3, 0.9])
  energy = np.array([0.0, 0.1, 0.5, 0.3, 0.9])
  mask = np.array([False, False, True, True, True])
  assert pareto.highest_accuracy(acc, size, 0.8, mask) == 2
  assert pareto.largest_size(acc, size, 0.8, mask) == 2
  assert pareto.worst(acc, size, energy, 0.8, mask) == 3
  assert pareto.random_pick(size, 0.8, 0, mask) in (2, 3)
  np.testing.assert_array_equal(pareto.feasible(size, 0.8, mask), [2, 3])
  np.testing.assert_array_equal(pareto.feasible(size, 0.8, [4, 3]), [3])


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 30), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_non_dominated_min_equals_brute_force(n, dims, seed):
  """A point is kept iff no other point is <= on every objective and < on
  one, checked pair by pair in pure Python (ties on a coarse grid)."""
  rng = np.random.default_rng(seed)
  points = rng.integers(0, 4, (n, dims)).astype(float)
  kept = set(pareto.non_dominated_min(*points.T).tolist())
  for i in range(n):
    dominated = any(
        all(points[j, k] <= points[i, k] for k in range(dims)) and
        any(points[j, k] < points[i, k] for k in range(dims))
        for j in range(n) if j != i)
    assert (i in kept) == (not dominated)
