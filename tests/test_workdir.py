"""Workdir: atomic files and checkpoint caching that survives interrupted writes."""
import json

import numpy as np
import pytest

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


def test_cloud_config_check_refuses_changes_but_not_newer_fields(tmp_path):
  from acme_jax import config as config_lib
  from acme_jax.cloud import stage as cloud_stage
  from acme_jax.errors import ConfigError
  from configs import default
  config = default.get_config()
  wd = workdir_lib.Workdir(tmp_path / 'w')
  saved = config_lib.subset(config, cloud_stage.SECTIONS)
  del saved['cloud']['remat']  # a record written before the field existed
  wd.cached_params('cloud/teacher', lambda: {'w': np.zeros(2)},
                   {'w': np.zeros(2)}, fingerprint=saved)
  cloud_stage.check_config(wd, config)  # resumes
  with config.unlocked():
    config.cloud.batch_size = 7
  with pytest.raises(ConfigError, match='cloud.batch_size'):
    cloud_stage.check_config(wd, config)


def test_outputs_get_the_users_umask_not_mkstemps_0600(tmp_path):
  import os
  old = os.umask(0o027)
  try:
    workdir_lib.atomic_write_json(tmp_path / 'r.json', {'a': 1})
  finally:
    os.umask(old)
  assert (tmp_path / 'r.json').stat().st_mode & 0o777 == 0o640
