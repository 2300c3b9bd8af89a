"""Devices as hardware in the main job (acme_jax/hardware/fleet.py): the
front, the edge and the header search read a latency table's predictions,
and never give a device a model its budgets do not allow."""
import json
import types

import jax
import numpy as np
import pytest

from acme_jax import sizes
from acme_jax.device import child as child_lib
from acme_jax.device import controller as controller_lib
from acme_jax.device import header as header_lib
from acme_jax.hardware import budgets, features, fleet, measure, predictor

# Known laws the table's predictors state: backbone ms = 0.1 + 1e-6 FLOPs,
# bytes = 4 params + 1000; header ms = 0.05 + 2e-6 FLOPs + 0.01 cells,
# bytes = 4 params + 500.
BACKBONE_MS = (0.1, 1e-6, 0.0, 0.0)
BACKBONE_BYTES = (1000.0, 0.0, 4.0, 0.0)
HEADER_MS = (0.05, 2e-6, 0.0, 0.01)
HEADER_BYTES = (500.0, 0.0, 4.0, 0.0)


def law_table(family='vit', batch=1) -> dict:
  def law(part, target, coef):
    return {'model': predictor.Fitted(part, 'features', target, (),
                                      coef).to_dict()}
  return {'backend': measure.backend(), 'machine': 'law', 'family': family,
          'predictor': {
              'latency': {f'backbone@{batch}': law('backbone', 'median_ms',
                                                   BACKBONE_MS),
                          f'header@{batch}': law('header', 'median_ms',
                                                 HEADER_MS)},
              'memory': {f'backbone@{batch}': law(
                  'backbone', 'peak_memory_bytes', BACKBONE_BYTES),
                         f'header@{batch}': law(
                             'header', 'peak_memory_bytes', HEADER_BYTES)}}}


def hardware_config(path, **hardware):
  from configs import default
  config = default.get_config()
  json.dump(law_table(), open(path, 'w'))
  config.system.hardware.latency_table = str(path)
  config.system.hardware.update(hardware)
  return config


def _spec(num_layers=4):
  return header_lib.Spec(num_classes=3, feature_dim=5, grid_rank=2,
                         num_channels=4, num_nodes=2, max_layers=num_layers)


def _reference_header_row(spec, arch, n_layers, keep, batch, positions):
  """A header's features counted by hand from its cell: each op's uses
  over the cells it runs, the cell entries no node reads, the channel
  share its gates keep (every gated conv keeps ceil(keep C) of C), the
  FLOP estimate from the exact parameter count."""
  ops = list(arch[:, 1]) + list(arch[:, 3])
  read = set(arch[:, 0]) | set(arch[:, 2])
  c = spec.num_channels
  params = int(header_lib.param_count(spec, arch, n_layers,
                                      features.keep_gates(spec, keep)))
  pools = n_layers * sum(header_lib.OPS[o].endswith('pool_3x3')
                         for o in ops)
  row = {'n_layers': n_layers, 'keep': max(1, int(np.ceil(keep * c))) / c,
         'params': params,
         'loose_ends': sum(i not in read for i in range(spec.num_nodes + 2)),
         'flops': float((2 * params + 9 * pools * c) * positions * batch)}
  for op, name in enumerate(header_lib.OPS):
    row[f'ops_{name}'] = n_layers * ops.count(op)
  return row


def test_the_header_cost_traced_in_the_search_is_the_tables_prediction():
  """A header's features row is the hand count of its cell, and the
  search's traced header cost equals each predictor kind evaluated on it,
  for drawn cells, cell counts and pruned gates."""
  spec = _spec()
  rng = np.random.default_rng(0)
  kinds = {kind: predictor.Fitted(
      'header', kind, 'median_ms', (),
      tuple(rng.uniform(0.1, 1.0, predictor.design(
          'header', kind, [features.header_row(
              spec, header_lib.smallest_arch(2), 1,
              header_lib.full_gates(spec), 1, 6)]).shape[1]) * scale))
      for kind, scale in (('features', np.array([1, 1e-5, 1e-4, 1])),
                          ('per_op', 1.0))}
  for kind, fitted in kinds.items():
    cost = budgets.HeaderCost(fitted, fitted, 8, 6)
    traced = jax.jit(lambda a, n, g, cost=cost: cost(spec, a, n, g))
    for _ in range(6):
      arch = measure.random_arch(rng, spec.num_nodes)
      n_layers = int(rng.integers(1, 5))
      keep = float(rng.choice([1.0, 0.5, 0.25]))
      gates = features.keep_gates(spec, keep)
      row = features.header_row(spec, arch, n_layers, gates, 8, 6)
      reference = _reference_header_row(spec, arch, n_layers, keep, 8, 6)
      assert {k: row[k] for k in reference} == pytest.approx(reference)
      want = fitted([reference])[0]
      ms, _ = traced(arch, n_layers, gates)
      np.testing.assert_allclose(float(ms), want, rtol=1e-5)


