"""ACME's device <-> edge rounds of personalized architecture aggregation
(docs/method.md 6), as a federated algorithm (`algorithm(hp)`: `init`, then
`apply` once per round, run by the driver of `federated/algorithm.py`).

Round r: every device trains its header locally while accumulating Taylor
importance on its gates and reports it to its edge; the edge returns
I'_k = sum_i W[k, i] I_i over its devices (W from the aggregation mode),
channel by channel over the devices that have that channel as the same
channel (`prune.shared_gates`: same start, same slot, same op), the weights
renormalised over them; each device smooths what it receives over the
rounds (momentum, the NVlabs engine's) and turns off its lowest channels
until `prune_ratio * (r + 1) / rounds` of those it may prune are off, then
fine-tunes with the gates fixed. `wo_pruning` trains for the same epochs
and exchanges nothing.

The state in and out of `apply` is the edges' (`EdgeState`: the round, and
what each device told its edge once: its data signature and its header's
layout). The device side of a round runs where the devices are, behind
`Clients`: `EngineClients` runs it in this process through the client
engine; the networked edge sends it to the device processes. Both run
`algorithm(hp)` through the same driver, so a round is written once, and
its ledger records (which bytes crossed which link) come from the edge's
view in both.
"""
import abc
import dataclasses
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import choices
from acme_jax import resume
from acme_jax import sizes
from acme_jax import streams
from acme_jax.device import header as header_lib
from acme_jax.device import prune
from acme_jax.device import child as child_lib
from acme_jax.device import state as state_lib
from acme_jax.edge import aggregate, similarity
from acme_jax.federated import algorithm as algorithm_lib
from acme_jax.hierarchy.ledger import Ledger
from acme_jax.parallel import engine


@dataclasses.dataclass(frozen=True)
class RoundsHparams:
  """config.aggregation, typed (with the header's schedule and gates)."""
  mode: str                       # choices.MODES
  rounds: int
  prune_ratio: float              # of the prunable channels, after the last
  local_epochs: int
  finetune_epochs: int
  taylor: str                     # choices.TAYLOR
  signature_kind: str             # choices.SIGNATURE_KINDS
  temperature: float
  self_weight: Optional[float]    # None: the softmax's own diagonal
  js_variant: str
  optimizer: str                  # choices.ROUND_OPTIMIZERS
  lr: float                       # optimizer 'sgd': its constant rate ...
  momentum: float                 # ... momentum and batch size
  batch_size: int
  prune_set: str                  # choices.PRUNE_SETS
  criterion_momentum: float       # smoothing of the criterion over rounds
  finetune_last: bool             # the last round fine-tunes after pruning
  schedule: state_lib.Schedule    # optimizer 'header': the header's own
  gates: header_lib.Spec          # the header's gate layout (a causal_header
  #                                 Spec for language-model headers)
  strategy: engine.Options

  @classmethod
  def from_config(cls, config, mode: Optional[str] = None,
                  temperature: Optional[float] = None) -> 'RoundsHparams':
    """The config's rounds; the aggregation experiment's columns override
    the mode and temperature."""
    aggregation, header = config.aggregation, config.header
    return cls(
        mode=mode or aggregation.mode, rounds=aggregation.rounds,
        prune_ratio=aggregation.prune_ratio,
        local_epochs=aggregation.local_epochs,
        finetune_epochs=aggregation.finetune_epochs,
        taylor=aggregation.taylor, signature_kind=aggregation.signature,
        temperature=(aggregation.temperature if temperature is None
                     else temperature),
        self_weight=(None if aggregation.self_weight < 0
                     else aggregation.self_weight),
        js_variant=aggregation.js_variant,
        optimizer=aggregation.optimizer, lr=aggregation.lr,
        momentum=aggregation.momentum,
        batch_size=aggregation.batch_size,
        prune_set=aggregation.prune_set,
        criterion_momentum=aggregation.criterion_momentum,
        finetune_last=aggregation.finetune_last,
        schedule=state_lib.Schedule(header.batch_size, header.lr_min,
                                    header.lr_period, header.lr_period_mult,
                                    header.final_schedule),
        gates=header_lib.Spec(
            num_classes=1, feature_dim=1, num_channels=header.num_channels,
            num_nodes=header.num_nodes,
            max_layers=sizes.max_header_cells(config)),
        strategy=engine.options(config))

  @property
  def personalized(self) -> bool:
    return self.mode in choices.PERSONALIZED_MODES

  @property
  def prunes(self) -> bool:
    return self.mode != 'wo_pruning'

  @property
  def mixes(self) -> bool:
    """Whether a device's criterion depends on other devices' importances."""
    return self.prunes and self.mode != 'pruning_alone'

  def ratio_after(self, r: int) -> float:
    """Share of prunable channels off after round `r` (a linear ramp: the
    same number each round, as the prototype's engine prunes)."""
    return state_lib.prune_ratio_at(self.prune_ratio, r, self.rounds)


