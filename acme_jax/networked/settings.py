"""The config's `network` section, checked before any process starts: one
ConfigError naming the field (the same field checks as `acme_jax.config`)."""
import math
import re

from acme_jax.checks import (boolean, check, is_int, is_number,
                             non_negative_int, positive_int)
from acme_jax.errors import ConfigError
from acme_jax.networked import names

FAULT = re.compile(
    r'^(kill|stall):(device|edge|worker)(\d+)@([a-z.]+):(\d+)$')
# The messages an edge sends once per round (`edge._LinkedDevices`): the
# launcher fires a fault when one is logged with the fault's round. Setup
# messages carry no round, so a fault naming one would never fire.
ROUND_KINDS = ('train.round', 'train.prune')
# Longer than any run; time.sleep and deadlines overflow near 1e18 s.
MAX_SECONDS = 1e9
# Each impostor is a SuperNode process per edge; a security check needs few.
MAX_IMPOSTORS = 16
SHAPE = ('each fault is <kill|stall>:<device|edge|worker><id>@<message kind>'
         ':<round>, e.g. kill:device1@train.round:0')


def parse_fault(text: str):
  """'kill:device1@train.round:0' -> ('kill', 'device', 1, 'train.round', 0):
  when the edge sends that message kind for that round, SIGKILL that tier's
  processes ('kill'; a device's worker with it, 'worker1' the worker
  alone), or freeze the work the node does for it while the node itself
  stays connected ('stall': the reply never arrives)."""
  m = FAULT.match(text) if isinstance(text, str) else None
  if not m:
    raise ConfigError('network.faults', text, SHAPE)
  action, tier, ident, kind, round_ = m.groups()
  if kind not in ROUND_KINDS:
    raise ConfigError('network.faults', text,
                      f'message kind {kind!r} is not one an edge sends every '
                      f'round: give {" or ".join(ROUND_KINDS)}')
  return action, tier, int(ident), kind, int(round_)


def _seconds(v) -> bool:
  return is_number(v) and math.isfinite(v)


def validate(config):
  """The networked mode's section (`experiments.networked`)."""
  if config.system.hardware.latency_table:
    from acme_jax.hardware import fleet
    raise ConfigError('system.hardware.latency_table',
                      config.system.hardware.latency_table,
                      f'{fleet.ONLY}: leave it empty')
  if 'network' not in config:
    raise ConfigError('network', None, 'the networked mode needs a network '
                      'section (configs/default.py has one)')
  check(config, 'network.host', lambda v: names.host_problem(v) is None,
        'must be a host name or IP address')
  from acme_jax.hierarchy import topology as topology_lib
  topo_hp = topology_lib.TopologyHparams.from_config(config)
  last = 65535 - topo_hp.num_edges + 1
  check(config, 'network.base_port',
        lambda v: is_int(v) and 1024 <= v <= min(last, 65535 - 64),
        f'must be a port in 1024..{min(last, 65535 - 64)} (edge e listens '
        f'on base_port + e; this run has {topo_hp.num_edges} edges)')
  for field in ('tls', 'auth', 'count_bytes', 'warm_workers'):
    boolean(config, f'network.{field}')
  if config.network.auth and not config.network.tls:
    raise ConfigError('network.auth', True, 'device authentication needs '
                      'network.tls = True')
  for field in ('timeout_s', 'setup_timeout_s', 'join_timeout_s',
                'run_timeout_s'):
    check(config, f'network.{field}',
          lambda v: _seconds(v) and 0 < v <= MAX_SECONDS,
          f'must be a number of seconds in (0, {MAX_SECONDS:.0e}]')
  for field in ('restart_delay_s', 'rejoin_timeout_s', 'round_wait_s'):
    check(config, f'network.{field}',
          lambda v: _seconds(v) and 0 <= v <= MAX_SECONDS,
          f'must be a number of seconds in [0, {MAX_SECONDS:.0e}]')
  positive_int(config, 'network.min_devices')
  fewest = min(topo_hp.devices_per_edge)
  if config.network.min_devices > fewest:
    # Every edge would fail its first round (after join_timeout_s).
    raise ConfigError('network.min_devices', config.network.min_devices,
                      f'must be at most {fewest}, the devices of the '
                      'smallest edge (system.devices_per_edge)')
  non_negative_int(config, 'network.retries')
  non_negative_int(config, 'network.max_restarts')
  check(config, 'network.impostors',
        lambda v: is_int(v) and 0 <= v <= MAX_IMPOSTORS,
        f'must be a whole number in 0..{MAX_IMPOSTORS} (SuperNodes per edge)')
  non_negative_int(config, 'network.max_in_flight')
  _validate_faults(config, topo_hp)


def _validate_faults(config, topo_hp):
  faults = check(config, 'network.faults',
                 lambda v: isinstance(v, (list, tuple)),
                 'must be a list of faults; ' + SHAPE)
  counts = {'device': topo_hp.num_devices, 'worker': topo_hp.num_devices,
            'edge': topo_hp.num_edges}
  rounds = config.aggregation.rounds
  for fault in faults:
    _, tier, ident, _, round_ = parse_fault(fault)
    if ident >= counts[tier]:
      raise ConfigError('network.faults', fault,
                        f'{tier} {ident} does not exist: this run has '
                        f'{counts[tier]} {tier}s, numbered from 0')
    if round_ >= rounds:
      raise ConfigError('network.faults', fault,
                        f'round {round_} does not exist: this run has '
                        f'{rounds} rounds (aggregation.rounds), numbered '
                        'from 0')
    if tier == 'worker' and not config.network.warm_workers:
      raise ConfigError('network.faults', fault,
                        'a worker fault needs network.warm_workers = True '
                        '(stock nodes have no worker)')
