"""Device <-> edge rounds of personalized architecture aggregation (ACME.md 6).

Round r: every device trains its header locally while accumulating Taylor
importance on its gates; its edge returns I'_k = sum_i W[k, i] I_i over the
edge's devices (W from the aggregation mode); each device turns off its
lowest-I'_k gate channels until `prune_ratio * (r + 1) / rounds` of the
channels its architecture uses are off, and fine-tunes with the gates fixed.
`wo_pruning` trains for the same number of epochs and never prunes.

All devices' training runs through the client engine (one program for every
device, architecture and pruning state); each device's randomness is folded
from its id, so results do not depend on the engine strategy or on which
devices run beside it. Every exchange is recorded in the ledger when one is
given.
"""
import dataclasses
import hashlib
from typing import List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax.device import header as header_lib
from acme_jax.device import local_data, nas, prune
from acme_jax.edge import aggregate, similarity
from acme_jax.system.ledger import Ledger

TAYLOR = ('squared', 'abs_sum')


@dataclasses.dataclass(frozen=True)
class TrainSchedule:
  """How the rounds train: batch size and the SGDR schedule of each phase
  (its peak is each device's own fine-tuning learning rate)."""
  batch_size: int = 128
  lr_min: float = 5e-4
  lr_period: int = 10
  lr_period_mult: int = 2


@dataclasses.dataclass
class DeviceHeader:
  """One device's searched header (its `nas.DeviceState`: weights, arch,
  layer count, gates), learning rate, cached data and signature."""
  device: int
  edge: int
  state: nas.DeviceState
  lr: float                 # peak learning rate chosen at fine-tuning
  data: local_data.DeviceData      # padded cached features (engine consts)
  sizes: dict               # real rows per split
  signature: Optional[np.ndarray] = None
  result: dict = dataclasses.field(default_factory=dict)  # what NAS found

  @property
  def arch(self) -> np.ndarray:
    return np.asarray(self.state.arch)

  @property
  def n_layers(self) -> int:
    return int(self.state.n_layers)

  @property
  def gates(self) -> dict:
    return jax.tree.map(np.asarray, self.state.gates)

  def header_params(self, spec: header_lib.Spec) -> int:
    return int(header_lib.param_count(spec, self.arch, self.n_layers,
                                      self.gates))


def train(cfg: nas.NasConfig, schedule: TrainSchedule, devices, epochs: int,
          key, strategy: str):
  """Trains every device for `epochs` with its gates; returns importances."""
  states = nas.train_fixed(
      cfg, [d.state for d in devices], [d.data for d in devices],
      [d.sizes for d in devices],
      [jax.random.fold_in(key, d.device) for d in devices], epochs=epochs,
      batch_size=schedule.batch_size, lr_max=[d.lr for d in devices],
      lr_min=schedule.lr_min, lr_period=schedule.lr_period,
      lr_period_mult=schedule.lr_period_mult, strategy=strategy)
  for d, state in zip(devices, states):
    d.state = state
  return [nas.importance(s) for s in states]


def test_accuracy(cfg: nas.NasConfig, devices, batch_size: int,
                  strategy: str) -> np.ndarray:
  return nas.evaluate(cfg, [d.state for d in devices],
                      [d.data for d in devices], [d.sizes for d in devices],
                      'test', batch_size, strategy)


def check_mode(mode: str, taylor: str = 'squared'):
  if mode not in similarity.MODES:
    raise ValueError(f'unknown mode {mode!r}; allowed: {similarity.MODES}')
  if taylor not in TAYLOR:
    raise ValueError(f'unknown taylor criterion {taylor!r}; allowed: {TAYLOR}')


def is_personalized(mode: str) -> bool:
  return mode in ('pruning_per_js', 'pruning_per_emd')


def round_keys(key, r: int):
  """(local training key, fine-tuning key) of round `r`."""
  round_key = jax.random.fold_in(key, r)
  return jax.random.fold_in(round_key, 0), jax.random.fold_in(round_key, 1)


def prune_ratio_at(prune_ratio: float, r: int, rounds: int) -> float:
  """Share of active channels off after round `r` (a linear ramp)."""
  return prune_ratio * (r + 1) / rounds