class Report(NamedTuple):
  """What a device sends its edge after local training; on its first
  round, also what the edge needs to know of it once."""
  edge: int
  importance: Optional[dict]        # float32, shaped like the gates
  train_samples: int
  signature: Optional[np.ndarray] = None   # float32 (personalized modes)
  layout: Optional[np.ndarray] = None      # int32 `prune.Layout.pack()`


class EdgeState(NamedTuple):
  round: int
  signatures: Mapping[int, np.ndarray]   # device id -> what it sent
  layouts: Mapping[int, np.ndarray]      # device id -> its packed layout


class Clients(abc.ABC):
  """Where the device side of a round runs."""

  @abc.abstractmethod
  def members(self) -> List[int]:
    """The devices taking part in the next round."""

  @abc.abstractmethod
  def train(self, r: int, devices: Sequence[int],
            introduce) -> Dict[int, Report]:
    """Local training of round `r` on `devices`; returns the reports of
    those that answered. A device whose id is in `introduce` adds what the
    edge needs to know of it once (its signature and layout, as the mode
    needs them)."""

  @abc.abstractmethod
  def finetune(self, r: int, devices: Sequence[int],
               aggregated: Optional[Mapping]) -> List[int]:
    """Pruning by each device's aggregated importances (None: no pruning),
    then fine-tuning, on `devices`; returns those that did it."""


def init() -> EdgeState:
  return EdgeState(round=0, signatures={}, layouts={})


def aggregate_edge(hp: RoundsHparams, own: list, signatures, data_sizes,
                   layouts) -> list:
  """One edge's step: its devices' importances `own` (in member order) ->
  each member's I'_k = sum_i W[k, i] I_i, W from the aggregation mode,
  over the devices that share each channel (their packed `layouts`)."""
  if not hp.mixes:
    return [jax.tree.map(np.asarray, imp) for imp in own]
  weights = similarity.mode_weights(
      hp.mode, signatures=signatures if hp.personalized else None,
      data_sizes=data_sizes, num_devices=len(own),
      signature_kind=hp.signature_kind, temperature=hp.temperature,
      self_weight=hp.self_weight, js_variant=hp.js_variant)
  shared = prune.shared_gates(hp.gates, [
      prune.Layout.unpack(p, hp.gates.num_nodes) for p in layouts])
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *own)
  mixed = aggregate.aggregate_shared(jnp.asarray(weights, jnp.float32),
                                     stacked, shared)
  return [jax.tree.map(lambda a: np.asarray(a[k]), mixed)
          for k in range(len(own))]


def apply(hp: RoundsHparams, state: EdgeState, clients: Clients,
          ledger: Optional[Ledger] = None):
  """One round. Returns (the edges' next state, per device that trained:
  {'pruned': whether it pruned and fine-tuned, and when the mode prunes
  'importance_sha256': the digest of the importance it sent})."""
  r = state.round
  members = clients.members()
  introduce = ({d for d in members if d not in state.layouts}
               if hp.mixes else set())
  reports = clients.train(r, members, introduce)
  signatures, layouts = dict(state.signatures), dict(state.layouts)
  for d, report in reports.items():
    if report.signature is not None:
      signatures[d] = report.signature
    if report.layout is not None:
      layouts[d] = report.layout
  sent = ({d: report.importance for d, report in reports.items()}
          if hp.prunes else {})
  aggregated = None
  if hp.prunes:
    aggregated = {}
    for edge in sorted({rep.edge for rep in reports.values()}):
      answered = sorted(d for d, rep in reports.items() if rep.edge == edge)
      mixed = aggregate_edge(hp, [sent[d] for d in answered],
                             [signatures.get(d) for d in answered],
                             [reports[d].train_samples for d in answered],
                             [layouts.get(d) for d in answered])
      for d, mix in zip(answered, mixed):
        aggregated[d] = mix
        if ledger is not None and hp.mixes:
          _record(ledger, r, edge, d, reports[d], mix)
  pruned = set(clients.finetune(r, sorted(reports), aggregated))
  diagnostics = {}
  for d in sorted(reports):
    diagnostics[d] = {'pruned': d in pruned}
    if d in sent:
      diagnostics[d]['importance_sha256'] = state_lib.digest(sent[d])
  return EdgeState(r + 1, signatures, layouts), diagnostics


