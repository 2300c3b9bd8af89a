"""A device's header after the search, and the steps a device runs on it
(docs/method.md 5, 6): training a fixed architecture with Taylor importance on its
gates (fine-tuning, the rounds), pruning by aggregated importance, testing.

`DeviceHeader` is a value: every step returns new headers. Steps take many
devices at once and run them through the client engine (one program for
every device, architecture and pruning state); each device's randomness is
folded from its id, so results do not depend on the engine strategy or on
which devices run beside it.
"""
import dataclasses
import hashlib
from typing import List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import streams
from acme_jax.device import header as header_lib
from acme_jax.device import local_data, prune
from acme_jax.device import child as child_lib
from acme_jax.device.local_data import Padded, index_batches, split_rows
from acme_jax.parallel import engine

@dataclasses.dataclass(frozen=True)
class DeviceHeader:
  """One device's header (its `child_lib.DeviceState`: weights, arch, layer
  count, gates), peak learning rate, cached data and data signature."""
  device: int
  edge: int
  state: child_lib.DeviceState
  lr: float                        # peak learning rate chosen at fine-tuning
  data: local_data.DeviceData      # padded cached features (engine consts)
  sizes: dict                      # real rows per split
  signature: Optional[np.ndarray] = None
  result: dict = dataclasses.field(default_factory=dict)  # what NAS found
  start: int = 0          # the seed its weights started from (`layout`)
  criterion: Optional[dict] = None  # pruning criterion smoothed over rounds

  @property
  def layout(self) -> prune.Layout:
    return prune.Layout(self.start, self.n_layers, self.arch)

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


