"""Field checks for config sections: each reads one dotted field and raises
one `ConfigError` naming it, the value and what is allowed.

A leaf module (it imports only `errors`): `config.py` validates the method's
sections with it, `networked/settings.py` the network section.
"""
import numbers

from acme_jax.errors import ConfigError


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
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def positive_int(config, field):
  return check(config, field, lambda v: is_int(v) and v > 0,
               'must be a positive integer')


def non_negative_int(config, field):
  return check(config, field, lambda v: is_int(v) and v >= 0,
               'must be an integer >= 0')


def positive_number(config, field):
  return check(config, field, lambda v: is_number(v) and v > 0,
               'must be a number > 0')


def non_negative_number(config, field):
  return check(config, field, lambda v: is_number(v) and v >= 0,
               'must be a number >= 0')


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
               lambda v: len(v) > 0 and all(is_number(x) and x > 0
                                            for x in v),
               'must be a non-empty list of numbers > 0')


def fraction(config, field, low_open=True, high_open=True):
  lo, hi = ('(' if low_open else '['), (')' if high_open else ']')

  def ok(v):
    if not is_number(v):
      return False
    above = v > 0 if low_open else v >= 0
    below = v < 1 if high_open else v <= 1
    return above and below

  return check(config, field, ok, f'must be a number in {lo}0, 1{hi}')
