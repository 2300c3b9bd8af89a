"""The networked mode's inputs and processes: every tier flag, fault and
network field refused in one line before anything is written or started
(the report tool's files: test_networked.py); and no process a networked
run started outlives it, however it ends (slow: the real launcher killed
at random moments)."""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import (one_line_exit_2, sigint_as_in_a_terminal,
                      tiny_config)
from acme_jax import errors
from acme_jax.errors import ConfigError
from acme_jax.networked import (launcher, processes, reaper, security,
                                settings, tiers)

ROOT = pathlib.Path(__file__).resolve().parents[1]




# ------------------------------------------------------------- the tiers


@pytest.fixture
def files(tmp_path):
  """A valid config, the secrets of a run, and some wrong files."""
  f = {'config': tmp_path / 'config.json', 'list': tmp_path / 'list.json',
       'garbage': tmp_path / 'garbage.json', 'shape': tmp_path / 'shape.json',
       'invalid': tmp_path / 'invalid.json', 's': tmp_path / 's'}
  f['config'].write_text(tiny_config().to_json_best_effort())
  f['list'].write_text('[1, 2]')
  f['garbage'].write_text('{not json')
  f['shape'].write_text('{"seed": 0, "data": 5}')
  bad = json.loads(f['config'].read_text())
  bad['network']['min_devices'] = 99
  f['invalid'].write_text(json.dumps(bad))
  security.certificates(f['s'])
  security.node_key(f['s'], 'device0')
  other = security.node_key(tmp_path / 'other', 'mixed')
  (tmp_path / 's' / 'mixed').write_bytes(
      (tmp_path / 's' / 'device0').read_bytes())
  (tmp_path / 's' / 'mixed.pub').write_bytes(other['public'].read_bytes())
  (tmp_path / 'notpem').write_text('hello')
  return {k: str(v) for k, v in f.items()}


def _tier_cases(f, t):
  cfg = f'--config_json={f["config"]}'
  ca = f'--ca={f["s"]}/ca.crt'
  dev = ['device', cfg, ca, '--budget=1000']
  return [
      (['secrets', '--nodes=../x'], "'../x': a node name is a plain name"),
      (['secrets', f'--nodes={t}/abs'], 'a node name is a plain name'),
      (['secrets', '--nodes=a,,b'], 'an empty entry'),
      (['secrets', '--nodes=..'], 'a node name is a plain name'),
      (['secrets', '--nodes=server.key'], 'would overwrite a certificate'),
      (['secrets', '--nodes=device0.pub'], 'would overwrite'),
      (['secrets', '--hosts='], '--hosts is empty'),
      (['secrets', '--hosts=a b'], 'neither an IP address nor a DNS name'),
      (['secrets', '--hosts=300.1.2.3'], 'neither an IP address'),
      (['secrets', '--port=5'], '--port is not a flag of the secrets tier'),
      (['edge', cfg, '--port=0'], '--port=0: a port is a whole number in '
       '1..65535'),
      (['edge', cfg, '--port=70000'], '--port=70000'),
      (['edge', cfg, '--port=-1'], '--port=-1'),
      (['edge', cfg, '--listen=a/b'], '--listen=a/b'),
      (['edge', cfg, '--budget=-5'], '--budget is not a flag of the edge'),
      (['edge', cfg, '--edge=-1'], '--edge=-1: give an id >= 0'),
      (['edge', cfg, '--expected_devices=0'], '--expected_devices=0'),
      (['edge', cfg, f'--register={f["s"]}/device0.pub'],
       '--register (node authentication) needs TLS'),
      (['edge', cfg, f'--tls_dir={t}'], 'ca.crt: no such file'),
      (['edge', cfg, f'--tls_dir={f["s"]}', f'--register={t}/notpem'],
       'is not an OpenSSH public key'),
      (['edge', f'--config_json={f["garbage"]}'], 'is not JSON'),
      (['edge', f'--config_json={f["list"]}'], 'holds a JSON array, not a '
       'config'),
      (['edge', f'--config_json={f["shape"]}'], 'is not a config of this '
       'code'),
      (['edge', f'--config_json={f["invalid"]}'],
       'config.network.min_devices = 99 is invalid'),
      (['edge', cfg, '--edge=7'], '--edge=7: the config has 2 edges'),
      (['edge', cfg, '--expected_devices=9'], 'give a number in 1..3'),
      (dev + ['--budget=-5'], '--budget=-5: give a number of parameters'),
      (dev + ['--budget=0'], '--budget=0'),
      (dev + [f'--budget={2**64}'], f'--budget={2**64}'),
      (['device', cfg, ca], '--budget is required for the device tier'),
      (dev + ['--device=-1'], '--device=-1: give an id >= 0'),
      (dev + ['--device=6'], '--device=6: the config has 6 devices'),
      (dev + ['--device=4', '--edge=0'], 'device 4 belongs to edge 1'),
      (dev + ['--edge=7'], 'belongs to edge 0'),
      (dev + ['--insecure'], 'give --ca (TLS) or --insecure, not both'),
      (dev + ['--edge_address=nohost'], 'an address is HOST:PORT'),
      (dev + ['--edge_address=10.0.0.1:0'], 'a port is a whole number'),
      (dev + ['--edge_address=:19100'], 'not empty'),
      (dev + ['--warm_worker=2'], '--warm_worker=2: give 1'),
      (dev + ['--tls_dir=x'], '--tls_dir is not a flag of the device tier'),
      (dev + [f'--key={t}/notpem'], 'no such file'),
      (['device', cfg, f'--ca={t}/notpem', '--budget=1'],
       'is not a PEM certificate'),
      (['device', cfg, '--insecure', '--budget=1', f'--key={f["s"]}/device0'],
       '--key (node authentication) needs TLS'),
      (dev + [f'--key={f["s"]}/mixed'], 'mixed.pub is not its public key'),
      (['cloud-node', '--insecure'], 'has no serve/front.npz: run `tiers '
       'cloud-prepare` there first'),
      (['cloud-node', '--insecure', '--budget=1'], '--budget is not a flag'),
      (['cloud-prepare', f'--config_json={f["list"]}'], 'holds a JSON array'),
  ]


