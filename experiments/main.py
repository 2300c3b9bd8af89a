"""The main job: ACME end to end on one config.

  python -m experiments.main --config=configs/default.py --workdir=runs/default
  python -m experiments.main --config=configs/default.py --workdir=runs/s3 \
      --config.seed=3 --config.cloud.width_mults=0.5,1.0

Rerunning with the same --workdir resumes: finished stages are loaded.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from acme_jax import config as config_lib
from acme_jax import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a configs/*.py file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for all outputs.')
_VALIDATE_ONLY = flags.DEFINE_bool(
    'validate_only', False, 'Validate the config, print it and exit.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    if _VALIDATE_ONLY.value:
      config_lib.validate(_CONFIG.value)
      print(_CONFIG.value)
      return
    pipeline.run(_CONFIG.value, _WORKDIR.value)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
