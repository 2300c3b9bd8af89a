"""ACME's device <-> edge rounds of personalized architecture aggregation
(ACME.md 6), as a federated algorithm: `init`, then `apply` once per round.

Round r: every device trains its header locally while accumulating Taylor
importance on its gates and reports it to its edge; the edge returns
I'_k = sum_i W[k, i] I_i over its devices (W from the aggregation mode);
each device turns off its lowest-I'_k gate channels until
`prune_ratio * (r + 1) / rounds` of the channels its architecture uses are
off, and fine-tunes with the gates fixed. `wo_pruning` trains for the same
epochs and exchanges nothing.

The state in and out of `apply` is the edges' (`EdgeState`: the round, the
signatures they hold). The device side of a round runs where the devices
are, behind `Clients`: `EngineClients` runs it in this process through the
client engine; the networked edge sends it to the device processes. Both
call `apply`, so a round is written once, and its ledger records (which
bytes crossed which link) come from the edge's view in both.
"""
import abc
import dataclasses
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import choices
from acme_jax import streams
from acme_jax.device import nas
from acme_jax.device import state as state_lib
from acme_jax.edge import aggregate, similarity
from acme_jax.parallel import engine
from acme_jax.hierarchy.ledger import Ledger


@dataclasses.dataclass(frozen=True)
class RoundsHparams:
  """config.aggregation (and the header's training schedule), typed."""
  mode: str                       # choices.MODES
  rounds: int
  prune_ratio: float
  local_epochs: int
  finetune_epochs: int
  taylor: str                     # choices.TAYLOR
  signature_kind: str             # choices.SIGNATURE_KINDS
  temperature: float
  self_weight: Optional[float]    # None: the softmax's own diagonal
  js_variant: str
  schedule: state_lib.Schedule
  strategy: engine.Options

  @classmethod
  def from_config(cls, config, mode: Optional[str] = None,
                  temperature: Optional[float] = None) -> 'RoundsHparams':
    """The config's rounds; the aggregation experiment's columns override
    the mode and temperature."""
    aggregation, header = config.aggregation, config.header
    return cls(mode=mode or aggregation.mode,
               rounds=aggregation.rounds,
               prune_ratio=aggregation.prune_ratio,
               local_epochs=aggregation.local_epochs,
               finetune_epochs=aggregation.finetune_epochs,
               taylor=aggregation.taylor,
               signature_kind=aggregation.signature,
               temperature=aggregation.temperature
               if temperature is None else temperature,
               self_weight=None
               if aggregation.self_weight < 0 else aggregation.self_weight,
               js_variant=aggregation.js_variant,
               schedule=state_lib.Schedule(header.batch_size, header.lr_min,
                                           header.lr_period,
                                           header.lr_period_mult),
               strategy=engine.options(config))

  @property
  def personalized(self) -> bool:
    return self.mode in choices.PERSONALIZED_MODES

  @property
  def prunes(self) -> bool:
    return self.mode != 'wo_pruning'

  def ratio_after(self, r: int) -> float:
    """Share of active channels off after round `r` (a linear ramp)."""
    return state_lib.prune_ratio_at(self.prune_ratio, r, self.rounds)


class Report(NamedTuple):
  """What a device sends its edge after local training."""
  edge: int
  importance: dict                  # float32, shaped like the gates
  train_samples: int
  signature: Optional[np.ndarray]   # float32, when the edge asked for it


class EdgeState(NamedTuple):
  round: int
  signatures: Mapping[int, np.ndarray]   # device id -> what it sent


class Clients(abc.ABC):
  """Where the device side of a round runs."""

  @abc.abstractmethod
  def members(self) -> List[int]:
    """The devices taking part in the next round."""

  @abc.abstractmethod
  def train(self, r: int, devices: Sequence[int],
            signature_from) -> Dict[int, Report]:
    """Local training of round `r` on `devices`; returns the reports of
    those that answered, each with its signature when its id is in
    `signature_from`."""

  @abc.abstractmethod
  def finetune(self, r: int, devices: Sequence[int],
               aggregated: Optional[Mapping]) -> List[int]:
    """Pruning by each device's aggregated importances (None: no pruning),
    then fine-tuning, on `devices`; returns those that did it."""


def init() -> EdgeState:
  return EdgeState(round=0, signatures={})


