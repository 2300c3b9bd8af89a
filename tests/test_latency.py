"""Latency measurement, the predictors and the latency table
(acme_jax/hardware/, benchmarks/latency.py)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acme_jax import errors
from acme_jax.device import features as device_features
from acme_jax.device import header as header_lib
from acme_jax.hardware import features, measure, predictor, table
from acme_jax.models import subnet
from acme_jax.selection import costs


def _backbone_rows(latency, heads_levels=(1, 2, 3, 4), layer_levels=(1, 2, 3,
                                                                     4)):
  """Synthetic backbone rows over a 4 x 4 grid, `latency(row)` their
  target."""
  rows = []
  for layers in layer_levels:
    for heads in heads_levels:
      row = {'part': 'backbone', 'depth': layers / 4, 'width': heads / 4,
             'layers': layers, 'heads': heads, 'neurons': 8 * heads,
             'seq_len': 17, 'batch': 1,
             'params': 1000 + layers * (300 * heads + 50),
             'flops': 5e4 + layers * (7e4 * heads + 2e3)}
      row['median_ms'] = latency(row)
      row['peak_memory_bytes'] = 4 * row['params'] + 1024
      rows.append(row)
  return rows


def test_each_predictor_recovers_the_latency_law_it_can_express():
  """Latency linear in (1, FLOPs, params, layers) is fitted exactly by
  `features`; a fixed cost plus a per-layer cost that is piecewise linear
  in the layer's width (here convex, so no linear law in FLOPs fits it)
  exactly by `per_layer`, and not by `features`."""
  linear = _backbone_rows(lambda r: 0.3 + 2e-6 * r['flops'] +
                          1e-4 * r['params'] + 0.05 * r['layers'])
  fitted = predictor.fit('backbone', 'features', linear)
  np.testing.assert_allclose(fitted(linear), [r['median_ms'] for r in linear],
                             rtol=1e-9)
  per_head = {1: 0.1, 2: 0.15, 3: 0.4, 4: 1.0}
  layered = _backbone_rows(lambda r: 0.2 + r['layers'] * per_head[r['heads']])
  exact = predictor.fit('backbone', 'per_layer', layered)
  np.testing.assert_allclose(exact(layered),
                             [r['median_ms'] for r in layered], rtol=1e-9)
  assert exact.knots == (8.0, 16.0, 24.0, 32.0)  # one per width's neurons
  # Halfway between two fitted widths the per-layer cost is interpolated.
  between = dict(layered[0], heads=2.5, neurons=20, layers=2)
  assert exact([between])[0] == pytest.approx(0.2 + 2 * (0.15 + 0.4) / 2)
  rough = predictor.fit('backbone', 'features', layered)
  assert predictor.errors(rough(layered), [r['median_ms'] for r in layered])[
      'max_rel_error'] > 0.05


def test_the_predictor_is_scored_only_on_models_it_was_not_fitted_on():
  """The chosen model's coefficients are those of a fit on the pool alone;
  changing a held-out model's measurement changes its test error and
  nothing fitted; and the kind is chosen on the pool's leave-one-out
  error, which a held-out model cannot move either."""
  rng = np.random.default_rng(0)
  rows = _backbone_rows(lambda r: (0.2 + 1e-5 * r['flops']) *
                        (1 + 0.05 * rng.standard_normal()))
  keys = [('backbone', r['depth'], r['width']) for r in rows]
  test = predictor.held_out(keys, 0.25, seed=3)
  assert len(test) == 4
  chosen = predictor.choose('backbone', rows, keys, test)
  pool = [r for r, k in zip(rows, keys) if k not in test]
  assert chosen['model'] == predictor.fit('backbone', chosen['kind'],
                                          pool).to_dict()
  assert {(r['depth'], r['width']) for r in chosen['held_out']} == {
      k[1:] for k in test}
  moved = [dict(r, median_ms=r['median_ms'] * 3) if k in test else r
           for r, k in zip(rows, keys)]
  again = predictor.choose('backbone', moved, keys, test)
  assert again['model'] == chosen['model']
  assert again['validation'] == chosen['validation']
  assert (again['test'][again['kind']]['rmse'] >
          chosen['test'][chosen['kind']]['rmse'])
  # The test error is the chosen model's on the held-out rows, by hand.
  held = [r for r, k in zip(rows, keys) if k in test]
  fitted = predictor.Fitted.from_dict(chosen['model'])
  errs = np.array([fitted([r])[0] - r['median_ms'] for r in held])
  assert chosen['test'][chosen['kind']]['rmse'] == pytest.approx(
      np.sqrt(np.mean(errs ** 2)))
  within = np.mean(np.abs(errs) <= 0.1 * np.array([r['median_ms']
                                                   for r in held]))
  assert chosen['test'][chosen['kind']]['within_10pct'] == within


def test_too_few_models_for_a_held_out_split_is_refused():
  with pytest.raises(ValueError, match='at least 3'):
    predictor.held_out([('b', 1.0, 1.0), ('b', 0.5, 1.0)], 0.25, 0)


def test_the_measured_backbone_computes_the_devices_features(tiny_vit):
  """The timed program is the extracted backbone a device runs: its
  output equals the tokens the device stage computes for that subnet; its
  peak memory holds at least its weights and input, and the row's
  parameters are the extracted weights'."""
  from acme_jax.data import base
  model, params = tiny_vit
  model = model.clone(input_spec=base.InputSpec(8))
  images = np.random.default_rng(0).integers(0, 16, (3, 8, 8, 1), np.uint8)
  forward, dense = measure.backbone_program(model, params, 2 / 3, 0.5)
  want = device_features.backbone_tokens(
      model, params, subnet.for_model(model, 0.5, 2 / 3), images)
  np.testing.assert_allclose(np.asarray(jax.jit(forward)(dense, images)),
                             want, atol=1e-5)
  record = measure.timed(forward, (dense, images),
                         measure.TimingHparams(warmup=1, repeats=3))
  weight_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(dense))
  assert record['peak_memory_bytes'] >= weight_bytes + images.nbytes
  assert record['p10_ms'] <= record['median_ms'] <= record['p90_ms']
  arch = costs.ViTArchitecture.for_images(
      8, num_layers=3, num_heads=4, hidden_size=16, mlp_dim=24, patch_size=4,
      channels=1, num_classes=5)
  row = features.backbone_row(arch, 2 / 3, 0.5, seq_len=5, batch=3)
  assert row['params'] == subnet.param_count(dense)
  assert (row['layers'], row['heads'], row['neurons']) == (2, 2, 12)


