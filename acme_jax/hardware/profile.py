"""A device as hardware (config.system.hardware): how much slower it runs
than the machine a latency table was measured on, its latency and memory
budgets, and its links' bandwidths.

Each field is a spec over the devices, a tuple so one command-line override
can give any of them:

  (x,)                    every device x
  (x_0, ..., x_{D-1})     one value per device
  ('uniform', lo, hi)     drawn uniformly in [lo, hi], seeded
  ('choice', v_1, ...)    each device one of the values, seeded

A zero budget is no budget; a zero bandwidth makes transfers take no time.
"""
import dataclasses
from typing import Sequence, Tuple

import numpy as np

FIELDS = ('slowdown', 'latency_budget_ms', 'memory_budget_mb',
          'uplink_mbps', 'downlink_mbps')


@dataclasses.dataclass(frozen=True)
class Hardware:
  slowdown: float = 1.0            # latency = the table's prediction x this
  latency_budget_ms: float = 0.0   # 0: no latency budget
  memory_budget_mb: float = 0.0    # 0: no memory budget
  uplink_mbps: float = 0.0         # 0: uploads take no time
  downlink_mbps: float = 0.0       # 0: downloads take no time

  def latency_ms(self, table_ms: float) -> float:
    """This device's latency for a program the table predicts at
    `table_ms`."""
    return self.slowdown * float(table_ms)

  def fits(self, table_ms: float, memory_bytes: float) -> bool:
    """Whether a model the table predicts at `table_ms` and `memory_bytes`
    meets this device's latency and memory budgets (those it has)."""
    latency_ok = (not self.latency_budget_ms or
                  self.latency_ms(table_ms) <= self.latency_budget_ms)
    memory_ok = (not self.memory_budget_mb or
                 memory_bytes <= self.memory_budget_mb * 2 ** 20)
    return latency_ok and memory_ok

  def transfer_seconds(self, up_bytes: float, down_bytes: float) -> float:
    """Seconds to send `up_bytes` and receive `down_bytes` (Mbps are 10^6
    bits per second)."""
    seconds = 0.0
    if self.uplink_mbps:
      seconds += 8 * up_bytes / (self.uplink_mbps * 1e6)
    if self.downlink_mbps:
      seconds += 8 * down_bytes / (self.downlink_mbps * 1e6)
    return seconds


def spec_problem(spec, num_devices: int, positive: bool = False) -> str:
  """Why `spec` is not a hardware spec over `num_devices` devices ('' when
  it is one); `positive`: every value must be > 0 (a slowdown)."""
  spec = tuple(spec)
  is_number = lambda v: (isinstance(v, (int, float)) and  # noqa: E731
                         not isinstance(v, bool) and np.isfinite(v) and
                         (v > 0 if positive else v >= 0))
  if spec and spec[0] == 'uniform':
    if len(spec) != 3 or not all(map(is_number, spec[1:])) or \
        spec[1] > spec[2]:
      return (f"('uniform', lo, hi) needs two numbers "
              f"0 {'<' if positive else '<='} lo <= hi")
    return ''
  if spec and spec[0] == 'choice':
    if len(spec) < 2 or not all(map(is_number, spec[1:])):
      return (f"('choice', v, ...) needs at least one number "
              f"{'> 0' if positive else '>= 0'}")
    return ''
  if len(spec) not in (1, num_devices) or not all(map(is_number, spec)):
    return (f"must be one number {'> 0' if positive else '>= 0'} for "
            f'every device, {num_devices} (one per device), '
            f"('uniform', lo, hi) or ('choice', v, ...)")
  return ''


def draw(spec: Sequence, num_devices: int, seed: int) -> Tuple[float, ...]:
  """The per-device values of a (valid) spec."""
  spec = tuple(spec)
  rng = np.random.default_rng(seed)
  if spec[0] == 'uniform':
    return tuple(float(v) for v in rng.uniform(spec[1], spec[2],
                                               num_devices))
  if spec[0] == 'choice':
    values = [float(v) for v in spec[1:]]
    return tuple(values[i] for i in rng.integers(len(values),
                                                 size=num_devices))
  if len(spec) == 1:
    return (float(spec[0]),) * num_devices
  return tuple(float(v) for v in spec)


def devices(section, num_devices: int, seed: int) -> Tuple[Hardware, ...]:
  """Each device's Hardware from config.system.hardware; every field draws
  with its own seed (`seed` + its place in FIELDS)."""
  values = {name: draw(section[name], num_devices, seed + i)
            for i, name in enumerate(FIELDS)}
  return tuple(Hardware(**{name: values[name][d] for name in FIELDS})
               for d in range(num_devices))
