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
import signal
import subprocess
import time

from acme_jax import errors
from acme_jax import workdir as workdir_lib
from acme_jax.networked import (processes, reaper, report, security,
                                settings, startup, wire)
from acme_jax.networked.settings import parse_fault  # noqa: F401 (its home)


TierFailed = processes.TierFailed  # a tier's failure: one line, its log


class Launcher:
  """One networked run of `config` in `workdir`."""

  def __init__(self, config, workdir, log=print):
    self.config, self.net, self.log = config, config.network, log
    self.wd = pathlib.Path(workdir).resolve()  # Flower reads paths as given
    self.procs = processes.Processes(self.wd / 'logs')
    self.relays = None
    self.restarts = {}
    self.faults = []  # parsed by `_check`, once the config is valid
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
    # SIGTERM as Ctrl-C outside `errors.boundary` too (a test, a benchmark).
    with errors.terminate_as_interrupt():
      self._check()
      # From here every process started, Flower's detached helpers too,
      # carries the reaper's token and ends with this run, however it ends
      # (`reaper.py`; a SIGKILL of this process included).
      reap = reaper.Reaper()
      try:
        reap.start()
        world = self._cloud()
        self.world = world
        self._secrets()
        self.relays = wire.Relays(self.net.host) if self.net.count_bytes \
            else None
        for e in world['edges']:
          self._start_edge(e)
        self._start_nodes()
        self._start_impostors()
        self._supervise()
        return self._collect(time.time() - t0)
      finally:
        with reaper.SignalsDeferred():
          self.procs.stop_all()
          if self.relays is not None:
            self.relays.close()
          reap.close()

  def _check(self):
    """Everything that can be wrong with the config, before any process."""
    from acme_jax import config as config_lib
    from acme_jax.data import stage as data_stage
    from acme_jax.hierarchy import topology as topology_lib
    # The networked job's one validation, the config's and then its network
    # section's (its tiers, in their own processes, validate theirs in
    # `world.prepare`).
    config_lib.validate(self.config)
    settings.validate(self.config)
    self.faults = [parse_fault(f) for f in self.net.faults]
    topo_hp = topology_lib.TopologyHparams.from_config(self.config)
    for e in range(topo_hp.num_edges):
      processes.check_port_free(
          self.net.host, self.net.base_port + e,
          f'edge {e} listens on network.base_port + {e}: choose another '
          'network.base_port')
    dataset, _, device_data = data_stage.load(self.config, log=lambda *_: 0)
    data_stage.check_partition(
        data_stage.PartitionHparams.from_config(self.config), device_data,
        dataset.num_classes)
    # Held for the run's life: a second launcher on this workdir is refused
    # before it starts anything (each tier holds its own folder too).
    workdir_lib.Workdir(self.wd)

  def _cloud(self) -> dict:
    """The cloud's stages, in their own process (cached in its workdir)."""
    d = self._tier_dir('cloud')
    t = time.time()
    cmd = [processes.sys.executable, '-m', 'acme_jax.networked.tiers',
           'cloud-prepare', f'--config_json={d / "config.json"}',
           f'--workdir={d}']
    log = self.wd / 'logs' / 'cloud.log'
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, 'ab') as out:
      rc = subprocess.call(cmd, cwd=processes.REPO,
                           env=processes.flower_env(d / 'flwr'), stdout=out,
                           stderr=subprocess.STDOUT)
    if rc:
      raise TierFailed(f'the cloud stages failed (exit status {rc}); see '
                       f'{log}')
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
    """Edge e's SuperLink, enrolled keys and run (`startup.start_edge`, as
    `tiers.py edge` on its own machine)."""
    d = self._tier_dir(f'edge{e}')
    members = [k for k in self.keys
               if (k[0] == 'cloud' and k[1] == e) or
               (k[0] == 'device' and self._device(k[1])['edge'] == e)]
    expected = sum(1 for dev in self.world['devices'] if dev['edge'] == e)
    startup.start_edge(
        self.procs.start, e, d, d / 'config.json',
        startup.Endpoint(port=self.net.base_port + e, listen=self.net.host,
                         connect_host=self.net.host, tls=self.tls,
                         auth=self.net.auth),
        keys=[(f'{k[0]}{k[1]}', self.keys[k]['public']) for k in members],
        expected_devices=expected)
    self._event(f'edge {e}: run submitted')

  def _device(self, ident) -> dict:
    return next(d for d in self.world['devices'] if d['id'] == ident)

  def _link(self, name, e) -> str:
    """host:port a node of edge `e` dials: through a counting relay."""
    target = (self.net.host, self.net.base_port + e)
    if self.relays is None:
      return self._edge_address(e)
    return f'{self.net.host}:{self.relays.add(name, target)}'

  def _nodes(self) -> list:
    """(name, edge, node config, key) of the cloud's node at each edge (all
    serving from the cloud's workdir) and of every device."""
    cloud = str(self.wd / 'cloud')
    nodes = [(f'cloud_at_edge{e}', e, {'role': 'cloud', 'workdir': cloud},
              self.keys.get(('cloud', e))) for e in self.world['edges']]
    for dev in self.world['devices']:
      name = f'device{dev["id"]}'
      d = self._tier_dir(name)
      nodes.append((name, dev['edge'], {
          'role': 'device', 'device': dev['id'], 'edge': dev['edge'],
          'budget': dev['budget'], 'workdir': str(d),
          'config': str(d / 'config.json')}, self.keys.get(('device',
                                                             dev['id']))))
    return nodes

  def _start_nodes(self):
    """Every node's SuperNode; in warm mode its worker first (all started
    at once, each SuperNode once its worker listens)."""
    nodes = self._nodes()
    if self.net.warm_workers:
      nodes = [(n, e, startup.with_worker(node, n), k)
               for n, e, node, k in nodes]
      procs = [startup.start_worker(self.procs.start, n, node)
               for n, _, node, _ in nodes]
      for (name, _, node, _), proc in zip(nodes, procs):
        startup.wait_worker(node, proc, self.net.join_timeout_s)
      self._event(f'{len(nodes)} workers ready')
    for name, e, node, key in nodes:
      startup.start_supernode(
          self.procs.start, name, self._link(name, e), node,
          ca=self.tls['ca'] if self.tls else None, key=key,
          host=self.net.host)

  def _start_impostors(self):
    """`network.impostors` SuperNodes per edge whose keys the edge never
    registered, each claiming to be the edge's first device."""
    self.impostors = []
    for e in self.world['edges']:
      victim = next(d for d in self.world['devices'] if d['edge'] == e)
      for k in range(self.net.impostors):
        name = f'impostor{e}_{k}'
        key = security.node_key(self.wd / 'secrets' / 'impostors', name)
        d = self._tier_dir(name)
        startup.start_supernode(
            self.procs.start, name, self._link(name, e), {
                'role': 'device', 'device': victim['id'], 'edge': e,
                'budget': victim['budget'], 'workdir': str(d),
                'config': str(d / 'config.json')},
            ca=self.tls['ca'] if self.tls else None, key=key,
            host=self.net.host)
        self.impostors.append(name)

  def _impostor_outcomes(self) -> list:
    out = []
    for name in self.impostors:
      proc = self.procs.procs[name]
      text = self.procs.output(name)
      refused = [l for l in text.splitlines() if 'Failed to activate' in l
                 or 'code: 2004' in l]
      out.append({'name': name, 'exited': proc.poll() is not None,
                  'returncode': proc.poll(),
                  'refusal': refused[0].strip()[-160:] if refused else None})
    return out

  # --------------------------------------------------------- supervise

  def _status(self, e) -> dict:
    path = self.wd / f'edge{e}' / 'status.json'
    status = workdir_lib.read_json(path) if path.exists() else {}
    return status if isinstance(status, dict) else {}

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
        raise TierFailed(f'edge {e} failed: {s.get("error")} (see '
                         f'{self.wd / f"edge{e}" / "edge.log"})')
      if all(s.get('status') == 'finished' for s in statuses.values()):
        return
      if time.time() > end:
        raise TierFailed(f'the networked run did not finish within '
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
      try:  # the edge may be writing the last line right now
        m = json.loads(line)
      except ValueError:
        continue
      if isinstance(m, dict) and (m.get('kind'), m.get('round')) == (
          kind, round_):
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
      name = f'device{ident}' if tier == 'worker' else f'{tier}{ident}'
      worker = f'{name}.worker'
      if action == 'kill':
        targets = {'worker': [worker], 'device': [name, worker],
                   'edge': [name]}[tier]
        for target in targets:
          self.procs.signal(target, signal.SIGKILL)
        killed = ' and '.join(t for t in targets if t in self.procs.procs)
        self._event(f'fault: killed {killed} at {kind} round {round_}')
      else:
        self.stalled[name] = time.time() + self.net.timeout_s + 5
        self._event(f'fault: stalled {name} at {kind} round {round_}')
    for name, until in list(self.stalled.items()):
      # The node stays connected (its heartbeats go on) while the work it
      # does for the message is frozen: the reply never comes. That work
      # runs in its worker (warm) or its ClientApp process (stock).
      stop = signal.SIGSTOP if time.time() < until else signal.SIGCONT
      if f'{name}.worker' in self.procs.procs:
        self.procs.signal(f'{name}.worker', stop)
      else:
        self.procs.signal(name, stop, children_only=True)
      if stop == signal.SIGCONT:
        del self.stalled[name]
        self._event(f'fault: resumed {name}')

  def _refused(self, name) -> bool:
    """Whether `name` last exited because its edge refused its key: a node
    killed without a goodbye stays 'online' at its edge until its heartbeat
    expires (about 60 s in Flower 1.42), and meanwhile a restart with the
    same key is refused."""
    return 'Failed to activate' in self.procs.output(name)[-4000:]

  def _revive(self):
    """Restarts a dead tier process: up to `network.max_restarts` deaths
    each; restarts refused while its old session expires do not count."""
    for name in list(self.procs.procs):
      if self.procs.alive(name):
        continue
      if self.procs.bind_failed(name) and name.startswith('edge'):
        raise TierFailed(
            f'{name}: port {self.net.base_port + int(name[4:])} is taken by '
            'another process; choose another network.base_port')
      if self.procs.bind_failed(name):
        # Its local port was taken between our pick and its bind: not a
        # death; again on a fresh port (impostors too, so they still knock).
        self._event(f'{name}: port taken; restarting it on a fresh port')
        self.procs.restart(name)
        continue
      if name in self.impostors:
        continue
      if name in self.waiting and time.time() < self.waiting[name]:
        continue
      refused = self._refused(name) and name in self.rejoin_until
      if refused and time.time() > self.rejoin_until[name]:
        raise TierFailed(f'{name} was refused by its edge until '
                         f'{self.net.rejoin_timeout_s}s after it died; see '
                         f'{self.wd / "logs" / (name + ".log")}')
      if not refused:
        n = self.restarts.get(name, 0)
        if n >= self.net.max_restarts:
          raise TierFailed(f'{name} died with its network.max_restarts = '
                           f'{self.net.max_restarts} restarts spent; see '
                           f'{self.wd / "logs" / (name + ".log")}')
        self.restarts[name] = n + 1
        self.rejoin_until[name] = time.time() + self.net.rejoin_timeout_s
        self._event(f'{name} died; restarting it (restart {n + 1})')
        time.sleep(self.net.restart_delay_s)
      else:
        self.waiting[name] = time.time() + self.net.restart_delay_s
      if name.startswith('edge'):
        self.procs.stop(name)
        self._start_edge(int(name[4:]))
      else:
        self.procs.restart(name)

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
