"""Config validation and the command line: one clear error per wrong field."""
import subprocess
import sys

import pytest

from acme_jax import config as config_lib
from configs import default


def _with(**overrides):
  config = default.get_config()
  for path, value in overrides.items():
    node = config
    *parents, leaf = path.split('__')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def test_default_config_is_valid():
  config_lib.validate(default.get_config())


@pytest.mark.parametrize('overrides, field', [
    (dict(data__name='imagenet21k'), 'data.name'),
    (dict(cloud__width_mults=(1.0, 1.5)), 'cloud.width_mults'),
    (dict(cloud__width_mults=(1.0, 0.0)), 'cloud.width_mults'),
    (dict(cloud__depth_mults=()), 'cloud.depth_mults'),
    (dict(cloud__width_mults=(1.0, 0.1)), 'cloud.width_mults'),  # 0 heads
    (dict(data__image_size=18), 'data.image_size'),               # 18 % 4
    (dict(data__cloud_fraction=1.0), 'data.cloud_fraction'),
    (dict(model__num_heads=3), 'model.num_heads'),                # 64 % 3
    (dict(cloud__teacher__learning_rate=-1.0),
     'cloud.teacher.learning_rate'),
    (dict(cloud__depth_stage__epochs=-1), 'cloud.depth_stage.epochs'),
    (dict(cloud__batch_size=0), 'cloud.batch_size'),
    (dict(system__partition='pathological'), 'system.partition'),
    (dict(system__budgets=(10**6,) * 5), 'system.budgets'),  # 6 devices
    (dict(selection__cost_model='flops'), 'selection.cost_model'),
    (dict(aggregation__mode='fedavg'), 'aggregation.mode'),
    (dict(aggregation__setups=('C9',)), 'aggregation.setups'),
    (dict(baselines__kinds=('linear', 'resnet')), 'baselines.kinds'),
    (dict(engine__strategy='pmap'), 'engine.strategy'),
    (dict(engine__chunk=-1), 'engine.chunk'),
    (dict(header__num_channels=0), 'header.num_channels'),
    # Values that pass a sign check and mean nothing: infinities, NaN,
    # positives that are zero in float32, counts past int32, a range
    # backwards, an epsilon that drowns the variance.
    (dict(cloud__teacher__learning_rate=float('inf')),
     'cloud.teacher.learning_rate'),
    (dict(cloud__width_stage__learning_rate=float('nan')),
     'cloud.width_stage.learning_rate'),
    (dict(model__layer_norm_eps=float('inf')), 'model.layer_norm_eps'),
    (dict(model__layer_norm_eps=2.0), 'model.layer_norm_eps'),
    (dict(header__lr_max=float('inf')), 'header.lr_max'),
    (dict(header__lr_min=0.5), 'header.lr_min'),  # above lr_max 0.1
    (dict(header__temperature=float('inf')), 'header.temperature'),
    (dict(aggregation__temperature=1e-320), 'aggregation.temperature'),
    (dict(aggregation__temperatures=(1.0, 1e-39)),
     'aggregation.temperatures'),
    (dict(federated__kd_temperature=float('inf')),
     'federated.kd_temperature'),
    (dict(cloud__teacher__epochs=10**20), 'cloud.teacher.epochs'),
    (dict(aggregation__rounds=2**31), 'aggregation.rounds'),
    (dict(selection__sigma=float('inf')), 'selection.sigma'),
    (dict(header__dropout_rate=float('nan')), 'header.dropout_rate'),
    (dict(aggregation__self_weight=float('-inf')), 'aggregation.self_weight'),
    (dict(cloud__distributed__coordinator='127.0.0.1:0'),
     'cloud.distributed.coordinator'),
    (dict(cloud__distributed__coordinator=':1234'),
     'cloud.distributed.coordinator'),
])
def test_invalid_values_name_the_field(overrides, field):
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(_with(**overrides))
  assert info.value.field == field
  assert f'config.{field}' in str(info.value)


def _main(*args, timeout=120):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.main', '--config=configs/default.py',
       *args], capture_output=True, text=True, timeout=timeout)


def test_command_line_error_is_one_clear_line(tmp_path):
  result = _main(f'--workdir={tmp_path}', '--config.cloud.width_mults=0.5,1.5')
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1
  assert 'config.cloud.width_mults' in lines[0] and '1.5' in lines[0]
  assert '(0, 1]' in lines[0]
  assert not (tmp_path / 'cloud').exists()  # validated before any work


def test_command_line_overrides_are_applied(tmp_path):
  result = _main(f'--workdir={tmp_path}', '--config.cloud.width_mults=0.5,1.0',
                 '--config.seed=3', '--validate_only')
  assert result.returncode == 0, result.stderr
  assert 'width_mults: !!python/tuple\n  - 0.5\n  - 1.0' in result.stdout
  assert 'seed: 3' in result.stdout
  assert not (tmp_path / 'cloud').exists()


def test_unknown_dataset_from_command_line(tmp_path):
  result = _main(f'--workdir={tmp_path}', '--config.data.name=mnist')
  assert result.returncode == 2 and 'config.data.name' in result.stderr
  assert 'digits' in result.stderr and 'Traceback' not in result.stderr


def test_budget_below_the_smallest_subnet_is_refused():
  # Smallest grid backbone (depth 0.25, width 0.25, no head) of the default
  # tiny ViT has 15,152 params; with the 40,000 header allowance a budget
  # needs 55,152.
  config = _with(system__budgets=(55_151,) + (10**6,) * 5)
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(config)
  assert info.value.field == 'system.budgets'
  assert '55152' in str(info.value) and '55151' in str(info.value)
  config_lib.validate(_with(system__budgets=(55_152,) + (10**6,) * 5))