def test_the_search_admits_a_header_only_within_every_limit():
  """`child.fits` under a cost limit is the conjunction of the parameter
  limit and the table's header latency and memory against theirs."""
  spec = _spec()
  cost = budgets.HeaderCost(
      predictor.Fitted('header', 'features', 'median_ms', (), HEADER_MS),
      predictor.Fitted('header', 'features', 'peak_memory_bytes', (),
                       HEADER_BYTES), 1, 6)
  cfg = child_lib.NasConfig(spec, controller_lib.Controller(2),
                            header_cost=cost)
  rng = np.random.default_rng(1)
  rows = [(arch, features.header_row(spec, arch, 3,
                                     header_lib.full_gates(spec), 1, 6))
          for arch in (measure.random_arch(rng, 2) for _ in range(40))]
  ms = np.array([0.05 + 2e-6 * r['flops'] + 0.01 * 3 for _, r in rows])
  nbytes = np.array([500 + 4 * r['params'] for _, r in rows])
  params = np.array([r['params'] for _, r in rows])
  limit, ms_limit, bytes_limit = (np.median(params), np.median(ms),
                                  np.median(nbytes) * 1.1)
  fits = jax.jit(child_lib.fits(cfg, limit, 3, (ms_limit, bytes_limit)))
  got = np.array([bool(fits(arch)) for arch, _ in rows])
  want = (params <= limit) & (ms <= ms_limit) & (nbytes <= bytes_limit)
  assert want.any() and not want.all()
  np.testing.assert_array_equal(got, want)
  # Without a cost limit only the parameters count.
  plain = jax.jit(child_lib.fits(cfg, limit, 3))
  np.testing.assert_array_equal([bool(plain(a)) for a, _ in rows],
                                params <= limit)


def test_a_devices_header_gets_what_its_backbone_leaves_of_its_budgets(
    tmp_path):
  config = hardware_config(tmp_path / 'latency.json',
                           slowdown=(2.0,), latency_budget_ms=(3.0,),
                           memory_budget_mb=(1.0,))
  dataset = types.SimpleNamespace(num_classes=10)
  from acme_jax.device import stage as device_stage
  f = fleet.Fleet.from_config(config, dataset,
                              device_stage.header_spec(config, 10), 6)
  assert f.header_cost_limit(0, 1.0, 2 ** 19) == (3.0 / 2 - 1.0, 2 ** 19)
  fields = f.device_fields(0, 1.0, 2 ** 19)
  assert fields['predicted_backbone_ms'] == 2.0
  # Compared with a cached stage's saved (JSON) fingerprint.
  assert f.fingerprint(config) == json.loads(json.dumps(
      f.fingerprint(config)))
  config.system.hardware.memory_budget_mb = (0.0,)
  f = fleet.Fleet.from_config(config, dataset,
                              device_stage.header_spec(config, 10), 6)
  assert f.header_cost_limit(0, 1.0, 2 ** 19)[1] == np.inf


def _grid(config, num_classes=10):
  records = []
  for g in sizes.grid(config):
    acc = 0.3 + 0.4 * g['depth_mult'] + 0.25 * g['width_mult']
    records.append(dict(g, accuracy=acc, per_class_accuracy=[
        acc + 0.01 * c for c in range(num_classes)], bytes=4 * g['params']))
  return records


