"""Datasets: one `load_dataset(config.data)` for every source, and the cloud split."""
import numpy as np

from acme_jax.data.base import Dataset, Split

OFFLINE = ('digits', 'synthetic')
TFDS = ('cifar10', 'cifar100', 'cars196')
SUPPORTED = OFFLINE + TFDS


def load_dataset(data_config, seed: int) -> Dataset:
  if data_config.name == 'digits':
    from acme_jax.data import digits
    return digits.load(data_config.image_size)
  if data_config.name == 'synthetic':
    from acme_jax.data import synthetic
    s = data_config.synthetic
    return synthetic.load(s.like, data_config.image_size, seed,
                          num_train=s.num_train, num_test=s.num_test,
                          noise=s.noise,
                          validation_fraction=data_config.validation_fraction)
  if data_config.name in TFDS:
    from acme_jax.data import tfds_loader
    return tfds_loader.load(
        data_config.name, data_config.image_size, seed,
        validation_fraction=data_config.validation_fraction,
        data_dir=data_config.data_dir or None,
        max_examples_per_split=data_config.max_examples_per_split or None,
        source_size=data_config.get('source_size') or None)
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


# Image channels per dataset, needed before loading (config validation, plan).
_CHANNELS = {'digits': 1, 'cifar10': 3, 'cifar100': 3, 'cars196': 3}
NUM_CLASSES = {'digits': 10, 'cifar10': 10, 'cifar100': 100, 'cars196': 196}


def like(data_config) -> str:
  """The dataset whose shapes `data_config` has (a synthetic source's
  `like`)."""
  if data_config.name == 'synthetic':
    return data_config.synthetic.like
  return data_config.name


def channels(data_config) -> int:
  return _CHANNELS[like(data_config)]


def num_classes(data_config) -> int:
  return NUM_CLASSES[like(data_config)]


def train_examples(data_config) -> int:
  """Training-set size before the validation hold-out (TFDS, synthetic)."""
  if data_config.name == 'synthetic' and data_config.synthetic.num_train:
    return data_config.synthetic.num_train
  if data_config.name == 'synthetic':
    from acme_jax.data import synthetic
    return synthetic.SHAPES[like(data_config)][4]
  return TRAIN_EXAMPLES[data_config.name]

# Training-set sizes of the TFDS sources (and digits' fixed train split), for
# the plan tool, which sizes a run from shapes alone without loading data.
TRAIN_EXAMPLES = {'digits': 1257, 'cifar10': 50000, 'cifar100': 50000,
                  'cars196': 8144}

# Bytes one training sample takes as a device stores it (ACME.md 7), for the
# plan tool: digits 8x8 one byte per pixel; CIFAR 32x32x3 uint8; Cars the
# JPEG bytes TFDS stores, ~118 kB on average (its 1.85 GiB for 16,185 images).
NATIVE_SAMPLE_BYTES = {'digits': 64, 'cifar10': 3072, 'cifar100': 3072,
                       'cars196': 118_000}


def native_sample_bytes(data_config) -> int:
  return NATIVE_SAMPLE_BYTES[like(data_config)]
