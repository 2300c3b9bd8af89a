"""A warm worker: one long-lived process beside a SuperNode that holds JAX,
the node's data, its compiled programs and its state across messages.

  python -m acme_jax.networked.worker --node_config='{"role": "device", ...}'

The node's ClientApp (a fresh process per message, as Flower's deployment
runtime starts it) forwards each request here over the node's private Unix
socket (`channel.py`) and returns the answer; a dead worker makes the
ClientApp reply with an error naming it, and whoever supervises the node
starts the worker again. Every device step saves its answer before
replying, so a restarted worker answers finished steps from disk, as a
stock ClientApp does.
"""
import argparse
import json
import os
import pathlib
import signal
import sys
import time
import traceback

from acme_jax import errors
from acme_jax.networked import channel, handlers, payload


def _log(text):
  print(f'{time.strftime("%H:%M:%S")} [worker] {text}', flush=True)


NICENESS = 10


def serve(node: dict, log=_log):
  """Answers requests at `node['worker']` until terminated."""
  path = pathlib.Path(node["worker"])
  who = (f'device {node["device"]}' if node['role'] == 'device'
         else 'cloud')
  answer = handlers.Answerer(node)
  t0 = time.time()
  answer.warm_up()
  server = channel.listen(path)

  def stop(signum, _):
    server.close()
    if path.exists():
      path.unlink()
    sys.exit(128 + signum)

  signal.signal(signal.SIGTERM, stop)
  log(f'{who} ready at {path} ({time.time() - t0:.1f}s)')
  while True:
    conn, _ = server.accept()
    with conn:
      _one(conn, answer, log)


def _one(conn, answer, log):
  """One request on `conn`: refused in one line, failed in one line, or
  answered."""
  try:
    uid = channel.peer_uid(conn)
    if uid != os.getuid():
      raise channel.Refused(f'a peer running as uid {uid}')
    header, arrays = channel.receive(conn)
    kind = header.get('kind')
    if kind == channel.PING:
      _send(conn, {'control': {'ready': 1}}, {}, log)
      return
    if kind not in handlers.KINDS or kind == 'query.info':
      raise channel.Refused(f'message kind {kind!r}')
  except (channel.Refused, ConnectionError, OSError) as e:
    log(f'refused: {e}')
    _send(conn, {'error': f'refused: {e}'}, {}, log)
    return
  t = time.time()
  try:
    payloads, control = answer(kind, header.get('control') or {},
                               channel.unflatten_payloads(arrays,
                                                          payload.unflatten))
  except Exception as e:  # pylint: disable=broad-except
    log(f'{kind} failed: {errors.one_line(e)}')
    traceback.print_exc()
    _send(conn, {'error': errors.one_line(e)}, {}, log)
    return
  _send(conn, {'control': control},
        channel.flatten_payloads(payloads, payload.flatten), log)
  log(f'{kind} answered ({time.time() - t:.2f}s)')


def _send(conn, header, arrays, log):
  try:
    channel.send(conn, header, arrays)
  except OSError as e:  # the ClientApp went away (killed, timed out)
    log(f'reply lost: {e}')


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m acme_jax.networked.worker')
  p.add_argument('--node_config', required=True,
                 help="the node's --node-config as JSON, with 'worker' (the "
                      'socket path)')
  args = p.parse_args(argv)
  # The worker does the node's compute; its SuperNode must keep answering
  # the SuperLink's heartbeats (Flower gives each call 5 s, and drops a node
  # after two missed intervals). Where nodes share a machine (the launcher,
  # the benchmark), a lower priority keeps Flower's processes responsive;
  # on a machine of its own the worker loses nothing.
  os.nice(NICENESS)
  from acme_jax import cli, malloc
  malloc.return_large_frees_to_the_os()
  cli.enable_compilation_cache()
  serve(json.loads(args.node_config))


if __name__ == '__main__':
  sys.exit(main())
