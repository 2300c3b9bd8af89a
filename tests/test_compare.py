"""The header comparison is fair by construction: every arm trains the same
steps on each device, schedules annealed to their end, rates chosen on
validation, the random arm drawn within the budget."""
import jax
import numpy as np
import pytest

from conftest import tiny_config

from acme_jax.device import compare, features
from acme_jax.device import header as header_lib
from acme_jax.device import heads
from acme_jax.device import stage as device_stage


def _locals(sizes, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for n in sizes:
    y = rng.integers(0, 10, n + 10).astype(np.int32)
    x = (rng.normal(0, 1, (n + 10, 2, 2, 16)) +
         y[:, None, None, None] * 0.3).astype(np.float32)
    out.append(features.LocalFeatures(x[:n], y[:n], x[n:n + 5], y[n:n + 5],
                                      x[n + 5:], y[n + 5:], x[:n, 0, 0]))
  return out


@pytest.mark.slow  # every arm of the comparison, trained (~25 s)
def test_every_arm_trains_the_same_steps_per_device():
  config = tiny_config()
  config.header.finetune_lrs = (0.01, 0.1)
  config.baselines.kinds = ('linear', 'mlp')
  config.baselines.learning_rates = (1e-3, 1e-2)
  hp = device_stage.DeviceHparams.from_config(config, 10)
  sizes = (9, 23, 40)  # 1, 1 and 2 batches of 32 per epoch
  targets = device_stage.targets(hp, [
      {'device': d, 'edge': 0, 'width_mult': 1.0, 'depth_mult': 1.0,
       'budget': 10**6, 'params': 0} for d in range(3)], jax.random.key(0))
  out = compare.compare(hp, _locals(sizes), targets, seed=0)
  steps = out['final_train_steps']
  assert set(steps) == set(compare.arms(config.baselines.kinds))
  want = [hp.finetune_epochs * -(-n // hp.batch_size) for n in sizes]
  for arm, per_device in steps.items():
    assert per_device == want, arm
  assert out['search_steps']['child'] == [
      hp.search.epochs * -(-n // hp.search.batch_size) for n in sizes]
  assert out['search_steps']['controller'] == [
      hp.search.epochs * hp.search.controller_steps_per_epoch] * 3
  # Rates come from each arm's grid, device by device.
  assert set(out['learning_rate'][compare.NAS]) <= {0.01, 0.1}
  assert set(out['learning_rate']['mlp']) <= {1e-3, 1e-2}
  # The random architectures fit the budget of the searched ones.
  spec = hp.nas.spec
  for arch, t in zip(device_stage.random_archs(hp, targets), targets):
    assert int(header_lib.param_count(spec, arch, t.cells)) <= t.limit
  # fixed_best is, per device, the fixed head best on validation.
  for d, kind in enumerate(out['fixed_best_kind']):
    assert out['test_accuracy'][compare.FIXED_BEST][d] == \
        out['test_accuracy'][kind][d]


def test_fixed_head_schedules_anneal_to_zero_on_every_device():
  """Each device's AdamW rate decays over its own steps and reaches 0 at
  its last one: a device with few steps is not stopped at a high rate."""
  locals_ = _locals((5, 70))
  for batches, n in zip(heads.device_batches(locals_, 3, 8, 0.1, 0),
                        (5, 70)):
    rates = [float(b['lr']) for b in batches]
    assert len(rates) == 3 * -(-n // 8)
    assert rates[0] == np.float32(0.1) and rates[-1] == 0.0
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_the_headers_final_schedule_ends_at_its_minimum():
  """'cosine' (the final training): from the peak at the first step to
  lr_min at the last, per step; 'sgdr' is the prototype's per-epoch
  restarts, which can end near the peak."""
  from acme_jax.device import child as child_lib
  from acme_jax.device import state as state_lib
  cosine = state_lib.Schedule(lr_min=5e-4, kind='cosine').rates(0.1, 12, 3)
  flat = [r for epoch in cosine for r in epoch]
  assert len(flat) == 36
  assert flat[0] == 0.1 and abs(flat[-1] - 5e-4) < 1e-12
  assert all(a >= b for a, b in zip(flat, flat[1:]))
  sgdr = state_lib.Schedule(lr_min=5e-4, lr_period=10, lr_period_mult=2,
                            kind='sgdr').rates(0.1, 12, 3)
  assert [e[0] for e in sgdr] == [child_lib.sgdr(e, 0.1, 5e-4, 10, 2)
                                  for e in range(12)]
  assert sgdr[-1][0] > 0.09  # the old final training ended near its peak
