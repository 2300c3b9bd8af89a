"""The loop/vmap comparison's summary and its repeats spread over processes
(`--shard=K/N`, shared by every experiment over repeats through
`Workdir.cached_repeats`), on made-up per-repeat rows (the device stage itself is
compared under both strategies in test_device_strategies.py)."""
import types

import numpy as np
import pytest
from scipy import stats

from acme_jax import cli
from acme_jax import workdir as workdir_lib
from conftest import tiny_config
from experiments import engine_equivalence


def _row(repeat):
  """A made-up repeat: vmap's searched architecture differs on device 1 of
  odd repeats; the accuracies move with the repeat."""
  loop = [0.5 + 0.01 * repeat, 0.7]
  vmap = [0.5 + 0.01 * repeat, 0.7 + 0.02 * (-1) ** repeat]
  archs = [[[0, 1]], [[1, 2]]]
  return {'loop': {'backbones': [[1.0, 1.0], [0.5, 1.0]], 'archs': archs,
                   'test_accuracy': loop,
                   'mean_test_accuracy': float(np.mean(loop))},
          'vmap': {'backbones': [[1.0, 1.0], [0.5, 1.0]],
                   'archs': archs if repeat % 2 == 0 else
                   [archs[0], [[2, 2]]],
                   'test_accuracy': vmap,
                   'mean_test_accuracy': float(np.mean(vmap))}}


def test_the_summary_is_a_paired_t_interval_over_repeats():
  rows = [_row(r) for r in range(5)]
  result = engine_equivalence.summarize(rows)
  diffs = [np.mean(r['vmap']['test_accuracy']) -
           np.mean(r['loop']['test_accuracy']) for r in rows]
  half = stats.t.ppf(0.975, 4) * np.std(diffs, ddof=1) / np.sqrt(5)
  cell = result['vmap_minus_loop']
  assert cell['mean'] == pytest.approx(np.mean(diffs))  # +0.002
  assert cell['ci'] == pytest.approx(half)
  assert not cell['holds']  # the CI includes 0
  assert result['same_backbones']
  assert (result['same_archs'], result['devices']) == (8, 10)  # 2 differ


def test_shards_fill_one_cache_and_the_full_run_only_loads(tmp_path,
                                                           monkeypatch):
  world = types.SimpleNamespace(wd=workdir_lib.Workdir(tmp_path))
  monkeypatch.setattr(engine_equivalence.world_lib, 'build',
                      lambda *args: world)
  computed = []

  def one_repeat(world, repeat, log):
    computed.append(repeat)
    return _row(repeat)

  monkeypatch.setattr(engine_equivalence, 'one_repeat', one_repeat)
  config = tiny_config()
  config.baselines.repeats = 5
  quiet = lambda *_: None  # noqa: E731
  assert engine_equivalence.run(config, tmp_path, quiet, shard=(1, 2)) is None
  assert computed == [1, 3]
  assert not (tmp_path / 'results.json').exists()  # a shard writes no table
  engine_equivalence.run(config, tmp_path, quiet, shard=(0, 2))
  assert computed == [1, 3, 0, 2, 4]
  table = engine_equivalence.run(config, tmp_path, quiet)
  assert computed == [1, 3, 0, 2, 4]  # every repeat was loaded
  assert table == engine_equivalence.summarize([_row(r) for r in range(5)])
  assert table['rows'] == [_row(r) for r in range(5)]  # in repeat order


@pytest.mark.parametrize('text, expected', [
    ('0/2', (0, 2)), ('3/4', (3, 4)), ('2/2', None), ('-1/2', None),
    ('1/0', None), ('1', None), ('a/2', None), ('1/2/3', None), ('', None)])
def test_a_shard_is_k_of_n(text, expected):
  assert cli.parse_shard(text) == expected