def test_a_pruned_headers_row_counts_its_extracted_parameters():
  """The header row's parameters (closed form, from its gates) are the
  extracted header's, and its FLOP estimate is within a quarter of XLA's
  count of the extracted header's forward pass (norms and activations are
  not in the estimate)."""
  spec = header_lib.Spec(num_classes=5, feature_dim=16, grid_rank=2,
                         num_channels=16, num_nodes=3, max_layers=2)
  rng = np.random.default_rng(1)
  arch = measure.random_arch(rng, spec.num_nodes)
  arch[:, 1] = arch[:, 3] = header_lib.OPS.index('sep_conv_3x3')
  gates = features.keep_gates(spec, 0.5)
  forward, variables, params = measure.header_program(spec, arch, 2, gates)
  row = features.header_row(spec, arch, 2, gates, batch=2, positions=16)
  assert row['params'] == params
  assert row['keep'] == pytest.approx(0.5)
  assert row['ops_sep_conv_3x3'] == 2 * 2 * spec.num_nodes
  tokens = jnp.ones((2, 4, 4, 16))
  record = measure.timed(forward, (variables, tokens),
                         measure.TimingHparams(warmup=0, repeats=1))
  assert 0.75 < record['xla_flops'] / row['flops'] < 1.25, (
      record['xla_flops'], row['flops'])


