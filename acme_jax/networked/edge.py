"""An edge's side of the networked loop: the coordinator of its link to the
cloud and of its devices (docs/method.md 4.4, 6, 7), as a Flower ServerApp.

Flower's only initiator is the ServerApp, and in ACME the edge is the one
that decides: it fetches the front, collects its devices' histograms,
chooses their backbones, fetches those from the cloud and forwards them,
and aggregates the devices' importances every round. So each edge runs a
SuperLink, its ServerApp is this module, and both its devices and the cloud
are SuperNodes of that federation (the cloud answers requests only; its
training is over before any edge starts).

Every exchange is one request and one reply. The records that carry one of
the ledger's payloads are entered in the edge's own `Ledger` as they pass,
and every message's serialized size is logged per link, direction and kind.
Progress is saved in the edge's workdir after every phase and round, so a
restarted edge resumes where it stopped; the devices answer repeated
requests from what they saved.
"""
import os
import pathlib
import time

import numpy as np

from acme_jax import workdir as workdir_lib
from acme_jax.device import signature as signature_lib
from acme_jax.edge import stage as edge_stage
from acme_jax.federated import acme
from acme_jax.federated import algorithm as algorithm_lib
from acme_jax.networked import link, payload
from acme_jax.networked.link import EdgeError
from acme_jax.hierarchy.ledger import Ledger


def multipliers(width, depth) -> tuple:
  """(width, depth) as a key: the front's float32 values and the config's
  float64 ones name the same subnet (for_model snaps them to layers)."""
  return round(float(width), 6), round(float(depth), 6)


