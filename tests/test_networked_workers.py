"""Warm workers of the networked mode: the local channel's frames and
security boundary, a worker serving a node and refusing strangers in one
line, the ClientApp forwarding without JAX and replying with an error when
the worker is down, and restarts after a port clash."""
import json
import os
import pathlib
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_config
from acme_jax.networked import (channel, handlers, launcher, payload,
                                processes, startup)
from acme_jax.networked import worker as worker_lib


def test_frames_carry_arrays_whole_and_refuse_the_unreadable(tmp_path):
  a, b = socket.socketpair(socket.AF_UNIX)
  arrays = {('backbone', 'block_0/fc1/kernel'):
            np.arange(12, dtype=np.float32).reshape(3, 4),
            ('backbone', 'embed'): np.ones((2, 2), np.int8),
            ('imp', ''): np.float64(2.5) * np.ones(()),
            ('empty', ''): np.zeros((0, 3), np.float16)}
  channel.send(a, {'kind': 'train.round', 'control': {'round': 2}}, arrays)
  header, got = channel.receive(b)
  assert header == {'kind': 'train.round', 'control': {'round': 2}}
  assert got.keys() == arrays.keys()
  for k, v in arrays.items():
    np.testing.assert_array_equal(got[k], v)
    assert got[k].dtype == v.dtype and got[k].shape == v.shape
  trees = channel.unflatten_payloads(got, payload.unflatten)
  np.testing.assert_array_equal(trees['backbone']['block_0']['fc1']['kernel'],
                                arrays[('backbone', 'block_0/fc1/kernel')])
  assert channel.flatten_payloads(trees, payload.flatten).keys() == \
      arrays.keys()
  a.sendall(b'GET / HTTP/1.1\r\n\r\n')
  with pytest.raises(channel.Refused, match='not an ACME worker frame'):
    channel.receive(b)
  a, b = socket.socketpair(socket.AF_UNIX)  # the worker hangs up: anew
  header = json.dumps({'arrays': [['x', '', '|O', [1], 8]]}).encode()
  a.sendall(channel.MAGIC + len(header).to_bytes(8, 'big') + header)
  with pytest.raises(channel.Refused, match='array x'):
    channel.receive(b)


def test_the_socket_is_private(tmp_path):
  short = channel.socket_path(tmp_path / 'd', 'device0')
  server = channel.listen(short)
  try:
    assert stat.S_IMODE(short.stat().st_mode) == 0o600
  finally:
    server.close()
  deep = tmp_path / ('x' * 120)
  path = channel.socket_path(deep, 'device0')
  assert len(str(path)) < 108 and path.parent != deep
  assert path == channel.socket_path(deep, 'device0')  # deterministic
  server = channel.listen(path)
  try:
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
  finally:
    server.close()
  open_dir = tmp_path / 'open'
  open_dir.mkdir()
  os.chmod(open_dir, 0o777)
  with pytest.raises(channel.Refused, match='writable by every user'):
    channel.listen(open_dir / 'w.sock')


@pytest.fixture
def cloud_worker(tmp_path):
  """A cloud node's warm worker, serving the front from its workdir."""
  wd = tmp_path / 'cloud'
  (wd / 'serve').mkdir(parents=True)
  front = {'params': np.array([5.0, 7.0], np.float32),
           'accuracy': np.array([0.5, 0.75], np.float32)}
  payload.save_npz(wd / 'serve' / 'front.npz', front)
  node = startup.with_worker({'role': 'cloud', 'workdir': str(wd)},
                             'cloud_at_edge0')
  procs = processes.Processes(tmp_path / 'logs')
  proc = startup.start_worker(procs.start, 'cloud_at_edge0', node)
  try:
    startup.wait_worker(node, proc, 120)
    yield node, front, procs
  finally:
    procs.stop_all()


def test_a_worker_answers_and_refuses_strangers_in_one_line(cloud_worker):
  node, front, procs = cloud_worker
  control, arrays = channel.request(node['worker'], 'query.front', {}, {})
  got = channel.unflatten_payloads(arrays, payload.unflatten)['front']
  for k, v in front.items():
    np.testing.assert_array_equal(got[k], v)
  with socket.socket(socket.AF_UNIX) as s:  # not the protocol
    s.connect(node['worker'])
    s.sendall(b'hello\n' + b'\0' * 64)
    reply, _ = channel.receive(s)
  assert reply['error'] == 'refused: not an ACME worker frame'
  with pytest.raises(channel.WorkerFailed, match="refused: message kind "
                     "'query.everything'"):
    channel.request(node['worker'], 'query.everything', {}, {})
  # A failing request is one line back, and the worker goes on serving.
  with pytest.raises(channel.WorkerFailed, match='no trained backbone'):
    channel.request(node['worker'], 'query.backbone',
                    {'width': 0.3, 'depth': 0.3}, {})
  channel.request(node['worker'], 'query.front', {}, {})
  log = procs.output('cloud_at_edge0.worker')
  refusals = [l for l in log.splitlines() if 'refused:' in l]
  assert len(refusals) == 2 and all(l.count('\n') == 0 for l in refusals)
  # It yields the cores to its SuperNode (heartbeats) where they compete.
  worker = procs.procs['cloud_at_edge0.worker'].pid
  assert os.getpriority(os.PRIO_PROCESS, worker) == min(
      19, os.getpriority(os.PRIO_PROCESS, 0) + worker_lib.NICENESS)


