"""Header search: a tiny search, budgets, one program for all devices and
data sizes, and the prototype's learning-rate schedule."""
import math

import jax
import numpy as np
import pytest

from conftest import tiny_nas

from acme_jax.device import features
from acme_jax.device import header as header_lib
from acme_jax.device import local_data
from acme_jax.device import nas
from acme_jax.device import child as child_lib
from acme_jax.device import state as state_lib
from acme_jax.parallel import engine

SPEC, CFG = tiny_nas()
CLASSES, DIM, NODES = SPEC.num_classes, SPEC.feature_dim, SPEC.num_nodes


def separable(n, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, CLASSES, n)
  means = np.random.default_rng(123).normal(0, 1, (CLASSES, DIM))
  x = rng.normal(0, 1, (n, 3, 3, DIM)) + 1.5 * means[y][:, None, None, :]
  return x.astype(np.float32), y.astype(np.int32)


def local(n, seed):
  x, y = separable(n, seed)
  a, b = int(0.6 * n), int(0.8 * n)
  return features.LocalFeatures(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:],
                                x[:a, 0, 0])


# Slow (~60 s cold); test_one_compile_per_padding_bucket keeps the
# compile count in the default suite.
@pytest.mark.slow
def test_search_fits_budgets_in_one_program_whatever_the_data_sizes():
  locals_ = [local(n, i) for i, n in enumerate((40, 66, 100))]
  padded = local_data.device_data(locals_)
  smallest = int(header_lib.param_count(SPEC, header_lib.smallest_arch(NODES),
                                        3))
  limits = [smallest + 150, smallest + 600, 10**6]
  hp = nas.SearchHparams(epochs=3, batch_size=16,
                         controller_steps_per_epoch=4)
  before = engine.trace_counts().get('loop.step', 0)
  found = nas.search(CFG, hp, padded,
                     list(map(nas.Device, [jax.random.key(i) for i in range(3)],
                              limits, [3, 5, 3])),
                     strategy='loop')
  # train, controller and evaluation steps: one program each for all three
  # devices, although each has its own data size, budget and layer count.
  assert engine.trace_counts()['loop.step'] - before == 3
  # Fine-tuning the found archs reuses the search's train step.
  state_lib.train_fixed(CFG, [r['state'] for r in found], padded,
                        [jax.random.key(5)] * 3,
                        state_lib.Schedule(batch_size=16), 1, 0.05, 'loop')
  assert engine.trace_counts()['loop.step'] - before == 3
  for result, limit in zip(found, limits):
    header_lib.validate_arch(result['arch'], NODES)
    assert result['header_params'] <= limit
    assert result['header_params'] == int(header_lib.param_count(
        SPEC, result['arch'], result['n_layers']))
  assert [r['n_layers'] for r in found] == [3, 5, 3]
  # The shared weights already beat chance (1/3) on validation data.
  assert np.mean([r['val_accuracy'] for r in found]) > 0.5


def test_sgdr_is_the_prototype_scheduler():
  """utils.LRScheduler of the prototype, transcribed."""

  class LRScheduler:
    def __init__(self):
      self.last_lr_reset, self.lr_t0 = 0, 10

    def update(self, epoch):
      t_curr = epoch - self.last_lr_reset
      if t_curr == self.lr_t0:
        self.last_lr_reset = epoch
        self.lr_t0 *= 2
      rate = t_curr / self.lr_t0 * math.pi
      return 5e-4 + 0.5 * (0.1 - 5e-4) * (1.0 + math.cos(rate))

  scheduler = LRScheduler()
  for epoch in range(75):
    assert child_lib.sgdr(epoch, 0.1, 5e-4, 10, 2) == pytest.approx(
        scheduler.update(epoch))


def test_first_controller_step_has_zero_advantage():
  """baseline starts at the first reward (prototype), so the first update
  leaves the controller unchanged."""
  (data,), (sizes,) = local_data.device_data([local(30, 0)])
  state = child_lib.init_state(CFG, jax.random.key(0), 10**6, 3)
  batch = {'idx': local_data.split_rows(sizes, 'val')[:6],
           'w': np.ones(6, np.float32)}
  step = jax.jit(child_lib.programs(CFG).controller_step)
  after = step(state, batch, data)
  assert float(after.has_baseline) == 1.0
  for a, b in zip(jax.tree.leaves(after.ctrl_params),
                  jax.tree.leaves(state.ctrl_params)):
    np.testing.assert_array_equal(a, b)


