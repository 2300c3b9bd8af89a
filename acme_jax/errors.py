"""The error boundary every entry point shares: an expected failure is one
line on stderr and exit 2; an unexpected one keeps its traceback, after a
line saying it is a bug to report.

Expected: a `ConfigError` or `UserError`, and a ValueError or
FileNotFoundError raised by this package's own code (its messages name the
problem; a ValueError from inside a library is a bug of ours).

A leaf module: it imports nothing of the project, so every module may raise
these errors without an import circle.
"""
import _thread
import argparse
import contextlib
import os
import pathlib
import signal
import sys
import threading
import traceback
from typing import Callable, Optional


_OURS = tuple(str(pathlib.Path(__file__).resolve().parents[1] / d)
              for d in ('acme_jax', 'experiments', 'benchmarks', 'configs'))


class ConfigError(ValueError):
  """A config field with a value it cannot take: names the field, the value
  and what is allowed."""

  def __init__(self, field: str, value, allowed: str):
    self.field, self.value, self.allowed = field, value, allowed
    super().__init__(f'config.{field} = {value!r} is invalid: {allowed}')


class UserError(Exception):
  """An expected failure: the message names the problem and what to do."""


class OneLineParser(argparse.ArgumentParser):
  """argparse whose usage errors are one line and exit 2, like every other
  expected failure."""

  def error(self, message):
    print(f'error: {self.prog}: {message}; see --help', file=sys.stderr)
    sys.exit(2)


def whole_number(text: str) -> int:
  """An argparse `type`: a whole number >= 1, else a one-line usage error."""
  if not text.strip().isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f'{text!r} is not a whole number >= 1')
  return int(text)


def file_in_the_way(path) -> Optional[pathlib.Path]:
  """The first of `path` and its ancestors that exists and is not a
  directory (so `path` cannot be a directory), or None."""
  path = pathlib.Path(path)
  return next((p for p in [path, *path.parents]
               if p.exists() and not p.is_dir()), None)


def is_expected(error: BaseException) -> bool:
  if isinstance(error, (ConfigError, UserError)):
    return True
  if isinstance(error, (ValueError, FileNotFoundError)):
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(_OURS)
  return False


def one_line(error: BaseException) -> str:
  return ' '.join(str(error).split())


def report_and_exit(error: BaseException, prefix: str = 'error'):
  print(f'{prefix}: {one_line(error)}', file=sys.stderr)
  sys.exit(2)


@contextlib.contextmanager
def _interrupts_that_take():
  """Within: a Ctrl-C that Python drops is raised again. An exception raised
  inside a gc callback (JAX registers one) is reported as unraisable and
  the program goes on, so one Ctrl-C in about five was swallowed here and
  the run went on; the hook raises it again in the main thread instead.
  Leaves SIGINT alone where it is not Python's default (ignored by a
  background job, or handled by the caller) and off the main thread."""
  if (threading.current_thread() is not threading.main_thread() or
      signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield
    return

  def unraisable(what):
    if isinstance(what.exc_value, KeyboardInterrupt):
      # From another thread: raised here, in the hook, it would be dropped
      # again.
      threading.Timer(0.05, _thread.interrupt_main).start()
    else:
      hook(what)

  hook, sys.unraisablehook = sys.unraisablehook, unraisable
  try:
    yield
  finally:
    sys.unraisablehook = hook


def boundary(fn: Callable, *args, **kwargs):
  """Runs fn; expected failures become one line on stderr and exit 2, an
  interrupt (Ctrl-C) one line and exit 130."""
  try:
    with _interrupts_that_take():
      return fn(*args, **kwargs)
  except KeyboardInterrupt:
    # Every stage is saved as it finishes (long ones every few steps too).
    print('\ninterrupted: rerun the same command to resume where it stopped',
          file=sys.stderr)
    if threading.current_thread() is not threading.main_thread():
      sys.exit(130)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: an interrupt can land while XLA's threads compile or
    # run, and tearing the interpreter down under them crashed (SIGSEGV)
    # here. Outputs are written atomically and the `finally` blocks ran on
    # the way here; what is skipped is the interpreter's exit handlers
    # (atexit, e.g. a multi-host run's jax.distributed.shutdown).
    os._exit(130)
  except Exception as e:  # pylint: disable=broad-except
    if is_expected(e):
      report_and_exit(e)
    print('error: unexpected failure, a bug: please report it with the '
          'traceback below', file=sys.stderr)
    raise
