"""The OS processes of the networked mode and how they are started.

Each tier process runs in its own session (process group), so stopping it
stops everything it spawned (a SuperLink's ServerApp, a SuperNode's
ClientApps); what detaches further carries the run's token (`reaper.py`)
and ends with the run too. Every command line of a tier is built here, so
the launcher and a hand start on another machine (docs/networked.md) use
the same flags.
"""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

from acme_jax import errors, malloc

REPO = pathlib.Path(__file__).resolve().parents[2]
APP_DIR = pathlib.Path(__file__).resolve().parent / 'flower_app'


class TierFailed(errors.UserError, RuntimeError):
  """A tier process failed to start, failed, died too often or timed
  out: one line naming where its log is (its own traceback is there)."""


def _bin(name: str) -> str:
  """A Flower console script of this interpreter's environment."""
  local = pathlib.Path(sys.executable).parent / name
  return str(local) if local.exists() else (shutil.which(name) or name)


def flower_env(flwr_home, extra: Optional[dict] = None) -> dict:
  """Environment of every Flower process: no telemetry, no update check,
  its own FLWR_HOME, acme_jax importable, no GPU memory grab per process."""
  env = dict(os.environ)
  env.update({
      # Flower starts its own helpers (flower-superexec, flwr-serverapp,
      # flwr-clientapp) by name.
      'PATH': os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                               env.get('PATH', '')]),
      'FLWR_TELEMETRY_ENABLED': '0', 'FLWR_DISABLE_UPDATE_CHECK': '1',
      'FLWR_HOME': str(flwr_home),
      'PYTHONPATH': os.pathsep.join(
          [str(REPO)] + [p for p in env.get('PYTHONPATH', '').split(
              os.pathsep) if p]),
      'XLA_PYTHON_CLIENT_PREALLOCATE': 'false',
      # As malloc.return_large_frees_to_the_os, for the processes Flower
      # starts (a stock ClientApp runs the device's JAX work).
      'MALLOC_MMAP_THRESHOLD_': str(malloc.MMAP_THRESHOLD),
      'PYTHONUNBUFFERED': '1'})
  env.update(extra or {})
  return env


def superlink_command(port: int, database, tls: Optional[dict], auth: bool,
                      host: str = '127.0.0.1') -> List[str]:
  cmd = [_bin('flower-superlink'), '--disable-runtime-dependency-installation',
         '--host', host, '--port', str(port), '--database', str(database)]
  if tls:
    cmd += ['--ssl-ca-certfile', str(tls['ca']), '--ssl-certfile',
            str(tls['cert']), '--ssl-keyfile', str(tls['key'])]
  else:
    cmd += ['--insecure']
  if auth:
    cmd += ['--enable-supernode-auth']
  return cmd


def supernode_command(superlink: str, port: int, node_config: dict,
                      ca=None, key: Optional[dict] = None) -> List[str]:
  """A SuperNode of the SuperLink at `superlink` (host:port); `port` is its
  local runtime API (unique per machine)."""
  cmd = [_bin('flower-supernode'), '--superlink', superlink, '--port',
         str(port), '--node-config', node_config_arg(node_config)]
  cmd += ['--root-certificates', str(ca)] if ca else ['--insecure']
  if key:
    cmd += ['--auth-supernode-private-key', str(key['private']),
            '--auth-supernode-public-key', str(key['public'])]
  return cmd


def node_config_arg(values: dict) -> str:
  """`--node-config` text: strings quoted (TOML), numbers bare."""
  parts = []
  for k, v in values.items():
    parts.append(f'{k}={v}' if isinstance(v, (int, float)) and not
                 isinstance(v, bool) else f'{k}="{v}"')
  return ' '.join(parts)


def write_federation(flwr_home, name: str, address: str, ca=None):
  """$FLWR_HOME/config.toml naming the SuperLink that `flwr` talks to."""
  home = pathlib.Path(flwr_home)
  home.mkdir(parents=True, exist_ok=True)
  security = (f'root-certificates = "{ca}"' if ca else 'insecure = true')
  (home / 'config.toml').write_text(
      f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
      f'address = "{address}"\n{security}\n')


def free_port(host: str = '127.0.0.1') -> int:
  with socket.socket() as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def check_port_free(host: str, port: int, what: str):
  """Refuse, in one line, a port another process holds (a bind error in a
  child's log otherwise surfaces late and far from its cause)."""
  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind((host, port))
    except OSError as e:
      raise errors.UserError(f'port {port} on {host} is not free '
                             f'({e.strerror}); {what}') from None