def test_the_front_and_the_edge_read_the_tables_milliseconds(tmp_path):
  """The candidates carry the table's predicted ms and bytes, their front
  is the non-dominated set under those ms, and the edge gives every device
  a backbone that, with the header reserve, meets its latency budget at
  its slowdown and its memory budget; the budgets bind (some device gets a
  smaller backbone than its parameter budget alone would give it)."""
  from acme_jax.device import stage as device_stage
  from acme_jax.edge import stage as edge_stage
  from acme_jax.hierarchy import topology as topology_lib
  from acme_jax.selection import pareto
  from acme_jax.selection import stage as selection_stage
  config = hardware_config(tmp_path / 'latency.json',
                           slowdown=(1.0, 2.0, 4.0),
                           latency_budget_ms=(8.0,),
                           memory_budget_mb=(0.5,))
  dataset = types.SimpleNamespace(num_classes=10)
  f = fleet.Fleet.from_config(config, dataset,
                              device_stage.header_spec(config, 10), 3)
  arch = sizes.architecture(config, 10)
  records = _grid(config)
  selection = selection_stage.run(
      selection_stage.SelectionHparams.from_config(config), records, arch,
      hardware_costs=f.backbone_costs)
  candidates = selection['candidates']
  rows = [features.backbone_row(arch, c['depth_mult'], c['width_mult'],
                                arch.num_tokens, 1) for c in candidates]
  ms = np.array([0.1 + 1e-6 * r['flops'] for r in rows])
  nbytes = np.array([1000.0 + 4 * r['params'] for r in rows])
  np.testing.assert_allclose([c['latency_ms'] for c in candidates], ms)
  np.testing.assert_allclose([c['memory_bytes'] for c in candidates], nbytes)
  front = set(pareto.non_dominated_min(
      -np.array([c['accuracy'] for c in candidates]),
      np.array([c['params'] for c in candidates], float), ms,
      np.array([c['energy'] for c in candidates])).tolist())
  assert [c['on_front'] for c in candidates] == [
      i in front for i in range(len(candidates))]
  big = max(c['params'] for c in candidates) + config.system.header_allowance
  topology = topology_lib.build_topology(1, 3, [big] * 3)

  class Train:
    labels = np.arange(10)

  hp = edge_stage.EdgeHparams.from_config(config)
  _, picks = edge_stage.edge_choice(hp, selection, topology,
                                    [(Train, None, None)] * 3, 10, f)
  _, unbudgeted = edge_stage.edge_choice(hp, selection, topology,
                                         [(Train, None, None)] * 3, 10)
  # Each backbone's cheapest header: the smallest cell, as many cells as
  # the prototype's rule gives that backbone's headers.
  spec = device_stage.header_spec(config, 10)
  cheapest = [features.header_row(
      spec, header_lib.smallest_arch(spec.num_nodes),
      header_lib.default_num_layers(c['width_mult'], c['depth_mult']) + 2,
      header_lib.full_gates(spec), 1, 16) for c in candidates]
  reserve_ms = [0.05 + 2e-6 * r['flops'] + 0.01 * r['n_layers']
                for r in cheapest]
  reserve_bytes = [500.0 + 4 * r['params'] for r in cheapest]
  for hw, pick in zip(f.devices, picks):
    n = pick.candidate
    assert hw.slowdown * (ms[n] + reserve_ms[n]) <= 8.0 * (1 + 1e-6)
    assert nbytes[n] + reserve_bytes[n] <= 0.5 * 2 ** 20 * (1 + 1e-6)
  assert any(p.params < u.params for p, u in zip(picks, unbudgeted))


def test_the_latency_variant_without_its_table_is_one_line(tmp_path,
                                                          monkeypatch):
  from acme_jax import config as config_lib
  from configs import default
  monkeypatch.chdir(tmp_path)
  config = default.get_config('latency')
  with pytest.raises(config_lib.ConfigError,
                     match=r'latency_table .*existing benchmarks.latency'):
    config_lib.validate(config)
  (tmp_path / 'runs/latency_vit').mkdir(parents=True)
  json.dump(law_table(), open(tmp_path / 'runs/latency_vit/latency.json',
                              'w'))
  config_lib.validate(config)


