"""Every expected failure of an entry point is one line on stderr and exit 2,
before any work; an unexpected one keeps its traceback, flagged as a bug."""
import concurrent.futures
import os
import pathlib
import subprocess
import sys

import pytest

from acme_jax import config as config_lib
from acme_jax import errors
from conftest import sigint_as_in_a_terminal

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAIN = [sys.executable, '-m', 'experiments.main',
        '--config=configs/default.py']


def _cases(tmp):
  afile = tmp / 'afile'
  afile.write_text('x')
  (tmp / 'tfds').mkdir()
  return [
      ('unknown config field', MAIN + [f'--workdir={tmp}/w1',
                                       '--config.cloud.teacher.epoch=5'],
       "--config.cloud.teacher.epoch: the config has no field 'epoch'; did "
       "you mean 'epochs'?"),
      ('bad value for a field', MAIN + [f'--workdir={tmp}/w1',
                                        '--config.seed=abc'],
       'invalid literal for int()'),
      ('config file missing', [sys.executable, '-m', 'experiments.main',
                               '--config=configs/nope.py',
                               f'--workdir={tmp}/w1'],
       'config file configs/nope.py not found'),
      ('bad config argument', [sys.executable, '-m', 'experiments.main',
                               '--config=configs/many_users.py:100',
                               f'--workdir={tmp}/w1'],
       'configs/many_users.py takes a user count that is a positive '
       "multiple of 8, not '100'"),
      ('workdir is a file', MAIN + [f'--workdir={afile}'],
       f'--workdir {afile} is a file'),
      ('workdir under a file', MAIN + [f'--workdir={afile}/sub'],
       f'is under {afile}, which is a file'),
      ('workdir not writable', MAIN + ['--workdir=/sys/acme_jax_test'],
       'is not writable'),
      ('TFDS data not prepared', MAIN + [
          f'--workdir={tmp}/w2', '--config.data.name=cifar10',
          f'--config.data.data_dir={tmp}/tfds'],
       "TFDS 'cifar10' is not prepared"),
      ('checkpoint missing', MAIN + [
          f'--workdir={tmp}/w3', '--config.model.init_checkpoint=/nowhere'],
       "config.model.init_checkpoint = '/nowhere' is invalid: no such "
       'checkpoint'),
      ('checkpoint does not fit the data', MAIN + [
          f'--workdir={tmp}/w3',
          '--config.model.init_checkpoint=tests/fixtures/hf_vit_tiny'],
       'does not fit the config: hidden_size 32 vs config.model 64'),
      ('more devices than samples', MAIN + [
          f'--workdir={tmp}/w4', '--config.system.devices_per_edge=400'],
       '628 samples cannot give each of 800 devices at least one'),
      ('category setup leaves devices empty', MAIN + [
          f'--workdir={tmp}/w5', '--config.system.partition=C4',
          '--config.system.fraction_per_class=0.9'],
       'use fraction_per_class <= 1/4'),
      ('header allowance below the smallest header', MAIN + [
          f'--workdir={tmp}/w6', '--config.system.header_allowance=0'],
       'must be at least the smallest header (7882 parameters'),
      ('plan tool without --config', [sys.executable, '-m',
                                      'acme_jax.tools.plan'],
       '--config is required'),
      ('pfg tool with a huge grid', [
          sys.executable, '-m', 'acme_jax.tools.pfg', '--measured=x.csv',
          '--grid=100000'], '--grid=100000 must be in [2, 1000]'),
      ('pfg tool with a negative sigma', [
          sys.executable, '-m', 'acme_jax.tools.pfg', '--measured=x.csv',
          '--sigma=-1'], '--sigma=-1.0 is invalid: must be a finite number >= 0'),
  ]


def _run(args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=env)


@pytest.mark.slow  # ~60 s of subprocesses; test_errors_entry_points runs
# one bad input per entry point in the default suite
def test_every_expected_failure_is_one_line_and_exit_2(tmp_path):
  cases = _cases(tmp_path)
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    results = list(pool.map(_run, [args for _, args, _ in cases]))
  for (name, _, expected), result in zip(cases, results):
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.returncode == 2, (name, result.stderr[-2000:])
    assert len(lines) == 1, (name, lines)
    assert lines[0].startswith(('error:', 'pfg: error:')), (name, lines)
    assert expected in lines[0], (name, lines[0])
  # Nothing was trained or recorded for a failed start.
  for w in ('w1', 'w2', 'w3', 'w4', 'w5', 'w6'):
    assert not (tmp_path / w / 'cloud').exists()