def aggregate_edge(mode: str, own: list, signatures, data_sizes, *,
                   signature_kind: str = 'features', temperature: float = 1.0,
                   self_weight: Optional[float] = None,
                   js_variant: str = 'standard') -> list:
  """One edge's step: its devices' importances `own` (in member order) ->
  each member's I'_k = sum_i W[k, i] I_i, W from the aggregation mode."""
  weights = similarity.mode_weights(
      mode, signatures=signatures if is_personalized(mode) else None,
      data_sizes=data_sizes, num_devices=len(own),
      signature_kind=signature_kind, temperature=temperature,
      self_weight=self_weight, js_variant=js_variant)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *own)
  mixed = aggregate.aggregate_importances(jnp.asarray(weights, jnp.float32),
                                          stacked)
  return [jax.tree.map(lambda a: np.asarray(a[k]), mixed)
          for k in range(len(own))]


def prune_device(cfg: nas.NasConfig, device: DeviceHeader, aggregated,
                 ratio: float):
  """Turns off `device`'s lowest-I'_k gate channels up to `ratio`."""
  gates = prune.prune_gates(
      aggregated, prune.active_gates(cfg.spec, device.arch, device.n_layers),
      ratio, device.gates)
  device.state = device.state._replace(gates=jax.tree.map(jnp.asarray, gates))


def run_rounds(cfg: nas.NasConfig, schedule: TrainSchedule,
               devices: List[DeviceHeader], mode: str, *, rounds: int,
               prune_ratio: float, local_epochs: int, finetune_epochs: int,
               key, signature_kind: str = 'features',
               temperature: float = 1.0, self_weight: Optional[float] = None,
               js_variant: str = 'standard', taylor: str = 'squared',
               ledger: Optional[Ledger] = None, strategy: str = 'auto'):
  """Runs `rounds` rounds of `mode` in place on `devices`; returns them.

  Each device's `result['importance_sha256']` lists, per round, a digest of
  the importances it sent (float32 bytes): runs that move the same numbers
  (in-process or over the network) have equal digests."""
  check_mode(mode, taylor)
  personalized = is_personalized(mode)
  for d in devices:
    d.result['importance_sha256'] = []
  for r in range(rounds):
    train_key, finetune_key = round_keys(key, r)
    importances = train(cfg, schedule, devices, local_epochs, train_key,
                        strategy)
    if mode == 'wo_pruning':
      train(cfg, schedule, devices, finetune_epochs, finetune_key, strategy)
      continue
    own = {d.device: _float32(imp[taylor])
           for d, imp in zip(devices, importances)}
    for d in devices:
      d.result['importance_sha256'].append(digest(own[d.device]))
    aggregated = {}
    for edge in sorted({d.edge for d in devices}):
      members = [d for d in devices if d.edge == edge]
      mixed = aggregate_edge(
          mode, [own[m.device] for m in members],
          [m.signature for m in members],
          [m.sizes['train'] for m in members], signature_kind=signature_kind,
          temperature=temperature, self_weight=self_weight,
          js_variant=js_variant)
      for m, mix in zip(members, mixed):
        aggregated[m.device] = mix
        if ledger is not None:
          if personalized and r == 0:
            ledger.send(('device', m.device), ('edge', edge), 'signature',
                        np.asarray(m.signature, np.float32), round=r)
          ledger.send(('device', m.device), ('edge', edge), 'importance',
                      own[m.device], round=r)
          ledger.send(('edge', edge), ('device', m.device), 'importance',
                      _float32(mix), round=r)
    ratio = prune_ratio_at(prune_ratio, r, rounds)
    for d in devices:
      prune_device(cfg, d, aggregated[d.device], ratio)
    train(cfg, schedule, devices, finetune_epochs, finetune_key, strategy)
  return devices


def digest(tree) -> str:
  """sha256 of a pytree's leaves as float32 bytes, in tree order."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    h.update(np.ascontiguousarray(leaf, np.float32).tobytes())
  return h.hexdigest()


def _float32(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float32), tree)