@pytest.mark.slow  # the tiny main job (~45 s)
def test_the_main_job_keeps_every_deployed_model_within_its_budgets(
    tmp_path):
  """The tiny main job with devices budgeted in ms and bytes through a
  table of known laws: every device's deployed model (backbone and pruned
  header) is predicted within its latency and memory budgets, its header
  within what its backbone leaves, and its latency is also measured here."""
  from conftest import tiny_config
  from acme_jax import pipeline
  config = tiny_config()
  json.dump(law_table(), open(tmp_path / 'latency.json', 'w'))
  config.system.hardware.update(dict(
      latency_table=str(tmp_path / 'latency.json'),
      slowdown=(1.0, 3.0, 6.0) * 2, latency_budget_ms=(1.4,),
      memory_budget_mb=(0.25,)))
  config.latency.repeats, config.latency.warmup = 5, 1
  results = pipeline.run(config, tmp_path / 'run', log=lambda *_: None)
  devices = results['devices']
  # A rerun loads every stage, the devices' included.
  real = pipeline.customize
  pipeline.customize = lambda *a, **k: pytest.fail('devices recomputed')
  try:
    again = pipeline.run(config, tmp_path / 'run', log=lambda *_: None)
  finally:
    pipeline.customize = real
  assert again['devices'] == devices
  for d in devices:
    assert d['predicted_latency_ms'] <= d['latency_budget_ms'] * (1 + 1e-6)
    assert d['predicted_memory_mb'] <= d['memory_budget_mb'] * (1 + 1e-6)
    assert d['measured_latency_ms'] > 0 and d['measured_memory_mb'] > 0
    # The whole model's prediction is its backbone's plus its header's,
    # at the device's slowdown.
    header_ms = (d['predicted_latency_ms'] - d['predicted_backbone_ms']) / \
        d['slowdown']
    assert header_ms <= d['header_cost_limit'][0] * (1 + 1e-6)
  simulated = results['simulated_time']['acme']
  assert simulated['seconds'] == pytest.approx(
      sum(p['seconds'] for p in simulated['phases']))
  assert [p['phase'] for p in simulated['phases']] == (
      ['setup'] + [f'round {r}' for r in range(config.aggregation.rounds)] +
      ['closing'])
  assert 0 <= simulated['straggler_seconds'] < simulated['seconds']
  # The latency budget binds: the slowest device with the largest
  # parameter budget gets less than the largest backbone that fits it.
  candidates = json.load(open(tmp_path / 'run/selection.json'))['candidates']
  last = devices[-1]
  assert last['slowdown'] == 6.0
  allowed = max(c['params'] for c in candidates if c['params'] +
                config.system.header_allowance <= last['budget'])
  assert last['params'] < allowed


def test_virtual_time_is_the_hand_computation_on_a_two_device_toy():
  """One edge, two devices: 1e9 and 5e8 FLOP/s; device 0's links 8 Mbps up
  and 80 down, device 1's 4 Mbps up and a free downlink. Every phase lasts
  as long as its slowest device; cloud-edge links take no time."""
  from acme_jax.hardware import profile, virtual_time
  from acme_jax.hierarchy.ledger import Ledger
  ledger = Ledger()
  ledger.send(('cloud', 0), ('edge', 0), 'front', 10 ** 9)  # not a device's
  ledger.send(('edge', 0), ('device', 0), 'backbone', 10 ** 6)
  ledger.send(('edge', 0), ('device', 1), 'backbone', 2 * 10 ** 6)
  for r in range(2):
    for d in range(2):
      ledger.send(('device', d), ('edge', 0), 'importance', 10 ** 5, round=r)
      ledger.send(('edge', 0), ('device', d), 'importance', 10 ** 5, round=r)
  for d in range(2):
    ledger.send(('device', d), ('edge', 0), 'metrics', 100)
  phases = virtual_time.ledger_phases(
      ledger.to_records(), {0: 2e9, 1: 1e9}, [{0: 1e9, 1: 1e9}] * 2)
  hardware = [profile.Hardware(uplink_mbps=8.0, downlink_mbps=80.0),
              profile.Hardware(slowdown=2.0, uplink_mbps=4.0)]
  got = virtual_time.timeline(phases, [1e9, 5e8], hardware)
  setup = max(2.0 + 0.1, 2.0)               # device 0: 2 s + 1 MB at 10 MB/s
  each_round = max(1.0 + 0.1 + 0.01,        # 0.1 MB up at 1 MB/s, down
                   2.0 + 0.2)               # device 1: up at 0.5 MB/s
  closing = max(100 / 1e6, 100 / 5e5)
  assert [p['phase'] for p in got['phases']] == [
      'setup', 'round 0', 'round 1', 'closing']
  np.testing.assert_allclose([p['seconds'] for p in got['phases']],
                             [setup, each_round, each_round, closing])
  assert got['seconds'] == pytest.approx(setup + 2 * each_round + closing)
  waited = ((2.1 - 2.05) + 2 * (2.2 - (1.11 + 2.2) / 2) +
            (2e-4 - 1.5e-4))
  assert got['straggler_seconds'] == pytest.approx(waited)
  assert [p['slowest_device'] for p in got['phases']] == [0, 1, 1, 1]


