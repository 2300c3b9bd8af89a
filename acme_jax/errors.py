"""The error boundary every entry point shares: an expected failure is one
line and exit 2; an unexpected one keeps its traceback, introduced as a bug.
"""
import sys
from typing import Callable

from acme_jax import config as config_lib


class UserError(Exception):
  """An expected failure: the message names the problem and what to do."""


EXPECTED = (config_lib.ConfigError, UserError)


def report_and_exit(error: BaseException):
  print(f'error: {error}', file=sys.stderr)
  sys.exit(2)


def boundary(fn: Callable, *args, **kwargs):
  """Runs fn; expected failures become one line on stderr and exit 2."""
  try:
    return fn(*args, **kwargs)
  except EXPECTED as e:
    report_and_exit(e)
  except Exception:
    print('error: unexpected failure (a bug: please report it with the '
          'traceback below)', file=sys.stderr)
    raise
