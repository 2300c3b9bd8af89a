"""What every command-line entry point shares: absl flags with config
overrides parsed inside the error boundary, a persistent XLA compilation
cache, and `errors.boundary` around the work."""
import functools
import os
import pathlib
import re
import sys
from typing import Callable

from acme_jax import config as config_lib
from acme_jax import errors
from acme_jax import malloc
from acme_jax import provenance

CACHE_ENV = 'ACME_JAX_COMPILATION_CACHE'


def check_cache_dirs():
  """The cache directories named in the environment must be directories (or
  not exist yet): a file there fails late, or warns on every compile."""
  from acme_jax.models import checkpoints
  for env in (CACHE_ENV, checkpoints.CACHE_ENV):
    value = os.environ.get(env)
    if not value or value == 'off':
      continue
    blocked = errors.file_in_the_way(value)
    if blocked is not None:
      raise errors.UserError(f'{env}={value}: {blocked} is a file; point it '
                             f'to a directory (or unset it)')


def enable_compilation_cache(path=None):
  """Reuse compiled XLA programs across runs (a rerun or the next experiment
  on the same config skips most compile time). Off with
  ACME_JAX_COMPILATION_CACHE=off; a path there relocates it."""
  import jax
  path = path or os.environ.get(CACHE_ENV) or str(
      pathlib.Path.home() / '.cache' / 'acme_jax' / 'xla')
  if path == 'off':
    return
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def _flag_problem(error: BaseException, argv) -> str:
  """One line for a command-line error (a config file or override)."""
  text = str(error).replace('\\', '')
  if isinstance(error, OSError):
    path = re.search(r"No such file or directory: '([^']+)'", text)
    if path:
      return (f'config file {path.group(1)} not found; give '
              f'--config=configs/<name>.py')
  if isinstance(error, (AttributeError, KeyError)) and 'config_config' in text:
    return ('--config: the file has no get_config(arg=None) returning a '
            'ConfigDict; give --config=configs/<name>.py')
  if isinstance(error, (AttributeError, KeyError)):
    found = re.search(r"'(\w+)'", text)
    field = found.group(1) if found else '?'
    hint = re.search(r'Did you mean "(\w+)"', text)
    flag = next((a.split('=', 1)[0] for a in argv
                 if a.startswith('--config.') and
                 a.split('=', 1)[0].split('.')[-1] == field),
                f'--config.*.{field}')
    return (f'{flag}: the config has no field {field!r}' +
            (f'; did you mean {hint.group(1)!r}?' if hint else ''))
  return errors.one_line(error)


def config_value(config_flag, argv):
  """The --config flag's ConfigDict; a missing or broken file is one line."""
  try:
    config = config_flag.value
    if config is not None:
      list(config.keys())  # a file that failed to load raises only on use
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UserError(_flag_problem(e, argv)) from e
  if config is None:
    raise errors.UserError('--config is required, e.g. '
                           '--config=configs/default.py')
  return config


# What --help lists first, where the entry point has them.
HELP_FIRST = ('config', 'workdir')


def help_flags() -> list:
  """The entry point's flags in --help's order: --config and --workdir
  (where it has them), then its own in the order it defines them. absl
  would sort them by name."""
  from absl import flags
  listed = []
  for flag in flags.FLAGS.get_key_flags_for_module(sys.argv[0]):
    if flag not in listed and flags.FLAGS[flag.name] is flag:
      listed.append(flag)
  first = {name: i for i, name in enumerate(HELP_FIRST)}
  return sorted(listed, key=lambda f: first.get(f.name, len(first)))


def _flag_help(flag, indent: str = '  ') -> str:
  """One flag as absl's --help writes it."""
  from absl import flags
  name = f'--[no]{flag.name}' if flag.boolean else f'--{flag.name}'
  short = f'-{flag.short_name},' if flag.short_name else ''
  text = flags.text_wrap(f'{short}{name}: {flag.help or ""}',
                         indent=indent + '  ', firstline_indent=indent)
  for extra in ((f'(default: {flag.default_as_str})'
                 if flag.default_as_str else None),
                (f'({flag.parser.syntactic_help})'
                 if flag.parser.syntactic_help else None)):
    if extra:
      text += '\n' + flags.text_wrap(extra, indent=indent + '  ')
  return text


def help_text() -> str:
  """absl's --help (the main module's docstring and flags) with the flags
  in `help_flags`' order."""
  doc = sys.modules['__main__'].__doc__
  if not doc:
    doc = f'\nUSAGE: {sys.argv[0]} [flags]\n'
  else:  # as absl: '%s' is the program, '%%' a percent sign
    try:
      doc %= (sys.argv[0],) * (doc.count('%') - 2 * doc.count('%%'))
    except (OverflowError, TypeError, ValueError):
      pass
  listed = help_flags()
  if listed:
    doc += f'\nflags:\n\n{sys.argv[0]}:\n' + '\n'.join(
        _flag_help(f) for f in listed)
  return doc + '\n\nTry --helpfull to get a list of all flags.'