@pytest.fixture
def flower_task():
  from flwr.supercore.task_identity import TaskIdentity
  TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
  yield
  TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


class _Context:
  def __init__(self, node):
    self.node_config = node


def _message(kind):
  from flwr.app import Message
  return Message(payload.content({}), dst_node_id=1, message_type=kind)


def test_the_clientapp_forwards_and_names_a_dead_worker(cloud_worker,
                                                        flower_task):
  node, front, procs = cloud_worker
  reply = handlers.handle(_message('query.front'), _Context(node))
  assert not reply.has_error()
  np.testing.assert_array_equal(payload.payloads(reply)['front']['params'],
                                front['params'])
  procs.stop('cloud_at_edge0.worker')
  reply = handlers.handle(_message('query.front'), _Context(node))
  assert reply.has_error()
  assert reply.error.code == handlers.WORKER_DOWN
  assert reply.error.reason.startswith('the cloud: its worker is down')
  # Who-are-you needs no worker.
  assert not handlers.handle(_message('query.info'),
                             _Context(node)).has_error()


def test_the_forwarding_clientapp_imports_no_jax(tmp_path):
  """The ClientApp Flower starts for every message: loading it and
  forwarding a message (here to a worker that is down) import no JAX."""
  app_dir = processes.APP_DIR
  code = f'''
import sys
sys.path.insert(0, {str(app_dir)!r})
from flwr.supercore.task_identity import TaskIdentity
TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1
from acme_flower import client_app
from acme_jax.networked import handlers, payload
from flwr.app import Message
class C: node_config = {{'role': 'device', 'device': 0, 'edge': 0,
                        'budget': 1, 'worker': {str(tmp_path / 'w.sock')!r}}}
m = Message(payload.content({{}}, round=0), dst_node_id=1,
            message_type='train.round')
reply = handlers.handle(m, C())
assert reply.has_error(), 'expected an error reply'
print(sorted(k for k in sys.modules if k == 'jax' or k.startswith('jax.')))
'''
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, env=processes.flower_env(tmp_path / 'flwr'),
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == '[]'


def test_a_node_whose_port_was_taken_restarts_on_a_fresh_port(tmp_path):
  """A SuperNode that lost the race for its local port is started again
  with a fresh one, and that is not counted as a death."""
  config = tiny_config()
  run = launcher.Launcher(config, tmp_path, log=lambda *_: 0)
  ports = []

  def command():
    port = processes.free_port()
    ports.append(port)
    if len(ports) == 1:  # what Flower prints when the bind fails
      return [sys.executable, '-c', 'import sys; sys.exit("Port in server '
              f'address 127.0.0.1:{port} is already in use.")']
    return [sys.executable, '-c', 'import time; time.sleep(60)']

  proc = run.procs.start('device0', command, dict(os.environ))
  proc.wait(timeout=60)
  assert run.procs.bind_failed('device0')
  try:
    run._revive()
    assert run.procs.alive('device0')
    assert not run.procs.bind_failed('device0')  # the new start's output
    assert len(ports) == 2  # the command was made again: a fresh port
    assert run.restarts == {}
    assert any('port taken' in e['event'] for e in run.events)
  finally:
    run.procs.stop_all()


def test_an_edge_whose_port_is_taken_fails_in_one_line(tmp_path):
  run = launcher.Launcher(tiny_config(), tmp_path, log=lambda *_: 0)
  proc = run.procs.start('edge0', [sys.executable, '-c', 'import sys; '
                                   'sys.exit("Port in server address '
                                   '127.0.0.1:19100 is already in use.")'],
                         dict(os.environ))
  proc.wait(timeout=60)
  with pytest.raises(RuntimeError, match='edge0: port .* is taken by '
                     'another process; choose another network.base_port'):
    run._revive()


def test_faults_name_a_worker():
  assert launcher.parse_fault('kill:worker2@train.prune:0') == (
      'kill', 'worker', 2, 'train.prune', 0)
  assert pathlib.Path(channel.socket_path('/a', 'device1')).name == \
      'device1.sock'