def test_evaluation_does_not_depend_on_how_the_test_set_is_ordered():
  """Whole-split evaluation: shuffling a device's test rows, or giving the
  devices other neighbours (another padded batch size), leaves its accuracy
  unchanged, although the cells' BatchNorm uses batch statistics."""
  rng = np.random.default_rng(5)
  first = local(40, 0)
  perm = rng.permutation(len(first.y_test))
  shuffled = features.LocalFeatures(
      first.x_train, first.y_train, first.x_val, first.y_val,
      first.x_test[perm], first.y_test[perm], first.cls_train)
  state = child_lib.init_state(CFG, jax.random.key(0), 10**6, 3,
                               arch=np.array([[0, 0, 1, 4], [2, 1, 0, 2]],
                                             np.int32))
  alone = child_lib.evaluate(CFG, [state], local_data.device_data([first]),
                             'test', 'loop')
  reordered = child_lib.evaluate(CFG, [state],
                                 local_data.device_data([shuffled]), 'test',
                                 'loop')
  # Beside a device with a much larger test split: a larger padded batch.
  big = local(200, 1)
  beside = child_lib.evaluate(CFG, [state, state],
                              local_data.device_data([first, big]), 'test',
                              'loop')
  np.testing.assert_allclose(alone, reordered, atol=1e-7)
  np.testing.assert_allclose(alone[0], beside[0], atol=1e-7)


@pytest.mark.slow  # ~110 s of compiles on 2 cores: the suite's largest
def test_one_compile_per_padding_bucket():
  """Devices in different row buckets are padded to the largest bucket of
  their call: one set of programs per bucket, not per device."""
  small = [local(20, 0), local(30, 1)]        # 256-row bucket
  large = [local(20, 2), local(300, 3)]       # 512-row bucket (the larger)
  assert local_data.bucket(sum(len(getattr(small[1], f'y_{s}'))
                               for s in ('train', 'val', 'test'))) == 256
  assert local_data.bucket(300) == 512
  hp = nas.SearchHparams(epochs=1, batch_size=16, controller_steps_per_epoch=1)
  keys = [jax.random.key(i) for i in range(2)]

  def traces(locals_):
    before = engine.trace_counts().get('loop.step', 0)
    nas.search(CFG, hp, local_data.device_data(locals_),
               [nas.Device(k, 10**6, 3) for k in keys], 'loop')
    return engine.trace_counts()['loop.step'] - before

  traces(small)
  assert traces(small) == 0   # the same bucket: no new program
  # A new bucket: one train, one controller and one evaluation program,
  # for both devices, then none.
  assert traces(large) == 3
  assert traces(large) == 0


@pytest.mark.parametrize('derive', [
    pytest.param('prototype', marks=pytest.mark.slow),
    pytest.param('sample', marks=pytest.mark.slow)])  # ~25 s each
def test_an_interrupted_search_resumes_byte_identical(tmp_path, monkeypatch,
                                                      derive):
  from acme_jax import resume
  padded = local_data.device_data([local(n, i) for i, n in
                                   enumerate((40, 66))])
  hp = nas.SearchHparams(epochs=3, batch_size=16, controller_steps_per_epoch=2,
                         derive=derive, num_final_archs=2)
  keys = [jax.random.key(i) for i in range(2)]

  def search(partial):
    return nas.search(CFG, hp, padded, [nas.Device(k, 10**6, 3) for k in keys],
                      'loop', partial=partial)

  real, calls = engine.for_each_device, {'n': 0}

  def counted(*args, **kwargs):
    calls['n'] += 1
    return real(*args, **kwargs)

  monkeypatch.setattr(nas.engine, 'for_each_device', counted)
  through = search(None)
  full_run_calls, calls['n'] = calls['n'], 0

  # Engine calls an epoch: child training, controller training and, for the
  # prototype's derivation, the per-epoch evaluation.
  per_epoch = 3 if derive == 'prototype' else 2

  def stop_in_the_third_epoch(*args, **kwargs):
    calls['n'] += 1
    if calls['n'] == 2 * per_epoch + 1:  # epoch 3's child training
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(nas.engine, 'for_each_device', stop_in_the_third_epoch)
  with pytest.raises(KeyboardInterrupt):
    search(resume.Partial(tmp_path / 'search', 1, {'x': 1}))
  monkeypatch.setattr(nas.engine, 'for_each_device', real)
  resumed = search(resume.Partial(tmp_path / 'search', 1, {'x': 1}))
  # A rerun after the search (interrupted later in its stage) loads the
  # finished search instead of searching again.
  calls['n'] = 0
  monkeypatch.setattr(nas.engine, 'for_each_device', counted)
  again = search(resume.Partial(tmp_path / 'search', 1, {'x': 1}))
  assert calls['n'] == full_run_calls - 3 * per_epoch  # no epoch ran again
  monkeypatch.setattr(nas.engine, 'for_each_device', real)
  resume.Partial(tmp_path / 'search', 1, {'x': 1}).finish()
  for a, b in [*zip(resumed, through), *zip(again, through)]:
    assert np.array_equal(a['arch'], b['arch'])
    assert a['val_accuracy'] == b['val_accuracy']
    assert a['history'] == b['history']
    assert a['child_steps'] == b['child_steps']
    for x, y in zip(jax.tree.leaves(a['state']), jax.tree.leaves(b['state'])):
      x, y = (jax.random.key_data(v) if jax.dtypes.issubdtype(
          v.dtype, jax.dtypes.prng_key) else v for v in (x, y))
      assert np.array_equal(x, y)
  assert not list(tmp_path.glob('search.partial*'))