class Edge(link.Link):
  """Edge `edge_id` of `config`, driving `grid` (a Flower Grid)."""

  def __init__(self, config, workdir, edge_id: int, grid,
               expected_devices: int, log=print):
    super().__init__(config.network, workdir, edge_id, grid,
                     expected_devices, log)
    self.config = config
    self.state = (workdir_lib.read_json(self.dir / 'state.json')
                  if (self.dir / 'state.json').exists() else
                  {'rounds_done': 0, 'rounds': []})
    self.ledger = (Ledger.from_records(workdir_lib.read_json(
        self.dir / 'ledger.json')) if (self.dir / 'ledger.json').exists()
                   else Ledger())

  # ------------------------------------------------------------ storage

  def _commit(self, **updates):
    self.state.update(updates)
    workdir_lib.atomic_write_json(self.dir / 'ledger.json',
                                  self.ledger.to_records())
    workdir_lib.atomic_write_json(self.dir / 'state.json', self.state)

  def _setup_phase(self, kind, requests_for, done_key, on_reply=None):
    """A setup step every device must finish (it needs it for the rounds):
    retried for the devices that did not answer, after rediscovery."""
    done = set(self.state.get(done_key, []))
    for attempt in range(self.net.retries + 1):
      todo = [d for d in self.members() if d not in done]
      if not todo:
        break
      if attempt:
        self.discover(wait=True)
      replies = self.exchange(kind, {('device', d): requests_for(d)
                                      for d in todo},
                               self.net.setup_timeout_s)
      for (_, d), reply in replies.items():
        if on_reply:
          on_reply(d, reply)
        done.add(d)
      self._commit(**{done_key: sorted(done)})
    missing = [d for d in self.members() if d not in done]
    if missing:
      self.log(f'{kind}: devices {missing} never answered; they are left out')
      self.state['excluded'] = sorted(set(self.state.get('excluded', []))
                                      | set(missing))
      self._commit()

  def wait_for_members(self):
    """Before a round: up to `network.round_wait_s` for devices that left
    (a restarted device rejoins here, under a new node id or its old one)."""
    end = time.time() + self.net.round_wait_s
    while True:
      self.discover(wait=False)
      missing = [d for d in self.members() if ('device', d) not in self.nodes]
      if not missing or time.time() > end:
        if missing:
          self.log(f'devices {missing} are not connected; the round goes on '
                   f'without them')
        return
      time.sleep(1.0)

  def members(self):
    """The devices this edge serves: those that joined, minus excluded."""
    joined = self.state.get('devices') or self.devices()
    return [d for d in joined if d not in self.state.get('excluded', [])]

  # --------------------------------------------------------------- run

  def run(self):
    t0 = time.time()
    if not self.discover(wait=True):
      self.log(f'only {len(self.devices())}/{self.expected} devices joined '
               f'within {self.net.join_timeout_s}s')
      if len(self.devices()) < self.net.min_devices:
        raise EdgeError(f'fewer than network.min_devices = '
                        f'{self.net.min_devices} devices joined')
    if 'devices' not in self.state:
      self._commit(devices=self.devices(),
                   budgets={str(d): int(self.info[d]['budget'])
                            for d in self.devices()})
    self.log(f'devices {self.members()} and the cloud joined '
             f'({time.time() - t0:.1f}s)')
    front = self._front()
    histograms = self._histograms()
    picks = self._choose(front, histograms)
    self._deliver(picks)
    self._setup_phase('train.header', lambda d: ({}, {}), 'headers_done')
    self.log(f'headers searched ({time.time() - t0:.1f}s)')
    self._rounds()
    self._metrics()
    self._commit(finished=True, seconds=time.time() - t0)
    self.log(f'finished in {time.time() - t0:.1f}s')

  def _front(self):
    path = self.dir / 'front.json'
    if path.exists():
      return {k: np.asarray(v, np.float32)
              for k, v in workdir_lib.read_json(path).items()}
    front = payload.payloads(self._ask_cloud('query.front'))['front']
    self.ledger.send('cloud', ('edge', self.id), 'front', front)
    workdir_lib.atomic_write_json(path, {k: v.tolist()
                                         for k, v in front.items()})
    self._commit()
    return front

  def _histograms(self):
    hist = {int(k): np.asarray(v, np.float32)
            for k, v in self.state.get('histograms', {}).items()}

    def got(d, reply):
      hist[d] = payload.payloads(reply)['histogram']
      self.ledger.send(('device', d), ('edge', self.id), 'histogram', hist[d])
      self.state['histograms'] = {str(k): v.tolist() for k, v in hist.items()}

    self._setup_phase('query.histogram', lambda d: ({}, {}),
                      'histograms_done', got)
    return hist

  def _choose(self, front, histograms):
    if 'picks' not in self.state:
      devices = [d for d in self.members() if d in histograms]
      budgets = self.state['budgets']
      picks = edge_stage.choose(edge_stage.EdgeHparams.from_config(
          self.config), front, [histograms[d] for d in devices],
                                [budgets[str(d)] for d in devices])
      chosen = {}
      for d, pick in zip(devices, picks):
        width, depth = multipliers(front['width_mult'][pick.candidate],
                                   front['depth_mult'][pick.candidate])
        chosen[str(d)] = {'width_mult': width, 'depth_mult': depth,
                          'params': pick.params, 'score': pick.score,
                          'accuracy': float(front['accuracy'][
                              pick.candidate])}
        self.log(f'device {d} (budget {budgets[str(d)]:,}): depth '
                 f'{chosen[str(d)]["depth_mult"]:g} width '
                 f'{chosen[str(d)]["width_mult"]:g}, {pick.params:,} params')
      self._commit(picks=chosen)
    return self.state['picks']

  def _reference(self):
    if signature_lib.needs_reference(self.config):
      return multipliers(*signature_lib.reference_multipliers(self.config))
    return None

  def _backbones(self, picks):
    """The distinct backbones this edge's devices need, fetched from the
    cloud once each (the relay leg) and kept in the edge's workdir."""
    from acme_jax.networked import cloud as cloud_lib
    needed = {(p['width_mult'], p['depth_mult']) for p in picks.values()}
    if self._reference() is not None:
      needed.add(self._reference())
    out = {}
    for width, depth in sorted(needed, key=repr):
      path = self.dir / f'{cloud_lib.backbone_name(width, depth)}.npz'
      if path.exists():
        out[(width, depth)] = payload.load_npz(path)
        continue
      reply = self._ask_cloud('query.backbone', width=width, depth=depth)
      out[(width, depth)] = payload.payloads(reply)['backbone']
      self.ledger.send('cloud', ('edge', self.id), 'backbone',
                       out[(width, depth)], final=False)
      payload.save_npz(path, out[(width, depth)])
      self._commit()
    return out

  def _deliver(self, picks):
    backbones = self._backbones(picks)
    ref_key = self._reference()

    def request(d):
      p = picks[str(d)]
      key = (p['width_mult'], p['depth_mult'])
      parts = {'backbone': backbones[key]}
      if ref_key is not None and ref_key != key:
        parts['reference'] = backbones[ref_key]
      return parts, {'width': key[0], 'depth': key[1]}

    def got(d, _):
      parts, _ = request(d)
      for tree in parts.values():
        self.ledger.send(('edge', self.id), ('device', d), 'backbone', tree)

    self._setup_phase('train.backbone', request, 'backbones_done', got)

  def _rounds(self):
    """The rounds (`federated.acme.algorithm`, run by the same driver as
    in one process), the device side of each sent to the devices over this
    edge's link; committed after every round."""
    hp = acme.RoundsHparams.from_config(self.config)
    state = acme.EdgeState(
        self.state['rounds_done'],
        {int(k): np.asarray(v, np.float32)
         for k, v in self.state.get('signatures', {}).items()},
        {int(k): np.asarray(v, np.int32)
         for k, v in self.state.get('layouts', {}).items()})
    devices = _LinkedDevices(self)
    started = [time.time()]

    def commit(state, diagnostics):
      r, seconds = state.round - 1, time.time() - started[0]
      pruned = sorted(d for d, v in diagnostics.items() if v['pruned'])
      self.state['rounds'].append({
          'round': r, 'members': devices.asked,
          'answered': sorted(diagnostics), 'pruned': pruned,
          'seconds': seconds})
      self._commit(rounds_done=state.round, signatures={
          str(k): np.asarray(v).tolist() for k, v in state.signatures.items()
      }, layouts={str(k): np.asarray(v).tolist()
                  for k, v in state.layouts.items()})
      self.log(f'round {r + 1}/{hp.rounds}: {len(diagnostics)}/'
               f'{len(devices.asked)} devices trained, '
               f'{len(pruned)} pruned ({seconds:.1f}s)')
      started[0] = time.time()

    algorithm_lib.run(acme.algorithm(hp), devices, self.ledger, state=state,
                      on_round=commit)

  def _metrics(self):
    got = {int(k): np.asarray(v, np.float32)
           for k, v in self.state.get('metrics', {}).items()}
    todo = {('device', d): ({}, {}) for d in self.members() if d not in got}
    if todo:
      self.discover(wait=False)
    for (_, d), reply in self.exchange('query.metrics', todo,
                                        self.net.timeout_s).items():
      got[d] = payload.payloads(reply)['metrics']
      self.ledger.send(('device', d), ('edge', self.id), 'metrics', got[d])
    self._commit(metrics={str(k): v.tolist() for k, v in got.items()})
    if not self.state.get('metrics_sent'):
      summary = {f'device{d}': got[d] for d in sorted(got)}
      self._ask_cloud('train.metrics', {'metrics': summary}, edge=self.id)
      self.ledger.send(('edge', self.id), 'cloud', 'metrics',
                       [got[d] for d in sorted(got)])
      self._commit(metrics_sent=True)