SCHEDULES = ('cosine', 'sgdr', 'constant')


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How a fixed architecture trains (the final training, the rounds):
  minibatches of `batch_size`, and the learning rate from each device's
  peak: 'cosine' anneals per step to `lr_min` at the device's last step;
  'sgdr' is the prototype's per-epoch cosine with warm restarts (first
  cycle `lr_period` epochs, each next `lr_period_mult` times longer);
  'constant' keeps the peak."""
  batch_size: int = 128
  lr_min: float = 5e-4
  lr_period: int = 10
  lr_period_mult: int = 2
  kind: str = 'cosine'

  def rates(self, peak: float, epochs: int, batches_per_epoch: int):
    """The learning rate of every step, epoch by epoch."""
    if self.kind not in SCHEDULES:
      raise ValueError(f'schedule must be one of {SCHEDULES}, got '
                       f'{self.kind!r}')
    if self.kind == 'constant':
      return [[peak] * batches_per_epoch for _ in range(epochs)]
    if self.kind == 'sgdr':
      return [[child_lib.sgdr(e, peak, self.lr_min, self.lr_period,
                        self.lr_period_mult)] * batches_per_epoch
              for e in range(epochs)]
    last = max(epochs * batches_per_epoch - 1, 1)
    return [[self.lr_min + 0.5 * (peak - self.lr_min) * (
        1 + np.cos(np.pi * (e * batches_per_epoch + b) / last))
             for b in range(batches_per_epoch)] for e in range(epochs)]


def steps(sizes: dict, batch_size: int, epochs: int) -> int:
  """Optimizer steps of `epochs` over a device's train split."""
  return epochs * -(-sizes['train'] // batch_size)


def train_fixed(cfg: child_lib.NasConfig, states: Sequence[child_lib.DeviceState],
                padded: Padded, keys, schedule: Schedule, epochs: int,
                lr_max, strategy: str = 'auto') -> List[child_lib.DeviceState]:
  """Train each state's fixed arch with its fixed gates (fine-tuning and the
  rounds' local training) for `epochs`; `lr_max` is one peak or one per
  device. The returned states' Taylor sums cover exactly these steps
  (`importance`)."""
  p = child_lib.programs(cfg)
  peaks = (list(lr_max) if isinstance(lr_max, (list, tuple, np.ndarray))
           else [lr_max] * len(states))
  batches = []
  for n, key, peak in zip(padded.sizes, keys, peaks):
    rng = child_lib.seeded_rng(key, streams.TRAIN_BATCHES)
    rates = schedule.rates(peak, epochs,
                           steps(n, schedule.batch_size, 1))
    device = []
    for epoch in range(epochs):
      epoch_batches = index_batches(split_rows(n, 'train'),
                                    schedule.batch_size, rng,
                                    sample=np.int32(0))
      for batch, lr in zip(epoch_batches, rates[epoch]):
        batch['lr'] = np.float32(lr)
      device += epoch_batches
    batches.append(device)
  zeros = jax.tree.map(jnp.zeros_like, states[0].taylor_squared)
  start = [s._replace(key=jax.random.fold_in(k, streams.TRAIN_STATE),
                      taylor_squared=zeros, taylor_linear=zeros,
                      steps=jnp.zeros(()))
           for s, k in zip(states, keys)]
  return engine.for_each_device(child_lib.identity, p.train_step, child_lib.identity, start,
                                batches, device_consts=padded.data,
                                strategy=strategy)


def importance(state: child_lib.DeviceState) -> dict:
  """{'squared': mean over minibatches of (g dL/dg)^2 (NVlabs), 'abs_sum':
  |sum of g dL/dg| / minibatches}, each shaped like the gates."""
  steps = max(float(state.steps), 1.0)
  return {'squared': jax.tree.map(lambda v: np.asarray(v) / steps,
                                  state.taylor_squared),
          'abs_sum': jax.tree.map(lambda v: np.abs(np.asarray(v)) / steps,
                                  state.taylor_linear)}


def padded(devices: Sequence[DeviceHeader]) -> local_data.Padded:
  return local_data.Padded([d.data for d in devices],
                           [d.sizes for d in devices])


def train(cfg: child_lib.NasConfig, schedule: Schedule,
          devices: Sequence[DeviceHeader], epochs: int, key, strategy):
  """Trains every device for `epochs` with its gates, each from its own
  peak rate; returns (trained headers, their Taylor importances)."""
  states = train_fixed(
      cfg, [d.state for d in devices], padded(devices),
      [jax.random.fold_in(key, d.device) for d in devices], schedule,
      epochs, [d.lr for d in devices], strategy)
  trained = [dataclasses.replace(d, state=s) for d, s in zip(devices, states)]
  return trained, [importance(s) for s in states]


def test_accuracy(cfg: child_lib.NasConfig, devices: Sequence[DeviceHeader],
                  strategy) -> np.ndarray:
  """Each device's accuracy on its whole test split (`child_lib.evaluate`)."""
  return child_lib.evaluate(cfg, [d.state for d in devices], padded(devices),
                      'test', strategy)


def prune_ratio_at(prune_ratio: float, r: int, rounds: int) -> float:
  """Share of active channels off after round `r` (a linear ramp)."""
  return prune_ratio * (r + 1) / rounds


def pruned(cfg: child_lib.NasConfig, device: DeviceHeader, criterion,
           ratio: float, separable_only: bool = False) -> DeviceHeader:
  """`device` with its lowest-`criterion` gate channels off, up to `ratio`
  of the channels it may prune (all it uses, or its separable convs'), and
  the criterion kept (`criterion`, for smoothing over rounds)."""
  gates = prune.prune_gates(
      criterion, prune.active_gates(cfg.spec, device.arch, device.n_layers),
      ratio, device.gates, prunable=prune.active_gates(
          cfg.spec, device.arch, device.n_layers, separable_only))
  return dataclasses.replace(device, criterion=criterion,
                             state=device.state._replace(
                                 gates=jax.tree.map(jnp.asarray, gates)))


def live_gate_channels(device: DeviceHeader) -> int:
  return int(sum(np.sum(np.asarray(g) > 0)
                 for g in jax.tree.leaves(device.gates)))


def float32(tree):
  """A pytree as float32 numpy arrays, as it travels between tiers."""
  return jax.tree.map(lambda a: np.asarray(a, np.float32), tree)


def digest(tree) -> str:
  """sha256 of a pytree's leaves as float32 bytes, in tree order: runs that
  move the same numbers (in-process or over the network) agree on it."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    h.update(np.ascontiguousarray(leaf, np.float32).tobytes())
  return h.hexdigest()


def header_params(spec: header_lib.Spec,
                  devices: Sequence[DeviceHeader]) -> List[int]:
  return [d.header_params(spec) for d in devices]