def test_unexpected_failures_keep_their_traceback(capsys):
  def bug():
    return {}['missing']

  with pytest.raises(KeyError):
    errors.boundary(bug)
  assert 'unexpected failure, a bug' in capsys.readouterr().err


def test_our_value_errors_are_expected_and_library_ones_are_not():
  from acme_jax.data import partition
  with pytest.raises(ValueError) as ours:
    partition.iid([0, 1], 5, seed=0)
  assert errors.is_expected(ours.value)
  import numpy as np
  with pytest.raises(ValueError) as theirs:
    np.zeros(3).reshape(2, 2)
  assert not errors.is_expected(theirs.value)
  assert errors.is_expected(config_lib.ConfigError('seed', 'x', 'int'))


SWALLOWED_INTERRUPT = '''
import gc, os, signal, sys, time
from acme_jax import errors

def job():
  # As JAX's gc callback does to a Ctrl-C landing in it: Python reports the
  # KeyboardInterrupt as unraisable and goes on.
  def callback(phase, info):
    if phase == 'start' and not fired:
      fired.append(1)
      print('interrupting', flush=True)
      os.kill(os.getpid(), signal.SIGINT)
  fired = []
  gc.callbacks.append(callback)
  gc.collect()
  gc.callbacks.remove(callback)
  end = time.time() + 20
  while time.time() < end:  # the run going on
    sum(range(1000))
  print('not interrupted', flush=True)

errors.boundary(job)
'''


def test_an_interrupt_swallowed_by_a_gc_callback_still_stops_the_run():
  """The first Ctrl-C is lost inside a gc callback; the boundary raises it
  again until it takes: one line, exit 130, within about a second."""
  out = subprocess.run([sys.executable, '-c', SWALLOWED_INTERRUPT],
                       cwd=pathlib.Path(__file__).parents[1],
                       capture_output=True, text=True, timeout=60,
                       preexec_fn=sigint_as_in_a_terminal)
  # The retried interrupt may land anywhere after the callback, never after
  # the run went on for its 20 s.
  assert out.stdout.splitlines() == ['interrupting']
  assert out.returncode == 130
  assert [l for l in out.stderr.splitlines() if l.strip()] == [
      'interrupted: rerun the same command to resume where it stopped']


TERMINATED = '''
import os, signal, time
from acme_jax import errors

def job():
  try:
    print('running', flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(20)
    print('not terminated', flush=True)
  finally:
    print('cleaned up', flush=True)

errors.boundary(job)
'''


def test_sigterm_is_the_interrupts_one_line_and_exit_143():
  """`kill` or a scheduler's time limit: the run's `finally` blocks run,
  the same line as Ctrl-C, and 128 + SIGTERM."""
  out = subprocess.run([sys.executable, '-c', TERMINATED],
                       cwd=pathlib.Path(__file__).parents[1],
                       capture_output=True, text=True, timeout=60)
  assert out.stdout.splitlines() == ['running', 'cleaned up']
  assert out.returncode == 143
  assert out.stderr.splitlines() == [
      'interrupted: rerun the same command to resume where it stopped']


def test_a_refused_write_is_expected_and_names_the_path():
  import errno
  full = OSError(errno.ENOSPC, 'No space left on device', '/w/cloud/teacher')
  wrapped = ValueError('RESOURCE_EXHAUSTED: tensorstore')
  wrapped.__cause__ = full
  assert errors.storage_error(wrapped) is full
  assert errors.is_expected(wrapped)
  assert errors.storage_message(full).startswith(
      'cannot write /w/cloud/teacher: No space left on device;')
  # Not a storage problem: a bug, with its traceback.
  assert errors.storage_error(OSError(errno.ECONNREFUSED, 'refused')) is None
  # Our own message stands even when a refused write caused it.
  own = errors.UserError('--workdir /sys/x is not writable')
  own.__cause__ = full
  assert errors.storage_error(own) is None
