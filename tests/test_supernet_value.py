"""experiments.supernet_value's pieces: the one-shape arms' start and loss,
training FLOPs, step budgets, shapes between the grid, the summary."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acme_jax import config as config_lib
from acme_jax import report_value
from acme_jax import training
from acme_jax.cloud import alternatives, cost, elastic, grid
from acme_jax.cloud import stage as cloud_stage
from acme_jax.data.base import Split
from acme_jax.federated import flops as flops_lib
from acme_jax.models import subnet, vit


def _split(n=48, seed=0):
  rng = np.random.default_rng(seed)
  return Split(rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
               rng.integers(0, 5, size=n).astype(np.int32), np.arange(n),
               'synthetic')


@pytest.mark.parametrize('depth,width', [
    (2 / 3, 0.5), pytest.param(1 / 3, 0.25, marks=pytest.mark.slow),
    pytest.param(1.0, 1.0, marks=pytest.mark.slow)])
def test_the_distilled_arm_starts_from_the_teacher_cut_to_its_shape(
    tiny_vit, depth, width):
  """The start is the teacher's kept layers with their first heads and
  neurons (sliced here by hand), and it computes what the masked supernet
  computes at that subnet: the teacher, cut."""
  model, params = tiny_vit
  start, weights = alternatives.cut(model, params, depth, width)
  heads, neurons = round(4 * width), round(24 * width)
  kept = subnet.kept_layer_indices(3, depth)
  assert sorted(k for k in weights if k.startswith('block_')) == [
      f'block_{i}' for i in range(len(kept))]
  for new, old in enumerate(kept):
    got, want = weights[f'block_{new}'], params[f'block_{old}']
    for proj in ('query', 'key', 'value'):
      np.testing.assert_array_equal(got['attn'][proj]['kernel'],
                                    want['attn'][proj]['kernel'][:, :heads])
      np.testing.assert_array_equal(got['attn'][proj]['bias'],
                                    want['attn'][proj]['bias'][:heads])
    np.testing.assert_array_equal(got['attn']['out']['kernel'],
                                  want['attn']['out']['kernel'][:heads])
    np.testing.assert_array_equal(got['fc1']['kernel'],
                                  want['fc1']['kernel'][:, :neurons])
    np.testing.assert_array_equal(got['fc2']['kernel'],
                                  want['fc2']['kernel'][:neurons])
    for name in ('ln_attn', 'ln_mlp'):
      jax.tree.map(np.testing.assert_array_equal, got[name], want[name])
    np.testing.assert_array_equal(got['fc2']['bias'], want['fc2']['bias'])
  for name in ('cls', 'pos_embed', 'head', 'patch_embed', 'ln_final'):
    jax.tree.map(np.testing.assert_array_equal, weights[name], params[name])
  sub = subnet.for_model(model, width, depth)
  images = _split(8).images
  masked = model.apply({'params': params}, images, subnet.masks(model, sub))
  np.testing.assert_allclose(start.apply({'params': weights}, images)[
      'logits'], masked['logits'], atol=1e-5)


@pytest.mark.parametrize('depth,width', [
    (2 / 3, 0.5), pytest.param(1 / 3, 0.75, marks=pytest.mark.slow)])
def test_the_distilled_loss_is_the_elastic_stages_loss_for_that_subnet(
    tiny_vit, depth, width):
  """The dense one-shape model's loss equals the supernet's static-scheme
  loss of the same subnet against the same full teacher (slices, kept
  layers and block-end matching done the elastic stage's way)."""
  model, params = tiny_vit
  teacher = jax.tree.map(lambda x: x * 1.1, params)  # not the student
  images = _split(8).images
  hp = training.StageHparams(epochs=1, learning_rate=1e-3, batch_size=8,
                             lambda_logits=1.0, lambda_hidden=0.7)
  stage = elastic.Stage.of((depth,), (width,))
  want = elastic.static_losses(model, params, teacher, images, stage,
                               hp.lambda_logits, hp.lambda_hidden)[0]
  student, weights = alternatives.cut(model, params, depth, width)
  got = alternatives.distillation_loss(
      student, weights, model.apply({'params': teacher}, images), images,
      alternatives.block_ends(model.num_layers, depth), hp)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_step_budget_runs_that_many_steps_and_anneals_to_zero():
  data = _split(40)  # 5 steps per epoch of 8
  hp = training.StageHparams(epochs=99, learning_rate=1.0, batch_size=8,
                             warmup_fraction=0.1, steps=12)
  seen = []

  def step(state, images, labels):
    seen.append(len(images))
    return state + 1, 0.0

  state, losses = training.fit(step, 0, data, hp, 'test')
  assert state == 12 and len(seen) == 12
  assert len(losses) == 3  # two whole epochs and a partial third
  tx = training.stage_optimizer(hp, len(data))
  params = {'w': jnp.ones(3)}
  opt = tx.init(params)
  updates = []
  for _ in range(13):
    u, opt = tx.update({'w': jnp.ones(3)}, opt, params)
    updates.append(float(jnp.abs(u['w']).max()))
  # Warm-up over round(0.1 * 12) = 1 step, then linear decay to 0 at 12.
  assert updates[0] == 0.0 and updates[1] > 0
  assert updates[12] == 0.0 and updates[11] > 0


def _xla_flops(fn, *args):
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return analysis['flops']


@pytest.mark.parametrize('depth,width', [
    (0.25, 0.75), pytest.param(1.0, 1.0, marks=pytest.mark.slow)])
def test_sample_flops_match_xla_on_a_vit_subnet(depth, width):
  """The counted forward FLOPs of a subnet against XLA's own count of the
  extracted model's forward pass: XLA adds norms, softmax and GELU, a few
  percent at a width where the matrix products dominate."""
  from acme_jax.data import base
  model = vit.ViT(num_classes=10, patch_size=4, hidden_size=256,
                  num_layers=4, num_heads=4, mlp_dim=1024,
                  input_spec=base.InputSpec(16))
  params = vit.init_params(model, jax.random.key(0), (16, 16, 1))
  small, dense = subnet.extract(model, params,
                                subnet.for_model(model, width, depth),
                                with_head=True)
  x = jnp.zeros((1, 16, 16, 1))
  xla = _xla_flops(lambda p: small.apply({'params': p}, x)['logits'], dense)
  ours = cost.sample_flops(model, params, depth, width)
  assert 0.98 < xla / ours < 1.08, (xla, ours)


@pytest.mark.slow  # four XLA compiles of a decoder: the suite's 10 minutes
def test_decoder_flops_count_kv_groups_gated_mlp_and_the_lm_head():
  """A GQA decoder's forward (LM head included) against XLA's count."""
  from acme_jax.models import decoder
  model = decoder.Decoder(num_classes=3, vocab_size=512, hidden_size=64,
                          num_layers=2, num_heads=4, num_kv_heads=2,
                          mlp_dim=192)
  t = 32
  params = decoder.init_params(model, jax.random.key(0), t)
  ids = jnp.ones((1, t), jnp.int32)
  full = subnet.masks(model, subnet.for_model(model, 1.0, 1.0))
  xla = _xla_flops(lambda p: model.apply({'params': p}, ids)['lm_logits'],
                   params)
  ours = flops_lib.forward_flops(model, full, t, lm=True)
  # The classifier (the last token's) is dropped from XLA's program here.
  assert 0.95 < xla / (ours - 2 * 64 * 3) < 1.1, (xla, ours)
  # Half the query heads keep half the KV groups: the extracted half-width
  # model (one KV group) against XLA's count of it.
  sub = subnet.for_model(model, 0.5, 1.0)
  small, dense = subnet.extract(model, params, sub, with_head=True)
  xla = _xla_flops(lambda p: small.apply({'params': p}, ids)['lm_logits'],
                   dense)
  ours = flops_lib.forward_flops(model, subnet.masks(model, sub), t, lm=True)
  assert 0.95 < xla / (ours - 2 * 64 * 3) < 1.1, (xla, ours)


def test_the_equal_compute_split_sums_to_the_supernet_cost():
  """G models at 1/G of the budget each, in whole steps: their total is at
  most the budget and short of it by less than one step per model."""
  step_flops = [3.0e6, 7.5e6, 1.9e7, 4.4e7]
  total = 1.0e9
  steps = cost.equal_compute_steps(total, step_flops, served=4)
  spent = sum(s * f for s, f in zip(steps, step_flops))
  assert spent <= total
  assert total - spent < sum(step_flops)
  assert steps == [int(total / 4 // f) for f in step_flops]


def test_the_supernet_cost_counts_every_subnet_and_teacher(tiny_vit):
  """Width stage: 2 students at full depth and one teacher per step; the
  depth stage's matched teachers run once per width; importance only when
  the teacher is reordered; the masked scheme runs all at full size and
  remat adds a forward pass per student."""
  import dataclasses
  from acme_jax.data import base
  model, params = tiny_vit
  model = model.clone(input_spec=base.InputSpec(8))
  stage = training.StageHparams(epochs=2, learning_rate=1e-3, batch_size=8)
  widths, depths = (1.0, 0.5), (1.0, 1 / 3)

  hp = cloud_stage.CloudHparams(
      width_mults=widths, depth_mults=depths, eval_batch_size=8,
      importance_batches=1, importance_batch_size=8, reorder=True,
      teacher=stage, width_stage=stage, depth_stage=stage,
      stage2_teacher='width_stage')
  Hp = functools.partial(dataclasses.replace, hp)  # noqa: N806

  f = lambda d, w: cost.sample_flops(model, params, d, w)  # noqa: E731
  steps = 2 * (40 // 8)
  by_stage = cost.supernet_flops(model, params, Hp(), 40)
  assert by_stage['width_stage'] == pytest.approx(
      steps * 8 * (3 * (f(1, 1) + f(1, .5)) + f(1, 1)))
  assert by_stage['depth_stage'] == pytest.approx(steps * 8 * (
      3 * sum(f(d, w) for d in depths for w in widths) + f(1, 1) +
      f(1, .5)))
  assert by_stage['teacher'] == pytest.approx(steps * 8 * 3 * f(1, 1))
  assert by_stage['importance'] == pytest.approx(8 * 3 * f(1, 1))
  assert cost.supernet_flops(model, params, Hp(reorder=False),
                             40)['importance'] == 0
  masked = dataclasses.replace(stage, scheme='masked', remat=True)
  by_stage = cost.supernet_flops(
      model, params, Hp(depth_stage=masked, stage2_teacher='teacher'), 40)
  assert by_stage['depth_stage'] == pytest.approx(
      steps * 8 * (4 * 4 * f(1, 1) + f(1, 1)))


def _parameter_formula(d, layers, heads, head_dim, mlp, classes, patches,
                       patch_dim):
  """A ViT backbone's parameters by hand: patch projection, [CLS] and
  positions, per layer Q/K/V/O with biases, two LayerNorms and the MLP,
  the final LayerNorm (no classifier)."""
  inner = heads * head_dim
  per_layer = 3 * (d * inner + inner) + inner * d + d + 4 * d + (
      d * mlp + mlp + mlp * d + d)
  return (patch_dim * d + d) + d + (patches + 1) * d + layers * per_layer + \
      2 * d


def test_a_shape_between_the_grid_is_a_valid_subnet_of_its_formula_size():
  """On a 6-layer, 12-head supernet, depth 0.875 and width 0.625 (5 layers,
  8 heads) is no grid cell; it extracts to a model that runs and matches
  the masked supernet, with the hand-counted parameter count. Width 0.6 is
  the grid's 0.5 once snapped to whole heads."""
  model = vit.ViT(num_classes=5, patch_size=4, hidden_size=48, num_layers=6,
                  num_heads=12, mlp_dim=96)
  params = vit.init_params(model, jax.random.key(0), (8, 8, 1))
  grid_d = grid_w = (1.0, 0.75, 0.5, 0.25)
  new, coincide = grid.between_points(
      model, grid_d, grid_w, [(0.875, 0.625), (1.0, 0.54), (0.875, 0.625)])
  assert new == [(0.875, 0.625)]
  assert coincide == {(1.0, 0.54): (1.0, 0.5)}
  sub = subnet.for_model(model, 0.625, 0.875)
  assert len(sub.layers) == 5 and sub.heads[0] == 8 and sub.neurons[0] == 64
  small, dense = subnet.extract(model, params, sub)
  n = subnet.param_count(dense)
  assert n == _parameter_formula(48, 5, 8, 4, 64, 5, 4, 16)
  images = _split(4).images
  masked = jax.jit(lambda p, m: model.apply({'params': p}, images, m))(
      params, subnet.masks(model, sub))
  extracted = jax.jit(lambda p: small.apply({'params': p}, images))(dense)
  np.testing.assert_allclose(extracted['tokens'], masked['tokens'],
                             atol=1e-5)


def _repeat(supernet_acc, distilled_acc, seconds=None):
  cell = lambda a: {'accuracy': a, 'steps': 10, 'flops': 100.0,  # noqa
                    'seconds': 2.0}
  return {
      'shapes': [{'depth': 1.0, 'width': 1.0, 'params': 1000,
                  'supernet': {'accuracy': supernet_acc},
                  'distilled': {'equal_steps': cell(distilled_acc)}}],
      'supernet_seconds': seconds,
      'by_stage': {'pretrain': 0.0, 'teacher': 600.0, 'importance': 0.0,
                   'width_stage': 150.0, 'depth_stage': 250.0},
      'grid_flops': [{'depth': 1.0, 'width': 1.0, 'distilled': 4.0,
                      'scratch': 3.0},
                     {'depth': 0.5, 'width': 0.5, 'distilled': 2.0,
                      'scratch': 1.0}],
      'supernet_steps': 10, 'distinct_shapes': 16,
      'between_grid': {'shapes': [], 'coincide': [], 'devices': []}}


def test_the_summary_pairs_repeats_and_finds_the_break_even_count():
  """Differences are paired over repeats; N models cost N x the mean grid
  cell's equal-steps FLOPs (distilled ones plus the shared teacher)."""
  from configs import default
  config = default.get_config()
  config.supernet_value.arms = ('distilled',)
  config.supernet_value.budgets = ('equal_steps',)
  reps = [_repeat(0.80, 0.70), _repeat(0.82, 0.74), _repeat(0.78, 0.69)]
  s = report_value.summarize(config, reps)
  diff = s['shapes'][0]['distilled']['equal_steps']['supernet_minus']
  assert diff['mean'] == pytest.approx(np.mean([0.10, 0.08, 0.09]))
  assert diff['holds']
  c = s['cost']
  # Per model: mean(4, 2) FLOPs per step x 10 steps = 30 distilled,
  # mean(3, 1) x 10 = 20 scratch; the elastic stages cost 400, shared 600.
  assert c['per_model_flops'] == {'distilled': 30.0, 'scratch': 20.0}
  # 14 distilled models (420) cost more than the elastic stages (400);
  # 50 from scratch would tie the supernet's 1000, more than its 16
  # distinct shapes: never cheaper there.
  assert c['break_even'] == {'distilled': 14, 'scratch': None}
  n4, n64 = c['by_budgets'][0], c['by_budgets'][-1]
  assert n4['budgets'] == 4 and n4['distilled']['flops'] == 600 + 4 * 30
  assert n4['supernet']['flops'] == 1000.0
  # Past the supernet's 16 distinct shapes, 64 budgets need 16 models.
  assert n64['models'] == 16 and n64['scratch']['flops'] == 16 * 20
  # Seconds: each model's FLOPs at the measured 2 s per 100 FLOPs.
  assert c['per_model_seconds']['distilled'] == pytest.approx(0.6)
  table = report_value.supernet_value_table(s)
  assert 'distilled models from N = 14' in table


def test_a_supernet_value_shape_off_the_grid_is_one_line():
  from configs import default
  config = default.get_config()
  config.supernet_value.depths = (0.25, 0.6)
  config.supernet_value.widths = (0.25, 1.0)
  with pytest.raises(config_lib.ConfigError,
                     match=r'supernet_value.depths .*0.6, width 1.0.* not a '
                           r'cell'):
    config_lib.validate(config)


def _record(depth, width, params, accuracy, classes=5):
  return {'depth_mult': depth, 'width_mult': width, 'params': params,
          'accuracy': accuracy, 'per_class_accuracy': [accuracy] * classes}


def test_the_edges_may_deliver_a_shape_between_the_grid():
  """With a measured record between the grid's points, the edges' candidates
  hold it (flagged), the predictor still fits the grid alone, and a device
  whose budget fits it but not the next cell up gets it."""
  from conftest import tiny_config
  from acme_jax import sizes
  from acme_jax.edge import stage as edge_stage
  from acme_jax.hierarchy import transfers
  from acme_jax.selection import stage as selection_stage
  config = tiny_config()
  depths, widths = (1.0, 2 / 3, 1 / 3), (1.0, 0.5, 0.25)
  cells = [_record(d, w, int(10000 * d * w), 0.3 + 0.5 * d * w)
           for d in depths for w in widths]
  between = _record(1.0, 0.75, 7500, 0.7)
  hp = selection_stage.SelectionHparams.from_config(config)
  arch = sizes.architecture(config, 5)
  plain = selection_stage.run(hp, cells, arch)
  offered = selection_stage.run(hp, cells, arch, between_grid=[between])
  assert len(offered['candidates']) == len(cells) + 1
  assert offered['candidates'][-1]['between_grid']
  assert not any(c.get('between_grid') for c in offered['candidates'][:-1])
  assert offered['front'] == plain['front']  # fitted on the grid alone
  allowance = config.system.header_allowance
  budgets = [allowance + 8000]  # fits 7,500, not the full 10,000
  edge = edge_stage.EdgeHparams(allowance, 0)

  def picked(selection):
    pick = edge_stage.choose(edge, transfers.front_payload(
        selection['candidates']), [np.ones(5)], budgets)[0]
    return selection['candidates'][pick.candidate]

  assert picked(offered)['width_mult'] == 0.75
  # Without it: the best grid cell that fits, depth 2/3 at full width.
  assert picked(plain)['params'] == 6666


def test_between_grid_shapes_enter_fingerprints_only_when_delivered():
  """Off (the default), the section leaves every device-stage cache valid;
  on, a change of its shapes invalidates them."""
  from configs import default
  from acme_jax import world as world_lib
  config = default.get_config()
  off = config_lib.subset(config, world_lib.DEVICE_SECTIONS)
  assert 'between_grid' not in off
  config.between_grid.deliver = True
  on = config_lib.subset(config, world_lib.DEVICE_SECTIONS)
  assert on['between_grid']['widths'] == list(config.between_grid.widths)
  assert 'between_grid' not in config_lib.subset(config, ('cloud',))


@pytest.mark.slow
def test_the_experiment_publishes_its_section_and_resumes_from_its_cache(
    tmp_path, monkeypatch):
  """End to end on a toy config: the results.json section as documented,
  report.md's table and the cost plot; a rerun trains nothing."""
  import json
  from conftest import tiny_config
  from experiments import supernet_value
  config = tiny_config()
  config.supernet_value.repeats = 2
  config.federated.rounds = 1
  config.federated.methods = ('fedavg', 'heterofl')
  config.federated.setups = ('iid',)
  config.between_grid.depths = (1.0,)
  config.between_grid.widths = (0.75,)  # 3 of 4 heads: no grid cell
  logs = []
  supernet_value.run(config, tmp_path, logs.append)
  results = json.loads((tmp_path / 'results.json').read_text())
  s = results['supernet_value']
  assert [(r['depth'], r['width']) for r in s['shapes']] == [
      (1 / 3, 0.25), (2 / 3, 0.5), (1.0, 1.0)]
  for row in s['shapes']:
    assert set(row['supernet']) >= {'mean', 'ci95'}
    for arm in ('distilled', 'scratch'):
      for budget in ('equal_steps', 'equal_compute'):
        assert set(row[arm][budget]) >= {'mean', 'ci95', 'steps', 'flops'}
  assert [r['budgets'] for r in s['cost']['by_budgets']] == [4, 16, 64]
  assert [(r['depth'], r['width'], r['heads'])
          for r in s['between_grid']['shapes']] == [(1.0, 0.75, 3)]
  assert len(s['between_grid']['devices']) == 6
  b = s['baselines_from_supernet']
  assert set(b['methods']) == {'fedavg', 'heterofl'}
  assert (tmp_path / 'supernet_value.png').is_file()
  assert 'Why one supernet' in (tmp_path / 'report.md').read_text()

  def trains(*args, **kwargs):
    raise AssertionError('a cached cell was trained again')

  monkeypatch.setattr(supernet_value.alternatives, 'train_distilled', trains)
  monkeypatch.setattr(supernet_value.alternatives, 'train_scratch', trains)
  monkeypatch.setattr(supernet_value.alternatives, 'retrain_supernet', trains)
  again = supernet_value.run(config, tmp_path, logs.append)
  assert again['shapes'] == s['shapes']


def test_the_published_costs_are_what_the_code_counts():
  """The published digits run's training FLOPs (docs/supernet_value.md's
  snapshot) are what `cloud/cost.py` counts for the default config today:
  by stage, and per model of each way."""
  import json
  import pathlib
  from configs import default
  from acme_jax.data import stage as data_stage
  snapshot = pathlib.Path(__file__).parents[1] / 'docs' / \
      'readme_supernet_value_results.json'
  published = json.loads(snapshot.read_text())['supernet_value']['cost']
  config = default.get_config()
  dataset, cloud_data, _ = data_stage.load(config, lambda *a: None)
  model, params = cloud_stage.build_model(config, dataset,
                                          jax.random.key(config.seed))
  hp = cloud_stage.CloudHparams.from_config(config)
  by_stage = cost.supernet_flops(model, params, hp, len(cloud_data))
  assert by_stage == pytest.approx(published['by_stage'], rel=1e-12)
  steps = (hp.width_stage.total_steps(len(cloud_data)) +
           hp.depth_stage.total_steps(len(cloud_data)))
  cells = grid.grid_points(hp.depth_mults, hp.width_mults)
  batch = config.cloud.batch_size
  for arm, fn in (('distilled', cost.distilled_step),
                  ('scratch', cost.scratch_step)):
    mean = np.mean([fn(model, params, d, w, batch) for d, w in cells])
    assert mean * steps == pytest.approx(published['per_model_flops'][arm],
                                         rel=1e-12)


def test_a_language_models_perplexity_is_paired_and_tabled():
  """With perplexities, each arm's cell pairs the supernet's against its
  own over repeats, and the table shows them (lower is better)."""
  from configs import default
  config = default.get_config()
  config.supernet_value.arms = ('distilled',)
  config.supernet_value.budgets = ('equal_steps',)
  reps = []
  for ours, theirs in ((600.0, 480.0), (610.0, 470.0), (590.0, 490.0)):
    rep = _repeat(0.07, 0.09)
    shape = rep['shapes'][0]
    shape['supernet']['perplexity'] = ours
    shape['distilled']['equal_steps']['perplexity'] = theirs
    reps.append(rep)
  s = report_value.summarize(config, reps)
  cell = s['shapes'][0]['distilled']['equal_steps']
  assert cell['perplexity']['mean'] == pytest.approx(480.0)
  diff = cell['perplexity_supernet_minus']
  assert diff['mean'] == pytest.approx(np.mean([120.0, 140.0, 100.0]))
  assert diff['holds']
  table = report_value.supernet_value_table(s)
  assert 'Test perplexity (lower is better)' in table
  assert '| 1 | 1 | 600.0 ± ' in table and '480.0 ± ' in table


def test_a_break_even_in_unmeasured_seconds_is_not_called_never():
  """Without the cloud's stage times the supernet's seconds are unknown:
  its seconds break-even against models from scratch is 'not measured',
  not 'never'."""
  from configs import default
  config = default.get_config()
  config.supernet_value.arms = ('distilled',)
  config.supernet_value.budgets = ('equal_steps',)
  s = report_value.summarize(config, [_repeat(0.8, 0.7), _repeat(0.8, 0.7)])
  assert s['cost']['seconds_measured'] == {'distilled': False,
                                           'scratch': False}
  table = report_value.supernet_value_table(s)
  assert 'seconds: not measured' in table
  assert 'seconds: never' not in table
