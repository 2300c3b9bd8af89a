"""End-to-end runs of the main job and the experiments on a toy config:
results, resuming, verified checkpoints and caches, failed starts."""
import inspect
import json
import shutil

import numpy as np
import pytest

from acme_jax import config as config_lib
from acme_jax import pipeline
from acme_jax import ownership
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import elastic, teacher
from acme_jax.cloud import stage as cloud_stage
from acme_jax.device import nas
from acme_jax.federated import acme
from conftest import tiny_config
from experiments import aggregation, header_budget, headers

GRID_KEYS = {'depth_mult', 'width_mult', 'accuracy', 'per_class_accuracy',
             'params', 'bytes'}


def _quiet(*_):
  pass


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished tiny run of the main job and both experiments."""
  path = tmp_path_factory.mktemp('finished')
  config = tiny_config()
  pipeline.run(config, path, log=_quiet)
  headers.run(config, path, log=_quiet)
  aggregation.run(config, path, log=_quiet)
  header_budget.run(config, path, log=_quiet)
  return path


def _copy(finished, tmp_path):
  target = tmp_path / 'run'
  shutil.copytree(finished, target)
  return target


def _results(path):
  return json.loads((path / 'results.json').read_text())


@pytest.mark.slow  # the module fixture trains the main job and 3 experiments
def test_runs_end_to_end_then_resumes_without_retraining(finished, tmp_path,
                                                         monkeypatch):
  config = tiny_config()
  first = _results(finished)
  tmp_path = _copy(finished, tmp_path)
  # Mid-stage checkpoints were taken (every 3 steps) and went with their
  # finished stages.
  assert not list(tmp_path.rglob('*.partial.*'))
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
      'acme_nas', 'random_arch', 'linear', 'mlp', 'mixer', 'cnn_project',
      'fixed_best'}
  # The same final training steps on every device for every arm.
  steps = results['headers']['final_train_steps']
  assert any('random' in arm for arm in steps)
  assert len({tuple(v) for v in steps.values()}) == 1
  budget = results['header_budget']
  assert [(c['train_samples'], c['budget']) for c in budget['cells']] == [
      (10, 'default'), (10, 'prototype')]
  assert budget['cells'][1]['epochs'] == 130
  assert [r['depth_fraction'] for r in results['headers']['by_depth']] == [
      1.0, pytest.approx(1 / 3)]
  assert set(results['aggregation']['by_setup']) == {'IID', 'C4'}
  assert set(results['aggregation']['by_setup']['C4']) == {
      'wo_pruning', 'pruning_alone', 'pruning_avg', 'pruning_per_js@T=1',
      'pruning_per_js@T=0.05', 'pruning_per_emd@T=1',
      'pruning_per_emd@T=0.05'}
  assert ledger['full_model_deployment']['ratio'] > 0
  for name in ('report.md', 'pareto.png', 'selection.json', 'ledger.json',
               'headers.png', 'aggregation.png', 'header_budget.json'):
    assert (tmp_path / name).stat().st_size > 0

  def fail(*args, **kwargs):
    raise AssertionError('a finished stage was recomputed')

  monkeypatch.setattr(teacher, 'train_teacher', fail)
  monkeypatch.setattr(elastic, 'train_elastic', fail)
  monkeypatch.setattr(nas, 'search', fail)
  monkeypatch.setattr(acme, 'run', fail)
  pipeline.run(config, tmp_path, log=_quiet)
  headers.run(config, tmp_path, log=_quiet)
  aggregation.run(config, tmp_path, log=_quiet)
  header_budget.run(config, tmp_path, log=_quiet)
  assert json.loads((tmp_path / 'results.json').read_text()) == first


def _flip_bytes(path, count=400):
  data = bytearray(path.read_bytes())
  for i in range(min(count, len(data))):
    data[(i * 7919) % len(data)] ^= 0xFF
  path.write_bytes(bytes(data))


def _largest_file(directory):
  return max((p for p in directory.rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


# One damage in the default suite; the others cost ~20 s each (make test-all).
@pytest.mark.slow
@pytest.mark.parametrize('damage', ['bit_flip', 'truncation', 'deletion'])
def test_a_damaged_checkpoint_is_detected_and_recomputed(
    finished, tmp_path, capsys, damage):
  """Flipped bits, a truncated or a deleted file in the teacher checkpoint:
  one warning naming it, the teacher and every later cloud stage are
  trained again, and the run ends with the clean run's results."""
  run = _copy(finished, tmp_path)
  target = _largest_file(run / 'cloud/teacher')
  if damage == 'bit_flip':
    _flip_bytes(target)
  elif damage == 'truncation':
    target.write_bytes(target.read_bytes()[:len(target.read_bytes()) // 2])
  else:
    target.unlink()
  (run / 'cloud/teacher.orbax-checkpoint-tmp-1234').mkdir()  # a stale save
  pipeline.run(tiny_config(), run, log=_quiet)
  err = capsys.readouterr().err
  assert 'cloud/teacher ' in err and 'computing it again' in err
  assert (run / 'cloud/teacher.corrupt').exists()
  assert not list((run / 'cloud').glob('*orbax-checkpoint-tmp*'))
  fresh = _results(run)
  clean = _results(finished)
  for section in ('cloud', 'devices', 'ledger'):
    assert fresh[section] == clean[section]


@pytest.mark.slow
@pytest.mark.parametrize('content', ['', '{"config": {', 'null'])
def test_a_damaged_cached_json_is_recomputed(finished, tmp_path, capsys,
                                             content):
  run = _copy(finished, tmp_path)
  (run / 'cloud/grid.json').write_text(content)
  (run / 'devices.json').write_text(content)
  pipeline.run(tiny_config(), run, log=_quiet)
  err = capsys.readouterr().err
  assert 'cloud/grid.json' in err and 'devices.json' in err
  assert _results(run)['devices'] == _results(finished)['devices']


@pytest.mark.slow
def test_the_budget_experiment_resumes_within_a_repeat(finished, tmp_path,
                                                        monkeypatch):
  """A repeat interrupted after its comparison and before its longer search
  reruns only the search, and ends with the uninterrupted run's table."""
  run, _ = _interrupted(finished, tmp_path, 'header_budget',
                        ['n10_compare.json', 'n10_prototype.json'],
                        'n10_prototype.json')
  searches = []
  real_search = header_budget.device_stage.search_headers

  def counted(hp, *args, **kwargs):
    searches.append(hp.search.epochs)
    return real_search(hp, *args, **kwargs)

  monkeypatch.setattr(header_budget.compare, 'compare', _recomputed)
  monkeypatch.setattr(header_budget.device_stage, 'search_headers', counted)
  header_budget.run(tiny_config(), run, log=_quiet)
  assert searches == [130]  # the prototype's budget, once
  assert (_results(run)['header_budget'] ==
          _results(finished)['header_budget'])


@pytest.mark.slow
def test_the_aggregation_experiment_resumes_within_a_repeat(finished,
                                                             tmp_path,
                                                             monkeypatch):
  """A repeat interrupted after its first setup reruns only the second."""
  run, cells = _interrupted(finished, tmp_path, 'aggregation',
                            ['C4.json', 'IID.json'], 'C4.json')
  setups = []
  real_setup = aggregation._one_setup

  def counted(world, hp, setup, *args):
    setups.append(setup)
    return real_setup(world, hp, setup, *args)

  monkeypatch.setattr(aggregation, '_one_setup', counted)
  aggregation.run(tiny_config(), run, log=_quiet)
  assert setups == ['C4']
  assert _results(run)['aggregation'] == _results(finished)['aggregation']
  # Cells of another engine strategy are not paired with this one's.
  for path in (cells / 'repeat_0.json', cells / 'repeat_0.json.sha256'):
    path.unlink()
  monkeypatch.setattr(aggregation.engine, 'resolved_strategy',
                      lambda *_: 'vmap')
  aggregation.run(tiny_config(), run, log=_quiet)
  assert setups == ['C4', 'IID', 'C4']


def _interrupted(finished, tmp_path, experiment, cells, lost):
  """A copy of the finished run whose `experiment` stopped in repeat 0
  before it sealed cell `lost` (the repeat's own cache is gone too):
  (run, the experiment's cache directory). Checks the cells first."""
  run = _copy(finished, tmp_path)
  cache = run / 'experiments' / experiment
  assert sorted(p.name for p in (cache / 'repeat_0').glob('*.json')) == cells
  for name in ('repeat_0.json', f'repeat_0/{lost}'):
    for path in (cache / name, cache / f'{name}.sha256'):
      path.unlink()
  return run, cache


def _recomputed(*args, **kwargs):
  raise AssertionError('a finished cell was recomputed')


@pytest.mark.slow  # ~42 s
def test_a_failed_start_does_not_bind_the_workdir(tmp_path, monkeypatch):
  """A start that fails before any stage commits leaves no config behind:
  rerunning with another cloud config in the same workdir proceeds."""
  config = tiny_config()

  def broken(*args, **kwargs):
    raise RuntimeError('the teacher could not start')

  monkeypatch.setattr(teacher, 'train_teacher', broken)
  with pytest.raises(RuntimeError):
    pipeline.run(config, tmp_path, log=_quiet)
  assert not (tmp_path / 'cloud/teacher').exists()
  monkeypatch.undo()

  def stop(*args, **kwargs):
    raise KeyboardInterrupt  # enough: the teacher has been trained

  monkeypatch.setattr(elastic, 'train_elastic', stop)
  config.cloud.teacher.epochs = 2  # a different cloud config
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(config, tmp_path, log=_quiet)
  saved = workdir_lib.Workdir(tmp_path).stored_fingerprint('cloud/teacher')
  assert saved['cloud']['teacher']['epochs'] == 2


@pytest.mark.slow  # the main job twice (~45 s); stages resume in test_resume
def test_interrupted_run_resumes_from_the_last_finished_stage(tmp_path,
                                                             monkeypatch):
  config = tiny_config()
  real = elastic.train_elastic
  signature = inspect.signature(real)
  calls = []

  def stage_name(args, kwargs):
    return signature.bind(*args, **kwargs).arguments['stage'].name

  def crash_in_depth_stage(*args, **kwargs):
    calls.append(stage_name(args, kwargs))
    if calls[-1] == 'depth_stage':
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(elastic, 'train_elastic', crash_in_depth_stage)
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(config, tmp_path, log=_quiet)
  assert not (tmp_path / 'cloud/depth_stage').exists()
  assert not list((tmp_path / 'cloud').glob('*tmp*'))

  def record(*args, **kwargs):
    calls.append(stage_name(args, kwargs))
    return real(*args, **kwargs)

  monkeypatch.setattr(elastic, 'train_elastic', record)
  monkeypatch.setattr(teacher, 'train_teacher',
                      lambda *a, **k: pytest.fail('teacher retrained'))
  calls.clear()
  pipeline.run(config, tmp_path, log=_quiet)
  assert calls == ['depth_stage']  # the width stage was loaded, not redone
  assert (tmp_path / 'cloud/grid.json').exists()


@pytest.mark.slow
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
  """Read from the fingerprint sealed inside the stage's checkpoint, before
  any work."""
  config = tiny_config()
  fingerprint = config_lib.subset(config, cloud_stage.SECTIONS) | {'seed': 99}
  wd = workdir_lib.Workdir(tmp_path)
  wd.cached_params('cloud/teacher', lambda: {'w': np.zeros(2)},
                   {'w': np.zeros(2)}, fingerprint=fingerprint)
  ownership.release(tmp_path)
  with pytest.raises(config_lib.ConfigError, match='seed'):
    pipeline.run(config, tmp_path, log=_quiet)


def test_an_edited_stored_fingerprint_breaks_the_seal(tmp_path):
  """A stage is reused only through the fingerprint sealed inside it: one
  edited to match another config is damage, and the stage is computed
  again, never reused."""
  wd = workdir_lib.Workdir(tmp_path)
  wd.cached_params('stage', lambda: {'w': np.zeros(2)}, {'w': np.zeros(2)},
                   fingerprint={'seed': 1})
  assert wd.stored_fingerprint('stage') == {'seed': 1}
  (tmp_path / 'stage' / workdir_lib.FINGERPRINT_NAME).write_text('{}')
  assert wd.stored_fingerprint('stage') is None
  assert not wd.has_checkpoint('stage')


@pytest.mark.slow
def test_more_repeats_reuse_the_finished_ones(finished, tmp_path,
                                              monkeypatch):
  """Asking a finished one-repeat workdir for two repeats computes only
  repeat 1 (a repeat draws from its index, not from the count)."""
  run = _copy(finished, tmp_path)
  computed = []
  real = headers.one_repeat

  def counted(world, repeat, log):
    computed.append(repeat)
    return real(world, repeat, log)

  monkeypatch.setattr(headers, 'one_repeat', counted)
  config = tiny_config()
  config.baselines.repeats = 2
  table = headers.run(config, run, log=_quiet)
  assert computed == [1]
  assert table['rows'][0] == _results(finished)['headers']['rows'][0]


@pytest.mark.slow
def test_a_shard_computes_only_its_repeats_and_writes_no_table(
    finished, tmp_path, monkeypatch):
  """headers.run with shard (1, 2) over 3 repeats computes repeat 1 only and
  leaves results.json as it was; the run without a shard then computes only
  repeat 2 (0 is the finished run's)."""
  run = _copy(finished, tmp_path)
  computed = []
  real = headers.one_repeat

  def counted(world, repeat, log):
    computed.append(repeat)
    return real(world, repeat, log)

  monkeypatch.setattr(headers, 'one_repeat', counted)
  config = tiny_config()
  config.baselines.repeats = 3
  before = (run / 'results.json').read_bytes()
  assert headers.run(config, run, log=_quiet, shard=(1, 2)) is None
  assert computed == [1]
  assert (run / 'results.json').read_bytes() == before
  table = headers.run(config, run, log=_quiet)
  assert computed == [1, 2]
  assert len(table['rows']) == 3
  assert table['rows'][0] == _results(finished)['headers']['rows'][0]


@pytest.mark.slow
def test_the_budget_experiments_long_search_resumes_mid_way(finished, tmp_path,
                                                            monkeypatch):
  """A longer search interrupted mid-way resumes after its last finished
  epoch (saved every step here) and ends with the uninterrupted table."""
  run, cache = _interrupted(finished, tmp_path, 'header_budget',
                            ['n10_compare.json', 'n10_prototype.json'],
                            'n10_prototype.json')
  config = tiny_config()
  config.resume.every_steps = 1
  real, calls = nas.engine.for_each_device, []

  def interrupt_at(limit):
    def step(*args, **kwargs):
      calls.append(1)
      if len(calls) == limit:
        raise KeyboardInterrupt
      return real(*args, **kwargs)
    return step

  def epochs(lines):
    return [int(line.split('nas epoch ')[1].split('/')[0]) for line in lines
            if 'prototype: nas epoch' in line]

  monkeypatch.setattr(header_budget.compare, 'compare', _recomputed)
  monkeypatch.setattr(nas.engine, 'for_each_device', interrupt_at(41))
  before = []
  with pytest.raises(KeyboardInterrupt):
    header_budget.run(config, run, log=before.append)
  assert epochs(before) and epochs(before)[-1] < 130
  assert (cache / 'repeat_0/n10_prototype.partial.npz').exists()
  after = []
  monkeypatch.setattr(nas.engine, 'for_each_device', real)
  header_budget.run(config, run, log=after.append)
  assert epochs(after) == list(range(epochs(before)[-1] + 1, 131))
  assert (_results(run)['header_budget'] ==
          _results(finished)['header_budget'])
  assert not list((cache / 'repeat_0').glob('*partial*'))
