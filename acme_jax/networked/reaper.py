"""Every process a networked run starts ends with it, however it ends.

Whoever starts tier processes (the launcher, a tier started by hand) puts a
token of its own into the environment every child inherits (`ENV`; tokens
of nested starters joined by ':'). Flower's helpers inherit it too, though
they detach into sessions of their own and outlive their parents, so no
process group or tree holds them all; the token does. Two sweeps end
whatever carries it:

- the starter's own (`Reaper.close`), after it stopped its processes
  gracefully: normal end, an exception, Ctrl-C, SIGTERM;
- a reaper process's, for when the starter cannot (SIGKILL, a crash): it
  waits on a pipe that only the starter holds, so the kernel closing that
  pipe as the starter dies is its cue.

Stdlib only: the reaper runs as `python -I -S reaper.py TOKEN`, without
the project, site-packages or this directory on its path.
"""
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import threading
import time

ENV = 'ACME_NETWORKED_RUN'
_PREFIX = ENV.encode() + b'='


def tokens_of(pid: int) -> set:
  """The run tokens process `pid` was started with (none if it is gone, a
  zombie or not ours to read)."""
  try:
    environ = pathlib.Path(f'/proc/{pid}/environ').read_bytes()
  except OSError:
    return set()
  for entry in environ.split(b'\0'):
    if entry.startswith(_PREFIX):
      return set(entry[len(_PREFIX):].decode(errors='replace').split(':'))
  return set()


def marked(token: str, exclude=()) -> list:
  """Every live process carrying `token`, but this one and `exclude`."""
  skip = {os.getpid(), *exclude}
  out = []
  for entry in pathlib.Path('/proc').iterdir():
    if entry.name.isdigit() and int(entry.name) not in skip:
      if token in tokens_of(int(entry.name)):
        out.append(int(entry.name))
  return out


def sweep(token: str, exclude=(), timeout: float = 20.0) -> list:
  """SIGKILL every process carrying `token` (stopped ones too) until two
  scans in a row find none: a dying parent may still fork. Returns the
  pids it found."""
  found, quiet, end = set(), 0, time.time() + timeout
  while quiet < 2 and time.time() < end:
    pids = marked(token, exclude)
    quiet = 0 if pids else quiet + 1
    for pid in pids:
      found.add(pid)
      try:
        os.kill(pid, signal.SIGKILL)
      except OSError:
        pass
    time.sleep(0.05)
  return sorted(found)


class Reaper:
  """Marks every process started from here until `close` with a fresh
  token (`os.environ[ENV]`, which every spawn path copies), and watches
  over them from a process of its own."""

  def __init__(self):
    self.token = f'{os.getpid()}-{secrets.token_hex(6)}'
    self.proc = None
    self._outer = None

  def start(self) -> 'Reaper':
    env = {k: v for k, v in os.environ.items() if k != ENV}
    # Its own session: a Ctrl-C or a signal to the starter's group leaves
    # it waiting for its cue. The pipe's write end is not inheritable, so
    # only this process holds it.
    self.proc = subprocess.Popen(
        [sys.executable, '-I', '-S', __file__, self.token],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    self._outer = os.environ.get(ENV)
    os.environ[ENV] = ':'.join(filter(None, [self._outer, self.token]))
    return self

  def close(self, wait: float = 10.0) -> list:
    """Ends every process still carrying the token; the reaper exits."""
    if self.proc is None:
      return []
    if self._outer is None:
      os.environ.pop(ENV, None)
    else:
      os.environ[ENV] = self._outer
    left = sweep(self.token, exclude=(self.proc.pid,))
    self.proc.stdin.close()  # its cue: one more sweep, then it exits
    try:
      self.proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
      pass
    self.proc = None
    return left


class SignalsDeferred:
  """Within: SIGINT and SIGTERM wait, so a second Ctrl-C cannot cut the
  cleanup short (its processes would outlive it); on the way out the first
  one is raised again, unless an exception is already on its way up (it
  ends the run the same way)."""

  def __enter__(self):
    self.got, self.saved = [], {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self.saved[sig] = signal.getsignal(sig)
        signal.signal(sig, lambda signum, _: self.got.append(signum))
    return self

  def __exit__(self, *exc):
    for sig, handler in self.saved.items():
      signal.signal(sig, handler)
    if self.got and exc[0] is None and sys.exc_info()[0] is None:
      signal.raise_signal(self.got[0])
    return False


def main(argv):
  """The reaper: waits for its starter's end (EOF on stdin), then ends
  every process that carries the token."""
  token = argv[1]
  for sig in (signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
  while True:
    try:
      if not os.read(0, 65536):
        break
    except InterruptedError:
      continue
    except OSError:
      break
  sweep(token, timeout=60.0)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
