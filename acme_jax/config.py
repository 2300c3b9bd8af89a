"""Config validation: every check in one place, run before any work.

A wrong value stops the run with one `ConfigError` naming the field, the value
given and what is allowed, instead of a trace from deep inside JAX.
"""
import numbers

from acme_jax import data as data_lib
from acme_jax.models import subnet as subnet_lib


class ConfigError(ValueError):

  def __init__(self, field: str, value, allowed: str):
    self.field, self.value, self.allowed = field, value, allowed
    super().__init__(f'config.{field} = {value!r} is invalid: {allowed}')


def _get(config, field):
  node = config
  for part in field.split('.'):
    if part not in node:
      raise ConfigError(field, None, 'this field is required')
    node = node[part]
  return node


def _check(config, field, ok, allowed):
  value = _get(config, field)
  try:
    good = ok(value)
  except (TypeError, ValueError):
    good = False
  if not good:
    raise ConfigError(field, value, allowed)
  return value


def _is_int(v):
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v):
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _positive_int(config, field):
  return _check(config, field, lambda v: _is_int(v) and v > 0,
                'must be a positive integer')


def _non_negative_int(config, field):
  return _check(config, field, lambda v: _is_int(v) and v >= 0,
                'must be an integer >= 0')


def _fraction(config, field, low_open=True, high_open=True):
  lo, hi = ('(' if low_open else '['), (')' if high_open else ']')

  def ok(v):
    if not _is_number(v):
      return False
    above = v > 0 if low_open else v >= 0
    below = v < 1 if high_open else v <= 1
    return above and below

  return _check(config, field, ok, f'must be a number in {lo}0, 1{hi}')


def _multipliers(config, field, count: int, what: str):
  values = _check(
      config, field,
      lambda v: len(v) > 0 and all(_is_number(x) and 0 < x <= 1 for x in v),
      'must be a non-empty list of numbers in (0, 1], e.g. 0.25,0.5,1.0')
  for v in values:
    kept = int(round(v * count))
    if kept < 1:
      raise ConfigError(field, tuple(values),
                        f'{v} keeps round({v}*{count}) = 0 {what}; every '
                        f'multiplier must keep at least one')
  if len(set(values)) != len(values):
    raise ConfigError(field, tuple(values), 'must not repeat a value')
  return values


def _stage(config, prefix, elastic):
  _non_negative_int(config, f'{prefix}.epochs')
  for name in ('learning_rate', 'clip_norm'):
    _check(config, f'{prefix}.{name}', lambda v: _is_number(v) and v > 0,
           'must be a number > 0')
  _check(config, f'{prefix}.weight_decay', lambda v: _is_number(v) and v >= 0,
         'must be a number >= 0')
  _fraction(config, f'{prefix}.warmup_fraction', low_open=False)
  if elastic:
    for name in ('lambda_logits', 'lambda_hidden'):
      _check(config, f'{prefix}.{name}', lambda v: _is_number(v) and v >= 0,
             'must be a number >= 0')


def validate(config):
  """Raise `ConfigError` for the first invalid field; return the config."""
  _check(config, 'seed', _is_int, 'must be an integer')

  _check(config, 'data.name', lambda v: v in data_lib.SUPPORTED,
         f'must be one of {", ".join(data_lib.SUPPORTED)}')
  image_size = _positive_int(config, 'data.image_size')
  _fraction(config, 'data.cloud_fraction')
  _fraction(config, 'data.validation_fraction')
  _non_negative_int(config, 'data.max_examples_per_split')

  patch = _positive_int(config, 'model.patch_size')
  if image_size % patch:
    raise ConfigError('data.image_size', image_size,
                      f'must be divisible by model.patch_size = {patch}')
  hidden = _positive_int(config, 'model.hidden_size')
  layers = _positive_int(config, 'model.num_layers')
  heads = _positive_int(config, 'model.num_heads')
  if hidden % heads:
    raise ConfigError('model.num_heads', heads,
                      f'must divide model.hidden_size = {hidden}')
  _positive_int(config, 'model.mlp_dim')
  _check(config, 'model.layer_norm_eps', lambda v: _is_number(v) and v > 0,
         'must be a number > 0')

  widths = _multipliers(config, 'cloud.width_mults', heads, 'heads')
  depths = _multipliers(config, 'cloud.depth_mults', layers, 'layers')
  for d in depths:
    kept = subnet_lib.kept_layer_indices(layers, d)
    if kept[-1] >= layers:
      raise ConfigError('cloud.depth_mults', tuple(depths),
                        f'{d} keeps layer index {kept[-1]} of {layers}')
  del widths
  _positive_int(config, 'cloud.batch_size')
  _positive_int(config, 'cloud.eval_batch_size')
  _check(config, 'cloud.reorder', lambda v: isinstance(v, bool),
         'must be True or False')
  _positive_int(config, 'cloud.importance_batches')
  _stage(config, 'cloud.teacher', elastic=False)
  _non_negative_int(config, 'cloud.teacher.max_shift')
  _stage(config, 'cloud.width_stage', elastic=True)
  _stage(config, 'cloud.depth_stage', elastic=True)
  for stage in ('width_stage', 'depth_stage'):
    _non_negative_int(config, f'cloud.{stage}.max_shift')
  return config
