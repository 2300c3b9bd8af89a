"""Field checks for config sections: each reads one dotted field and raises
one `ConfigError` naming it, the value and what is allowed.

A leaf module (it imports only `errors`): `config.py` validates the method's
sections with it, `networked/settings.py` the network section.
"""
import math
import numbers

from acme_jax.errors import ConfigError

# The largest count a field may hold: counts index int32 arrays and loops;
# beyond it a value is a typo (1e20 epochs), not an experiment.
MAX_INT = 2**31 - 1
# The smallest positive float a field may hold: float32's smallest normal.
# Below it a temperature or rate divides to infinity (1e-320 is positive in
# Python and zero, or a denormal, in float32).
MIN_POSITIVE = 1.1754944e-38


def get(config, field: str):
  node = config
  for part in field.split('.'):
    if part not in node:
      raise ConfigError(field, None, 'this field is required')
    node = node[part]
  return node


def check(config, field: str, ok, allowed: str):
  """`field`'s value when `ok(value)`, else a ConfigError with `allowed`."""
  value = get(config, field)
  try:
    good = ok(value)
  except (TypeError, ValueError):
    good = False
  if not good:
    raise ConfigError(field, value, allowed)
  return value


def is_int(v) -> bool:
  """A whole number a field can hold (|v| <= MAX_INT)."""
  return (isinstance(v, numbers.Integral) and not isinstance(v, bool) and
          abs(v) <= MAX_INT)


def is_number(v) -> bool:
  """A finite real number: no field gives infinity or NaN a meaning."""
  return (isinstance(v, numbers.Real) and not isinstance(v, bool) and
          math.isfinite(v))


def is_positive(v) -> bool:
  """A finite number >= MIN_POSITIVE (see there)."""
  return is_number(v) and v >= MIN_POSITIVE


def positive_int(config, field):
  return check(config, field, lambda v: is_int(v) and v > 0,
               f'must be a whole number in 1..{MAX_INT}')


def non_negative_int(config, field):
  return check(config, field, lambda v: is_int(v) and v >= 0,
               f'must be a whole number in 0..{MAX_INT}')


def positive_number(config, field):
  return check(config, field, is_positive,
               f'must be a finite number >= {MIN_POSITIVE:.7g} (float32\'s '
               f'smallest positive normal)')


def non_negative_number(config, field):
  return check(config, field, lambda v: is_number(v) and v >= 0,
               'must be a finite number >= 0')


def ordered(config, low_field: str, high_field: str):
  """`low_field`'s value <= `high_field`'s (both already checked)."""
  low, high = get(config, low_field), get(config, high_field)
  if low > high:
    raise ConfigError(low_field, low,
                      f'must be at most {high_field} = {high!r}')


def boolean(config, field):
  return check(config, field, lambda v: isinstance(v, bool),
               'must be True or False')


def one_of(config, field, allowed):
  return check(config, field, lambda v: v in allowed,
               f'must be one of {", ".join(map(str, allowed))}')


def some_of(config, field, allowed):
  return check(config, field,
               lambda v: len(v) > 0 and all(x in allowed for x in v),
               f'must list some of {", ".join(map(str, allowed))}')


def positive_numbers(config, field):
  return check(config, field,
               lambda v: len(v) > 0 and all(is_positive(x) for x in v),
               f'must be a non-empty list of finite numbers >= '
               f'{MIN_POSITIVE:.7g}')


def fraction(config, field, low_open=True, high_open=True):
  lo, hi = ('(' if low_open else '['), (')' if high_open else ']')

  def ok(v):
    if not is_number(v):
      return False
    above = v > 0 if low_open else v >= 0
    below = v < 1 if high_open else v <= 1
    return above and below

  return check(config, field, ok, f'must be a number in {lo}0, 1{hi}')


def optimizer_fields(config, prefix: str):
  """A training section's AdamW fields: learning rate, clipping, weight
  decay, warm-up, and the images' random shift."""
  for name in ('learning_rate', 'clip_norm'):
    positive_number(config, f'{prefix}.{name}')
  non_negative_number(config, f'{prefix}.weight_decay')
  fraction(config, f'{prefix}.warmup_fraction', low_open=False)
  non_negative_int(config, f'{prefix}.max_shift')
