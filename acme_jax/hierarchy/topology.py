"""The three-tier system: 1 cloud, E edge servers, devices under each edge.

Devices carry what the edge needs to choose their backbone: a size budget (in
parameters, backbone + header) and a hardware profile for the latency/energy model
of docs/method.md 4.2. Ids are dense: edges 0..E-1, devices 0..D-1 numbered edge by edge.
"""
import dataclasses
from typing import Sequence

import numpy as np

from acme_jax import sizes
from acme_jax.selection.costs import DeviceProfile  # noqa: F401 (re-exported)


@dataclasses.dataclass(frozen=True)
class Device:
  id: int
  edge_id: int
  budget: int               # max parameters of backbone + header on this device
  profile: DeviceProfile = DeviceProfile()


@dataclasses.dataclass(frozen=True)
class Topology:
  edges: tuple     # edge ids, 0..E-1
  devices: tuple   # Device, ordered by id

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  @property
  def num_edges(self) -> int:
    return len(self.edges)

  def devices_of(self, edge_id: int) -> tuple:
    if edge_id not in self.edges:
      raise ValueError(f'unknown edge {edge_id}; edges: {self.edges}')
    return tuple(d for d in self.devices if d.edge_id == edge_id)

  def device(self, device_id: int) -> Device:
    if not 0 <= device_id < len(self.devices):
      raise ValueError(f'unknown device {device_id}; have {len(self.devices)}')
    return self.devices[device_id]


def _devices_per_edge(num_edges: int, devices_per_edge) -> list:
  if num_edges < 1:
    raise ValueError(f'num_edges must be >= 1, got {num_edges}')
  if isinstance(devices_per_edge, (int, np.integer)):
    counts = [int(devices_per_edge)] * num_edges
  else:
    counts = [int(c) for c in devices_per_edge]
    if len(counts) != num_edges:
      raise ValueError(f'devices_per_edge lists {len(counts)} edges, '
                       f'num_edges is {num_edges}')
  if any(c < 1 for c in counts):
    raise ValueError(f'every edge needs >= 1 device, got {counts}')
  return counts


def draw_budgets(spec, num_devices: int, seed: int) -> list:
  """Budgets (parameters) from an int (all equal), an explicit list, or a spec.

  Specs: ('uniform', low, high) draws integers uniformly in [low, high];
  ('choice', values) draws each budget from `values`. Both use `seed`.
  """
  if isinstance(spec, (int, np.integer)):
    budgets = [int(spec)] * num_devices
  elif isinstance(spec, tuple) and spec and isinstance(spec[0], str):
    rng = np.random.default_rng(seed)
    if spec[0] == 'uniform' and len(spec) == 3:
      low, high = int(spec[1]), int(spec[2])
      if low > high:
        raise ValueError(f'uniform budgets need low <= high, got {spec}')
      budgets = rng.integers(low, high, size=num_devices, endpoint=True).tolist()
    elif spec[0] == 'choice' and len(spec) == 2:
      values = [int(v) for v in spec[1]]
      if not values:
        raise ValueError('choice budgets need at least one value')
      budgets = [values[i] for i in rng.integers(len(values), size=num_devices)]
    else:
      raise ValueError(f"unknown budget spec {spec!r}; use an int, a list, "
                       f"('uniform', low, high) or ('choice', values)")
  else:
    budgets = [int(b) for b in spec]
    if len(budgets) != num_devices:
      raise ValueError(f'{len(budgets)} explicit budgets for {num_devices} devices')
  if any(b <= 0 for b in budgets):
    raise ValueError(f'budgets must be positive, got {budgets}')
  return [int(b) for b in budgets]


def build_topology(num_edges: int, devices_per_edge, budgets,
                   profiles=DeviceProfile(), seed: int = 0) -> Topology:
  """Topology with devices numbered edge by edge.

  Args:
    num_edges: E >= 1.
    devices_per_edge: one int for every edge, or a list with one count per edge.
    budgets: see `draw_budgets` (int, explicit list of D, ('uniform', lo, hi),
      ('choice', values)).
    profiles: one DeviceProfile for all devices, or a list of D profiles.
    seed: for drawn budgets.
  """
  counts = _devices_per_edge(num_edges, devices_per_edge)
  num_devices = sum(counts)
  budget_list = draw_budgets(budgets, num_devices, seed)
  if isinstance(profiles, DeviceProfile):
    profile_list = [profiles] * num_devices
  else:
    profile_list = list(profiles)
    if len(profile_list) != num_devices:
      raise ValueError(f'{len(profile_list)} profiles for {num_devices} devices')
    if not all(isinstance(p, DeviceProfile) for p in profile_list):
      raise ValueError('profiles must be DeviceProfile instances')
  edge_ids = [edge for edge, count in enumerate(counts) for _ in range(count)]
  devices = tuple(Device(i, edge_ids[i], budget_list[i], profile_list[i])
                  for i in range(num_devices))
  return Topology(tuple(range(num_edges)), devices)


@dataclasses.dataclass(frozen=True)
class TopologyHparams:
  """The system's shape and its devices' budgets and profile (config.system):
  everything the topology is built from, read from the config here alone."""
  num_edges: int
  devices_per_edge: tuple         # one count per edge
  budgets: tuple = ()             # one per device; () draws them
  budget_draw: str = 'linspace'   # drawn budgets: linspace, or uniform (seed)
  header_allowance: int = 0       # parameters every budget keeps for the header
  profile: DeviceProfile = DeviceProfile()
  seed: int = 0

  @classmethod
  def from_config(cls, config) -> 'TopologyHparams':
    system = config.system
    return cls(num_edges=system.num_edges,
               devices_per_edge=tuple(sizes.devices_per_edge(config)),
               budgets=tuple(system.budgets), budget_draw=system.budget_draw,
               header_allowance=system.header_allowance,
               profile=DeviceProfile(**system.profile.to_dict()),
               seed=config.seed)

  @property
  def num_devices(self) -> int:
    return sum(self.devices_per_edge)

  def budget_spec(self, backbone_params: Sequence[int]):
    """The budgets given, else (`draw_budgets`' spec) spread over [smallest,
    largest] trained backbone + the header allowance: evenly (linspace) or
    drawn uniformly with the seed."""
    if self.budgets:
      return self.budgets
    low = min(backbone_params) + self.header_allowance
    high = max(backbone_params) + self.header_allowance
    if self.budget_draw == 'linspace':
      return (np.linspace(low, high, self.num_devices).round().astype(int)
              .tolist())
    return ('uniform', low, high)


def from_hparams(hp: TopologyHparams,
                 backbone_params: Sequence[int]) -> Topology:
  """The topology of `hp`, its budgets drawn over the trained backbones'
  sizes (`backbone_params`) where the config gives none."""
  return build_topology(hp.num_edges, list(hp.devices_per_edge),
                        hp.budget_spec(backbone_params), hp.profile,
                        seed=hp.seed)