def test_every_tier_flag_is_refused_in_one_line_before_anything(
    tmp_path, files, capsys):
  """The tiers' bad flags: one line naming the flag, exit 2, nothing
  written (the workdir is not even made) and nothing started."""
  t = tmp_path / 'scratch'
  t.mkdir()
  (t / 'notpem').write_text('hello')
  w = tmp_path / 'w'
  for argv, expected in _tier_cases(files, t):
    line = one_line_exit_2(capsys, tiers.main, argv + [f'--workdir={w}'])
    assert expected in line, (argv, line)
    assert not w.exists(), argv
  assert sorted(p.name for p in t.iterdir()) == ['notpem']
  assert not (tmp_path / 'x').exists() and not (tmp_path / 'abs').exists()
  line = one_line_exit_2(capsys, tiers.main, ['edge', '--workdir='])
  assert '--workdir must not be empty' in line


def test_secrets_write_only_in_their_workdir(tmp_path, capsys):
  w = tmp_path / 'w'
  assert tiers.main(['secrets', f'--workdir={w}', '--hosts=127.0.0.1,'
                     'edge.local', '--nodes=device0,cloud_key']) == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ['w']
  assert sorted(p.name for p in w.iterdir()) == [
      'ca.crt', 'cloud_key', 'cloud_key.pub', 'device0', 'device0.pub',
      'server.key', 'server.pem']
  # The certificate is made once: asking it for other hosts is refused.
  line = one_line_exit_2(capsys, tiers.main, [
      'secrets', f'--workdir={w}', '--hosts=10.0.0.9'])
  assert 'already holds a server certificate for 127.0.0.1, edge.local' in \
      line


# ------------------------------------------------- the network section


@pytest.mark.parametrize('field, value, words', [
    ('faults', ('kill:device1@nosuch.kind:0',), "message kind 'nosuch.kind'"),
    ('faults', ('kill:device1@train.header:0',), 'train.round or '
     'train.prune'),
    ('faults', ('kill:device1@train.round:99999',), 'round 99999 does not '
     'exist: this run has 1 rounds'),
    ('faults', ('stall:edge2@train.prune:0',), 'edge 2 does not exist'),
    ('faults', 'kill:device1@train.round:0', 'must be a list of faults'),
    ('faults', (7,), 'each fault is'),
    ('min_devices', 4, 'must be at most 3, the devices of the smallest edge'),
    ('timeout_s', float('inf'), 'seconds in (0, 1e+09]'),
    ('restart_delay_s', float('inf'), 'seconds in [0, 1e+09]'),
    ('round_wait_s', 1e300, 'seconds in [0'),
    ('impostors', 10**6, 'whole number in 0..16'),
    ('host', 'a host', 'must be a host name or IP address'),
    ('host', '', 'must be a host name'),
    ('base_port', 65535, 'must be a port in 1024..'),
])
def test_network_fields_that_would_fail_late_are_refused(field, value,
                                                         words):
  config = tiny_config()
  settings.validate(config)
  with config.network.ignore_type():  # as a config read from JSON may be
    setattr(config.network, field, value)
  with pytest.raises(ConfigError, match=f'network.{field}') as e:
    settings.validate(config)
  assert words in str(e.value)