def _table(tmp_path, backend):
  path = tmp_path / 'latency.json'
  path.write_text(json.dumps({'backend': backend, 'machine': 'a GPU box',
                              'predictor': {'latency': {}}}))
  return path


def test_a_latency_table_from_another_backend_is_refused_in_one_line(
    tmp_path):
  path = _table(tmp_path, 'gpu')
  with pytest.raises(errors.UserError) as raised:
    table.load(path, backend='cpu')
  message = str(raised.value)
  assert '\n' not in message
  assert 'measured on gpu' in message and 'needs cpu' in message
  assert table.load(_table(tmp_path, 'cpu'), backend='cpu')['backend'] == 'cpu'


def test_a_latency_table_of_another_family_is_refused_in_one_line(tmp_path):
  path = tmp_path / 'latency.json'
  path.write_text(json.dumps({'backend': 'cpu', 'family': 'vit',
                              'predictor': {}}))
  with pytest.raises(errors.UserError, match='measured a vit supernet; '
                     'this run.s is a bert') as raised:
    table.load(path, backend='cpu', family='bert')
  assert '\n' not in str(raised.value)


def test_a_held_out_architecture_is_held_out_at_every_batch():
  """fit_predictors splits by architecture (layers, heads, neurons): a
  shape held out at batch 1 is held out at batch 32 too, and two rows of
  one shape under other multipliers share its fate."""
  from benchmarks import latency as latency_bench
  rows = []
  for batch in (1, 32):
    for r in _backbone_rows(lambda r: 1.0 + 1e-5 * r['flops']):
      rows.append(dict(r, batch=batch, median_ms=r['median_ms'] * batch))
  twin = dict(rows[5], depth=0.3)  # the same shape under another depth
  rows.append(twin)
  rows += [{'part': 'header', 'sample': i, 'batch': 1, 'n_layers': 1,
            'keep': 1.0, 'params': 100 * (i + 1), 'flops': 1e4 * (i + 1),
            'loose_ends': 1, 'median_ms': 0.1 * (i + 1),
            'peak_memory_bytes': 1000 * (i + 1),
            **{f'ops_{name}': i % 2 for name in header_lib.OPS}}
           for i in range(8)]
  fits = latency_bench.fit_predictors(rows, 0.25, seed=0)
  held = {g: {(r['layers'], r['heads'], r['neurons'])
              for r in fits['latency'][g]['held_out']}
          for g in ('backbone@1', 'backbone@32')}
  assert held['backbone@1'] == held['backbone@32'] and held['backbone@1']
  twin_shape = (twin['layers'], twin['heads'], twin['neurons'])
  in_test = [r for r in fits['latency']['backbone@1']['held_out']
             if (r['layers'], r['heads'], r['neurons']) == twin_shape]
  assert len(in_test) in (0, 2)


@pytest.mark.parametrize('field,value,allowed', [
    ('batches', (1, 1), 'distinct whole numbers'),
    ('header_keeps', (0.5, 1.5), r'shares in \(0, 1\]'),
    ('test_share', 1.0, r'in \(0, 1\)'),
    ('repeats', 0, r'whole number in 1\.\.')])
def test_a_wrong_latency_field_is_one_line_naming_it(field, value, allowed):
  from acme_jax import config as config_lib
  from configs import default
  config = default.get_config()
  config.latency[field] = value
  with pytest.raises(config_lib.ConfigError,
                     match=rf'latency\.{field} .*{allowed}') as raised:
    config_lib.validate(config)
  assert '\n' not in str(raised.value)


@pytest.mark.skipif(jax.default_backend() != 'cpu',
                    reason='exact buffer sizes: an accelerator adds workspace')