def aggregate_edge(hp: RoundsHparams, own: list, signatures,
                   data_sizes) -> list:
  """One edge's step: its devices' importances `own` (in member order) ->
  each member's I'_k = sum_i W[k, i] I_i, W from the aggregation mode."""
  weights = similarity.mode_weights(
      hp.mode, signatures=signatures if hp.personalized else None,
      data_sizes=data_sizes, num_devices=len(own),
      signature_kind=hp.signature_kind, temperature=hp.temperature,
      self_weight=hp.self_weight, js_variant=hp.js_variant)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *own)
  mixed = aggregate.aggregate_importances(jnp.asarray(weights, jnp.float32),
                                          stacked)
  return [jax.tree.map(lambda a: np.asarray(a[k]), mixed)
          for k in range(len(own))]


def apply(hp: RoundsHparams, state: EdgeState, clients: Clients,
          ledger: Optional[Ledger] = None):
  """One round. Returns (the edges' next state, {'answered': device ids
  that trained, 'pruned': those that fine-tuned, 'sent': device id ->
  the importance it sent})."""
  r = state.round
  members = clients.members()
  asked = ({d for d in members if d not in state.signatures}
           if hp.personalized else set())
  reports = clients.train(r, members, asked)
  signatures = dict(state.signatures)
  for d, report in reports.items():
    if report.signature is not None:
      signatures[d] = report.signature
  sent = {d: report.importance for d, report in reports.items()}
  aggregated = None
  if hp.prunes:
    aggregated = {}
    for edge in sorted({rep.edge for rep in reports.values()}):
      answered = sorted(d for d, rep in reports.items() if rep.edge == edge)
      mixed = aggregate_edge(hp, [sent[d] for d in answered],
                             [signatures.get(d) for d in answered],
                             [reports[d].train_samples for d in answered])
      for d, mix in zip(answered, mixed):
        aggregated[d] = mix
        if ledger is not None:
          if d in asked and reports[d].signature is not None:
            ledger.send(('device', d), ('edge', edge), 'signature',
                        reports[d].signature, round=r)
          ledger.send(('device', d), ('edge', edge), 'importance', sent[d],
                      round=r)
          ledger.send(('edge', edge), ('device', d), 'importance',
                      state_lib.float32(mix), round=r)
  pruned = clients.finetune(r, sorted(reports), aggregated)
  return (EdgeState(r + 1, signatures),
          {'answered': sorted(reports), 'pruned': sorted(pruned),
           'sent': sent if hp.prunes else {}})


class EngineClients(Clients):
  """The devices of this process: their headers, trained through the
  client engine. A device's randomness is folded from `key`, the round and
  its id, so it does not depend on which devices run beside it."""

  def __init__(self, hp: RoundsHparams, cfg: nas.NasConfig,
               devices: Sequence[state_lib.DeviceHeader], key):
    self.hp, self.cfg, self.key = hp, cfg, key
    self.devices = list(devices)

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
    trained, importances = state_lib.train(self.cfg, self.hp.schedule, todo,
                                           epochs, key, self.hp.strategy)
    new = {d.device: d for d in trained}
    self.devices = [new.get(d.device, d) for d in self.devices]
    return {d.device: (d, imp) for d, imp in zip(trained, importances)}

  def train(self, r, devices, signature_from):
    trained = self._train(devices, self.hp.local_epochs, self._keys(r)[0])
    return {i: Report(
        edge=d.edge, importance=state_lib.float32(imp[self.hp.taylor]),
        train_samples=d.sizes['train'],
        signature=(np.asarray(d.signature, np.float32)
                   if i in signature_from else None))
            for i, (d, imp) in trained.items()}

  def finetune(self, r, devices, aggregated):
    if aggregated is not None:
      ratio = self.hp.ratio_after(r)
      self.devices = [state_lib.pruned(self.cfg, d, aggregated[d.device],
                                       ratio)
                      if d.device in aggregated else d for d in self.devices]
    return sorted(self._train(devices, self.hp.finetune_epochs,
                              self._keys(r)[1]))


def run(hp: RoundsHparams, cfg: nas.NasConfig,
        devices: Sequence[state_lib.DeviceHeader], key,
        ledger: Optional[Ledger] = None):
  """`hp.rounds` rounds on `devices` in this process. Returns (the devices'
  headers after them, device id -> the sha256 of the importances it sent
  in each round)."""
  if hp.mode not in choices.MODES:
    raise ValueError(f'unknown mode {hp.mode!r}; allowed: {choices.MODES}')
  if hp.taylor not in choices.TAYLOR:
    raise ValueError(f'unknown taylor criterion {hp.taylor!r}; allowed: '
                     f'{choices.TAYLOR}')
  clients = EngineClients(hp, cfg, devices, key)
  state = init()
  digests = {d.device: [] for d in devices}
  for _ in range(hp.rounds):
    state, out = apply(hp, state, clients, ledger)
    for d, importance in out['sent'].items():
      digests[d].append(state_lib.digest(importance))
  return clients.devices, digests