def test_a_worker_fault_needs_warm_workers():
  config = tiny_config()
  config.network.faults = ('kill:worker1@train.round:0',)
  settings.validate(config)
  config.network.warm_workers = False
  with pytest.raises(ConfigError, match='needs network.warm_workers'):
    settings.validate(config)


# ------------------------------------------------------------ processes


def _survivors(marker: str) -> list:
  """Live processes (not zombies) whose environment carries `marker`."""
  out = []
  for d in pathlib.Path('/proc').iterdir():
    if not d.name.isdigit() or int(d.name) == os.getpid():
      continue
    try:
      if marker.encode() not in (d / 'environ').read_bytes():
        continue
      state = (d / 'stat').read_text().rsplit(')', 1)[1].split()[0]
      cmd = (d / 'cmdline').read_bytes().replace(b'\0', b' ').decode()
    except OSError:
      continue
    if state != 'Z':
      out.append(f'{d.name} {cmd[:200]}')
  return out


def _wait_none(marker, seconds):
  end = time.time() + seconds
  while _survivors(marker) and time.time() < end:
    time.sleep(0.1)
  return _survivors(marker)


# A process that starts one more, detached into a session of its own and
# deaf to SIGTERM, as Flower's helpers detach.
_TREE = ("import signal, subprocess, sys, time\n"
         "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
         "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'], "
         "start_new_session=True)\n"
         "time.sleep(600)\n")


