"""experiments/table.py, what every table experiment shares: a repeat's
inputs drawn from its index alone, the full-width backbone's targets, and
the cached repeats and publishing of `Experiment.run` (on a stand-in world:
no training)."""
import json
import types

import jax
import numpy as np
import pytest

from acme_jax import config as config_lib
from acme_jax import streams
from acme_jax import workdir as workdir_lib
from acme_jax import world as world_lib
from acme_jax.data import stage as data_stage
from acme_jax.device import stage as device_stage
from conftest import tiny_config
from experiments import table


@pytest.fixture(scope='module')
def world():
  """The parts of a world a repeat's inputs and targets read: config,
  device data, classes and topology (budgets from a made-up grid)."""
  config = tiny_config()
  dataset, _, device_data = data_stage.load(config, lambda *_: None)
  grid = [{'params': 3000}, {'params': 9000}]
  return types.SimpleNamespace(
      config=config, device_data=device_data,
      num_classes=dataset.num_classes,
      topology=world_lib.topology(config, grid))


def _same_splits(a, b):
  assert len(a) == len(b)
  for ours, theirs in zip(a, b):
    for x, y in zip(ours, theirs):
      np.testing.assert_array_equal(x.labels, y.labels)
      np.testing.assert_array_equal(x.images, y.images)


@pytest.mark.parametrize('repeat', [0, 3])
def test_a_repeats_inputs_are_the_ones_drawn_by_hand(world, repeat):
  """Partition seed config.seed + r; key: the experiment's stream folded
  into the config's seed, then r (what cached repeats were drawn with)."""
  config = world.config
  inputs = table.repeat_inputs(world, repeat, streams.HEADERS_EXPERIMENT)
  seed = config.seed + repeat
  assert inputs.seed == seed
  _same_splits(inputs.splits, data_stage.device_splits(
      data_stage.PartitionHparams.from_config(config, seed=seed),
      world.device_data, world.num_classes))
  key = jax.random.fold_in(jax.random.fold_in(
      jax.random.key(config.seed), streams.HEADERS_EXPERIMENT), repeat)
  np.testing.assert_array_equal(jax.random.key_data(inputs.key),
                                jax.random.key_data(key))
  assert inputs.hp == device_stage.DeviceHparams.from_config(
      config, world.num_classes)


def test_repeats_and_streams_draw_apart(world):
  first = table.repeat_inputs(world, 0, streams.HEADERS_EXPERIMENT)
  second = table.repeat_inputs(world, 1, streams.HEADERS_EXPERIMENT)
  budget = table.repeat_key(world.config, streams.BUDGET_EXPERIMENT, 0)
  data = [jax.random.key_data(k) for k in (first.key, second.key, budget)]
  assert len({d.tobytes() for d in data}) == 3
  assert any(not np.array_equal(a[0].labels, b[0].labels)
             for a, b in zip(first.splits, second.splits))


def test_full_width_targets_give_every_header_the_whole_allowance(world):
  """Limit = the header allowance, cells of the full-width backbone at
  the depth, and the same per-device keys at every depth."""
  config = world.config
  inputs = table.repeat_inputs(world, 0, streams.HEADERS_EXPERIMENT)
  shallow, deep = (table.full_width_targets(world, inputs.hp, depth,
                                            inputs.key)
                   for depth in (1 / 3, 1.0))
  devices = world.topology.devices
  assert [t.device for t in deep] == [d.id for d in devices]
  assert [t.edge for t in deep] == [d.edge_id for d in devices]
  assert {t.limit for t in deep} == {config.system.header_allowance}
  assert {t.cells for t in deep} == {
      device_stage.header_cells(inputs.hp.num_layers, 1.0, 1.0)}
  for a, b in zip(shallow, deep):
    np.testing.assert_array_equal(jax.random.key_data(a.key),
                                  jax.random.key_data(b.key))
    assert a.init_seed == b.init_seed


class _Figure:
  def savefig(self, buffer, **_):
    buffer.write(b'png')


def _experiment(figure=None):
  return table.Experiment('toy', ('seed', 'baselines'),
                          repeats_in='baselines',
                          markdown=lambda s: f"| total | {s['total']} |",
                          figure=figure)


def _run(experiment, tmp_path, monkeypatch, shard=None, computed=None):
  """`experiment` over 3 repeats of rows [r, r * r] on a stand-in world:
  (its result, the log lines)."""
  monkeypatch.setattr(table.world_lib, 'build', lambda *args: (
      types.SimpleNamespace(wd=workdir_lib.Workdir(tmp_path))))
  config = tiny_config()
  config.baselines.repeats = 3
  lines = []

  def one_repeat(world, repeat, log):
    (computed if computed is not None else []).append(repeat)
    return [repeat, repeat * repeat]

  result = experiment.run(
      config, tmp_path, lines.append, shard, one_repeat,
      lambda rows: {'total': int(np.sum(rows)), 'rows': rows})
  return result, lines


def test_a_repeat_cached_before_is_loaded_not_computed(tmp_path,
                                                       monkeypatch):
  """Repeats live at experiments/<name>/repeat_<r>.json under the config's
  sections, repeat counts aside: a workdir cached so is reused."""
  config = tiny_config()
  workdir_lib.Workdir(tmp_path).cached_stage(
      'experiments/toy/repeat_1.json',
      config_lib.repeat_fingerprint(config, ('seed', 'baselines')),
      lambda: [7, 7])
  computed = []
  result, _ = _run(_experiment(), tmp_path, monkeypatch, computed=computed)
  assert computed == [0, 2]
  assert result['rows'] == [[0, 0], [7, 7], [2, 4]]


def test_a_shard_publishes_nothing(tmp_path, monkeypatch):
  computed = []
  result, lines = _run(_experiment(), tmp_path, monkeypatch, shard=(1, 2),
                       computed=computed)
  assert result is None and lines == [] and computed == [1]
  assert not (tmp_path / 'toy.json').exists()
  assert not (tmp_path / 'results.json').exists()


def test_the_summary_is_published_with_its_table(tmp_path, monkeypatch):
  result, lines = _run(_experiment(), tmp_path, monkeypatch)
  assert result == {'total': 8, 'rows': [[0, 0], [1, 1], [2, 4]]}
  assert json.loads((tmp_path / 'toy.json').read_text()) == result
  assert json.loads((tmp_path / 'results.json').read_text())['toy'] == result
  assert lines == ['\n| total | 8 |']
  assert not (tmp_path / 'toy.png').exists()


def test_a_figure_is_saved_and_its_path_logged(tmp_path, monkeypatch):
  _, lines = _run(_experiment(lambda summary: _Figure()), tmp_path,
                  monkeypatch)
  assert (tmp_path / 'toy.png').read_bytes() == b'png'
  assert lines == ['\n| total | 8 |',
                   f'\ntoy: {tmp_path / "toy.json"}, plot: '
                   f'{tmp_path / "toy.png"}']
