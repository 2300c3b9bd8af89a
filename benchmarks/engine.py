"""Client-engine throughput: device-steps/s of each strategy, side by side.

The per-device step is a realistic small one from the device tier: a 2-layer MLP
header on cached 4x4x64 backbone features, batch 32, SGD with momentum. Devices
hold 4-8 batches each (unequal, so the stacked strategies pay for padding).
Only real steps count; compile time is reported apart.

  python -m benchmarks.engine
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.engine
  (the second simulates 8 CPU devices so that 'sharded' runs too)
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax import errors
from acme_jax.parallel import engine as E
from benchmarks import inputs

FEATURE_SHAPE = (4, 4, 64)
BATCH = 32
CLASSES = 10


def build_problem(hidden: int):
  """init/step/final of one device's header training from the edge's header."""
  optimizer = optax.sgd(0.01, momentum=0.9)

  def init(header):
    return header, optimizer.init(header)

  def step(state, batch):
    params, opt_state = state

    def loss(params):
      x = batch['features'].reshape(BATCH, -1)
      h = jax.nn.relu(x @ params['w1'] + params['b1'])
      logits = h @ params['w2'] + params['b2']
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, batch['labels']).mean()

    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def final(state):
    return state[0]

  return init, step, final


def make_devices(num_devices: int, hidden: int, seed: int = 0):
  """Each device's header (as the edge sends it) and its cached features."""
  rng = np.random.default_rng(seed)
  features = int(np.prod(FEATURE_SHAPE))

  def header():
    return {
        'w1': jnp.asarray(rng.normal(size=(features, hidden)) * features ** -0.5,
                          jnp.float32),
        'b1': jnp.zeros(hidden),
        'w2': jnp.asarray(rng.normal(size=(hidden, CLASSES)) * hidden ** -0.5,
                          jnp.float32),
        'b2': jnp.zeros(CLASSES),
    }

  headers = [header() for _ in range(num_devices)]
  batches = []
  for device in range(num_devices):
    count = 4 + device % 5  # 4..8 batches
    batches.append([{
        'features': rng.normal(size=(BATCH,) + FEATURE_SHAPE).astype(np.float32),
        'labels': rng.integers(0, CLASSES, BATCH).astype(np.int32),
    } for _ in range(count)])
  return headers, batches


def measure(problem, headers, batches, strategies, reps):
  """{strategy: (first-call s, best steady s)} of one for_each_device call.

  Strategies take turns within each rep, so load from other jobs on the machine
  hits them alike.
  """

  def call(strategy):
    start = time.perf_counter()
    outputs = E.for_each_device(*problem, headers, batches, strategy=strategy)
    jax.block_until_ready(outputs)
    return time.perf_counter() - start

  first = {strategy: call(strategy) for strategy in strategies}
  steady = {strategy: [] for strategy in strategies}
  for _ in range(reps):
    for strategy in strategies:
      steady[strategy].append(call(strategy))
  return {strategy: (first[strategy], min(steady[strategy]))
          for strategy in strategies}


def _counts(text: str) -> str:
  for part in text.split(','):
    errors.whole_number(part)
  return text


def main():
  parser = errors.OneLineParser(prog='python -m benchmarks.engine',
                                description=__doc__.split('\n')[0])
  parser.add_argument('--devices', default='2,8,32', type=_counts,
                      help='device counts')
  parser.add_argument('--hidden', type=errors.whole_number, default=128,
                      help='MLP hidden width')
  parser.add_argument('--reps', type=errors.whole_number, default=5,
                      help='timed calls (best kept)')
  args = parser.parse_args()
  inputs.engine([int(n) for n in args.devices.split(',')], args.hidden,
                args.reps, int(np.prod(FEATURE_SHAPE)), BATCH)

  strategies = ['loop', 'vmap']
  if jax.device_count() > 1:
    strategies.append('sharded')
  print(f'backend {jax.default_backend()}, {jax.device_count()} device(s): '
        f'{jax.devices()[0].device_kind}; MLP 1024-{args.hidden}-{CLASSES}, '
        f'batch {BATCH}, 4-8 batches per device, best of {args.reps}')
  if 'sharded' not in strategies:
    print('sharded skipped (one device). To simulate 8 CPU devices: '
          'XLA_FLAGS=--xla_force_host_platform_device_count=8 '
          'python -m benchmarks.engine')
  print('auto picks: ' + ', '.join(
      f'{n} devices -> {E.choose_strategy(n)}'
      for n in map(int, args.devices.split(','))))
  print()
  print('| devices | strategy | device-steps/s | vs loop | compile s |')
  print('|---:|---|---:|---:|---:|')
  problem = build_problem(args.hidden)
  for num_devices in map(int, args.devices.split(',')):
    headers, batches = make_devices(num_devices, args.hidden)
    steps = sum(len(device) for device in batches)
    timings = measure(problem, headers, batches, strategies, args.reps)
    loop_rate = steps / timings['loop'][1]
    for strategy in strategies:
      first, steady = timings[strategy]
      rate = steps / steady
      print(f'| {num_devices} | {strategy} | {rate:,.0f} | {rate / loop_rate:.2f}x '
            f'| {max(first - steady, 0.0):.2f} |', flush=True)


if __name__ == '__main__':
  errors.boundary(main)