def test_a_devices_rate_is_the_tables_full_backbone_flops_per_second(
    tmp_path):
  from acme_jax.device import stage as device_stage
  from acme_jax.hardware import virtual_time
  config = hardware_config(tmp_path / 'latency.json',
                           slowdown=(1.0, 4.0, 1.0, 4.0, 1.0, 4.0))
  f = fleet.Fleet.from_config(config, types.SimpleNamespace(num_classes=10),
                              device_stage.header_spec(config, 10), 6)
  arch = sizes.architecture(config, 10)
  flops = features.backbone_row(arch, 1.0, 1.0, arch.num_tokens, 1)['flops']
  rate = flops / ((0.1 + 1e-6 * flops) / 1e3)
  np.testing.assert_allclose(virtual_time.device_rates(f),
                             [rate, rate / 4] * 3)


def test_the_main_job_and_the_baselines_each_keep_the_others_simulated_time(
    tmp_path):
  from acme_jax import report
  from acme_jax import workdir as workdir_lib
  wd = workdir_lib.Workdir(tmp_path)
  report.write_results(wd, {'simulated_time': report.merged_section(
      wd, 'simulated_time', {'methods': {'fedavg': 1}})})
  report.write_results(wd, {'simulated_time': report.merged_section(
      wd, 'simulated_time', {'acme': 2})})
  assert workdir_lib.read_json(tmp_path / 'results.json')[
      'simulated_time'] == {'methods': {'fedavg': 1}, 'acme': 2}


@pytest.mark.slow  # compiles every grid backbone and header (~1 min)
def test_the_latency_benchmark_writes_a_table_the_main_job_reads(tmp_path):
  """benchmarks.latency on the tiny config: every grid cell and header at
  every batch, a predictor per part and batch, and a table the run's fleet
  loads and predicts from."""
  from conftest import tiny_config
  from benchmarks import latency as bench
  from acme_jax.device import stage as device_stage
  from acme_jax.hardware import table
  config = tiny_config()
  config.latency.update(dict(warmup=1, repeats=3, header_samples=4,
                             between_samples=2))
  bench.run(config, tmp_path, log=lambda *_: None)
  saved = table.load(tmp_path / 'latency.json', family='vit')
  assert (tmp_path / 'latency.md').read_text().startswith('Latency on ')
  grid = {(g['depth_mult'], g['width_mult']) for g in sizes.grid(config)}
  for batch in config.latency.batches:
    rows = [r for r in saved['measured'] if r['batch'] == batch]
    assert grid <= {(r['depth'], r['width']) for r in rows
                    if r['part'] == 'backbone'}
    assert sum(r['part'] == 'header' for r in rows) == 4
    assert all(r['median_ms'] > 0 and r['peak_memory_bytes'] > 0
               for r in rows)
    for target in ('latency', 'memory'):
      for part in ('backbone', 'header'):
        assert f'{part}@{batch}' in saved['predictor'][target]
  config.system.hardware.latency_table = str(tmp_path / 'latency.json')
  f = fleet.Fleet.from_config(config, types.SimpleNamespace(num_classes=10),
                              device_stage.header_spec(config, 10), 6)
  ms, nbytes = f.backbone_costs([1.0], [1.0])
  full = [r for r in saved['measured'] if r['part'] == 'backbone' and
          r['batch'] == 1 and (r['depth'], r['width']) == (1.0, 1.0)][0]
  # Times on a shared machine are no test's business; memory is XLA's
  # plan, the same every run: its fitted prediction is near it.
  assert ms[0] > 0
  assert 0.5 < nbytes[0] / full['peak_memory_bytes'] < 2.0


def test_a_job_that_ignores_the_budgets_refuses_a_latency_table(tmp_path):
  """The table experiments and the networked run would ignore latency and
  memory budgets: each refuses a latency table in one line, before any
  work."""
  from acme_jax import errors
  from acme_jax import world as world_lib
  from acme_jax.networked import settings
  config = hardware_config(tmp_path / 'latency.json')
  with pytest.raises(errors.UserError, match=r'^system.hardware.latency_'
                     r'table is set, but only experiments.main and '
                     r'experiments.baselines budget'):
    world_lib.build(config, tmp_path / 'run')
  assert not (tmp_path / 'run').exists()
  with pytest.raises(errors.ConfigError, match=r'latency_table = .* only '
                     r'experiments.main'):
    settings.validate(config)


