"""How each tier starts: one path for the launcher (every tier on this
machine, supervised) and for `tiers.py` (each tier on its own machine).

A tier process is started through a `spawn(name, cmd, env)` the caller
gives (the launcher's supervised `Processes.start`, or a plain `Popen`);
`cmd` may be a function returning the command, called again at every
restart, so a node restarted after a port clash gets a fresh local port.
"""
import dataclasses
import json
import pathlib
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

from acme_jax.networked import channel, processes

Spawn = Callable[..., subprocess.Popen]


# ------------------------------------------------------------------ edges


def flwr(home, *args, timeout: float = 120) -> subprocess.CompletedProcess:
  """The `flwr` CLI against the SuperLink that `home`'s federation names."""
  try:
    return subprocess.run([processes._bin('flwr'), *args],
                          env=processes.flower_env(home),
                          cwd=processes.REPO, capture_output=True, text=True,
                          timeout=timeout)
  except subprocess.TimeoutExpired as ex:
    raise processes.TierFailed(f'`flwr {" ".join(args[:2])}` got no answer '
                               f'within {timeout:.0f} s') from ex


def readable(text: str) -> str:
  """The informative lines of a `flwr` CLI message (no box drawing)."""
  lines = [l.strip(' \u2502\u2500\u256d\u256e\u2570\u256f') for l in
           text.splitlines()]
  return ' '.join(l for l in lines if l)[-400:]


def register(home, edge: int, public_key, name: str, wait_s: float = 60):
  """Enrols a node's key at edge `edge` (its control API may need a moment
  after the port opens, so a failure is retried for `wait_s`)."""
  end = time.time() + wait_s
  while True:
    out = flwr(home, 'supernode', 'register', str(public_key), f'edge{edge}')
    text = out.stdout + out.stderr
    if out.returncode == 0 or 'already' in text.lower():
      return
    if time.time() > end:
      raise processes.TierFailed(f'edge {edge}: registering {name} failed: '
                                 f'{readable(text)}')
    time.sleep(2.0)


def submit(home, edge: int, workdir, config_path, expected_devices: int):
  """`flwr run`: the edge's ServerApp, on its SuperLink."""
  out = flwr(home, 'run', str(processes.APP_DIR), f'edge{edge}',
             '--run-config', processes.node_config_arg({
                 'edge': edge, 'workdir': str(workdir),
                 'config': str(config_path),
                 'expected-devices': expected_devices}))
  if out.returncode:
    raise processes.TierFailed(f'edge {edge}: flwr run failed: '
                               f'{readable(out.stdout + out.stderr)}')


@dataclasses.dataclass(frozen=True)
class Endpoint:
  """Where an edge's SuperLink listens (`listen`:`port`), the address the
  edge's own tools dial (`connect_host`:`port`), its TLS files ({'ca',
  'cert', 'key'} paths, or None) and whether it admits enrolled keys only."""
  port: int
  listen: str = '127.0.0.1'
  connect_host: str = '127.0.0.1'
  tls: Optional[dict] = None
  auth: bool = False


def start_edge(spawn: Spawn, edge: int, workdir, config_path,
               endpoint: Endpoint, *, keys: Sequence = (),
               expected_devices: int) -> subprocess.Popen:
  """Edge `edge`: its SuperLink (at `endpoint`), its federation file, the
  node keys it admits (`keys`: (name, public key) pairs) and its run.
  Returns the SuperLink's process."""
  workdir = pathlib.Path(workdir)
  home = workdir / 'flwr'
  port, tls = endpoint.port, endpoint.tls
  processes.write_federation(home, f'edge{edge}',
                             f'{endpoint.connect_host}:{port}',
                             tls['ca'] if tls else None)
  proc = spawn(f'edge{edge}', processes.superlink_command(
      port, workdir / 'superlink.db', tls, endpoint.auth,
      host=endpoint.listen), processes.flower_env(home))
  processes.wait_port(endpoint.connect_host, port, 60, proc)
  for name, public_key in keys:
    register(home, edge, public_key, name)
  submit(home, edge, workdir, config_path, expected_devices)
  return proc


# ------------------------------------------------------------------ nodes


def worker_command(node: dict) -> list:
  return [sys.executable, '-m', 'acme_jax.networked.worker',
          f'--node_config={json.dumps(node)}']


def with_worker(node: dict, name: str) -> dict:
  """Node `name`'s config naming the socket of its warm worker."""
  return dict(node, worker=str(channel.socket_path(node['workdir'], name)))


def start_worker(spawn: Spawn, name: str, node: dict) -> subprocess.Popen:
  """The warm worker of node `name` (its config from `with_worker`)."""
  env = processes.flower_env(pathlib.Path(node['workdir']) / 'flwr')
  return spawn(f'{name}.worker', worker_command(node), env)


def wait_worker(node: dict, proc: subprocess.Popen, timeout: float):
  """Until the worker listens (JAX imported, the node's data loaded)."""
  path = pathlib.Path(node['worker'])
  end = time.time() + timeout
  while time.time() < end:
    if proc.poll() is not None:
      raise processes.TierFailed(
          f'the worker for {node["workdir"]} exited (exit status '
          f'{proc.returncode}) before listening; see its log')
    if path.is_socket():
      try:
        channel.request(path, channel.PING, {}, {})
        return
      except channel.WorkerUnavailable:
        pass
    time.sleep(0.2)
  raise processes.TierFailed(f'no worker at {path} after {timeout:.0f}s')


def start_supernode(spawn: Spawn, name: str, superlink: str, node: dict, *,
                    ca=None, key: Optional[dict] = None,
                    host: str = '127.0.0.1') -> subprocess.Popen:
  """Node `name`'s SuperNode, dialling `superlink`; a fresh local port at
  every (re)start."""
  env = processes.flower_env(pathlib.Path(node['workdir']) / 'flwr')

  def command():
    return processes.supernode_command(superlink, processes.free_port(host),
                                       node, ca=ca, key=key)
  return spawn(name, command, env)
