"""What a federated baseline is, as data: its hyper-parameters
(`config.federated`) and what distinguishes it from the others."""
import dataclasses
from typing import NamedTuple

from acme_jax.parallel import engine


@dataclasses.dataclass(frozen=True)
class FederatedHparams:
  """config.federated, typed."""
  rounds: int
  local_epochs: int
  cloud_every: int            # the cloud averages the edges every k rounds
  batch_size: int
  lrs: tuple                  # peak rates tried; the best on validation
  lr: float                   # the peak rate of this run (one of lrs)
  momentum: float
  weight_decay: float
  finetune_epochs: int        # FedAvg's local fine-tuning at the end
  kd_weight: float            # FjORD's self-distillation weight
  kd_temperature: float       # FjORD's and DepthFL's distillation
  strategy: engine.Options
  seed: int

  @classmethod
  def from_config(cls, config) -> 'FederatedHparams':
    federated = config.federated
    return cls(rounds=federated.rounds, local_epochs=federated.local_epochs,
               cloud_every=federated.cloud_every,
               batch_size=federated.batch_size, lrs=tuple(federated.lrs),
               lr=federated.lrs[0],
               momentum=federated.momentum,
               weight_decay=federated.weight_decay,
               finetune_epochs=federated.finetune_epochs,
               kd_weight=federated.kd_weight,
               kd_temperature=federated.kd_temperature,
               strategy=engine.options(config), seed=config.seed)


class Method(NamedTuple):
  """What distinguishes a baseline."""
  name: str
  loss: str = 'plain'             # plain | depthfl (exits, distillation)
  weighting: str = 'samples'      # holders weighted by samples | count
  personal: tuple = ()            # top-level params that never leave
  finetune: bool = False          # local fine-tuning after the rounds
  scaler: bool = False            # HeteroFL's 1/rate in training
  label_split: bool = False       # HeteroFL's masked cross-entropy
  fjord_kd: bool = False          # FjORD's self-distillation