def test_the_reaper_ends_every_process_when_its_starter_is_killed(
    tmp_path):
  marker = f'ACME_TEST_{uuid.uuid4().hex}'
  starter = tmp_path / 'starter.py'
  starter.write_text(
      'import subprocess, sys, time\n'
      'from acme_jax.networked import reaper\n'
      'reaper.Reaper().start()\n'
      f'subprocess.Popen([sys.executable, "-c", {_TREE!r}])\n'
      'print("ready", flush=True)\n'
      'time.sleep(600)\n')
  env = dict(os.environ, PYTHONPATH=str(ROOT), **{marker: '1'})
  proc = subprocess.Popen([sys.executable, str(starter)], env=env,
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == 'ready'
    end = time.time() + 10
    while len(_survivors(marker)) < 4 and time.time() < end:
      time.sleep(0.05)  # the starter, its reaper, the child, the detached
    assert len(_survivors(marker)) == 4, _survivors(marker)
    proc.kill()
    proc.wait()
    assert _wait_none(marker, 10) == []
  finally:
    proc.kill()


def _marked_tree(run, name, marker):
  run.procs.start(name, [sys.executable, '-c', _TREE],
                  dict(os.environ, **{marker: '1'}))


@pytest.mark.parametrize('how', ['failure', 'interrupt', 'sigterm',
                                 'second_signal'])
def test_the_launcher_stops_everything_on_every_exit_path(tmp_path, how,
                                                          monkeypatch):
  """A tier failing, Ctrl-C, SIGTERM, and a signal during the cleanup: the
  launcher's processes and what they detached are gone when it returns."""
  marker = f'ACME_TEST_{uuid.uuid4().hex}'
  run = launcher.Launcher(tiny_config(), tmp_path, log=lambda *_: 0)
  monkeypatch.setattr(run, '_check', lambda: None)

  def cloud():
    for name in ('edge0', 'device0'):
      _marked_tree(run, name, marker)
    end = time.time() + 10
    while len(_survivors(marker)) < 4 and time.time() < end:
      time.sleep(0.05)
    if how == 'interrupt':
      raise KeyboardInterrupt
    if how == 'sigterm':
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(30)
    raise launcher.TierFailed('the cloud stages failed')

  monkeypatch.setattr(run, '_cloud', cloud)
  if how == 'second_signal':
    stop_all = run.procs.stop_all

    def interrupted_stop_all():
      os.kill(os.getpid(), signal.SIGTERM)  # deferred: the cleanup goes on
      time.sleep(0.2)
      stop_all()
    monkeypatch.setattr(run.procs, 'stop_all', interrupted_stop_all)
  expected = {'interrupt': KeyboardInterrupt,
              'sigterm': errors.Terminated}.get(how, launcher.TierFailed)
  before = signal.getsignal(signal.SIGTERM)
  t = time.time()
  with pytest.raises(expected):
    run.run()
  assert time.time() - t < 20
  assert _survivors(marker) == []
  assert signal.getsignal(signal.SIGTERM) == before
  assert reaper.ENV not in os.environ


def test_stop_all_gives_one_grace_period_in_all(tmp_path):
  procs = processes.Processes(tmp_path / 'logs')
  deaf = ('import signal, time; signal.signal(signal.SIGTERM, '
          'signal.SIG_IGN); time.sleep(600)')
  for i in range(4):
    procs.start(f'p{i}', [sys.executable, '-c', deaf], dict(os.environ))
  time.sleep(0.3)
  t = time.time()
  procs.stop_all(grace=0.5)
  assert time.time() - t < 1.5  # not 4 x 0.5 s
  assert not any(procs.alive(f'p{i}') for i in range(4))


def test_closing_the_relays_ends_their_connections_quietly(caplog):
  """A connection held while its target is down ends with `close`, not as
  a pending task asyncio logs at exit (extra lines after the one line)."""
  import gc
  import socket
  from acme_jax.networked import wire
  relays = wire.Relays()
  port = relays.add('device0', ('127.0.0.1', processes.free_port()))
  with socket.create_connection(('127.0.0.1', port)):
    time.sleep(0.3)  # the relay keeps dialing the target
    relays.close()
    time.sleep(0.2)  # the streams' callbacks of the ended connections
  del relays
  gc.collect()
  assert not [r.getMessage() for r in caplog.records if r.name == 'asyncio']


# -------------------------------------- the real launcher, killed (slow)


def _config_file(tmp_path, port) -> pathlib.Path:
  path = tmp_path / 'tiny.py'
  path.write_text(
      'import sys\n'
      f'sys.path.insert(0, {str(ROOT / "tests")!r})\n'
      'from conftest import tiny_config\n\n'
      'def get_config():\n'
      '  c = tiny_config()\n'
      '  c.network.timeout_s = 240.0\n'
      '  c.network.join_timeout_s = 180.0\n'
      '  c.network.restart_delay_s = 2.0\n'
      f'  c.network.base_port = {port}\n'
      '  return c\n')
  return path


def _wait_for(paths, proc, seconds):
  end = time.time() + seconds
  while time.time() < end and proc.poll() is None:
    if any(p.exists() for p in paths):
      return True
    time.sleep(0.2)
  return False


@pytest.mark.slow
def test_no_process_outlives_a_killed_launcher(tmp_path):
  """`experiments.networked` on one workdir, killed four times at random
  moments (SIGINT and SIGKILL while the cloud trains, SIGTERM and SIGKILL
  once Flower's processes run): nothing it started survives; SIGINT and
  SIGTERM print one line and exit 130 and 143."""
  rng = random.Random()
  port = 20000 + (os.getpid() % 400) * 16 + 8
  config = _config_file(tmp_path, port)
  wd = tmp_path / 'w'
  logs = wd / 'logs'
  plan = [(signal.SIGINT, [logs / 'cloud.log'], 1, 6),
          (signal.SIGKILL, [logs / 'cloud.log'], 1, 6),
          (signal.SIGTERM, [logs / 'edge0.log'], 0, 8),
          (signal.SIGKILL, [logs / 'device0.worker.log',
                            logs / 'device0.log'], 0, 15)]
  for sig, trigger, low, high in plan:
    for p in trigger:
      if p.exists():
        p.unlink()
    marker = f'ACME_TEST_{uuid.uuid4().hex}'
    env = dict(os.environ, **{marker: '1'})
    err = tmp_path / f'stderr_{sig.name}.txt'
    with open(err, 'w') as stderr:
      proc = subprocess.Popen(
          [sys.executable, '-m', 'experiments.networked',
           f'--config={config}', f'--workdir={wd}'], cwd=ROOT, env=env,
          stdout=subprocess.DEVNULL, stderr=stderr,
          preexec_fn=sigint_as_in_a_terminal)
    try:
      assert _wait_for(trigger, proc, 600), (sig, err.read_text()[-3000:])
      delay = rng.uniform(low, high)
      time.sleep(delay)
      assert proc.poll() is None, (sig, delay, err.read_text()[-3000:])
      proc.send_signal(sig)
      rc = proc.wait(timeout=120)
    finally:
      proc.kill()
    lines = [l for l in err.read_text().splitlines() if l.strip()]
    if sig == signal.SIGKILL:
      assert rc == -signal.SIGKILL
      left = _wait_none(marker, 30)  # the reaper's sweep
    else:
      assert rc == 128 + sig, (sig, delay, lines)
      assert lines == ['interrupted: rerun the same command to resume '
                       'where it stopped'], (sig, delay, lines)
      left = _wait_none(marker, 2)
    assert left == [], (sig.name, delay, left)
