"""Topologies number devices edge by edge and validate budgets and profiles."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from acme_jax.hierarchy import topology as T


def test_profile_defaults_are_the_prototype_constants():
  profile = T.DeviceProfile()
  assert (profile.g_n, profile.delta_g, profile.l_n, profile.delta_l, profile.p,
          profile.g_beta, profile.k) == (100, 10, 1, 0.1, 128, 50, 10)
  power = 100 + 10 * 12 * 6 + 128 * 50
  latency = 1 + 0.1 * 12 * 6
  assert profile.power(12, 6) == pytest.approx(power)
  assert profile.latency(12, 6) == pytest.approx(latency)
  assert profile.energy(12, 6) == pytest.approx(10 * power * latency)
  np.testing.assert_allclose(profile.latency(np.array([1, 2]), 3), [1.3, 1.6])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=5), st.integers(0, 1000))
def test_devices_are_numbered_edge_by_edge(counts, seed):
  topo = T.build_topology(len(counts), counts, ('uniform', 10, 20), seed=seed)
  assert topo.num_edges == len(counts)
  assert topo.num_devices == sum(counts)
  assert [d.id for d in topo.devices] == list(range(sum(counts)))
  start = 0
  for edge, count in enumerate(counts):
    ids = [d.id for d in topo.devices_of(edge)]
    assert ids == list(range(start, start + count))
    assert all(topo.device(i).edge_id == edge for i in ids)
    start += count
  assert all(10 <= d.budget <= 20 for d in topo.devices)


def test_budget_specs():
  explicit = T.build_topology(2, 2, [1, 2, 3, 4])
  assert [d.budget for d in explicit.devices] == [1, 2, 3, 4]
  same = T.build_topology(3, 1, 7)
  assert [d.budget for d in same.devices] == [7, 7, 7]
  chosen = T.build_topology(2, 10, ('choice', [5, 9]), seed=1)
  assert {d.budget for d in chosen.devices} <= {5, 9}
  again = T.build_topology(2, 10, ('choice', [5, 9]), seed=1)
  assert chosen == again
  drawn = [T.build_topology(1, 20, ('uniform', 1, 10**6), seed=s) for s in (0, 1)]
  assert drawn[0] != drawn[1]


def test_profiles_per_device():
  slow = T.DeviceProfile(delta_l=1.0)
  topo = T.build_topology(1, [2], 5, profiles=[T.DeviceProfile(), slow])
  assert topo.device(1).profile.delta_l == 1.0
  assert topo.device(0).profile == T.DeviceProfile()


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_edges=2, devices_per_edge=2, budgets=[1, 2, 3]), '3 explicit budgets'),
    (dict(num_edges=2, devices_per_edge=[1, 2, 3], budgets=1), 'lists 3 edges'),
    (dict(num_edges=0, devices_per_edge=1, budgets=1), 'num_edges'),
    (dict(num_edges=1, devices_per_edge=0, budgets=1), '>= 1 device'),
    (dict(num_edges=1, devices_per_edge=2, budgets=('normal', 1, 2)), 'budget spec'),
    (dict(num_edges=1, devices_per_edge=2, budgets=('uniform', 5, 1)), 'low <= high'),
    (dict(num_edges=1, devices_per_edge=2, budgets=[1, -1]), 'positive'),
    (dict(num_edges=1, devices_per_edge=2, budgets=1,
          profiles=[T.DeviceProfile()]), '1 profiles'),
])
def test_bad_settings_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    T.build_topology(**kwargs)


def test_unknown_edge_or_device_raises():
  topo = T.build_topology(1, 2, 1)
  with pytest.raises(ValueError, match='unknown edge'):
    topo.devices_of(3)
  with pytest.raises(ValueError, match='unknown device'):
    topo.device(2)


def _system(**system):
  from configs import default
  config = default.get_config()
  for field, value in system.items():
    config.system[field] = value
  return config


def test_hparams_read_the_system_section():
  config = _system(num_edges=2, devices_per_edge=(2, 3),
                   header_allowance=1234, budget_draw='uniform')
  config.system.profile.k = 3.0
  hp = T.TopologyHparams.from_config(config)
  assert hp == T.TopologyHparams(
      num_edges=2, devices_per_edge=(2, 3), budgets=(),
      budget_draw='uniform', header_allowance=1234,
      profile=T.DeviceProfile(k=3.0), seed=config.seed)
  assert hp.num_devices == 5
  one_count = T.TopologyHparams.from_config(_system(num_edges=3,
                                                    devices_per_edge=(2,)))
  assert one_count.devices_per_edge == (2, 2, 2)
  with pytest.raises(AttributeError):  # frozen
    hp.seed = 1


@pytest.mark.parametrize('draw', ['linspace', 'uniform'])
def test_topology_from_hparams_draws_budgets_over_the_grid(draw):
  """Budgets not given spread over [smallest, largest] backbone + the
  header allowance: what build_topology draws from that spec."""
  hp = T.TopologyHparams(num_edges=2, devices_per_edge=(2, 3),
                         budget_draw=draw, header_allowance=100, seed=4)
  params = [5000, 1000, 3000]
  spec = ([1100, 2100, 3100, 4100, 5100] if draw == 'linspace'
          else ('uniform', 1100, 5100))
  assert hp.budget_spec(params) == spec
  topo = T.from_hparams(hp, params)
  assert topo == T.build_topology(2, [2, 3], spec, seed=4)
  given = T.dataclasses.replace(hp, budgets=(9, 8, 7, 6, 5))
  assert [d.budget for d in T.from_hparams(given, params).devices] == [
      9, 8, 7, 6, 5]
