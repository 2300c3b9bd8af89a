"""What per-device architectures cost the stacked strategies.

  python -m benchmarks.batched_choices [--devices=6] [--channels=32]

The header's op per (node, branch) and its cell count are data. Run per
device (the `loop` strategy) a `lax.switch` runs the chosen op and a
`lax.cond` the cells held. Under `vmap` (and `sharded`, which vmaps within
an accelerator) a device's `arch` and `n_layers` are batched, and JAX turns
a switch or cond on a batched index into every branch plus a select. The
header's op has its own vmap rule (`header.apply_op`: the chosen sep conv's
weights are selected and one sep conv runs); the cell count stays a cond, so
a device pays for every cell any device holds.

One gradient of the header (forward and backward in evaluation mode: the
stem's running statistics, no dropout; batch 32 on a 4x4 grid) in three
programs, side by side: the loop (one jitted step per device), vmap with one
architecture for all devices (choices not batched), and vmap with each
device's own architecture. Per program: XLA's
cost analysis of the compiled program (FLOPs per device; it counts a loop's
body once and a conditional at its costliest branch, so the loop's figure is
an upper bound) and the measured time per device-step, compilation excluded.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax import errors
from acme_jax import report
from acme_jax.device import header as header_lib
from benchmarks import inputs

BATCH = 32
GRID = (4, 4)
FEATURE_DIM = 64


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
    analysis = analysis[0]
  return float(analysis.get('flops', float('nan')))


def programs(devices: int = 6, channels: int = 32, nodes: int = 3,
             layers: int = 3) -> dict:
  """{name: (jitted gradient, its calls, devices per call)} for the three
  programs, on fixed random inputs (seed 0)."""
  n = devices
  spec = header_lib.Spec(num_classes=10, feature_dim=FEATURE_DIM,
                         num_channels=channels, num_nodes=nodes,
                         max_layers=layers)
  model = header_lib.Header(spec)
  params = header_lib.init_variables(spec)['params']
  gates = header_lib.full_gates(spec)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, BATCH) + GRID + (FEATURE_DIM,)).astype(
      np.float32)
  y = rng.integers(0, 10, (n, BATCH))
  archs = np.stack([_random_arch(rng, nodes) for _ in range(n)])
  n_layers = rng.integers(1, layers + 1, n)

  def grad(params, x, y, arch, n_layers):
    def loss(params):
      logits = model.apply({'params': params, 'batch_stats': {
          'stem_mean': jnp.zeros(spec.num_channels),
          'stem_var': jnp.ones(spec.num_channels)}}, x, arch, n_layers, gates)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y).mean()
    return jax.grad(loss)(params)

  stacked = jax.tree.map(lambda a: np.broadcast_to(a, (n,) + a.shape),
                         params)
  return {
      'loop (one jit per device)': (
          jax.jit(grad), [(params, x[d], y[d], archs[d], n_layers[d])
                          for d in range(n)], 1),
      'vmap, one architecture for all devices (unstacked)': (
          jax.jit(jax.vmap(grad, in_axes=(0, 0, 0, None, None))),
          [(stacked, x, y, archs[0], n_layers[0])], n),
      'vmap, each device its own architecture': (
          jax.jit(jax.vmap(grad)), [(stacked, x, y, archs, n_layers)], n)}


def flops_per_device(fn, calls, per_call: int) -> float:
  """XLA's FLOPs of one device's share of a call (compiled, not run)."""
  return _flops(fn.lower(*calls[0]).compile()) / per_call


def main():
  parser = errors.OneLineParser(prog='python -m benchmarks.batched_choices',
                                description=__doc__.splitlines()[0])
  count = errors.whole_number
  parser.add_argument('--devices', type=count, default=6)
  parser.add_argument('--channels', type=count, default=32)
  parser.add_argument('--nodes', type=count, default=3)
  parser.add_argument('--layers', type=count, default=3, help='cells held')
  parser.add_argument('--reps', type=count, default=5, help='timed rounds')
  args = parser.parse_args()
  inputs.batched_choices(args.devices, args.channels, args.nodes, args.layers,
                         args.reps)
  n = args.devices
  rows, base = [], None
  for name, (fn, calls, per_call) in programs(
      n, args.channels, args.nodes, args.layers).items():
    flops = flops_per_device(fn, calls, per_call)
    jax.block_until_ready([fn(*c) for c in calls])  # compile, warm up
    t0 = time.perf_counter()
    for _ in range(args.reps):
      jax.block_until_ready([fn(*c) for c in calls])
    seconds = (time.perf_counter() - t0) / (args.reps * n)
    base = base or (flops, seconds)
    rows.append([name, f'{flops / 1e6:,.1f}', f'{flops / base[0]:.2f}x',
                 f'{seconds * 1e3:.2f}', f'{seconds / base[1]:.2f}x'])
  print(f'{n} devices, header {args.layers} cells x {args.nodes} nodes x '
        f'{args.channels} channels, batch {BATCH} on a {GRID} grid, backend '
        f'{jax.default_backend()}; FLOPs from XLA cost analysis\n')
  print(report.markdown_table(
      ['program', 'MFLOPs / device-step', 'vs loop', 'ms / device-step',
       'vs loop'], rows))


def _random_arch(rng, nodes: int) -> np.ndarray:
  arch = np.zeros((nodes, 4), np.int32)
  for node in range(nodes):
    arch[node] = (rng.integers(0, node + 2), rng.integers(0, 6),
                  rng.integers(0, node + 2), rng.integers(0, 6))
  return arch


if __name__ == '__main__':
  errors.boundary(main)
