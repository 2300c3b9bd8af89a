"""What every `python -m experiments.X` entry point shares: absl flags with
config overrides, a persistent XLA compilation cache, the error boundary."""
import os
import pathlib
from typing import Callable

from acme_jax import config as config_lib
from acme_jax import errors

CACHE_ENV = 'ACME_JAX_COMPILATION_CACHE'


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


def main(run: Callable):
  """`python -m experiments.X --config=... --workdir=...` for run(config,
  workdir)."""
  from absl import app, flags, logging
  from ml_collections import config_flags
  config_flag = config_flags.DEFINE_config_file(
      'config', None, 'Path to a configs/*.py file.', lock_config=True)
  workdir_flag = flags.DEFINE_string('workdir', None,
                                     'Directory for all outputs.')
  validate_only = flags.DEFINE_bool(
      'validate_only', False, 'Validate the config, print it and exit.')
  flags.mark_flags_as_required(['config', 'workdir'])

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    if validate_only.value:
      errors.boundary(config_lib.validate, config_flag.value)
      print(config_flag.value)
      return
    enable_compilation_cache()
    errors.boundary(run, config_flag.value, workdir_flag.value)

  app.run(_main)
