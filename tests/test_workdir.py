"""Workdir: atomic files and checkpoint caching that survives interrupted writes."""
import json

import numpy as np

from acme_jax import workdir as workdir_lib


def test_atomic_json_leaves_no_temporary_files(tmp_path):
  workdir_lib.atomic_write_json(tmp_path / 'a/b.json', {'x': np.float32(1.5)})
  assert json.loads((tmp_path / 'a/b.json').read_text()) == {'x': 1.5}
  assert [p.name for p in (tmp_path / 'a').iterdir()] == ['b.json']


def test_checkpoint_is_computed_once_and_partial_writes_are_replaced(tmp_path):
  wd = workdir_lib.Workdir(tmp_path)
  like = {'w': np.zeros((2, 3), np.float32)}
  calls = []

  def compute():
    calls.append(1)
    return {'w': np.arange(6, dtype=np.float32).reshape(2, 3)}

  # An interrupted write left a directory without orbax's commit marker.
  (tmp_path / 'stage').mkdir()
  (tmp_path / 'stage/half_written').write_text('junk')
  first = wd.cached_params('stage', compute, like)
  second = wd.cached_params('stage', compute, like)
  assert len(calls) == 1
  np.testing.assert_array_equal(second['w'], first['w'])
  np.testing.assert_array_equal(second['w'], np.arange(6).reshape(2, 3))
  assert not (tmp_path / 'stage/half_written').exists()