def _ordered_help():
  """--help and --helpshort print `help_text` (absl's own sort flags by
  name); --helpfull stays absl's."""
  from absl import flags

  def parse(flag, arg):
    if flag._parse(arg):  # pylint: disable=protected-access
      print(help_text())
      sys.exit(1)  # as absl's --help

  for name in ('help', 'helpshort'):
    if name in flags.FLAGS:
      flag = flags.FLAGS[name]
      flag.parse = functools.partial(parse, flag)


def _parse_flags(argv):
  from absl import flags
  _ordered_help()
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if 'Traceback (most recent call last)' in text:
      # A config file's get_config raised: its own message, not the trace.
      flag = text.split(':', 1)[0]
      last = text.strip().splitlines()[-1].split(': ', 1)[-1]
      text = f'{flag}: {last}'
    print(f'error: {errors.one_line(text)}', file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {_flag_problem(e, argv)}', file=sys.stderr)
    sys.exit(2)


def whole_numbers(values, minimum: int = 1) -> bool:
  """For a list flag's validator: every entry a whole number >= minimum."""
  return all(v.strip().isdigit() and int(v) >= minimum for v in values)


def run_tool(main: Callable):
  """app.run(main) with flag errors and expected failures as one line."""
  from absl import app, logging
  malloc.return_large_frees_to_the_os()

  def quiet_main(argv):
    logging.set_verbosity(logging.ERROR)  # JAX / orbax / TFDS chatter
    return errors.boundary(_checked, argv)

  def _checked(argv):
    check_cache_dirs()
    return main(argv)

  app.run(quiet_main, flags_parser=_parse_flags)


def parse_shard(text):
  """'K/N' as (K, N) when K and N are whole numbers with K < N, else None."""
  k, slash, n = (text or '').partition('/')
  if slash and k.isdigit() and n.isdigit() and int(k) < int(n):
    return int(k), int(n)
  return None


def main(run: Callable, shards: bool = False):
  """`python -m experiments.X --config=... --workdir=...` for run(config,
  workdir). With `shards`, an experiment over repeats also takes
  `--shard=K/N`: run(config, workdir, shard=(K, N)) computes only its
  repeats r % N == K into the workdir's cache and writes no table, so N
  processes share the repeats once the workdir's cloud stages exist; the
  command without `--shard` then loads them all and writes the table."""
  from absl import flags
  from ml_collections import config_flags
  config_flag = config_flags.DEFINE_config_file(
      'config', None, 'Path to a configs/*.py file.', lock_config=True)
  workdir_flag = flags.DEFINE_string('workdir', None,
                                     'Directory for all outputs.')
  validate_only = flags.DEFINE_bool(
      'validate_only', False, 'Validate the config, print it and exit.')
  own = ['config', 'workdir', 'validate_only']
  if shards:
    shard_flag = flags.DEFINE_string(
        'shard', None, 'K/N: compute only the repeats r with r % N == K into '
        'the workdir\'s cache and write no table, so N processes share the '
        'repeats; the command without it loads them and writes the table.')
    flags.register_validator(
        'shard', lambda v: v is None or parse_shard(v) is not None,
        'give K/N with whole numbers 0 <= K < N, e.g. --shard=0/2')
    own.append('shard')
  # --help lists the main module's flags (`help_flags`): these are every
  # job's.
  for name in own:
    flags.FLAGS.register_flag_by_module(sys.argv[0], flags.FLAGS[name])

  def _main(argv):
    if len(argv) > 1:
      raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
    given = [a for a in sys.argv[1:]
             if a == '--config' or a.startswith('--config=')]
    if len(given) > 1:
      raise errors.UserError('--config is given more than once; give one '
                             'config file')
    config = config_value(config_flag, sys.argv)
    if not validate_only.value and not (workdir_flag.value or '').strip():
      raise errors.UserError('--workdir is required and must not be empty, '
                             'e.g. --workdir=runs/default')
    if validate_only.value:
      # The check every job makes first (`world.prepare`), and no job.
      print(config_lib.validate(config))
      return
    enable_compilation_cache()
    # The commit the code was loaded from, before hours of work.
    provenance.provenance()
    shard = parse_shard(shard_flag.value) if shards else None
    if shard is None:
      run(config, workdir_flag.value)
      return
    run(config, workdir_flag.value, shard=shard)
    print(f'shard {shard[0]}/{shard[1]}: its repeats are cached; the same '
          f'command without --shard writes the table')

  run_tool(_main)
