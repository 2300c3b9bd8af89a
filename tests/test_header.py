"""The prototype's ENAS child: extraction, exact sizes, gates, ops, one program."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acme_jax.device import header as header_lib
from acme_jax.device import header_extract
from acme_jax.device import op_choice
from acme_jax.device import ops

CLASSES, DIM, CHANNELS, NODES = 3, 5, 6, 3


def spec(rank=2, max_layers=3):
  return header_lib.Spec(num_classes=CLASSES, feature_dim=DIM, grid_rank=rank,
                         num_channels=CHANNELS, num_nodes=NODES,
                         max_layers=max_layers, dropout_rate=0.0)


def random_arch(rng):
  return np.array([[rng.integers(0, n + 2), rng.integers(0, 6),
                    rng.integers(0, n + 2), rng.integers(0, 6)]
                   for n in range(NODES)], np.int32)


def random_gates(s, rng, keep=0.6):
  return {k: (rng.random(shape) < keep).astype(np.float32)
          for k, shape in header_lib.gate_shapes(s).items()}


def perturbed(s, seed):
  """Variables with non-trivial norms and running statistics."""
  v = header_lib.init_variables(s, seed)
  rng = np.random.default_rng(seed)
  jitter = lambda tree, scale: jax.tree.map(  # noqa: E731
      lambda a: a + scale * rng.standard_normal(a.shape).astype(a.dtype), tree)
  stats = {'stem_mean': v['batch_stats']['stem_mean'] + 0.3,
           'stem_var': v['batch_stats']['stem_var'] * 1.7}
  return {'params': jitter(v['params'], 0.1), 'batch_stats': stats}


_APPLY = {}


def apply(s, variables, x, arch, n_layers, gates, weights=None):
  if s not in _APPLY:
    header = header_lib.Header(s)
    _APPLY[s] = jax.jit(lambda v, x, a, n, g, w: header.apply(v, x, a, n, g, w))
  w = np.ones(len(x), np.float32) if weights is None else weights
  return np.asarray(_APPLY[s](variables, x, arch, n_layers, gates, w))


@pytest.mark.parametrize('rank', [2, pytest.param(1, marks=pytest.mark.slow)])
def test_extracted_header_equals_the_gated_search_header(rank):
  s = spec(rank, max_layers=3)
  rng = np.random.default_rng(rank)
  x = rng.standard_normal((5,) + (4,) * rank + (DIM,)).astype(np.float32)
  v = perturbed(s, 0)
  for trial in range(3 if rank == 2 else 2):
    arch = random_arch(rng)
    n_layers = int(rng.integers(1, 4))
    gates = random_gates(s, rng) if trial else header_lib.full_gates(s)
    dense, dense_vars = header_extract.extract(s, v, arch, n_layers, gates)
    # Jitted as a device runs it (and faster than eager dispatch).
    np.testing.assert_allclose(jax.jit(dense.apply)(dense_vars, x), apply(
        s, v, x, arch, n_layers, gates), rtol=1e-4, atol=1e-5)
    # The exact count is the extracted header's parameter count.
    assert int(header_lib.param_count(s, arch, n_layers, gates)) == \
        header_extract.count_params(dense_vars['params'])


def test_param_count_by_hand():
  """One sep3 on node 0 branch a, everything else pools, 2 cells, 2-D grid."""
  s = spec(2, max_layers=3)
  arch = np.array([[0, 0, 1, 2], [2, 3, 2, 2], [3, 2, 3, 3]], np.int32)
  c, d, k = CHANNELS, DIM, CLASSES
  stem = d * c + 2 * c
  sep3 = 2 * (9 * c + c * c + 2 * c)
  loose = 1  # only node 2 (entry 4) is read by no one
  cell = sep3 + loose * c * c + 2 * c
  assert int(header_lib.param_count(s, arch, 2)) == stem + 2 * cell + c * k + k
  # Unused entries are loose ends too: here cell input 1 and node 0.
  arch2 = np.array([[0, 2, 0, 2], [0, 3, 0, 3], [3, 2, 0, 2]], np.int32)
  assert np.asarray(header_lib.loose_ends(arch2)).tolist() == [0, 1, 1, 0, 1]
  assert int(header_lib.param_count(s, arch2, 1)) == \
      stem + 3 * c * c + 2 * c + c * k + k


def test_smallest_arch_is_cheapest_and_one_loose_end():
  s = spec()
  smallest = header_lib.smallest_arch(NODES)
  header_lib.validate_arch(smallest, NODES)
  assert float(np.sum(header_lib.loose_ends(smallest))) == 1
  rng = np.random.default_rng(0)
  low = int(header_lib.param_count(s, smallest, 3))
  assert all(int(header_lib.param_count(s, random_arch(rng), 3)) >= low
             for _ in range(20))


def test_depthwise_equals_a_grouped_convolution():
  rng = np.random.default_rng(0)
  for rank, k in ((2, 3), (2, 5), (1, 3), (2, 1)):
    x = rng.standard_normal((2,) + (5,) * rank + (4,)).astype(np.float32)
    kernel = rng.standard_normal((k,) * rank + (4,)).astype(np.float32)
    spatial = 'HW'[:rank] if rank == 2 else 'W'
    reference = jax.lax.conv_general_dilated(
        x, kernel[..., None, :], (1,) * rank, 'SAME', feature_group_count=4,
        dimension_numbers=(f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
    np.testing.assert_allclose(ops.depthwise(x, kernel), reference,
                               rtol=1e-5, atol=1e-5)


def test_the_op_ids_name_the_ops_they_run():
  named = {op_choice.AVG_POOL: 'avg_pool_3x3',
           op_choice.MAX_POOL: 'max_pool_3x3', op_choice.IDENTITY: 'identity'}
  named |= {i: f'sep_conv_{k}x{k}' for i, k in op_choice.SEP_KERNELS.items()}
  assert named == dict(enumerate(header_lib.OPS))


def test_pools_match_torch_semantics():
  """avg_pool counts zero padding (torch's count_include_pad=True)."""
  x = jnp.arange(9.0).reshape(1, 3, 3, 1)
  avg = np.asarray(ops.pool(x, 'avg'))[0, :, :, 0]
  assert avg[0, 0] == pytest.approx((0 + 1 + 3 + 4) / 9)
  assert avg[1, 1] == pytest.approx(np.arange(9.0).mean())
  mx = np.asarray(ops.pool(-x, 'max'))[0, :, :, 0]
  assert mx[2, 2] == -4.0  # padding never wins a max


def test_skipped_cells_are_identity():
  """A 5-cell header running 2 cells equals a 2-cell header on its first two
  cells' weights (cells past n_layers are skipped)."""
  big, small = spec(max_layers=5), spec(max_layers=2)
  v = perturbed(big, 1)
  sliced = jax.tree_util.tree_map_with_path(
      lambda path, a: a[:2] if path[0].key.startswith(('sep', 'final_'))
      else a, v['params'])
  rng = np.random.default_rng(2)
  x = rng.standard_normal((4, 3, 3, DIM)).astype(np.float32)
  arch = random_arch(rng)
  gates_big = random_gates(big, rng)
  gates_small = {'stem': gates_big['stem'], 'cells': gates_big['cells'][:2],
                 'final': gates_big['final'][:2]}
  np.testing.assert_allclose(
      apply(big, v, x, arch, 2, gates_big),
      apply(small, {'params': sliced, 'batch_stats': v['batch_stats']}, x,
            arch, 2, gates_small), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~31 s (the 10-minute budget)
def test_each_node_input_has_its_own_conv_weights():
  """The prototype keeps a separate op per (node, branch, input): the
  gradient of a sep3 reading input 1 lands on slot (node 0, input 1) only."""
  s = spec(max_layers=3)
  v = perturbed(s, 3)
  header = header_lib.Header(s)
  x = np.random.default_rng(3).standard_normal((4, 3, 3, DIM)).astype(
      np.float32)
  arch = np.array([[1, 0, 1, 2], [2, 2, 2, 2], [3, 2, 3, 2]], np.int32)
  grads = jax.grad(lambda p: header.apply(
      {'params': p, 'batch_stats': v['batch_stats']}, x, arch, 1,
      header_lib.full_gates(s)).sum())(v['params'])
  norms = np.abs(np.asarray(grads['sep3_pw'])).sum(axis=(-2, -1))
  used = np.zeros_like(norms, bool)
  used[0, 0, 1, 0] = True  # layer 0, node 0, input 1, branch a (both reps)
  assert np.all(norms[~used] == 0) and np.all(norms[used] > 0)
  assert np.abs(np.asarray(grads['sep5_pw'])).sum() == 0


def test_padding_rows_never_change_real_rows():
  """Cell BatchNorm statistics use only weighted (real) rows."""
  s = spec()
  v = perturbed(s, 4)
  rng = np.random.default_rng(4)
  x = rng.standard_normal((5, 3, 3, DIM)).astype(np.float32)
  arch = np.array([[0, 0, 1, 1], [2, 4, 0, 0], [3, 1, 2, 5]], np.int32)
  gates = header_lib.full_gates(s)
  padded = np.concatenate([x, 100 * rng.standard_normal(x[:3].shape).astype(
      np.float32)])
  weights = np.r_[np.ones(5), np.zeros(3)].astype(np.float32)
  np.testing.assert_allclose(apply(s, v, padded, arch, 3, gates, weights)[:5],
                             apply(s, v, x, arch, 3, gates), rtol=1e-4,
                             atol=1e-5)


def test_one_program_for_every_arch_layer_count_and_gate_state():
  s = spec(max_layers=4)
  header = header_lib.Header(s)
  traces = []

  @jax.jit
  def run(v, x, arch, n, gates):
    traces.append(1)
    return header.apply(v, x, arch, n, gates)

  v = header_lib.init_variables(s, 5)
  rng = np.random.default_rng(5)
  x = rng.standard_normal((2, 3, 3, DIM)).astype(np.float32)
  outs = {run(v, x, random_arch(rng), int(rng.integers(1, 5)),
              random_gates(s, rng)).tobytes() for _ in range(6)}
  assert len(traces) == 1 and len(outs) > 1


def test_active_gates_follow_the_arch():
  s = spec(max_layers=3)
  arch = np.array([[0, 0, 1, 2], [2, 5, 0, 4], [3, 3, 1, 1]], np.int32)
  active = jax.tree.map(np.asarray, header_lib.active_gates(s, arch, 2))
  sep = np.array([[1, 0], [0, 1], [0, 1]], bool)  # sep3|pool, id|sep1, ...
  assert np.all(active['cells'][:2] == sep[None, :, :, None, None])
  assert np.all(active['cells'][2] == 0)
  assert active['final'].sum(1).tolist() == [CHANNELS, CHANNELS, 0]


# ------------------------------------------------- an independent reference


def _np_depthwise(x, kernel):
  """'SAME' depthwise conv by explicit loops over the 2-D grid."""
  n, h, w, c = x.shape
  k = kernel.shape[0]
  r = k // 2
  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      for di in range(k):
        for dj in range(k):
          ii, jj = i + di - r, j + dj - r
          if 0 <= ii < h and 0 <= jj < w:
            out[:, i, j] += x[:, ii, jj] * kernel[di, dj]
  return out


def _np_pool(x, kind):
  """3x3 stride-1 'SAME' pools: torch's AvgPool2d(3, 1, 1) counts the zero
  padding, MaxPool2d ignores it."""
  n, h, w, c = x.shape
  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      window = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
      out[:, i, j] = (window.max(axis=(1, 2)) if kind == 'max'
                      else window.sum(axis=(1, 2)) / 9.0)
  return out


def _np_bn(x, scale, bias, w):
  """BatchNorm with the statistics of the rows weighted `w`."""
  wx = w[:, None, None, None]
  count = w.sum() * x.shape[1] * x.shape[2]
  mean = (wx * x).sum(axis=(0, 1, 2)) / count
  var = (wx * (x - mean) ** 2).sum(axis=(0, 1, 2)) / count
  return (x - mean) / np.sqrt(var + 1e-5) * scale + bias


def _np_header(params, stats, x, arch, n_layers, gates, w):
  """The search-space header in evaluation mode, written from its
  definition (ENAS micro child) with numpy loops, float64."""
  f = lambda a: np.asarray(a, np.float64)  # noqa: E731
  p = jax.tree.map(f, params)
  g = jax.tree.map(f, gates)
  h = f(x) @ p['stem']
  h = ((h - f(stats['stem_mean'])) / np.sqrt(f(stats['stem_var']) + 1e-5)
       * p['stem_scale'] + p['stem_bias']) * g['stem']
  names = {0: 'sep3', 1: 'sep5', 4: 'sep1'}
  prev, cur = h, h
  for layer in range(n_layers):
    entries = [prev, cur]
    read = set()
    for node in range(arch.shape[0]):
      total = 0.0
      for branch in range(2):
        inp, op = arch[node, 2 * branch], arch[node, 2 * branch + 1]
        read.add(int(inp))
        y = entries[inp]
        if op in names:
          sel = lambda name: p[f'{names[op]}_{name}'][layer, node, inp,  # noqa
                                                      branch]
          gate = g['cells'][layer, node, branch]
          for rep in range(2):
            y = _np_depthwise(np.maximum(y, 0), sel('dw')[rep]) * gate[2 * rep]
            y = y @ sel('pw')[rep]
            y = _np_bn(y, sel('scale')[rep], sel('bias')[rep], w)
            y = y * gate[2 * rep + 1]
        elif op == 2:
          y = _np_pool(y, 'avg')
        elif op == 3:
          y = _np_pool(y, 'max')
        total = total + y
      entries.append(total)
    out = sum(np.maximum(e, 0) @ p['final_conv'][layer, i]
              for i, e in enumerate(entries) if i not in read)
    out = _np_bn(out, p['final_scale'][layer], p['final_bias'][layer], w)
    prev, cur = cur, out * g['final'][layer]
  pooled = np.maximum(cur, 0).mean(axis=(1, 2))
  return pooled @ p['classifier']['kernel'] + p['classifier']['bias']


def test_header_forward_equals_a_numpy_reference():
  """Stem, cells (every op, inputs that choose their own weights, loose
  ends), BatchNorm over weighted rows (a padding row at weight 0), gates and
  the classifier: the jitted header equals a loop-by-loop numpy reference."""
  s = spec(2, max_layers=3)
  rng = np.random.default_rng(11)
  v = perturbed(s, 3)
  x = rng.standard_normal((4, 4, 4, DIM)).astype(np.float32)
  w = np.array([1, 1, 0, 1], np.float32)   # row 2 is padding
  x[2] = 50.0                              # ... which must change nothing
  arch = np.array([[0, 0, 1, 4], [2, 1, 0, 2], [3, 3, 1, 5]], np.int32)
  gates = random_gates(s, rng, keep=0.8)
  got = apply(s, v, x, arch, 2, gates, w)
  want = _np_header(v['params'], v['batch_stats'], x, arch, 2, gates,
                    w.astype(np.float64))
  keep = w > 0
  np.testing.assert_allclose(got[keep], want[keep], rtol=1e-4, atol=1e-5)


def _every_op_archs():
  """Four devices' architectures, every op on every node across its two
  branches and the devices' ops differing at every slot."""
  rng = np.random.default_rng(17)
  archs = []
  for d in range(4):
    ops = [(d + n) % 6 for n in range(NODES)], [(d + n + 3) % 6
                                                 for n in range(NODES)]
    archs.append(np.array([[rng.integers(0, n + 2), ops[0][n],
                            rng.integers(0, n + 2), ops[1][n]]
                           for n in range(NODES)], np.int32))
  return np.stack(archs)


def _header_loss(s):
  header = header_lib.Header(s)

  def loss(params, stats, x, arch, n_layers, gates, w):
    logits = header.apply({'params': params, 'batch_stats': stats}, x, arch,
                          n_layers, gates, w)
    return jnp.sum(jnp.sin(logits) * w[:, None])
  return jax.value_and_grad(loss, argnums=(0, 5, 6))


@pytest.mark.slow  # ~60 s on 2 cores (benchmarks/batched_choices too)
def test_batched_choices_equal_per_device_values_and_gradients():
  """Under vmap each device's ops are batched values (the header runs the
  chosen sep conv's selected weights, not a switch): per device the value
  equals the numpy reference and the value and the gradients (weights,
  gates, row weights) equal those of the device run on its own; a padding
  row changes nothing."""
  s = spec(2, max_layers=3)
  rng = np.random.default_rng(12)
  archs, layers = _every_op_archs(), np.array([3, 1, 2, 3], np.int32)
  v = [perturbed(s, 20 + d) for d in range(4)]
  x = rng.standard_normal((4, 4, 3, 3, DIM)).astype(np.float32)
  w = np.ones((4, 4), np.float32)
  w[1, 2], x[1, 2] = 0.0, 50.0   # a padding row
  gates = [random_gates(s, rng, keep=0.8) for _ in range(4)]
  stack = lambda trees: jax.tree.map(lambda *a: np.stack(a), *trees)  # noqa: E731
  args = (stack([t['params'] for t in v]), stack([t['batch_stats'] for t in v]),
          x, archs, layers, stack(gates), w)
  fn = _header_loss(s)
  batched = jax.jit(jax.vmap(fn))(*args)
  for d in range(4):
    alone = jax.jit(fn)(*[jax.tree.map(lambda a: a[d], t) for t in args])
    mine = jax.tree.map(lambda a: a[d], batched)
    for got, want in zip(jax.tree.leaves(mine), jax.tree.leaves(alone)):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    logits = _np_header(v[d]['params'], v[d]['batch_stats'], x[d], archs[d],
                        layers[d], gates[d], w[d].astype(np.float64))
    np.testing.assert_allclose(mine[0], np.sum(np.sin(logits) * w[d][:, None]),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # ~55 s here: the 10-minute budget of the default suite
def test_a_batched_choice_costs_one_branch():
  """XLA's cost analysis of the gradient: vmapped over devices with
  different ops it costs per device what one device's program costs (that
  counts each switch at its costliest op; a switch on a batched index would
  run all six ops: 2.09x before the merged op)."""
  s = spec(2, max_layers=3)
  v = header_lib.init_variables(s, 0)
  archs = _every_op_archs()
  gates = header_lib.full_gates(s)
  stack = lambda tree: jax.tree.map(  # noqa: E731
      lambda a: np.broadcast_to(a, (4,) + a.shape), tree)
  fn = _header_loss(s)

  def flops(f, *args):
    analysis = jax.jit(f).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0]
    return analysis['flops']

  one = flops(fn, v['params'], v['batch_stats'], np.zeros((8, 3, 3, DIM),
                                                          np.float32),
              archs[0], 3, gates, np.ones(8, np.float32))
  batched = flops(jax.vmap(fn), stack(v['params']), stack(v['batch_stats']),
                  np.zeros((4, 8, 3, 3, DIM), np.float32), archs,
                  np.full(4, 3, np.int32), stack(gates),
                  np.ones((4, 8), np.float32))
  assert batched / 4 < 1.15 * one


# Slow (~40 s cold); the batched-choices test keeps the per-device
# program in the default suite.
@pytest.mark.slow
def test_the_per_device_program_is_the_plain_switch_bit_for_bit():
  """One device's (the loop strategy's) value and gradients (weights, gates,
  row weights; train mode) are bit for bit those of a rematerialised
  `lax.switch`, the op before it had a vmap rule."""
  s = spec(2, max_layers=3)
  rng = np.random.default_rng(13)
  v = perturbed(s, 30)
  x = rng.standard_normal((4, 3, 3, DIM)).astype(np.float32)
  w = np.array([1, 1, 0, 1], np.float32)
  gates = random_gates(s, rng, keep=0.8)

  def run():
    header = header_lib.Header(s)

    def loss(params, gates, w):
      logits, _ = header.apply(
          {'params': params, 'batch_stats': v['batch_stats']}, x,
          _every_op_archs()[2], 3, gates, w, train=True,
          rngs={'dropout': jax.random.key(0)}, mutable=['batch_stats'])
      return jnp.sum(jnp.sin(logits) * w[:, None])
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(
        v['params'], gates, w)

  got = run()
  plain = jax.checkpoint(op_choice._switched_op)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(header_lib, 'apply_op', plain)
    want = run()
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert np.array_equal(a, b)


# Slow (~80 s and ~47 s on a cold cache): the 10-minute budget.
@pytest.mark.slow
@pytest.mark.parametrize('batched', ['inputs', 'gates'])
def test_vmap_over_inputs_or_gates_with_one_shared_header(batched):
  """vmap with the header's weights and architecture shared (not stacked):
  each example equals its own unbatched run."""
  s = spec(2, max_layers=3)
  rng = np.random.default_rng(14)
  v = perturbed(s, 31)
  arch = _every_op_archs()[0]
  xs = rng.standard_normal((3, 4, 3, 3, DIM)).astype(np.float32)
  gs = [random_gates(s, rng, keep=0.7) for _ in range(3)]
  header = header_lib.Header(s)
  fn = jax.value_and_grad(lambda params, x, g: jnp.sum(header.apply(
      {'params': params, 'batch_stats': v['batch_stats']}, x, arch, 3, g)))
  if batched == 'inputs':
    got = jax.vmap(fn, in_axes=(None, 0, None))(v['params'], xs, gs[0])
    want = [fn(v['params'], x, gs[0]) for x in xs]
  else:
    stacked = jax.tree.map(lambda *a: np.stack(a), *gs)
    got = jax.vmap(fn, in_axes=(None, None, 0))(v['params'], xs[0], stacked)
    want = [fn(v['params'], xs[0], g) for g in gs]
  for i, one in enumerate(want):
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda t: t[i], got)),
                    jax.tree.leaves(one)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
