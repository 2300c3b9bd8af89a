"""A device's header after the search, and the steps a device runs on it
(ACME.md 5, 6): training a fixed architecture with Taylor importance on its
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
from acme_jax.device import local_data, nas, prune
from acme_jax.device.local_data import Padded, index_batches, split_rows
from acme_jax.parallel import engine

@dataclasses.dataclass(frozen=True)
class DeviceHeader:
  """One device's header (its `nas.DeviceState`: weights, arch, layer
  count, gates), peak learning rate, cached data and data signature."""
  device: int
  edge: int
  state: nas.DeviceState
  lr: float                        # peak learning rate chosen at fine-tuning
  data: local_data.DeviceData      # padded cached features (engine consts)
  sizes: dict                      # real rows per split
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


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How a fixed architecture trains (fine-tuning, the rounds): minibatches
  of `batch_size`, and per epoch the prototype's SGDR from a peak rate down
  to `lr_min` (first cycle `lr_period` epochs, each next `lr_period_mult`
  times longer)."""
  batch_size: int = 128
  lr_min: float = 5e-4
  lr_period: int = 10
  lr_period_mult: int = 2


def train_fixed(cfg: nas.NasConfig, states: Sequence[nas.DeviceState],
                padded: Padded, keys, schedule: Schedule, epochs: int,
                lr_max, strategy: str = 'auto') -> List[nas.DeviceState]:
  """Train each state's fixed arch with its fixed gates (fine-tuning and the
  rounds' local training) for `epochs`; `lr_max` is one peak or one per
  device. The returned states' Taylor sums cover exactly these steps
  (`importance`)."""
  p = nas.programs(cfg)
  peaks = (list(lr_max) if isinstance(lr_max, (list, tuple, np.ndarray))
           else [lr_max] * len(states))
  batches = []
  for n, key, peak in zip(padded.sizes, keys, peaks):
    rng = nas.seeded_rng(key, streams.TRAIN_BATCHES)
    device = []
    for epoch in range(epochs):
      lr = np.float32(nas.sgdr(epoch, peak, schedule.lr_min, schedule.lr_period,
                           schedule.lr_period_mult))
      device += index_batches(split_rows(n, 'train'), schedule.batch_size,
                              rng, lr=lr, sample=np.int32(0))
    batches.append(device)
  zeros = jax.tree.map(jnp.zeros_like, states[0].taylor_squared)
  start = [s._replace(key=jax.random.fold_in(k, streams.TRAIN_STATE),
                      taylor_squared=zeros, taylor_linear=zeros,
                      steps=jnp.zeros(()))
           for s, k in zip(states, keys)]
  return engine.for_each_device(nas.identity, p.train_step, nas.identity, start,
                                batches, device_consts=padded.data,
                                strategy=strategy)


def importance(state: nas.DeviceState) -> dict:
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


def train(cfg: nas.NasConfig, schedule: Schedule,
          devices: Sequence[DeviceHeader], epochs: int, key, strategy):
  """Trains every device for `epochs` with its gates, each from its own
  peak rate; returns (trained headers, their Taylor importances)."""
  states = train_fixed(
      cfg, [d.state for d in devices], padded(devices),
      [jax.random.fold_in(key, d.device) for d in devices], schedule,
      epochs, [d.lr for d in devices], strategy)
  trained = [dataclasses.replace(d, state=s) for d, s in zip(devices, states)]
  return trained, [importance(s) for s in states]


def test_accuracy(cfg: nas.NasConfig, devices: Sequence[DeviceHeader],
                  batch_size: int, strategy) -> np.ndarray:
  return nas.evaluate(cfg, [d.state for d in devices], padded(devices),
                      'test', batch_size, strategy)


def prune_ratio_at(prune_ratio: float, r: int, rounds: int) -> float:
  """Share of active channels off after round `r` (a linear ramp)."""
  return prune_ratio * (r + 1) / rounds


def pruned(cfg: nas.NasConfig, device: DeviceHeader, aggregated,
           ratio: float) -> DeviceHeader:
  """`device` with its lowest-importance gate channels off, up to `ratio`
  of the channels its architecture uses."""
  gates = prune.prune_gates(
      aggregated, prune.active_gates(cfg.spec, device.arch, device.n_layers),
      ratio, device.gates)
  return dataclasses.replace(device, state=device.state._replace(
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