def test_programs_timed_together_keep_their_order_and_own_memory():
  """Round-robin timing returns each program's own record: XLA's FLOPs and
  peak memory of a 64 x 64 product and of a 256 x 256 one, in order."""
  small, large = (jnp.ones((64, 64)),) * 2, (jnp.ones((256, 256)),) * 2
  records = measure.timed_together(
      [(jnp.matmul, large), (jnp.matmul, small)],
      measure.TimingHparams(warmup=1, repeats=3))
  assert [r['xla_flops'] for r in records] == [2 * 256 ** 3, 2 * 64 ** 3]
  assert [r['peak_memory_bytes'] for r in records] == [3 * 4 * 256 ** 2,
                                                        3 * 4 * 64 ** 2]


@pytest.mark.parametrize('family', ['vit', 'text', 'decoder'])
def test_the_published_predictors_are_what_the_code_fits(family):
  """docs/hardware.md's predictors, refitted here from the published
  measurements: the same kinds, coefficients and errors."""
  import pathlib
  from benchmarks import latency as latency_bench
  snapshot = json.loads((pathlib.Path(__file__).parents[1] / 'docs' /
                         f'readme_latency_{family}.json').read_text())
  fits = latency_bench.fit_predictors(
      snapshot['measured'], snapshot['latency_config']['test_share'],
      snapshot['split_seed'])
  published = snapshot['predictor']
  refit = json.loads(json.dumps(fits))
  for target in ('latency', 'memory'):
    assert refit[target].keys() == published[target].keys()
    for name, group in refit[target].items():
      want = published[target][name]
      assert group['kind'] == want['kind'], (target, name)
      assert group['model']['coefficients'] == pytest.approx(
          want['model']['coefficients'], rel=1e-6), (target, name)
      for kind, scored in group['test'].items():
        assert scored == pytest.approx(want['test'][kind], rel=1e-6)
      assert [r['predicted'] for r in group['held_out']] == pytest.approx(
          [r['predicted'] for r in want['held_out']], rel=1e-6)


def test_hardware_specs_draw_per_device_values_and_budgets_hold():
  """Each spec form gives one value per device; a device fits a model
  whose slowed-down latency and memory are within its budgets (0: none);
  transfers take bytes over the link's bits per second."""
  from acme_jax.hardware import profile
  assert profile.draw((2.0,), 3, 0) == (2.0, 2.0, 2.0)
  assert profile.draw((1.0, 2.0, 3.0), 3, 0) == (1.0, 2.0, 3.0)
  drawn = profile.draw(('uniform', 1.0, 4.0), 50, 7)
  assert all(1.0 <= v <= 4.0 for v in drawn) and len(set(drawn)) == 50
  assert drawn == profile.draw(('uniform', 1.0, 4.0), 50, 7)
  assert set(profile.draw(('choice', 1.0, 8.0), 50, 7)) == {1.0, 8.0}
  assert profile.spec_problem(('uniform', 4.0, 1.0), 3)
  assert profile.spec_problem((1.0, 2.0), 3)
  slow = profile.Hardware(slowdown=2.0, latency_budget_ms=10.0,
                          memory_budget_mb=1.0, uplink_mbps=8.0,
                          downlink_mbps=80.0)
  assert slow.fits(5.0, 2 ** 20) and not slow.fits(5.1, 2 ** 20)
  assert not slow.fits(1.0, 2 ** 20 + 1)
  assert profile.Hardware().fits(1e9, 1e12)
  assert slow.transfer_seconds(1e6, 1e6) == pytest.approx(1.0 + 0.1)


def test_a_latency_budget_without_a_latency_table_is_one_line():
  from acme_jax import config as config_lib
  from configs import default
  config = default.get_config()
  config.system.hardware.memory_budget_mb = ('choice', 4.0, 8.0)
  with pytest.raises(config_lib.ConfigError,
                     match=r'memory_budget_mb .*needs system.hardware.'
                           r'latency_table'):
    config_lib.validate(config)


