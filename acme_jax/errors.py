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
import errno
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


class Terminated(KeyboardInterrupt):
  """A SIGTERM (`kill`, a scheduler's time limit) inside `boundary`: stops
  the run as Ctrl-C does, with exit status 143 (128 + SIGTERM)."""


def _raise_terminated(signum, frame):
  del signum, frame
  raise Terminated()


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


# A write the machine refused: the disk is full or read-only, or the path
# is not ours to write. Not a bug: the rerun on a disk with room resumes.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                   errno.EPERM, errno.EFBIG)


def storage_error(error: BaseException) -> Optional[OSError]:
  """The OSError of a refused write in `error`'s chain (libraries such as
  orbax raise their own error from it), or None."""
  seen = set()
  if isinstance(error, (ConfigError, UserError)):
    return None  # already says what went wrong
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
      return error
    error = error.__cause__ or error.__context__
  return None


def storage_message(error: OSError) -> str:
  where = error.filename or 'a file'
  return (f'cannot write {where}: {error.strerror}; make room (or write '
          f'access) there and rerun the same command to resume')


def is_expected(error: BaseException) -> bool:
  if isinstance(error, (ConfigError, UserError)):
    return True
  if storage_error(error) is not None:
    return True
  if isinstance(error, (ValueError, FileNotFoundError)):
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(_OURS)
  return False


def one_line(error: BaseException) -> str:
  return ' '.join(str(error).split())


def report_and_exit(error: BaseException, prefix: str = 'error'):
  storage = storage_error(error)
  text = storage_message(storage) if storage is not None else error
  print(f'{prefix}: {one_line(text)}', file=sys.stderr)
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
      signum = (signal.SIGTERM if isinstance(what.exc_value, Terminated)
                else signal.SIGINT)
      threading.Timer(0.05, _thread.interrupt_main, (signum,)).start()
    else:
      hook(what)

  hook, sys.unraisablehook = sys.unraisablehook, unraisable
  try:
    yield
  finally:
    sys.unraisablehook = hook


@contextlib.contextmanager
def terminate_as_interrupt():
  """Within: SIGTERM raises `Terminated`, so it takes the interrupt's path
  (one line; every `finally` runs). Only on the main thread, and only where
  SIGTERM has its default action (a caller's own handler stays). `boundary`
  uses it; so does a program of its own that runs a networked launcher."""
  if (threading.current_thread() is not threading.main_thread() or
      signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
    yield
    return
  signal.signal(signal.SIGTERM, _raise_terminated)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def boundary(fn: Callable, *args, **kwargs):
  """Runs fn; expected failures become one line on stderr and exit 2, an
  interrupt (Ctrl-C) one line and exit 130, a SIGTERM the same line and
  exit 143."""
  try:
    with _interrupts_that_take(), terminate_as_interrupt():
      return fn(*args, **kwargs)
  except KeyboardInterrupt as e:
    status = 143 if isinstance(e, Terminated) else 130
    # Every stage is saved as it finishes (long ones every few steps too).
    print('interrupted: rerun the same command to resume where it stopped',
          file=sys.stderr)
    if threading.current_thread() is not threading.main_thread():
      sys.exit(status)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: an interrupt can land while XLA's threads compile or
    # run, and tearing the interpreter down under them crashed (SIGSEGV)
    # here. Outputs are written atomically and the `finally` blocks ran on
    # the way here; what is skipped is the interpreter's exit handlers
    # (atexit, e.g. a multi-host run's jax.distributed.shutdown).
    os._exit(status)
  except Exception as e:  # pylint: disable=broad-except
    if is_expected(e):
      report_and_exit(e)
    print('error: unexpected failure, a bug: please report it with the '
          'traceback below', file=sys.stderr)
    raise