class _LinkedDevices(acme.Clients):
  """An edge's devices as the rounds' clients: each request a message over
  the edge's link, waiting for devices that left before a round."""

  def __init__(self, edge: Edge):
    self.edge = edge
    self.asked = []

  def members(self):
    self.edge.wait_for_members()
    self.asked = [d for d in self.edge.members()
                  if ('device', d) in self.edge.nodes]
    return self.asked

  def train(self, r, devices, introduce):
    net = self.edge.net
    replies = self.edge.exchange(
        'train.round', {('device', d): ({}, {
            'round': r, 'introduce': int(d in introduce)})
                        for d in devices}, net.timeout_s, round_=r)
    if len(replies) < net.min_devices:
      raise EdgeError(f'round {r}: {len(replies)} devices answered, fewer '
                      f'than network.min_devices = {net.min_devices}')
    reports = {}
    for (_, d), reply in sorted(replies.items()):
      parts, c = payload.payloads(reply), payload.control(reply)
      reports[d] = acme.Report(
          edge=self.edge.id, importance=parts.get('importance'),
          train_samples=int(c['train_samples']),
          signature=parts.get('signature'), layout=parts.get('layout'))
    return reports

  def finetune(self, r, devices, aggregated):
    requests = {('device', d): (
        {} if aggregated is None else {'aggregated': aggregated[d]},
        {'round': r}) for d in devices}
    return sorted(p[1] for p in self.edge.exchange(
        'train.prune', requests, self.edge.net.timeout_s, round_=r))


def serve(grid, run_config):
  """The ServerApp's entry: runs the edge; its outcome lands in the edge's
  workdir (`status.json`) for whoever supervises it."""
  from acme_jax import cli, errors
  from acme_jax.networked import handlers
  workdir = pathlib.Path(str(run_config['workdir']))
  workdir.mkdir(parents=True, exist_ok=True)
  log_path = workdir / 'edge.log'

  def log(text):
    line = f'{time.strftime("%H:%M:%S")} {text}'
    print(line, flush=True)
    with open(log_path, 'a') as f:
      f.write(line + '\n')

  status = {'status': 'running', 'pid': os.getpid()}
  workdir_lib.atomic_write_json(workdir / 'status.json', status)
  try:
    cli.enable_compilation_cache()
    config = handlers.config_from_json(str(run_config['config']))
    Edge(config, workdir, int(run_config['edge']), grid,
         int(run_config['expected-devices']), log).run()
    status = {'status': 'finished'}
  except Exception as e:  # pylint: disable=broad-except
    status = {'status': 'failed', 'error': errors.one_line(e)}
    log(f'[edge {run_config["edge"]}] failed: {status["error"]}')
    raise
  finally:
    workdir_lib.atomic_write_json(workdir / 'status.json', status)