def test_devices_as_hardware_enter_fingerprints_only_once_set():
  """At its defaults the hardware section leaves every stage's fingerprint
  what it was before the section existed (cached runs stay valid); any
  field set enters it."""
  from acme_jax import config as config_lib
  from configs import default
  config = default.get_config()
  before = default.get_config()
  del before.system['hardware']
  assert config_lib.subset(config, ('system', 'cloud')) == \
      config_lib.subset(before, ('system', 'cloud'))
  config.system.hardware.downlink_mbps = (50.0,)
  assert config_lib.subset(config, ('system',))['system']['hardware'][
      'downlink_mbps'] == [50.0]


def test_the_edge_never_picks_a_backbone_over_a_devices_latency_budget():
  """With a latency table's predictor, every device's pick, at its
  slowdown and with the header reserve, meets its latency and memory
  budgets, for drawn budgets and slowdowns; a device that no backbone
  within its parameter budget can serve is one clear error."""
  from acme_jax.edge import choice
  from acme_jax.hardware import budgets, profile
  arch = costs.ViTArchitecture.for_images(
      16, num_layers=4, num_heads=4, hidden_size=32, mlp_dim=64,
      patch_size=4, channels=1, num_classes=5)
  shapes = [(d, w) for d in (0.25, 0.5, 0.75, 1.0)
            for w in (0.25, 0.5, 0.75, 1.0)]
  # A table whose predictors are known laws: ms = 0.1 + 1e-6 FLOPs,
  # bytes = 4 params + 1000.
  law = lambda target, coef: predictor.Fitted(  # noqa: E731
      'backbone', 'features', target, (), coef).to_dict()
  tab = {'predictor': {
      'latency': {'backbone@1': {'model': law('median_ms',
                                              (0.1, 1e-6, 0.0, 0.0))}},
      'memory': {'backbone@1': {'model': law('peak_memory_bytes',
                                             (1000.0, 0.0, 4.0, 0.0))}}}}
  ms, nbytes = budgets.backbone_costs(tab, arch, shapes, 17, 1)
  rows = [features.backbone_row(arch, d, w, 17, 1) for d, w in shapes]
  np.testing.assert_allclose(ms, [0.1 + 1e-6 * r['flops'] for r in rows])
  np.testing.assert_allclose(nbytes, [1000 + 4 * r['params'] for r in rows])
  rng = np.random.default_rng(0)
  params = [r['params'] for r in rows]
  accuracy = np.tile(np.linspace(0.2, 0.9, 16)[:, None], (1, 5))
  reserve = (0.05, 5000.0)
  served = 0
  for trial in range(20):
    devices = [profile.Hardware(
        slowdown=float(rng.uniform(1, 4)),
        latency_budget_ms=float(rng.uniform(0.6, 4 * ms.max())),
        memory_budget_mb=float(rng.uniform(0.02, 0.2)))
               for _ in range(6)]
    ok = budgets.feasible(devices, ms, nbytes, reserve)
    try:
      picks = choice.choose_backbones(params, accuracy,
                                      np.ones((6, 5)), [10 ** 9] * 6, 0,
                                      feasible=ok)
    except ValueError as e:
      assert 'latency and memory budgets' in str(e)
      continue
    for hw, pick in zip(devices, picks):
      assert hw.slowdown * (ms[pick.candidate] + reserve[0]) <= \
          hw.latency_budget_ms
      assert nbytes[pick.candidate] + reserve[1] <= \
          hw.memory_budget_mb * 2 ** 20
      # The most accurate feasible candidate: here the latest in order.
      fitting = [n for n in range(16) if hw.fits(ms[n] + reserve[0],
                                                  nbytes[n] + reserve[1])]
      assert pick.candidate == fitting[-1]
    served += 1
  assert 5 <= served < 20  # both outcomes drawn


def test_a_missing_latency_table_is_one_line_before_any_work(tmp_path):
  from acme_jax import config as config_lib
  from configs import default
  config = default.get_config()
  config.system.hardware.latency_table = str(tmp_path / 'nowhere.json')
  with pytest.raises(config_lib.ConfigError,
                     match=r'latency_table .*existing benchmarks.latency'):
    config_lib.validate(config)
