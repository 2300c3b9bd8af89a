"""Starts every tier of the networked loop on this machine, supervises them,
collects the results and stops every process it started, even on failure.

  <workdir>/cloud        the cloud's workdir (cloud stages, served files)
  <workdir>/edge<e>      each edge's workdir (state, ledger, messages.jsonl)
  <workdir>/device<d>    each device's workdir (its data cache and state)
  <workdir>/secrets      the run's CA, server certificate, node keys
  <workdir>/logs         one log per process
  <workdir>/networked.json, networked.md   the collected results

A rerun on the same workdir resumes: the cloud stages are cached, every edge
resumes from its saved state and every device answers finished steps from
what it saved.
"""
import json
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

from acme_jax import workdir as workdir_lib
from acme_jax.errors import ConfigError
from acme_jax.networked import processes, report, security, wire

FAULT = re.compile(r'^(kill|stall):(device|edge)(\d+)@([a-z.]+):(\d+)$')


def parse_fault(text: str):
  """'kill:device1@train.round:0' -> ('kill', 'device', 1, 'train.round', 0):
  when the edge sends that message kind for that round, SIGKILL that tier's
  processes ('kill'), or freeze the work the node starts for it while the
  node itself stays connected ('stall': the reply never arrives)."""
  m = FAULT.match(text)
  if not m:
    raise ConfigError('network.faults', text,
                      'each fault is <kill|stall>:<device|edge><id>@'
                      '<message kind>:<round>, e.g. kill:device1@train.round:0')
  action, tier, ident, kind, round_ = m.groups()
  return action, tier, int(ident), kind, int(round_)


def _readable(text: str) -> str:
  """The informative lines of a `flwr` CLI message (no box drawing)."""
  lines = [l.strip(' \u2502\u2500\u256d\u256e\u2570\u256f') for l in
           text.splitlines()]
  return ' '.join(l for l in lines if l)[-400:]


def _terminate(signum, _):
  sys.exit(128 + signum)


