"""What a job checks of its workdir before any work: one job at a time
(`ownership.lock`), files and directories where the job expects them, a
results.json of the right shape, and stage records of the right shape."""
import json
import pathlib
import subprocess
import sys

import pytest

from acme_jax import errors
from acme_jax import ownership
from acme_jax import report
from acme_jax import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOLD = '''
import sys, time
from acme_jax import ownership
ownership.lock(sys.argv[1], shared=sys.argv[2] == 'shared')
print('held', flush=True)
time.sleep(60)
'''


def test_a_second_job_is_refused_naming_the_holder_until_it_is_gone(
    tmp_path):
  holder = subprocess.Popen([sys.executable, '-c', HOLD, str(tmp_path), ''],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(errors.UserError,
                       match=f'in use by process {holder.pid} '
                       r'\(-c .*acme_jax import ownership'):
      ownership.lock(tmp_path)
  finally:
    holder.kill()
    holder.wait()
  ownership.lock(tmp_path)  # its process is gone: taken over
  assert not list(tmp_path.iterdir())  # the lock writes nothing


def test_one_process_may_take_its_own_lock_again(tmp_path):
  ownership.lock(tmp_path)
  ownership.lock(tmp_path)
  ownership.release(tmp_path)
  ownership.lock(tmp_path)


def _check(wd):
  """What `world.prepare` checks of a workdir (here with one file and one
  stage of its)."""
  wd.check_layout(files=('ledger.json', 'results.json'),
                  dirs=('cloud/teacher',))
  report.check_results(wd / 'results.json')


@pytest.mark.parametrize('make, expected', [
    (lambda w: (w / 'ledger.json').mkdir(), 'is a directory where'),
    (lambda w: (w / 'cloud').write_text('x'), 'is a file where'),
    (lambda w: ((w / 'cloud').mkdir(), (w / 'cloud/teacher').write_text('x')),
     'cloud/teacher is a file where'),
    (lambda w: (w / 'results.json').write_text('[1, 2]'),
     'holds a JSON array, not an object'),
    (lambda w: (w / 'results.json').write_text('null'),
     'holds a JSON null'),
    (lambda w: (w / 'results.json').write_text('{"cloud": [1]}'),
     "section 'cloud' should be a JSON object but is a JSON array"),
    (lambda w: (w / 'results.json').write_text('{"devices": {}}'),
     "section 'devices' should be a JSON array but is a JSON object"),
    (lambda w: (w / 'results.json').write_text('{"provenance": 3}'),
     "section 'provenance' should be a JSON object but is a JSON number"),
    (lambda w: (w / 'results.json').write_text('{"a": '),
     'is not valid JSON'),
])
def test_a_workdir_of_the_wrong_shape_is_one_line_naming_the_path(
    tmp_path, make, expected):
  w = tmp_path / 'w'
  w.mkdir()
  make(w)
  with pytest.raises(errors.UserError, match=expected):
    _check(workdir_lib.Workdir(w))


def test_a_workdir_of_the_right_shape_passes(tmp_path):
  wd = workdir_lib.Workdir(tmp_path)
  (tmp_path / 'cloud/teacher').mkdir(parents=True)
  (tmp_path / 'results.json').write_text(json.dumps(
      {'dataset': 'digits', 'devices': [], 'cloud': {}, 'provenance': {}}))
  _check(wd)


def test_a_sealed_stage_record_of_the_wrong_shape_is_recomputed(tmp_path,
                                                                capsys):
  wd = workdir_lib.Workdir(tmp_path)
  workdir_lib.atomic_write_json(tmp_path / 'devices.json', [])
  workdir_lib.seal(tmp_path / 'devices.json')  # a matching checksum
  assert wd.cached_stage('devices.json', {'a': 1}, lambda: 5) == 5
  assert 'is not a stage record' in capsys.readouterr().err
  assert wd.cached_stage('devices.json', {'a': 1}, lambda: 6) == 5



def test_shards_run_side_by_side_and_beside_no_other_job(tmp_path):
  shard = subprocess.Popen(
      [sys.executable, '-c', HOLD, str(tmp_path), 'shared'], cwd=ROOT,
      stdout=subprocess.PIPE, text=True)
  try:
    assert shard.stdout.readline().strip() == 'held'
    with pytest.raises(errors.UserError, match=f'process {shard.pid} \\('):
      ownership.lock(tmp_path)  # a whole job
    ownership.lock(tmp_path, shared=True)  # another shard
  finally:
    shard.kill()
    shard.wait()


def test_a_killed_jobs_temporary_files_are_removed_at_the_next_start(
    tmp_path):
  """A SIGKILL skips every clean-up: the next job removes what the saves
  left, and nothing else."""
  (tmp_path / 'cloud').mkdir()
  left = tmp_path / 'cloud' / f'.grid.json.k3j2{workdir_lib.TMP_SUFFIX}'
  left.write_text('{"half')
  (tmp_path / 'cloud/teacher.orbax-checkpoint-tmp-1').mkdir()
  (tmp_path / '.mine').write_text('a user file')
  workdir_lib.Workdir(tmp_path)
  assert sorted(p.name for p in tmp_path.rglob('*')) == ['.mine', 'cloud']
