"""The client engine gives one answer whatever the strategy, padding or device count."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from acme_jax.parallel import engine as E

FEATURES = 3
BATCH = 4
OPTIMIZER = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.05, momentum=0.9))


def init(device_input):
  params = {'w': device_input['w'], 'b': jnp.zeros(())}
  return params, OPTIMIZER.init(params)


def step(state, batch):
  """One SGD step of linear regression. Weight decay moves the params even on an
  all-zero batch, so a padded step that is not masked would show."""
  params, opt_state = state

  def loss(params):
    prediction = batch['x'] @ params['w'] + params['b']
    return jnp.mean((prediction - batch['y']) ** 2)

  grads = jax.grad(loss)(params)
  updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def final(state):
  return state[0]


def make_problem(batch_counts, seed=0):
  """Per-device initial weights and lists of batches, `batch_counts[i]` each."""
  rng = np.random.default_rng(seed)
  inputs, batches = [], []
  for count in batch_counts:
    true_w = rng.normal(size=FEATURES).astype(np.float32)
    inputs.append({'w': rng.normal(size=FEATURES).astype(np.float32)})
    device = []
    for _ in range(count):
      x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
      device.append({'x': x, 'y': x @ true_w + np.float32(0.5)})
    batches.append(device)
  return inputs, batches


def max_difference(outputs_a, outputs_b):
  assert len(outputs_a) == len(outputs_b)
  return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for out_a, out_b in zip(outputs_a, outputs_b)
             for a, b in zip(jax.tree.leaves(out_a), jax.tree.leaves(out_b)))


def reference(inputs, batches):
  """Plain eager Python, no jit, no padding."""
  outputs = []
  for device_input, device_batches in zip(inputs, batches):
    state = init(device_input)
    for batch in device_batches:
      state = step(state, batch)
    outputs.append(final(state))
  return outputs


COUNTS = [3, 0, 1, 5, 2]


@pytest.mark.parametrize('strategy', ['loop', 'vmap', 'sharded', 'auto'])
def test_all_strategies_match_eager_reference(strategy):
  inputs, batches = make_problem(COUNTS)
  outputs = E.for_each_device(init, step, final, inputs, batches, strategy=strategy)
  assert len(outputs) == len(COUNTS)
  assert max_difference(outputs, reference(inputs, batches)) < 1e-5


def test_stacked_batches_equal_batch_lists():
  inputs, batches = make_problem(COUNTS)
  stacked = [jax.tree.map(lambda *xs: np.stack(xs), *device) if device else
             {'x': np.zeros((0, BATCH, FEATURES), np.float32),
              'y': np.zeros((0, BATCH), np.float32)} for device in batches]
  for strategy in ('loop', 'vmap'):
    a = E.for_each_device(init, step, final, inputs, batches, strategy=strategy)
    b = E.for_each_device(init, step, final, inputs, stacked, strategy=strategy)
    assert max_difference(a, b) == 0


def test_masked_step_keeps_the_state_bit_for_bit():
  inputs, batches = make_problem([1])
  state = init(inputs[0])
  state = step(state, batches[0][0])  # non-zero momentum
  garbage = {'x': jnp.full((BATCH, FEATURES), jnp.nan), 'y': jnp.full(BATCH, jnp.inf)}
  with_consts = lambda s, b, c: step(s, b)  # noqa: E731
  kept = jax.jit(E.masked_step(with_consts))(state, garbage, False, ())
  for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(kept)):
    np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
  moved = jax.jit(E.masked_step(with_consts))(state, batches[0][0], True, ())
  assert max_difference([moved], [step(state, batches[0][0])]) < 1e-6


def test_padding_does_not_change_a_device_result():
  inputs, batches = make_problem([2, 9])
  together = E.for_each_device(init, step, final, inputs, batches, strategy='vmap')
  alone = E.for_each_device(init, step, final, inputs[:1], batches[:1],
                            strategy='vmap')
  assert max_difference(together[:1], alone) < 1e-6
  # A device with no batches only runs padding: exactly its initial params.
  inputs, batches = make_problem([0, 4])
  outputs = E.for_each_device(init, step, final, inputs, batches, strategy='vmap')
  np.testing.assert_array_equal(np.asarray(outputs[0]['w']), inputs[0]['w'])
  assert float(outputs[0]['b']) == 0.0


def test_loop_compiles_its_step_once_for_any_device_count():
  def fresh_step(state, batch):  # new function: nothing cached yet
    return step(state, batch)

  before = E.trace_counts()
  inputs, batches = make_problem([1, 4, 2, 3, 1, 2, 4, 1, 2, 3, 1, 1])
  E.for_each_device(init, fresh_step, final, inputs, batches, strategy='loop')
  inputs, batches = make_problem([2] * 20, seed=1)
  E.for_each_device(init, fresh_step, final, inputs, batches, strategy='loop')
  after = E.trace_counts()
  assert after['loop.step'] - before.get('loop.step', 0) == 1


@pytest.mark.parametrize('strategy', ['vmap', 'sharded'])
def test_chunks_share_one_program_and_equal_the_loop(strategy):
  counts = [3, 0, 1, 5, 2, 4, 1]  # 7 devices in chunks of 3: 3 + 3 + 1
  inputs, batches = make_problem(counts)
  loop = E.for_each_device(init, step, final, inputs, batches, strategy='loop')
  fresh_step = lambda state, batch: step(state, batch)  # noqa: E731
  before = E.trace_counts().get(strategy, 0)
  chunked = E.for_each_device(init, fresh_step, final, inputs, batches,
                              strategy=E.Options(strategy, chunk=3))
  assert len(chunked) == len(counts)
  assert max_difference(chunked, loop) < 1e-5
  # The last chunk is padded to 3 devices and every chunk to the longest
  # device's 5 steps: one compiled program for all three chunks.
  assert E.trace_counts()[strategy] - before == 1


def test_unknown_strategy_names_the_allowed_ones():
  inputs, batches = make_problem([1])
  with pytest.raises(ValueError, match="'pmap'.*loop.*vmap.*sharded"):
    E.for_each_device(init, step, final, inputs, batches, strategy='pmap')


def test_batches_with_different_shapes_are_refused():
  inputs, batches = make_problem([1, 1])
  batches[1][0] = {'x': np.zeros((BATCH + 1, FEATURES), np.float32),
                   'y': np.zeros(BATCH + 1, np.float32)}
  with pytest.raises(ValueError, match='static shape'):
    E.for_each_device(init, step, final, inputs, batches, strategy='loop')


def test_auto_rule():
  assert E.choose_strategy(8, backend='cpu', accelerator_count=8) == 'loop'
  assert E.choose_strategy(8, backend='gpu', accelerator_count=1) == 'vmap'
  assert E.choose_strategy(8, backend='tpu', accelerator_count=4) == 'sharded'
  assert E.choose_strategy(1, backend='gpu', accelerator_count=4) == 'loop'


def _sharded_child():
  """Runs in a process with 8 simulated CPU devices; prints a JSON report."""
  counts = [3, 0, 1, 5, 2, 4, 1, 2, 6, 1, 3]  # 11 devices -> padded to 16
  inputs, batches = make_problem(counts)
  before = E.trace_counts().get('sharded', 0)
  sharded = E.for_each_device(init, step, final, inputs, batches,
                              strategy='sharded')
  loop = E.for_each_device(init, step, final, inputs, batches, strategy='loop')
  print(json.dumps({
      'device_count': jax.device_count(),
      'outputs': len(sharded),
      'max_difference': max_difference(sharded, loop),
      'compiles': E.trace_counts()['sharded'] - before,
      'auto': E.choose_strategy(len(counts)),
  }))


def test_sharded_on_8_simulated_cpu_devices():
  tests_dir = pathlib.Path(__file__).resolve().parent
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([str(tests_dir.parent), str(tests_dir)]))
  result = subprocess.run(
      [sys.executable, '-c', 'import test_engine; test_engine._sharded_child()'],
      env=env, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['device_count'] == 8
  assert report['outputs'] == 11
  assert report['max_difference'] < 1e-5
  assert report['compiles'] == 1
  assert report['auto'] == 'loop'
