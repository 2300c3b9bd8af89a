"""Header search space: shapes, one program for all archs, gates, param counts."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from acme_jax.device import header as header_lib

NODES, CHANNELS, CLASSES, DIM = 3, 6, 4, 5


def random_arch(rng, num_nodes=NODES):
  return np.array([[rng.integers(0, n + 2), rng.integers(0, 6),
                    rng.integers(0, n + 2), rng.integers(0, 6)]
                   for n in range(num_nodes)], np.int32)


@functools.partial(jax.jit, static_argnums=(0, 5))
def forward(header, variables, x, arch=None, gates=None, norm_from_batch=False):
  """Jitted apply: eager `nn.switch` would compile op by op."""
  return header.apply(variables, x, arch, gates,
                      norm_from_batch=norm_from_batch,
                      mutable=['batch_stats'])[0]


def make(num_layers=1, **kw):
  return header_lib.Header(CLASSES, CHANNELS, NODES, num_layers, **kw)


@pytest.mark.parametrize('grid', [(4, 4), (7,)])
def test_shapes_and_one_compile_for_many_archs(grid):
  header = make(num_layers=2)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3,) + grid + (DIM,)),
                  jnp.float32)
  variables = header_lib.init_variables(header, x.shape)
  traces = []

  @jax.jit
  def forward(variables, arch, gates, x):
    traces.append(1)
    return header.apply(variables, x, arch, gates)

  rng = np.random.default_rng(1)
  outputs = set()
  for _ in range(6):
    out = forward(variables, random_arch(rng), jnp.ones(CHANNELS), x)
    assert out.shape == (3, CLASSES)
    assert np.all(np.isfinite(out))
    outputs.add(np.asarray(out).tobytes())
  assert len(traces) == 1
  assert len(outputs) > 1  # the architecture really changes the program's output


def test_zero_gate_cuts_channel_everywhere():
  header = make(num_layers=2)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, DIM)),
                  jnp.float32)
  variables = header_lib.init_variables(header, x.shape)
  gates = jnp.ones(CHANNELS).at[2].set(0.0)
  arch = np.array([[0, 0, 1, 1], [2, 4, 0, 3], [3, 2, 1, 5]], np.int32)
  perturbed = jax.tree_util.tree_map(lambda a: a, variables)
  params = dict(perturbed['params'])
  params['stem'] = {'kernel': params['stem']['kernel'].at[:, 2].add(5.0)}
  perturbed = dict(perturbed, params=params)
  for train_norm in (False, True):
    outs = [forward(header, v, x, arch, gates, train_norm)
            for v in (variables, perturbed)]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
  ungated = [forward(header, v, x, arch) for v in (variables, perturbed)]
  assert not np.allclose(ungated[0], ungated[1])


@pytest.mark.parametrize('grid', [(3, 3), (5,)])
def test_param_count_matches_extracted_header(grid):
  header = make(num_layers=2)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2,) + grid + (DIM,)), jnp.float32)
  variables = header_lib.init_variables(header, x.shape)
  # Give the norms non-trivial running statistics.
  variables['batch_stats'] = jax.tree_util.tree_map(
      lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype),
      variables['batch_stats'])
  for _ in range(3):
    arch = random_arch(rng)
    gates = np.ones(CHANNELS, np.float32)
    gates[rng.choice(CHANNELS, 2, replace=False)] = 0
    fixed, extracted = header_lib.extract(header, variables, arch, gates)
    expected = header_lib.header_param_count(
        arch, 4, feature_dim=DIM, num_classes=CLASSES, grid_rank=len(grid),
        num_layers=2)
    assert header_lib.count_params(extracted['params']) == expected
    dense = header_lib.init_variables(fixed, x.shape)
    assert header_lib.count_params(dense['params']) == expected
    assert (jax.tree_util.tree_structure(dense) ==
            jax.tree_util.tree_structure(extracted))
    np.testing.assert_allclose(forward(fixed, extracted, x),
                               forward(header, variables, x, arch, gates),
                               rtol=1e-4, atol=1e-5)


def test_param_count_closed_form():
  # Two sep3 (2-D: 9K + K^2 + 2K each), one sep1 (K + K^2 + 2K), rest free.
  arch = np.array([[0, 0, 1, 2], [0, 0, 2, 4], [1, 5, 3, 3]])
  k, d, m = 10, 7, 3
  stem_head = d * k + 2 * k + k * m + m
  cell = 2 * (9 * k + k * k + 2 * k) + (k + k * k + 2 * k)
  assert header_lib.header_param_count(
      arch, k, feature_dim=d, num_classes=m, grid_rank=2,
      num_layers=3) == stem_head + 3 * cell
  cell_1d = 2 * (3 * k + k * k + 2 * k) + (k + k * k + 2 * k)
  assert header_lib.header_param_count(
      arch, k, feature_dim=d, num_classes=m, grid_rank=1,
      num_layers=1) == stem_head + cell_1d


def test_loose_ends_and_validation():
  arch = np.array([[0, 0, 1, 0], [2, 0, 0, 0], [1, 0, 1, 0]])
  np.testing.assert_array_equal(header_lib.loose_ends(arch), [0, 1, 1])
  with pytest.raises(ValueError):
    header_lib.validate_arch(np.array([[2, 0, 0, 0]] * 3), 3)


@pytest.mark.parametrize('name', sorted(header_lib.BASELINES))
@pytest.mark.parametrize('grid', [(4, 4), (6,)])
def test_fixed_heads_run(name, grid):
  model = header_lib.BASELINES[name](num_classes=CLASSES)
  x = jnp.ones((2,) + grid + (DIM,))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  out = jax.jit(functools.partial(model.apply, train=True))(
      variables, x, rngs={'dropout': jax.random.key(1)})
  assert out.shape == (2, CLASSES)
