"""The main job's field checks applied to the command-line flags of the tools
and benchmarks that take the same values, each failure one line naming the
flag.

`flag` runs one check of `acme_jax.checks` on one flag; `validated` runs the
whole config validation (`config.validate`, memory estimates included) on a
config built from flags, and names the flag that set a field it refuses;
`fits_memory` refuses what a flag makes too large for the machine, as
`memory.check` does. Light: `acme_jax.config` (which imports JAX) is
imported only by `validated`.
"""
from acme_jax import checks
from acme_jax.errors import ConfigError, UserError


def flag(check, name: str, value, *args):
  """`check(config, field, *args)` on `--name=value`: the value, or one
  UserError '--name=value is invalid: <what the check allows>'."""
  try:
    return check({name: value}, name, *args)
  except ConfigError as e:
    raise UserError(f'--{name}={_shown(value)} is invalid: {e.allowed}') \
        from None


def positive_ints(values: dict):
  """Every --name=value of `values` a positive integer (the rule of a
  config's counts and sizes)."""
  for name, value in values.items():
    flag(checks.positive_int, name, value)


def validated(config, fields: dict, where: str, also=()):
  """`config.validate(config)` for a config built from flags: `fields` maps
  each config field a flag set to (flag name, the flag's value). A refused
  field a flag set is reported as that flag, with the flags' names in the
  message; any other as `where`'s fixed setting that the flags made
  invalid. `also`: further validations of the config (a mode's own
  section) run after it."""
  from acme_jax import config as config_lib
  try:
    for validate in (config_lib.validate, *also):
      validate(config)
    return config
  except ConfigError as e:
    allowed = e.allowed
    for field, (name, _) in sorted(fields.items(), key=lambda f: -len(f[0])):
      allowed = allowed.replace(f'config.{field}', f'--{name}').replace(
          field, f'--{name}')
    if e.field not in fields:
      raise UserError(f'{where} sets config.{e.field} = {_shown(e.value)}, '
                      f'which these flags make invalid: {allowed}') from None
    name, value = fields[e.field]
    field = ('' if _shown(value) == _shown(e.value) else
             f' (it sets config.{e.field} = {_shown(e.value)})')
    raise UserError(f'--{name}={_shown(value)} is invalid{field}: '
                    f'{allowed}') from None


def fits_memory(given: str, what: str, needed: int):
  """One line, as the main job's memory checks (`memory.check`), when
  `needed` bytes (a lower bound of what `given` makes the command hold)
  exceed the machine's memory."""
  from acme_jax import memory
  available = memory.machine_bytes()
  if needed > available:
    raise UserError(f'{given} is invalid: {what} needs at least '
                    f'{needed / memory.GIB:,.1f} GiB and this machine has '
                    f'{available / memory.GIB:,.1f} GiB; lower it')


def _shown(value) -> str:
  if isinstance(value, (list, tuple)):
    return ','.join(map(str, value))
  return str(value)
