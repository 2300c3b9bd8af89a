"""Datasets: one `load_dataset(config.data)` for every source, and the cloud split."""
import numpy as np

from acme_jax.data.base import Dataset, Split

OFFLINE = ('digits',)
TFDS = ('cifar10', 'cifar100', 'cars196')
SUPPORTED = OFFLINE + TFDS


def load_dataset(data_config, seed: int) -> Dataset:
  if data_config.name == 'digits':
    from acme_jax.data import digits
    return digits.load(data_config.image_size)
  if data_config.name in TFDS:
    from acme_jax.data import tfds_loader
    return tfds_loader.load(
        data_config.name, data_config.image_size, seed,
        validation_fraction=data_config.validation_fraction,
        data_dir=data_config.data_dir or None,
        max_examples_per_split=data_config.max_examples_per_split or None)
  raise ValueError(f'unknown dataset {data_config.name!r}; allowed: {SUPPORTED}')


def cloud_device_split(train: Split, cloud_fraction: float, seed: int):
  """(cloud's split, the devices' share): a seeded, stratified, disjoint cut of train."""
  rng = np.random.default_rng(seed)
  cloud, devices = [], []
  for label in np.unique(train.labels):
    members = rng.permutation(np.flatnonzero(train.labels == label))
    n_cloud = int(round(cloud_fraction * len(members)))
    cloud.append(members[:n_cloud])
    devices.append(members[n_cloud:])
  cloud = rng.permutation(np.concatenate(cloud))
  devices = rng.permutation(np.concatenate(devices))
  return train.take(cloud), train.take(devices)