class Launcher:
  """One networked run of `config` in `workdir`."""

  def __init__(self, config, workdir, log=print):
    self.config, self.net, self.log = config, config.network, log
    self.wd = pathlib.Path(workdir).resolve()  # Flower reads paths as given
    self.procs = processes.Processes(self.wd / 'logs')
    self.relays = None
    self.restarts = {}
    self.faults = [parse_fault(f) for f in self.net.faults]
    self.fired, self.stalled = set(), {}
    self.impostors = []
    self.waiting, self.rejoin_until = {}, {}
    self.events = []

  # ---------------------------------------------------------- helpers

  def _event(self, text):
    self.events.append({'t': time.time(), 'event': text})
    self.log(f'[launcher] {text}')

  def _tier_dir(self, name) -> pathlib.Path:
    d = self.wd / name
    d.mkdir(parents=True, exist_ok=True)
    workdir_lib.atomic_write_text(d / 'config.json',
                                  self.config.to_json_best_effort(indent=1))
    return d

  def _edge_address(self, e) -> str:
    return f'{self.net.host}:{self.net.base_port + e}'

  # ------------------------------------------------------------- start

  def run(self) -> dict:
    t0 = time.time()
    if threading.current_thread() is threading.main_thread():
      # A SIGTERM (a CI timeout, `kill`) still stops every process.
      signal.signal(signal.SIGTERM, _terminate)
    try:
      self._check()
      world = self._cloud()
      self.world = world
      self._secrets()
      self.relays = wire.Relays(self.net.host) if self.net.count_bytes \
          else None
      for e in world['edges']:
        self._start_edge(e)
      for e in world['edges']:
        self._start_cloud_node(e)
      for d in world['devices']:
        self._start_device(d)
      self._start_impostors()
      for e in world['edges']:
        self._submit(e)
      self._supervise()
      return self._collect(time.time() - t0)
    finally:
      self.procs.stop_all()
      if self.relays is not None:
        self.relays.close()

  def _check(self):
    """Everything that can be wrong with the config, before any process."""
    from acme_jax import config as config_lib
    from acme_jax.data import stage as data_stage
    config_lib.validate(self.config)
    dataset, _, device_data = data_stage.load(self.config, log=lambda *_: 0)
    data_stage.check_partition(
        data_stage.PartitionHparams.from_config(self.config), device_data,
        dataset.num_classes)

  def _cloud(self) -> dict:
    """The cloud's stages, in their own process (cached in its workdir)."""
    d = self._tier_dir('cloud')
    t = time.time()
    cmd = [processes.sys.executable, '-m', 'acme_jax.networked.tiers',
           'cloud-prepare', f'--config_json={d / "config.json"}',
           f'--workdir={d}']
    rc = subprocess.call(cmd, cwd=processes.REPO,
                         env=processes.flower_env(d / 'flwr'),
                         stdout=open(self.wd / 'logs' / 'cloud.log', 'ab'),
                         stderr=subprocess.STDOUT)
    if rc:
      raise RuntimeError(f'the cloud stages failed (rc {rc}); see '
                         f'{self.wd / "logs" / "cloud.log"}')
    self._event(f'cloud stages ready ({time.time() - t:.0f}s)')
    return workdir_lib.read_json(d / 'world.json')

  def _secrets(self):
    s = self.wd / 'secrets'
    self.tls = (security.certificates(s, hosts=(self.net.host, 'localhost'))
                if self.net.tls else None)
    self.keys = {}
    if self.net.auth:
      for e in self.world['edges']:
        self.keys[('cloud', e)] = security.node_key(s, f'cloud_at_edge{e}')
      for d in self.world['devices']:
        self.keys[('device', d['id'])] = security.node_key(
            s, f'device{d["id"]}')

  def _start_edge(self, e):
    d = self._tier_dir(f'edge{e}')
    home = d / 'flwr'
    ca = self.tls['ca'] if self.tls else None
    processes.write_federation(home, f'edge{e}', self._edge_address(e), ca)
    cmd = processes.superlink_command(
        self.net.base_port + e, d / 'superlink.db', self.tls, self.net.auth,
        host=self.net.host)
    proc = self.procs.start(f'edge{e}', cmd, processes.flower_env(home))
    processes.wait_port(self.net.host, self.net.base_port + e, 60, proc)
    if self.net.auth:
      members = [k for k in self.keys
                 if (k[0] == 'cloud' and k[1] == e) or
                 (k[0] == 'device' and self._device(k[1])['edge'] == e)]
      for k in members:
        self._register(e, self.keys[k]['public'], f'{k[0]}{k[1]}')

  def _device(self, ident) -> dict:
    return next(d for d in self.world['devices'] if d['id'] == ident)

  def _flwr(self, e, *args) -> subprocess.CompletedProcess:
    home = self.wd / f'edge{e}' / 'flwr'
    try:
      return subprocess.run([processes._bin('flwr'), *args],
                            env=processes.flower_env(home),
                            cwd=processes.REPO, capture_output=True,
                            text=True, timeout=120)
    except subprocess.TimeoutExpired as ex:
      raise RuntimeError(f'edge {e}: `flwr {args[0]} {args[1]}` got no '
                         f'answer within 120 s') from ex

  def _register(self, e, public_key, name):
    """Enrols a node's key at edge `e` (its control API may need a moment
    after the port opens, so a failure is retried for a while)."""
    end = time.time() + 60
    while True:
      out = self._flwr(e, 'supernode', 'register', str(public_key),
                       f'edge{e}')
      text = out.stdout + out.stderr
      if out.returncode == 0 or 'already' in text.lower():
        return
      if time.time() > end:
        raise RuntimeError(f'edge {e}: registering {name} failed: '
                           f'{_readable(text)}')
      time.sleep(2.0)

  def _link(self, name, e) -> str:
    """host:port a node of edge `e` dials: through a counting relay."""
    target = (self.net.host, self.net.base_port + e)
    if self.relays is None:
      return self._edge_address(e)
    return f'{self.net.host}:{self.relays.add(name, target)}'

  def _node(self, name, e, node_config, key):
    d = self._tier_dir(name)
    cmd = processes.supernode_command(
        self._link(name, e), processes.free_port(self.net.host),
        dict(node_config, workdir=str(d), config=str(d / 'config.json')),
        ca=self.tls['ca'] if self.tls else None, key=key)
    self.procs.start(name, cmd, processes.flower_env(d / 'flwr'))

  def _start_cloud_node(self, e):
    # One SuperNode per edge, all serving from the cloud's workdir.
    name = f'cloud_at_edge{e}'
    d = self.wd / 'cloud'
    cmd = processes.supernode_command(
        self._link(name, e), processes.free_port(self.net.host),
        {'role': 'cloud', 'workdir': str(d)},
        ca=self.tls['ca'] if self.tls else None,
        key=self.keys.get(('cloud', e)))
    self.procs.start(name, cmd, processes.flower_env(d / 'flwr'))

  def _start_device(self, dev):
    self._node(f'device{dev["id"]}', dev['edge'],
               {'role': 'device', 'device': dev['id'], 'edge': dev['edge'],
                'budget': dev['budget']}, self.keys.get(('device', dev['id'])))

  def _start_impostors(self):
    """`network.impostors` SuperNodes per edge whose keys the edge never
    registered, each claiming to be the edge's first device."""
    self.impostors = []
    for e in self.world['edges']:
      victim = next(d for d in self.world['devices'] if d['edge'] == e)
      for k in range(self.net.impostors):
        name = f'impostor{e}_{k}'
        key = security.node_key(self.wd / 'secrets' / 'impostors', name)
        self._node(name, e, {'role': 'device', 'device': victim['id'],
                             'edge': e, 'budget': victim['budget']}, key)
        self.impostors.append(name)

  def _impostor_outcomes(self) -> list:
    out = []
    for name in self.impostors:
      proc = self.procs.procs[name]
      text = (self.wd / 'logs' / f'{name}.log').read_text(errors='replace')
      refused = [l for l in text.splitlines() if 'Failed to activate' in l
                 or 'code: 2004' in l]
      out.append({'name': name, 'exited': proc.poll() is not None,
                  'returncode': proc.poll(),
                  'refusal': refused[0].strip()[-160:] if refused else None})
    return out

  def _submit(self, e):
    d = self.wd / f'edge{e}'
    expected = sum(1 for dev in self.world['devices'] if dev['edge'] == e)
    run_config = processes.node_config_arg({
        'edge': e, 'workdir': str(d), 'config': str(d / 'config.json'),
        'expected-devices': expected})
    out = self._flwr(e, 'run', str(processes.APP_DIR), f'edge{e}',
                     '--run-config', run_config)
    if out.returncode:
      raise RuntimeError(f'edge {e}: flwr run failed: '
                         f'{_readable(out.stdout + out.stderr)}')
    self._event(f'edge {e}: run submitted')

  # --------------------------------------------------------- supervise

  def _status(self, e) -> dict:
    path = self.wd / f'edge{e}' / 'status.json'
    return workdir_lib.read_json(path) if path.exists() else {}

  def _supervise(self):
    """Waits for every edge to finish; restarts a dead tier process (up to
    `network.max_restarts` each); fires the configured faults."""
    end = time.time() + self.net.run_timeout_s
    while True:
      statuses = {e: self._status(e) for e in self.world['edges']}
      failed = {e: s for e, s in statuses.items()
                if s.get('status') == 'failed'}
      if failed:
        e, s = next(iter(failed.items()))
        raise RuntimeError(f'edge {e} failed: {s.get("error")}')
      if all(s.get('status') == 'finished' for s in statuses.values()):
        return
      if time.time() > end:
        raise TimeoutError(f'the networked run did not finish within '
                           f'network.run_timeout_s = {self.net.run_timeout_s}'
                           f's; logs in {self.wd / "logs"}')
      self._fire_faults()
      self._revive()
      time.sleep(0.5)

  def _sent(self, e, kind, round_) -> bool:
    path = self.wd / f'edge{e}' / 'messages.jsonl'
    if not path.exists():
      return False
    for line in path.read_text().splitlines():
      m = json.loads(line)
      if m['kind'] == kind and m['round'] == round_:
        return True
    return False

  def _fire_faults(self):
    for fault in self.faults:
      if fault in self.fired:
        continue
      action, tier, ident, kind, round_ = fault
      edge = ident if tier == 'edge' else self._device(ident)['edge']
      if not self._sent(edge, kind, round_):
        continue
      self.fired.add(fault)
      name = f'{tier}{ident}'
      if action == 'kill':
        self.procs.signal(name, signal.SIGKILL)
        self._event(f'fault: killed {name} at {kind} round {round_}')
      else:
        self.stalled[name] = time.time() + self.net.timeout_s + 5
        self._event(f'fault: stalled {name} at {kind} round {round_}')
    for name, until in list(self.stalled.items()):
      # The node stays connected (its heartbeats go on) while the work it
      # started for the message is frozen: the reply never comes.
      stop = signal.SIGSTOP if time.time() < until else signal.SIGCONT
      self.procs.signal(name, stop, children_only=True)
      if stop == signal.SIGCONT:
        del self.stalled[name]
        self._event(f'fault: resumed {name}')

  def _refused(self, name) -> bool:
    """Whether `name` last exited because its edge refused its key: a node
    killed without a goodbye stays 'online' at its edge until its heartbeat
    expires (about 60 s in Flower 1.42), and meanwhile a restart with the
    same key is refused."""
    log = self.wd / 'logs' / f'{name}.log'
    tail = log.read_bytes()[-4000:].decode(errors='replace')
    return 'Failed to activate' in tail

  def _revive(self):
    """Restarts a dead tier process: up to `network.max_restarts` deaths
    each; restarts refused while its old session expires do not count."""
    for name in list(self.procs.procs):
      if self.procs.alive(name) or name in self.impostors:
        continue
      if name in self.waiting and time.time() < self.waiting[name]:
        continue
      refused = self._refused(name) and name in self.rejoin_until
      if refused and time.time() > self.rejoin_until[name]:
        raise RuntimeError(f'{name} was refused by its edge until '
                           f'{self.net.rejoin_timeout_s}s after it died')
      if not refused:
        n = self.restarts.get(name, 0)
        if n >= self.net.max_restarts:
          raise RuntimeError(f'{name} died {n + 1} times; see '
                             f'{self.wd / "logs" / (name + ".log")}')
        self.restarts[name] = n + 1
        self.rejoin_until[name] = time.time() + self.net.rejoin_timeout_s
        self._event(f'{name} died; restarting it (restart {n + 1})')
        time.sleep(self.net.restart_delay_s)
      else:
        self.waiting[name] = time.time() + self.net.restart_delay_s
      proc = self.procs.restart(name)
      if name.startswith('edge'):
        e = int(name[4:])
        processes.wait_port(self.net.host, self.net.base_port + e, 60, proc)
        self._submit(e)

  # ----------------------------------------------------------- collect

  def _collect(self, seconds) -> dict:
    results = report.collect(self.wd, self.world,
                             self.relays.totals() if self.relays else None)
    from acme_jax import report as report_lib
    results.update(seconds=seconds, events=self.events,
                   restarts=self.restarts,
                   impostors=self._impostor_outcomes(),
                   provenance={'networked': report_lib.provenance()})
    workdir_lib.atomic_write_json(self.wd / 'networked.json', results)
    workdir_lib.atomic_write_text(self.wd / 'networked.md',
                                  report.markdown(results))
    self.log(report.markdown(results))
    return results