def test_a_repeat_fingerprint_ignores_only_the_repeat_count():
  """A cached repeat serves runs with any number of repeats; any other
  change to a section it depends on still invalidates it."""
  sections = ('baselines', 'aggregation', 'federated', 'header')
  base = default.get_config()
  more = default.get_config()
  for section in ('baselines', 'aggregation', 'federated'):
    more[section].repeats = 7
  assert config_lib.subset(more, sections) != config_lib.subset(base,
                                                                sections)
  assert (config_lib.repeat_fingerprint(more, sections) ==
          config_lib.repeat_fingerprint(base, sections))
  for section, field in (('baselines', 'train_sizes'),
                         ('aggregation', 'rounds'), ('header', 'search_epochs')):
    changed = default.get_config()
    changed[section][field] = (3,) if field == 'train_sizes' else 99
    assert (config_lib.repeat_fingerprint(changed, sections) !=
            config_lib.repeat_fingerprint(base, sections)), field


@pytest.mark.parametrize('overrides', [
    {}, dict(header__num_layers=1), dict(header__num_channels=7),
    dict(header__num_nodes=1), dict(header__num_nodes=4, model__hidden_size=48,
                                    model__num_heads=4)])
def test_smallest_header_is_the_headers_own_count(overrides):
  """`sizes` counts the smallest header in closed form (it imports no
  tier): the count `device.header.param_count` gives its smallest_arch."""
  from acme_jax import sizes
  from acme_jax.device import header as header_lib
  config = _with(**overrides)
  cells = sizes.max_header_cells(config)
  for classes, rank in ((10, 2), (3, 1)):
    spec = header_lib.Spec(num_classes=classes,
                           feature_dim=config.model.hidden_size,
                           grid_rank=rank,
                           num_channels=config.header.num_channels,
                           num_nodes=config.header.num_nodes, max_layers=cells)
    assert sizes.smallest_header(config, cells, classes) == int(
        header_lib.param_count(
            spec, header_lib.smallest_arch(config.header.num_nodes), cells))


def test_sizes_import_no_tier():
  import ast
  import pathlib
  from acme_jax import sizes
  tree = ast.parse(pathlib.Path(sizes.__file__).read_text())
  imported = {f'{n.module}.{a.name}' if isinstance(n, ast.ImportFrom)
              else a.name
              for n in ast.walk(tree) if isinstance(n, (ast.Import,
                                                        ast.ImportFrom))
              for a in n.names}
  assert 'acme_jax.selection.costs' in imported
  tiers = ('data', 'device', 'edge', 'cloud', 'federated', 'networked',
           'hierarchy')
  assert not [m for m in imported
              if m.split('.')[0] == 'acme_jax' and m.split('.')[1] in tiers]


def test_a_job_called_directly_validates_before_any_work(tmp_path):
  """Library users call world.build (an experiment's run) without the
  command line: the bad config stops it before any work."""
  from acme_jax import world
  with pytest.raises(config_lib.ConfigError, match='config.seed'):
    world.build(_with(seed=-1), tmp_path / 'w')
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('overrides, field', [
    (dict(selection__grid_size=100000), 'selection.grid_size'),
    (dict(header__batch_size=100000), 'header.batch_size'),
    (dict(header__num_nodes=1000), 'header.num_nodes'),
    (dict(header__controller_hidden=100000), 'header.controller_hidden'),
    (dict(cloud__eval_batch_size=10**7), 'cloud.eval_batch_size'),
    (dict(cloud__batch_size=10**6), 'cloud.batch_size'),
])
def test_sizes_past_the_machines_memory_are_refused_with_both_numbers(
    overrides, field):
  from acme_jax import memory
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(_with(**overrides))
  assert info.value.field == field
  have = f'{memory.machine_bytes() / 2**30:,.1f} GiB'
  assert f'this machine has {have}' in str(info.value)


@pytest.mark.slow  # the selection on a 400 x 400 grid, traced: ~10 s
def test_the_grid_estimate_bounds_what_the_selection_allocates():
  """The selection's estimate against its traced peak at a grid where it
  is measurable: at least the peak (else an impossible grid would pass),
  and within 2x of it."""
  import tracemalloc
  from acme_jax import memory, sizes
  from acme_jax.selection import stage as selection_stage
  from conftest import constructed_grid
  config = _with(selection__grid_size=400)
  grid = [dict(depth_mult=d, width_mult=w, accuracy=a,
               params=int(1000 * d * w + 100), per_class_accuracy=[a] * 10)
          for d, w, a in constructed_grid()]
  tracemalloc.start()
  try:
    selection_stage.run(selection_stage.SelectionHparams.from_config(config),
                        grid, sizes.architecture(config, 10))
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  estimate = next(e.bytes for e in memory.estimates(config)
                  if e.field == 'selection.grid_size')
  assert peak <= estimate <= 2 * peak, (peak, estimate)


def test_every_shipped_config_fits_this_machine():
  from acme_jax import memory
  from configs import cifar100_vit_b16, minilm_wordnet
  for config in (default.get_config(), cifar100_vit_b16.get_config(),
                 minilm_wordnet.get_config()):
    for e in memory.estimates(config):
      assert e.bytes < 8 * 2**30, (e.field, e.bytes)
