"""Device <-> edge rounds of personalized architecture aggregation (ACME.md 6).

Round r: every device trains its header locally while accumulating Taylor
channel importance; its edge returns I'_k = sum_i W[k, i] I_i over the edge's
devices (W from the aggregation mode); each device prunes its lowest-I'_k
channels (the pruned fraction grows to `prune_ratio` over the rounds) and
fine-tunes. `wo_pruning` trains for the same number of epochs and never prunes.
Every exchange is recorded in the ledger when one is given.
"""
import dataclasses
from typing import List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax.device import header as header_lib
from acme_jax.device import nas, prune
from acme_jax.device.features import LocalFeatures
from acme_jax.edge import aggregate, similarity
from acme_jax.system.ledger import Ledger


@dataclasses.dataclass
class DeviceHeader:
  """One device's header and local data (cached backbone features)."""
  device: int
  edge: int
  header: header_lib.Header
  state: nas.ChildState
  arch: np.ndarray
  gates: np.ndarray
  data: LocalFeatures
  signature: Optional[np.ndarray] = None

  def header_params(self) -> int:
    x = self.data.x_train
    return prune.pruned_param_count(self.header, self.arch, self.gates,
                                    feature_dim=x.shape[-1],
                                    grid_rank=x.ndim - 2)

  def test_accuracy(self) -> float:
    steps = nas.child_steps(self.header)
    return nas.accuracy(steps, self.state, jnp.asarray(self.arch, jnp.int32),
                        jnp.asarray(self.gates), self.data.x_test,
                        self.data.y_test)


def run_rounds(devices: List[DeviceHeader], mode: str, *, rounds: int,
               prune_ratio: float, local_epochs: int, finetune_epochs: int,
               key, signature_kind: str = 'features', temperature: float = 1.0,
               self_weight: Optional[float] = None,
               ledger: Optional[Ledger] = None, train_kwargs=None):
  """Runs `rounds` rounds of `mode` in place on `devices`; returns them."""
  if mode not in similarity.MODES:
    raise ValueError(f'unknown mode {mode!r}; allowed: {similarity.MODES}')
  train_kwargs = dict(train_kwargs or {})
  personalized = mode in ('pruning_per_js', 'pruning_per_emd')
  for r in range(rounds):
    importances = {}
    for d in devices:
      key, sub = jax.random.split(key)
      importances[d.device], d.state = prune.taylor_importance(
          d.header, d.state, d.arch, d.data.x_train, d.data.y_train,
          epochs=local_epochs, key=sub, gates=d.gates, **train_kwargs)
    if mode == 'wo_pruning':
      for d in devices:
        key, sub = jax.random.split(key)
        d.state = nas.train_header(d.header, d.state, d.arch, d.gates,
                                   d.data.x_train, d.data.y_train,
                                   epochs=finetune_epochs, key=sub,
                                   **train_kwargs)
      continue
    aggregated = {}
    for edge in sorted({d.edge for d in devices}):
      members = [d for d in devices if d.edge == edge]
      weights = similarity.mode_weights(
          mode, signatures=[m.signature for m in members] if personalized
          else None, data_sizes=[len(m.data.y_train) for m in members],
          num_devices=len(members), signature_kind=signature_kind,
          temperature=temperature, self_weight=self_weight)
      stacked = np.stack([importances[m.device] for m in members])
      result = np.asarray(aggregate.aggregate_importances(
          jnp.asarray(weights, jnp.float32), jnp.asarray(stacked)))
      for k, m in enumerate(members):
        aggregated[m.device] = result[k]
        if ledger is not None:
          if personalized and r == 0:
            ledger.send(('device', m.device), ('edge', edge), 'signature',
                        np.asarray(m.signature, np.float32), round=r)
          ledger.send(('device', m.device), ('edge', edge), 'importance',
                      importances[m.device].astype(np.float32), round=r)
          ledger.send(('edge', edge), ('device', m.device), 'importance',
                      result[k].astype(np.float32), round=r)
    ratio = prune_ratio * (r + 1) / rounds
    for d in devices:
      key, sub = jax.random.split(key)
      out = prune.prune_and_finetune(
          d.header, d.state, d.arch, aggregated[d.device], ratio,
          d.data.x_train, d.data.y_train, d.data.x_val, d.data.y_val,
          epochs=finetune_epochs, key=sub,
          current_gates=d.gates, **train_kwargs)
      d.gates, d.state = out['gates'], out['state']
  return devices