def wait_port(host: str, port: int, timeout: float, proc=None):
  end = time.time() + timeout
  while time.time() < end:
    if proc is not None and proc.poll() is not None:
      raise TierFailed(f'a process exited (exit status {proc.returncode}) '
                       f'before listening on {host}:{port}; see its log')
    with socket.socket() as s:
      s.settimeout(0.5)
      if s.connect_ex((host, port)) == 0:
        return
    time.sleep(0.2)
  raise TierFailed(f'nothing listens on {host}:{port} after {timeout:.0f}s')


def descendants(pid: int) -> List[int]:
  """Every live process below `pid`: Flower detaches some of its helpers
  into sessions of their own, so a process group does not hold them all."""
  children = {}
  for stat in pathlib.Path('/proc').glob('[0-9]*/stat'):
    try:
      fields = stat.read_text().rsplit(')', 1)[1].split()
    except OSError:
      continue
    children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
  out, todo = [], [pid]
  while todo:
    for child in children.get(todo.pop(), []):
      out.append(child)
      todo.append(child)
  return out


class Processes:
  """Named process groups; `stop_all` ends every one, whatever happened."""

  def __init__(self, log_dir):
    self.log_dir = pathlib.Path(log_dir)  # made at the first start
    self.procs: Dict[str, subprocess.Popen] = {}
    self.specs: Dict[str, tuple] = {}
    self.log_start: Dict[str, int] = {}

  def start(self, name: str, cmd, env: dict, cwd=None):
    """Starts `cmd` (a command, or a function making one at every start)
    as `name`, its output appended to logs/<name>.log."""
    self.log_dir.mkdir(parents=True, exist_ok=True)
    path = self.log_dir / f'{name}.log'
    self.log_start[name] = path.stat().st_size if path.exists() else 0
    log = open(path, 'ab')
    self.procs[name] = subprocess.Popen(
        cmd() if callable(cmd) else cmd, env=env, cwd=cwd or REPO,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    self.specs[name] = (cmd, env, cwd)
    log.close()
    return self.procs[name]

  def restart(self, name: str):
    cmd, env, cwd = self.specs[name]
    self.stop(name)
    return self.start(name, cmd, env, cwd)

  def output(self, name: str) -> str:
    """What `name` logged since its last start."""
    path = self.log_dir / f'{name}.log'
    if not path.exists():
      return ''
    with open(path, 'rb') as f:
      f.seek(self.log_start.get(name, 0))
      return f.read().decode(errors='replace')

  def bind_failed(self, name: str) -> bool:
    """Whether `name` exited because its port was taken (Flower's servers
    exit with 'Port in server address ... is already in use')."""
    return 'is already in use' in self.output(name)[-4000:]

  def alive(self, name: str) -> bool:
    proc = self.procs.get(name)
    return proc is not None and proc.poll() is None

  def signal(self, name: str, sig, children_only: bool = False):
    """`sig` to the process, its group and every process it spawned (or
    only to what it spawned)."""
    proc = self.procs.get(name)
    if proc is None:
      return
    tree = descendants(proc.pid)
    if not children_only:
      try:
        os.killpg(proc.pid, sig)
      except (ProcessLookupError, PermissionError):
        pass
    for pid in tree:
      try:
        os.kill(pid, sig)
      except (ProcessLookupError, PermissionError):
        pass

  def stop(self, name: str, grace: float = 5.0):
    self._stop([name], grace)

  def stop_all(self, grace: float = 3.0):
    """Every process at once: one grace period in all, not one each."""
    self._stop(list(self.procs)[::-1], grace)

  def _stop(self, names, grace: float):
    names = [n for n in names if n in self.procs]
    for sig, wait in ((signal.SIGCONT, 0), (signal.SIGTERM, grace),
                      (signal.SIGKILL, 5.0)):
      live = [n for n in names if self.procs[n].poll() is None]
      if not live:
        break
      for name in live:
        self.signal(name, sig)
      end = time.time() + wait
      while time.time() < end and any(self.procs[n].poll() is None
                                      for n in live):
        time.sleep(0.05)
    # A group may outlive its leader (a ClientApp mid-message).
    for name in names:
      self.signal(name, signal.SIGKILL)
      try:
        self.procs[name].wait(timeout=1.0)
      except subprocess.TimeoutExpired:
        pass
