"""Controller sampling / scoring, a tiny search, and the parameter budget."""

import jax
import numpy as np

from acme_jax.device import header as header_lib
from acme_jax.device import nas

NODES = 3


def separable_data(n, seed, grid=(4, 4), dim=8, classes=3):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n)
  means = np.random.default_rng(123).normal(0, 1, (classes, dim))
  x = rng.normal(0, 1, (n,) + grid + (dim,)) + 0.8 * means[labels][
      :, None, None, :].reshape((n,) + (1,) * len(grid) + (dim,))
  return x.astype(np.float32), labels.astype(np.int32)


def test_controller_samples_valid_archs_and_scores_them():
  controller = nas.Controller(NODES)
  params = nas.init_controller(controller, seed=0)
  sample, _, _ = nas.controller_steps(controller)
  score = jax.jit(lambda p, a: controller.apply(p, None, a))
  seen = set()
  for i in range(8):
    arch, log_prob, entropy = sample(params, jax.random.key(i))
    arch = np.asarray(arch)
    assert arch.shape == (NODES, 4)
    header_lib.validate_arch(arch, NODES)
    assert float(entropy) > 0 and float(log_prob) < 0
    _, recomputed, entropy2 = score(params, arch)
    np.testing.assert_allclose(recomputed, log_prob, rtol=1e-5)
    np.testing.assert_allclose(entropy2, entropy, rtol=1e-5)
    seen.add(arch.tobytes())
  assert len(seen) > 1


def test_controller_update_raises_rewarded_arch_probability():
  controller = nas.Controller(NODES)
  params = nas.init_controller(controller, seed=1)
  sample, update, optimizer = nas.controller_steps(controller)
  arch = np.asarray(sample(params, jax.random.key(0))[0])
  score = jax.jit(lambda p, a: controller.apply(p, None, a)[1])
  before = float(score(params, arch))
  opt_state = optimizer.init(params)
  for _ in range(5):
    params, opt_state = update(params, opt_state, arch, 1.0)
  assert float(score(params, arch)) > before


def test_tiny_search_beats_chance_within_budget():
  x_train, y_train = separable_data(192, 0)
  x_val, y_val = separable_data(96, 1)
  budget = 400  # C=8: stem+head = 107; one 2-D sep3 adds 152, sep5 280
  result = nas.search(x_train, y_train, x_val, y_val, 3, jax.random.key(0),
                      num_channels=8, num_nodes=NODES, epochs=3,
                      batch_size=32, controller_steps_per_epoch=5,
                      num_final_archs=4, max_header_params=budget)
  assert result['val_accuracy'] > 0.6  # chance is 1/3
  assert result['header_params'] <= budget
  for arch, _ in result['candidates']:
    assert nas.Budget(result['header'], x_train.shape, budget).feasible(arch)
  assert result['header_params'] == header_lib.header_param_count(
      result['arch'], 8, feature_dim=8, num_classes=3, grid_rank=2)
  tuned = nas.finetune(result, x_train, y_train, x_val, y_val,
                       jax.random.key(1), epochs=2, batch_size=32)
  assert tuned['val_accuracy'] > 0.6


def test_budget_falls_back_to_smallest_feasible_arch():
  x_train, y_train = separable_data(64, 2)
  smallest = header_lib.header_param_count(
      header_lib.smallest_arch(NODES), 8, feature_dim=8, num_classes=3)
  result = nas.search(x_train, y_train, x_train, y_train, 3,
                      jax.random.key(3), num_channels=8, num_nodes=NODES,
                      epochs=1, batch_size=32, controller_steps_per_epoch=2,
                      num_final_archs=2, max_header_params=smallest)
  assert result['header_params'] == smallest
  try:
    nas.search(x_train, y_train, x_train, y_train, 3, jax.random.key(3),
               num_channels=8, num_nodes=NODES, epochs=1,
               max_header_params=smallest - 1)
  except ValueError as error:
    assert 'max_header_params' in str(error)
  else:
    raise AssertionError('an impossible budget must be refused')


def test_sgdr_restarts():
  lr = [nas.sgdr_learning_rate(s, 1, 0.1, 5e-4, 2, 2) for s in range(7)]
  assert lr[0] == 0.1 and lr[2] == 0.1  # restart after 2 epochs
  assert lr[1] < 0.1 and lr[3] < lr[2] and lr[6] == 0.1  # then 4 epochs