def smoothed(hp: RoundsHparams, previous, received):
  """A device's pruning criterion: what its edge sent, smoothed over the
  rounds with NVlabs' momentum (`criterion_momentum`; 0 or no previous
  round: what it received)."""
  m = hp.criterion_momentum
  if previous is None or m == 0:
    return received
  return jax.tree.map(lambda old, new: m * old + (1 - m) * new, previous,
                      received)


def _record(ledger: Ledger, r: int, edge: int, d: int, report: Report, mix):
  """The ledger records of device `d`'s exchange with its edge in round
  `r`: what it introduced, its importance, and the aggregated importance it
  receives. (`pruning_alone` and `wo_pruning` exchange nothing.)"""
  up, down = ('device', d), ('edge', edge)
  if report.signature is not None:
    ledger.send(up, down, 'signature', report.signature, round=r)
  if report.layout is not None:
    ledger.send(up, down, 'header', report.layout, round=r)
  ledger.send(up, down, 'importance', report.importance, round=r)
  ledger.send(down, up, 'importance', state_lib.float32(mix), round=r)


class EngineClients(Clients):
  """The devices of this process: their headers, trained through the
  client engine. A device's randomness is folded from `key`, the round and
  its id, so it does not depend on which devices run beside it."""

  def __init__(self, hp: RoundsHparams, cfg: child_lib.NasConfig,
               devices: Sequence[state_lib.DeviceHeader], key):
    self.hp, self.key = hp, key
    self.devices = list(devices)
    if hp.optimizer == 'sgd':
      # SGD (momentum `hp.momentum`) at a constant rate, its state fresh at
      # round 0: the prototype's rounds, whatever the final training used.
      self.cfg = dataclasses.replace(cfg, momentum=hp.momentum)
      self.schedule = state_lib.Schedule(batch_size=hp.batch_size,
                                         lr_min=hp.lr, kind='constant')
    else:
      self.cfg, self.schedule = cfg, hp.schedule

  def members(self):
    return [d.device for d in self.devices]

  def _keys(self, r):
    round_key = jax.random.fold_in(self.key, r)
    return (jax.random.fold_in(round_key, streams.LOCAL_TRAINING),
            jax.random.fold_in(round_key, streams.FINETUNING))

  def _train(self, devices, epochs, key):
    """Trains `devices` (ids) and keeps their new headers; returns
    {id: (header, importance)}."""
    todo = [d for d in self.devices if d.device in set(devices)]
    if self.hp.optimizer == 'sgd':
      todo = [dataclasses.replace(d, lr=self.hp.lr) for d in todo]
    trained, importances = state_lib.train(self.cfg, self.schedule, todo,
                                           epochs, key, self.hp.strategy)
    new = {d.device: d for d in trained}
    self.devices = [new.get(d.device, d) for d in self.devices]
    return {d.device: (d, imp) for d, imp in zip(trained, importances)}

  def _with_fresh_sgd(self, devices):
    tx = child_lib.child_optimizer(self.cfg)
    return [dataclasses.replace(d, state=d.state._replace(
        child=d.state.child._replace(opt_state=tx.init(d.state.child.params))))
            for d in devices]

  def snapshot(self):
    """What the rounds change in the devices: (arrays, JSON)."""
    return ({'states': [d.state for d in self.devices],
             'criteria': [d.criterion for d in self.devices
                          if d.criterion is not None]},
            {'ids': [d.device for d in self.devices],
             'lrs': [d.lr for d in self.devices],
             'criterion': [d.criterion is not None for d in self.devices]})

  def snapshot_like(self, meta: dict, rounds_done: int):
    """A tree shaped as `snapshot()`'s after `rounds_done` rounds."""
    if meta['ids'] != [d.device for d in self.devices]:
      raise ValueError('the saved rounds are of other devices')
    devices = self.devices
    if rounds_done and self.hp.optimizer == 'sgd':
      devices = self._with_fresh_sgd(devices)
    return {'states': [d.state for d in devices],
            'criteria': [jax.tree.map(lambda _: resume.as_saved(),
                                      d.state.gates)
                         for d, has in zip(devices, meta['criterion'])
                         if has]}

  def restore(self, tree: dict, meta: dict):
    criteria = iter(tree['criteria'])
    self.devices = [dataclasses.replace(
        d, state=s, lr=lr, criterion=next(criteria) if has else None)
                    for d, s, lr, has in zip(self.devices, tree['states'],
                                             meta['lrs'], meta['criterion'])]

  def train(self, r, devices, introduce):
    if r == 0 and self.hp.optimizer == 'sgd':
      self.devices = self._with_fresh_sgd(self.devices)
    trained = self._train(devices, self.hp.local_epochs, self._keys(r)[0])
    reports = {}
    for i, (d, imp) in trained.items():
      first = i in introduce
      reports[i] = Report(
          edge=d.edge, importance=state_lib.float32(imp[self.hp.taylor]),
          train_samples=d.sizes['train'],
          signature=(np.asarray(d.signature, np.float32)
                     if first and self.hp.personalized else None),
          layout=d.layout.pack() if first else None)
    return reports

  def finetune(self, r, devices, aggregated):
    hp = self.hp
    if aggregated is not None:
      self.devices = [self._pruned(d, aggregated[d.device], r)
                      if d.device in aggregated else d for d in self.devices]
    if r == hp.rounds - 1 and not hp.finetune_last:
      return sorted(devices)
    return sorted(self._train(devices, hp.finetune_epochs, self._keys(r)[1]))

  def _pruned(self, device, received, r):
    """The device smooths what its edge sent over the rounds and prunes
    by it."""
    criterion = smoothed(self.hp, device.criterion, received)
    return state_lib.pruned(self.cfg, device, criterion,
                            self.hp.ratio_after(r),
                            separable_only=self.hp.prune_set == 'separable')


