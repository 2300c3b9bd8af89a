"""Tests for the TFDS loader (under tfds.testing.mock_data) and digits."""
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from acme_jax.data import digits
from acme_jax.data import tfds_loader

N = 24          # mock examples per TFDS split
SIZE = 12       # the model's input side
CARS_SIDE = 20  # stored side of the variable-size Cars images
VAL_FRACTION = 0.25
STORED = {'cifar10': (32, 32, 3), 'cifar100': (32, 32, 3),
          'cars196': (CARS_SIDE, CARS_SIDE, 3)}


def _load(name, seed=0, **kwargs):
  with tfds.testing.mock_data(num_examples=N):
    return tfds_loader.load(name, SIZE, seed, VAL_FRACTION, **kwargs)


def _source_image(name, split, index):
  with tfds.testing.mock_data(num_examples=N):
    return tfds.data_source(name, split=split, download=False)[int(index)]


@pytest.fixture(scope='module', params=tfds_loader.SUPPORTED)
def loaded(request):
  return request.param, _load(request.param, source_size=CARS_SIDE)


def test_shapes_dtypes_range(loaded):
  name, ds = loaded
  assert ds.name == name
  assert ds.num_classes == tfds_loader.NUM_CLASSES[name]
  assert ds.image_shape == STORED[name]  # as stored, not the model's side
  assert ds.input_spec.image_size == SIZE
  n_val = int(round(VAL_FRACTION * N))
  for split, n, source in ((ds.train, N - n_val, 'train'),
                           (ds.validation, n_val, 'train'),
                           (ds.test, N, 'test')):
    assert len(split) == n
    assert split.images.shape == (n,) + STORED[name]
    assert split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32
    assert split.index.dtype == np.int64
    assert split.source == source
    model_input = np.asarray(ds.input_spec.prepare(split.images))
    assert model_input.shape == (n, SIZE, SIZE, 3)
    assert model_input.min() >= -1.0 and model_input.max() <= 1.0
    assert model_input.min() < 0.0 < model_input.max()
    assert split.labels.min() >= 0
    assert split.labels.max() < ds.num_classes


def test_train_validation_disjoint_and_cover(loaded):
  _, ds = loaded
  train, val = set(ds.train.index), set(ds.validation.index)
  assert not train & val
  assert train | val == set(range(N))
  assert sorted(ds.test.index) == list(range(N))


def test_samples_match_source(loaded):
  """Each sample is its source example as stored (uint8); the model's input
  is it resized like jax.image.resize and normalised, per batch."""
  name, ds = loaded
  for split, positions in ((ds.train, (0, -1)), (ds.validation, (0,)),
                           (ds.test, (0,))):
    for pos in positions:
      ex = _source_image(name, split.source, split.index[pos])
      assert split.labels[pos] == int(ex['label'])
      if name == 'cars196':
        continue  # variable sizes: stored resized (test_cars196_...)
      np.testing.assert_array_equal(split.images[pos], ex['image'])
      image = ex['image'].astype(np.float32)[None]
      want = jax.image.resize(image, (1, SIZE, SIZE, 3), 'bilinear')[0]
      want = (np.asarray(want) / 255.0 - 0.5) / 0.5
      got = ds.input_spec.prepare(split.images[[pos]])[0]
      np.testing.assert_allclose(got, want, atol=1e-5)


def test_deterministic_in_seed():
  a, b, c = _load('cifar10', 3), _load('cifar10', 3), _load('cifar10', 4)
  for split in ('train', 'validation', 'test'):
    sa, sb, sc = (getattr(d, split) for d in (a, b, c))
    np.testing.assert_array_equal(sa.images, sb.images)
    np.testing.assert_array_equal(sa.labels, sb.labels)
    np.testing.assert_array_equal(sa.index, sb.index)
    assert not np.array_equal(sa.index, sc.index)


def test_cars196_variable_sizes_are_stored_at_the_source_side():
  with tfds.testing.mock_data(num_examples=N):
    source = tfds.data_source('cars196', split='train', download=False)
    shapes = {source[i]['image'].shape for i in range(N)}
  assert len(shapes) > 1  # the mock really has variable-size images
  ds = _load('cars196', source_size=20)
  assert ds.train.images.shape[1:] == (20, 20, 3)
  assert ds.train.images.dtype == np.uint8
  with pytest.raises(ValueError, match='source_size'):
    _load('cars196')


def test_max_examples_per_split():
  ds = _load('cifar100', max_examples_per_split=5)
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (5, 5, 5)
  assert not set(ds.train.index) & set(ds.validation.index)


def test_unsupported_name():
  with pytest.raises(ValueError, match='cifar10, cifar100, cars196'):
    tfds_loader.load('mnist', SIZE, 0)


def test_missing_data_is_not_downloaded(tmp_path):
  with pytest.raises(FileNotFoundError, match='array_record'):
    tfds_loader.load('cifar10', SIZE, 0, data_dir=str(tmp_path))
  assert not any(tmp_path.iterdir())


@pytest.mark.parametrize('shape,size', [((2, 300, 410, 3), 16),
                                        ((3, 32, 32, 3), 50),
                                        ((1, 7, 200, 3), 9)])
def test_resize_matches_jax(shape, size):
  """Both resize paths (dense matmul, banded taps) equal jax.image.resize."""
  images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  want = jax.image.resize(images.astype(np.float32),
                          (shape[0], size, size, 3), 'bilinear')
  np.testing.assert_allclose(tfds_loader._resize(images, size), want,
                             atol=1e-3)


def test_digits():
  ds = digits.load(16)
  splits = (ds.train, ds.validation, ds.test)
  assert sum(len(s) for s in splits) == 1797
  indices = [set(s.index) for s in splits]
  assert not (indices[0] & indices[1] or indices[0] & indices[2]
              or indices[1] & indices[2])
  assert set.union(*indices) == set(range(1797))
  for s in splits:
    assert s.images.shape[1:] == (8, 8, 1) and s.images.dtype == np.uint8
    assert s.images.max() == 16
    x = np.asarray(ds.input_spec.prepare(s.images))
    assert x.shape[1:] == (16, 16, 1)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert set(s.labels) == set(range(10))


def test_input_spec_equals_the_old_host_path():
  """Resizing per batch on the accelerator gives what resizing the whole
  dataset on the host at load time gave (digits and a TFDS-like batch)."""
  ds = digits.load(16)
  old = jax.image.resize((ds.train.images[:5].astype(np.float32) / 16.0),
                         (5, 16, 16, 1), 'bilinear')
  old = (np.asarray(old) - 0.5) / 0.5
  np.testing.assert_allclose(ds.input_spec.prepare(ds.train.images[:5]), old,
                             atol=1e-6)
  images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3),
                                             dtype=np.uint8)
  host = tfds_loader._resize(images, 24) / 127.5 - 1.0  # the old load path
  spec = tfds_loader.InputSpec(24)
  np.testing.assert_allclose(spec.prepare(images), host, atol=1e-4)
