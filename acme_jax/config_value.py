"""Checks of the sections behind `experiments.supernet_value` (the shapes
between the trained grid's points, `between_grid`, and the comparison's own
`supernet_value`), `benchmarks.latency` (`latency`) and the devices as
hardware (`system.hardware`). Called from `config.validate`."""
import os

from acme_jax import choices
from acme_jax.checks import (boolean, check, fraction, is_int, is_number,
                             non_negative_int, optimizer_fields,
                             positive_int, some_of)
from acme_jax.errors import ConfigError


def _paired_shapes(config, depths_field: str, widths_field: str,
                   allow_empty: bool):
  """Two equal-length lists of multipliers in (0, 1]: (depth, width) pairs."""
  ok = lambda v: (len(v) > 0 or allow_empty) and all(  # noqa: E731
      is_number(x) and 0 < x <= 1 for x in v)
  allowed = 'must be a list of numbers in (0, 1]' + (
      '' if allow_empty else ', not empty')
  depths = check(config, depths_field, ok, allowed)
  widths = check(config, widths_field, ok, allowed)
  if len(depths) != len(widths):
    raise ConfigError(widths_field, tuple(widths),
                      f'must pair with {depths_field} (one width per depth: '
                      f'{len(depths)} values, not {len(widths)})')
  return list(zip(depths, widths))


def compared_shapes(config) -> list:
  """The (depth, width) grid cells experiments.supernet_value compares:
  `supernet_value.depths` x `widths` paired, or, both empty, the grid's
  diagonal (its sorted depths and widths paired, the shorter list's
  largest repeated): smallest to full."""
  section = config.supernet_value
  if len(section.depths) or len(section.widths):
    return [(float(d), float(w)) for d, w in zip(section.depths,
                                                  section.widths)]
  depths = sorted(float(d) for d in config.cloud.depth_mults)
  widths = sorted(float(w) for w in config.cloud.width_mults)
  n = max(len(depths), len(widths))
  pad = lambda v: v + [v[-1]] * (n - len(v))  # noqa: E731
  return list(zip(pad(depths), pad(widths)))


def _validate_latency(config):
  s = 'latency'
  non_negative_int(config, f'{s}.warmup')
  positive_int(config, f'{s}.repeats')
  positive_int(config, f'{s}.round_robin')
  check(config, f'{s}.batches',
        lambda v: len(v) > 0 and len(set(v)) == len(v) and all(
            is_int(x) and x > 0 for x in v),
        'must be a non-empty list of distinct whole numbers in '
        '1..2147483647, e.g. 1,32')
  non_negative_int(config, f'{s}.between_samples')
  check(config, f'{s}.header_samples', lambda v: is_int(v) and v >= 3,
        'must be a whole number >= 3 (the predictors fit 2 and test 1 at '
        'least)')
  check(config, f'{s}.header_keeps',
        lambda v: len(v) > 0 and all(is_number(x) and 0 < x <= 1
                                     for x in v),
        'must be a non-empty list of channel shares in (0, 1]')
  fraction(config, f'{s}.test_share')


def validate_hardware(config, num_devices: int):
  """config.system.hardware (devices as hardware)."""
  from acme_jax.hardware import profile
  h = 'system.hardware'
  check(config, f'{h}.latency_table',
        lambda v: isinstance(v, str) and (not v or os.path.isfile(v)),
        "must be the path of an existing benchmarks.latency latency.json, "
        "or '' (none)")
  positive_int(config, f'{h}.batch')
  for name in profile.FIELDS:
    problem = profile.spec_problem(config.system.hardware[name], num_devices,
                                   positive=name == 'slowdown')
    if problem:
      raise ConfigError(f'{h}.{name}', tuple(config.system.hardware[name]),
                        problem)
  for name in ('latency_budget_ms', 'memory_budget_mb'):
    spec = tuple(config.system.hardware[name])
    if (not config.system.hardware.latency_table and
        profile.draw(spec, num_devices, 0) != (0.0,) * num_devices):
      raise ConfigError(f'{h}.{name}', spec,
                        f'needs {h}.latency_table (a benchmarks.latency '
                        f'latency.json) to predict the models\' costs from')


def validate(config):
  if 'latency' in config:
    _validate_latency(config)
  if 'between_grid' in config:
    shapes = _paired_shapes(config, 'between_grid.depths',
                            'between_grid.widths', allow_empty=True)
    for d, w in shapes:
      for field, v, n, what in (
          ('depths', d, config.model.num_layers, 'layers'),
          ('widths', w, config.model.num_heads, 'heads')):
        if int(round(v * n)) < 1:
          raise ConfigError(
              f'between_grid.{field}', v,
              f'keeps round({v}*{n}) = 0 {what}; every shape keeps at '
              f'least one')
    boolean(config, 'between_grid.deliver')
  if 'supernet_value' not in config:
    return
  s = 'supernet_value'
  positive_int(config, f'{s}.repeats')
  grid = {(float(d), float(w)) for d in config.cloud.depth_mults
          for w in config.cloud.width_mults}
  _paired_shapes(config, f'{s}.depths', f'{s}.widths', allow_empty=True)
  shapes = compared_shapes(config)
  for d, w in shapes:
    if (float(d), float(w)) not in grid:
      raise ConfigError(f'{s}.depths', tuple(config[s].depths),
                        f'(depth {d}, width {w}) is not a cell of the '
                        f'trained grid (cloud.depth_mults x '
                        f'cloud.width_mults)')
  if len(set(shapes)) != len(shapes):
    raise ConfigError(f'{s}.depths', tuple(config[s].depths),
                      'must not repeat a (depth, width) pair')
  some_of(config, f'{s}.arms', choices.SUPERNET_VALUE_ARMS)
  some_of(config, f'{s}.budgets', choices.SUPERNET_VALUE_BUDGETS)
  check(config, f'{s}.budget_counts',
        lambda v: len(v) > 0 and all(isinstance(x, int) and x > 0
                                     for x in v),
        'must be a non-empty list of positive whole numbers, e.g. 4,16,64')
  boolean(config, f'{s}.baselines_from_supernet')
  optimizer_fields(config, f'{s}.scratch')