def algorithm(hp: RoundsHparams,
              steps_per_round: int = 0) -> algorithm_lib.FederatedAlgorithm:
  """ACME's rounds as a `FederatedAlgorithm` over any `Clients`."""
  if hp.mode not in choices.MODES:
    raise ValueError(f'unknown mode {hp.mode!r}; allowed: {choices.MODES}')
  if hp.taylor not in choices.TAYLOR:
    raise ValueError(f'unknown taylor criterion {hp.taylor!r}; allowed: '
                     f'{choices.TAYLOR}')
  # `apply` is looked up at call time, so a test can wrap the module's.
  return algorithm_lib.FederatedAlgorithm(
      name=f'acme:{hp.mode}', rounds=hp.rounds, init=init,
      apply=lambda state, clients, ledger=None: apply(hp, state, clients,
                                                      ledger),
      steps_per_round=steps_per_round)


def run(hp: RoundsHparams, cfg: child_lib.NasConfig,
        devices: Sequence[state_lib.DeviceHeader], key,
        ledger: Optional[Ledger] = None, partial=None):
  """`hp.rounds` rounds on `devices` in this process, through the driver
  (`algorithm.run`; with `partial`, saved mid-way and resumed). Returns
  (the devices' headers after them, device id -> the sha256 of the
  importances it sent in each round)."""
  clients = EngineClients(hp, cfg, devices, key)
  # Training steps a round takes, all devices (local training and
  # fine-tuning), to space the saves as `resume.every_steps` asks.
  per_round = sum(state_lib.steps(d.sizes, clients.schedule.batch_size,
                                  hp.local_epochs + hp.finetune_epochs)
                  for d in devices)
  _, history = algorithm_lib.run(algorithm(hp, per_round), clients, ledger,
                                 partial)
  digests = {d.device: [h['importance_sha256']
                        for h in history.get(d.device, [])
                        if 'importance_sha256' in h] for d in devices}
  return clients.devices, digests