def test_budgets_no_trained_subnet_can_meet_are_refused_before_training(
    tmp_path):
  from acme_jax import errors, pipeline
  config = hardware_config(tmp_path / 'latency.json', slowdown=(100.0,),
                           latency_budget_ms=(1.0,))
  with pytest.raises(errors.UserError, match=r'^device 0: no trained subnet '
                     r'within its parameter budget [0-9,]+ meets its budgets '
                     r'of 1.0 ms and no MiB at 100x slowdown \(the fastest'):
    pipeline.run(config, tmp_path / 'run', log=lambda *_: None)
  assert not (tmp_path / 'run/cloud/teacher').exists()


def test_a_baseline_that_serves_no_device_takes_no_simulated_time():
  from acme_jax.hardware import virtual_time
  from experiments import baselines
  assert baselines._nothing(True)['simulated_time'] == \
      virtual_time.timeline([], [], [])
  assert virtual_time.timeline([], [], [])['seconds'] == 0
  assert 'simulated_time' not in baselines._nothing(False)


def test_the_published_devices_are_what_the_published_table_predicts():
  """docs/hardware.md's devices table (configs/default.py:latency): each
  deployed model's predicted latency and memory are the published digits
  table's predictions, recomputed here from the device's backbone shape
  and its header's cell, cells and parameters, at its slowdown; each meets
  its budgets."""
  import pathlib
  from configs import default
  from acme_jax.device import stage as device_stage
  from acme_jax.hardware import table
  docs = pathlib.Path(__file__).resolve().parents[1] / 'docs'
  results = json.loads((docs / 'readme_hardware_devices_results.json')
                       .read_text())
  tab = json.loads((docs / 'readme_latency_vit.json').read_text())
  config = default.get_config('latency')
  arch = sizes.architecture(config, 10)
  spec = device_stage.header_spec(config, 10)
  for part in ('latency', 'memory'):  # what the header row below feeds
    assert tab['predictor'][part]['header@1']['kind'] == 'features'
  for d in results['devices']:
    backbone = features.backbone_row(arch, d['depth_mult'], d['width_mult'],
                                     arch.num_tokens, 1)
    cell = np.asarray(d['header_arch'])
    pools = d['header_cells'] * sum(
        header_lib.OPS[o].endswith('pool_3x3')
        for o in list(cell[:, 1]) + list(cell[:, 3]))
    header = {'n_layers': d['header_cells'], 'params': d['header_params'],
              'flops': (2 * d['header_params'] + 9 * pools *
                        spec.num_channels) * 16}
    ms = sum(table.fitted(tab, part, 1, 'latency')([row])[0]
             for part, row in (('backbone', backbone), ('header', header)))
    nbytes = sum(table.fitted(tab, part, 1, 'memory')([row])[0]
                 for part, row in (('backbone', backbone), ('header', header)))
    assert d['predicted_latency_ms'] == pytest.approx(d['slowdown'] * ms)
    assert d['predicted_memory_mb'] == pytest.approx(nbytes / 2 ** 20)
    assert d['predicted_latency_ms'] <= d['latency_budget_ms']
    assert d['predicted_memory_mb'] <= d['memory_budget_mb']


def test_a_baselines_deployment_after_its_last_round_is_its_closing_phase():
  """A baseline's ledger numbers its rounds 0..R-1 and its deployment R
  (federated/hierarchical.py): the deployment's downloads and fine-tuning
  are the closing phase."""
  from acme_jax.hardware import profile, virtual_time
  from acme_jax.hierarchy.ledger import Ledger
  ledger = Ledger()
  for r in range(3):
    ledger.send(('edge', 0), ('device', 0), 'weights', 1000, round=r)
  history = {0: [{'flops': 1e9}, {'flops': 1e9}]}
  got = virtual_time.timeline(
      virtual_time.ledger_phases(ledger.to_records(), {},
                                 [{0: h['flops']} for h in history[0]],
                                 {0: 5e8}, setup_kinds=(), closing_kinds=()),
      [1e9], [profile.Hardware(downlink_mbps=8.0)])
  assert [p['phase'] for p in got['phases']] == [
      'setup', 'round 0', 'round 1', 'closing']
  np.testing.assert_allclose([p['seconds'] for p in got['phases']],
                             [0.0, 1.001, 1.001, 0.5 + 0.001])
