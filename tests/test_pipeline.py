"""End-to-end smoke test of the main job on a toy config, and resuming."""
import json

import pytest

from acme_jax import config as config_lib
from acme_jax import pipeline
from acme_jax.cloud import elastic, teacher
from acme_jax.device import nas
from acme_jax.edge import rounds
from conftest import tiny_config
from experiments import aggregation, headers

GRID_KEYS = {'depth_mult', 'width_mult', 'accuracy', 'per_class_accuracy',
             'params', 'bytes'}


def _quiet(*_):
  pass


def test_runs_end_to_end_then_resumes_without_retraining(tmp_path,
                                                         monkeypatch):
  config = tiny_config()
  pipeline.run(config, tmp_path, log=_quiet)
  headers.run(config, tmp_path, log=_quiet)
  aggregation.run(config, tmp_path, log=_quiet)
  first = json.loads((tmp_path / 'results.json').read_text())
  grid = json.loads((tmp_path / 'cloud/grid.json').read_text())
  assert len(grid) == 9 and all(GRID_KEYS <= set(r) for r in grid)
  assert all(len(r['per_class_accuracy']) == 10 for r in grid)
  assert grid[0]['params'] > grid[-1]['params']
  results = json.loads((tmp_path / 'results.json').read_text())
  assert len(results['devices']) == 6  # 2 edges x 3 devices
  for device in results['devices']:
    # The chosen backbone plus the header allowance fits the budget, and its
    # parameter count is what the ledger shipped; so does the final header.
    assert (device['params'] + config.system.header_allowance
            <= device['budget'])
    assert device['total_params'] == device['params'] + device['header_params']
    assert device['total_params'] <= device['budget']
    assert device['header_params'] <= device['nas_header_params']
    assert device['bytes'] == 4 * device['params']
    assert sum(device['label_histogram']) == device['local_samples'][0]
  # A device whose budget fits the full backbone + allowance receives it
  # (the largest budget is exactly that on this config).
  full = max(r['params'] for r in grid)
  largest = max(results['devices'], key=lambda d: d['budget'])
  assert largest['budget'] == full + config.system.header_allowance
  assert largest['params'] == full
  ledger = results['ledger']
  assert ledger['acme_raw_data_off_device'] == 0
  assert ledger['acme']['by_kind']['backbone'] > 0
  assert ledger['ratio'] == pytest.approx(
      ledger['acme']['total'] / ledger['centralized']['total'])
  records = json.loads((tmp_path / 'ledger.json').read_text())
  kinds = {r['kind'] for r in records}
  assert {'signature', 'importance', 'backbone', 'front'} <= kinds
  assert not any(r['kind'] == 'raw_data' for r in records)  # stays on device
  assert set(results['headers']['average']) == {
      'acme_nas', 'linear', 'mlp', 'mixer', 'cnn_project'}
  assert [r['depth_fraction'] for r in results['headers']['by_depth']] == [
      1.0, pytest.approx(1 / 3)]
  assert set(results['aggregation']['by_setup']) == {'IID', 'C4'}
  assert set(results['aggregation']['by_setup']['C4']) == {
      'wo_pruning', 'pruning_alone', 'pruning_avg', 'pruning_per_js@T=1',
      'pruning_per_js@T=0.05', 'pruning_per_emd@T=1',
      'pruning_per_emd@T=0.05'}
  for name in ('report.md', 'pareto.png', 'selection.json', 'ledger.json',
               'headers.png', 'aggregation.png'):
    assert (tmp_path / name).stat().st_size > 0

  def fail(*args, **kwargs):
    raise AssertionError('a finished stage was recomputed')

  monkeypatch.setattr(teacher, 'train_teacher', fail)
  monkeypatch.setattr(elastic, 'train_elastic', fail)
  monkeypatch.setattr(nas, 'search', fail)
  monkeypatch.setattr(rounds, 'run_rounds', fail)
  pipeline.run(config, tmp_path, log=_quiet)
  headers.run(config, tmp_path, log=_quiet)
  aggregation.run(config, tmp_path, log=_quiet)
  assert json.loads((tmp_path / 'results.json').read_text()) == first


def test_interrupted_run_resumes_from_the_last_finished_stage(tmp_path,
                                                             monkeypatch):
  config = tiny_config()
  real = elastic.train_elastic
  calls = []

  def crash_in_depth_stage(*args, **kwargs):
    calls.append(kwargs['desc'])
    if kwargs['desc'] == 'depth_stage':
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(elastic, 'train_elastic', crash_in_depth_stage)
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(config, tmp_path, log=_quiet)
  assert not (tmp_path / 'cloud/depth_stage').exists()
  assert not list((tmp_path / 'cloud').glob('*tmp*'))

  def record(*args, **kwargs):
    calls.append(kwargs['desc'])
    return real(*args, **kwargs)

  monkeypatch.setattr(elastic, 'train_elastic', record)
  monkeypatch.setattr(teacher, 'train_teacher',
                      lambda *a, **k: pytest.fail('teacher retrained'))
  calls.clear()
  pipeline.run(config, tmp_path, log=_quiet)
  assert calls == ['depth_stage']  # the width stage was loaded, not redone
  assert (tmp_path / 'cloud/grid.json').exists()


def test_repeats_give_confidence_intervals(tmp_path):
  """Two repeats of the header table: mean ± CI per cell and paired
  differences, from the per-repeat rows (computed independently here)."""
  import numpy as np
  from scipy import stats
  config = tiny_config()
  config.baselines.repeats = 2
  config.baselines.depth_fractions = (1.0,)
  config.baselines.kinds = ('linear',)
  table = headers.run(config, tmp_path, log=_quiet)
  nas_acc = [rep[0]['acme_nas'] for rep in table['rows']]
  linear = [rep[0]['linear'] for rep in table['rows']]
  cell = table['by_depth'][0]['accuracy']['acme_nas']
  assert cell['mean'] == pytest.approx(np.mean(nas_acc))
  assert cell['ci'] == pytest.approx(
      stats.t.ppf(0.975, 1) * np.std(nas_acc, ddof=1) / np.sqrt(2))
  diff = table['nas_minus']['linear']
  assert diff['mean'] == pytest.approx(np.mean(nas_acc) - np.mean(linear))
  assert nas_acc[0] != nas_acc[1]  # the repeats differ in data and keys


def test_refuses_a_workdir_made_with_another_config(tmp_path):
  config = tiny_config()
  (tmp_path / 'cloud').mkdir()
  (tmp_path / 'cloud/config.json').write_text(json.dumps(
      json.loads(config.to_json_best_effort()) | {'seed': 99}))
  with pytest.raises(config_lib.ConfigError, match='seed'):
    pipeline.run(config, tmp_path, log=_quiet)
