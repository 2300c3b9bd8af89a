"""The config's `network` section, checked before any process starts: one
ConfigError naming the field (the same field checks as `acme_jax.config`)."""
import re

from acme_jax.checks import (boolean, check, is_int, is_number,
                             non_negative_int, positive_int)
from acme_jax.errors import ConfigError

FAULT = re.compile(
    r'^(kill|stall):(device|edge|worker)(\d+)@([a-z.]+):(\d+)$')


def parse_fault(text: str):
  """'kill:device1@train.round:0' -> ('kill', 'device', 1, 'train.round', 0):
  when the edge sends that message kind for that round, SIGKILL that tier's
  processes ('kill'; a device's worker with it, 'worker1' the worker
  alone), or freeze the work the node does for it while the node itself
  stays connected ('stall': the reply never arrives)."""
  m = FAULT.match(text)
  if not m:
    raise ConfigError('network.faults', text,
                      'each fault is <kill|stall>:<device|edge|worker><id>@'
                      '<message kind>:<round>, e.g. kill:device1@train.round:0')
  action, tier, ident, kind, round_ = m.groups()
  return action, tier, int(ident), kind, int(round_)


def validate(config):
  """The networked mode's section (`experiments.networked`)."""
  if 'network' not in config:
    raise ConfigError('network', None, 'the networked mode needs a network '
                      'section (configs/default.py has one)')
  check(config, 'network.host', lambda v: isinstance(v, str) and v,
        'must be a host name or IP address')
  check(config, 'network.base_port',
        lambda v: is_int(v) and 1024 <= v <= 65535 - 64,
        'must be a port in 1024..65471')
  for field in ('tls', 'auth', 'count_bytes', 'warm_workers'):
    boolean(config, f'network.{field}')
  if config.network.auth and not config.network.tls:
    raise ConfigError('network.auth', True, 'device authentication needs '
                      'network.tls = True')
  for field in ('timeout_s', 'setup_timeout_s', 'join_timeout_s',
                'run_timeout_s'):
    check(config, f'network.{field}', lambda v: is_number(v) and v > 0,
          'must be a number of seconds > 0')
  for field in ('restart_delay_s', 'rejoin_timeout_s', 'round_wait_s'):
    check(config, f'network.{field}', lambda v: is_number(v) and v >= 0,
          'must be a number of seconds >= 0')
  positive_int(config, 'network.min_devices')
  non_negative_int(config, 'network.retries')
  non_negative_int(config, 'network.max_restarts')
  non_negative_int(config, 'network.impostors')
  non_negative_int(config, 'network.max_in_flight')
  from acme_jax.hierarchy import topology as topology_lib
  topo_hp = topology_lib.TopologyHparams.from_config(config)
  counts = {'device': topo_hp.num_devices, 'worker': topo_hp.num_devices,
            'edge': topo_hp.num_edges}
  for fault in config.network.faults:
    _, tier, ident, _, _ = parse_fault(fault)
    if ident >= counts[tier]:
      raise ConfigError('network.faults', fault,
                        f'{tier} {ident} does not exist: this run has '
                        f'{counts[tier]} {tier}s, numbered from 0')
