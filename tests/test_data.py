"""The cloud/devices cut of the training set."""
import numpy as np
import pytest

from acme_jax import data as data_lib
from acme_jax.data import digits


def test_cloud_and_devices_are_disjoint_and_cover_train():
  ds = digits.load(8)
  cloud, devices = data_lib.cloud_device_split(ds.train, 0.5, seed=3)
  assert not set(cloud.index) & set(devices.index)
  assert sorted(np.concatenate([cloud.index, devices.index])) == sorted(
      ds.train.index)
  # ... and no training sample is also a validation or test sample.
  held_out = set(ds.validation.index) | set(ds.test.index)
  assert not (set(cloud.index) | set(devices.index)) & held_out
  # Stratified: every class is split about in half.
  for c in range(10):
    n_cloud = np.sum(cloud.labels == c)
    n_all = np.sum(ds.train.labels == c)
    assert abs(n_cloud - n_all / 2) <= 1
  # Labels travel with their images.
  by_index = dict(zip(ds.train.index, ds.train.labels))
  assert all(by_index[i] == l for i, l in zip(cloud.index, cloud.labels))


def test_cloud_split_is_seeded():
  ds = digits.load(8)
  a, _ = data_lib.cloud_device_split(ds.train, 0.3, seed=1)
  b, _ = data_lib.cloud_device_split(ds.train, 0.3, seed=1)
  c, _ = data_lib.cloud_device_split(ds.train, 0.3, seed=2)
  np.testing.assert_array_equal(a.index, b.index)
  assert set(a.index) != set(c.index)


def test_raw_bytes_are_counted_as_the_device_stores_them():
  """A digit is 8x8 one-byte values on a device, whatever resolution the
  model upsamples it to: 64 bytes + a 4-byte label (docs/method.md 7)."""
  ds = digits.load(16)
  assert ds.input_spec.image_size == 16
  part = ds.train.take(np.arange(10))
  assert part.raw_bytes() == 10 * (8 * 8 + 4)


@pytest.mark.slow  # ~25 s here: the 10-minute budget of the default suite
def test_synthetic_source_has_the_shapes_and_learnable_classes():
  from acme_jax.data import synthetic
  ds = synthetic.load('cifar100', 32, seed=3, num_train=2000, num_test=500)
  assert ds.num_classes == 100 and ds.image_shape == (32, 32, 3)
  assert ds.train.images.dtype == np.uint8
  assert len(ds.train) + len(ds.validation) == 2000 and len(ds.test) == 500
  again = synthetic.load('cifar100', 32, seed=3, num_train=2000, num_test=500)
  np.testing.assert_array_equal(ds.train.images, again.train.images)
  # Learnable: nearest class template (by mean distance) beats chance by far.
  templates = synthetic.templates('cifar100', seed=3)
  x = ds.test.images.astype(np.float32)
  dist = ((x[:, None] - templates[None]) ** 2).mean(axis=(2, 3, 4))
  assert np.mean(dist.argmin(1) == ds.test.labels) > 0.5  # chance 0.01
  full = synthetic.load('cifar100', 224, seed=0, num_train=100, num_test=100)
  assert full.input_spec.prepare(full.train.images[:2]).shape == (2, 224, 224,
                                                                  3)
