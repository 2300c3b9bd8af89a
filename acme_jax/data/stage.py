"""The data tier of the loop (docs/method.md 1, 6): the dataset, the cloud's share
of its training set, and each device's local (train, val, test) splits.

Devices own disjoint samples of the rest of train, partitioned by a non-IID
scheme (`PartitionHparams`); nothing here moves raw data between tiers.
"""
import dataclasses
from typing import Optional

import numpy as np

from acme_jax import data as data_lib
from acme_jax import sizes
from acme_jax.data import partition
from acme_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PartitionHparams:
  """How the devices' share of train is split among them (config.system)."""
  num_devices: int
  scheme: str
  seed: int
  dirichlet_alpha: float = 0.5
  shards_per_device: int = 2
  fraction_per_class: float = 0.1
  val_fraction: float = 0.2
  test_fraction: float = 0.2
  independent: bool = False     # category setups: each device sampled apart

  @classmethod
  def from_config(cls, config, scheme: Optional[str] = None,
                  fraction_per_class: Optional[float] = None,
                  seed: Optional[int] = None) -> 'PartitionHparams':
    """config.system's partition; a setup of the aggregation experiment
    overrides its scheme and fraction, a repeat its seed."""
    system = config.system
    return cls(num_devices=sizes.num_devices(config),
               scheme=scheme or system.partition,
               seed=config.seed if seed is None else seed,
               dirichlet_alpha=system.dirichlet_alpha,
               shards_per_device=system.shards_per_device,
               fraction_per_class=fraction_per_class or
               system.fraction_per_class,
               val_fraction=system.local_val_fraction,
               test_fraction=system.local_test_fraction,
               independent=system.category_sampling == 'independent')


def load(config, log=print):
  """(dataset, the cloud's split, the devices' share of train)."""
  dataset = data_lib.load_dataset(config.data, config.seed,
                                 config.model.init_checkpoint)
  cloud_data, device_data = data_lib.cloud_device_split(
      dataset.train, config.data.cloud_fraction, config.seed)
  log(f'[data] {dataset.name}: {len(dataset.train)} train '
      f'({len(cloud_data)} cloud, {len(device_data)} devices), '
      f'{len(dataset.validation)} validation, {len(dataset.test)} test')
  return dataset, cloud_data, device_data


def device_indices(hp: PartitionHparams, labels, num_classes: int) -> list:
  """Each device's indices into `labels` (sorted, int64)."""
  return partition.partition(
      labels, hp.num_devices, hp.scheme, hp.seed,
      partition.SchemeOptions(alpha=hp.dirichlet_alpha,
                              shards_per_device=hp.shards_per_device,
                              fraction_per_class=hp.fraction_per_class,
                              independent=hp.independent),
      num_classes=num_classes)


def device_splits(hp: PartitionHparams, device_data, num_classes: int):
  """Each device's local (train, val, test) Splits."""
  splits = []
  for device, idx in enumerate(device_indices(hp, device_data.labels,
                                              num_classes)):
    local = partition.local_splits(idx, device_data.labels, hp.seed + device,
                                   hp.val_fraction, hp.test_fraction)
    splits.append(tuple(device_data.take(i) for i in local))
  return splits


def check_cloud_batch(config, cloud_data):
  """The cloud's batch must fit its share of the data: a larger one would
  silently shrink to it, and with it every schedule's steps per epoch."""
  if config.cloud.batch_size > len(cloud_data):
    raise ConfigError('cloud.batch_size', config.cloud.batch_size,
                      f'must be at most {len(cloud_data)}, the cloud\'s '
                      f'training samples')


def check_partition(hp: PartitionHparams, device_data, num_classes: int,
                    field: str = 'system.partition'):
  """The devices' splits, as the run will make them (cheap: labels only);
  any impossibility is one ConfigError naming `field`, before any training:
  too many devices for the samples, a category setup that leaves a device
  without data, a device without a validation or test sample (the header
  search and its test need both)."""
  try:
    splits = device_splits(hp, device_data, num_classes)
  except ValueError as e:
    raise ConfigError(field, hp.scheme, f'cannot split the devices\' '
                      f'{len(device_data)} samples among {hp.num_devices} '
                      f'devices: {e}') from e
  for device, (train, val, test) in enumerate(splits):
    if not (len(train) and len(val) and len(test)):
      raise ConfigError(
          field, hp.scheme, f'device {device} gets {len(train)}/{len(val)}/'
          f'{len(test)} train/val/test samples; every device needs at least '
          f'one of each (fewer devices, or larger local fractions)')
  return splits


def class_matched_test(splits, test):
  """Each device's test set: the held-out test samples of its own classes.

  Category setups leave each device ~10 local test samples, too few to
  separate the modes; the test split restricted to the device's classes has
  the same label support and several times more samples.
  """
  out = []
  for train, val, _ in splits:
    keep = np.flatnonzero(np.isin(test.labels, np.unique(train.labels)))
    out.append((train, val, test.take(keep)))
  return out
