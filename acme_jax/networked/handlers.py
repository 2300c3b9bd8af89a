"""What a SuperNode answers: the device's and the cloud's message handlers.

Flower's ClientApp calls `handle(message, context)` once per message (in a
fresh process), with the node's `--node-config`: its role ('device' or
'cloud'), its workdir and its config file; a device also its id, edge and
budget; in warm mode the socket of its worker (`worker.py`), to which the
ClientApp then only forwards. `Answerer` maps a request to the device's or
the cloud's step and its reply to one of the ledger's payloads.
"""
import functools
import json

import numpy as np
from flwr.app import Message

from acme_jax.networked import payload

KINDS = ('query.info', 'query.front', 'query.backbone', 'query.histogram',
         'query.metrics', 'train.backbone', 'train.header', 'train.round',
         'train.prune', 'train.metrics')


def config_from_json(path):
  """The run's config as the launcher resolved it (lists back to tuples,
  as the config files write them)."""
  import ml_collections  # here: a forwarding ClientApp never needs it

  def tuples(x):
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    if isinstance(x, list):
      return tuple(tuples(v) for v in x)
    return x
  with open(path) as f:
    return ml_collections.ConfigDict(tuples(json.load(f)))


@functools.lru_cache(maxsize=None)
def _setup(config_path: str):
  import jax
  from acme_jax import cli
  cli.enable_compilation_cache()
  # Every message is a fresh process: even the small programs are worth
  # reading back from the cache rather than compiling again.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return config_from_json(config_path)


def _reply(message, payloads=None, **control) -> Message:
  return Message(payload.content(payloads, **control), reply_to=message)


# The error code of a reply from a node whose warm worker is not running.
WORKER_DOWN = 701


def handle(message: Message, context) -> Message:
  """The ClientApp's answer to `message`: 'query.info' at once (no JAX);
  in warm mode (`worker` in the node config) forwarded to the node's
  worker; in stock mode computed here (`Answerer`)."""
  node = context.node_config
  kind = message.metadata.message_type
  if kind not in KINDS:
    raise ValueError(f'unknown message type {kind!r}')
  if node['role'] not in ('cloud', 'device'):
    raise ValueError(f'unknown node role {node["role"]!r}')
  if kind == 'query.info':  # who-are-you: no JAX, no worker
    if node['role'] == 'cloud':
      return _reply(message, role='cloud')
    return _reply(message, role='device', device=int(node['device']),
                  edge=int(node['edge']), budget=int(node['budget']))
  if node.get('worker'):
    return _forward(message, node, kind)
  payloads, control = Answerer(node)(kind, payload.control(message),
                                     payload.payloads(message))
  return _reply(message, payloads, **control)


def _forward(message, node, kind) -> Message:
  from flwr.app import Error
  from acme_jax.networked import channel
  who = (f'device {node["device"]}' if node['role'] == 'device'
         else 'the cloud')
  try:
    control, arrays = channel.request(
        str(node['worker']), kind, payload.control(message),
        channel.flatten_payloads(payload.payloads(message), payload.flatten))
  except channel.WorkerUnavailable as e:
    return Message(Error(WORKER_DOWN, f'{who}: its worker is down: {e}'),
                   reply_to=message)
  except channel.WorkerFailed as e:
    return Message(Error(WORKER_DOWN + 1, f'{who}: {e}'), reply_to=message)
  return _reply(message, channel.unflatten_payloads(arrays, payload.unflatten),
                **control)


class Answerer:
  """What a node answers: a request's (kind, control, payloads) to the
  reply's (payloads, control). A warm worker keeps one for its lifetime
  (the device's data, JAX and compiled programs stay loaded); stock mode
  makes one per message."""

  def __init__(self, node):
    self.node = node
    self._target = None

  def _device(self):
    if self._target is None:
      from acme_jax.networked import device as device_lib
      node = self.node
      self._target = device_lib.Device(
          _setup(str(node['config'])), node['workdir'], node['device'],
          node['edge'], node['budget'])
    return self._target

  def _cloud(self):
    if self._target is None:
      from acme_jax.networked import cloud as cloud_lib
      self._target = cloud_lib.Service(str(self.node['workdir']))
    return self._target

  def warm_up(self):
    """What every later message needs, loaded before the first one."""
    if self.node['role'] == 'device':
      self._device().splits()
    else:
      self._cloud()

  def __call__(self, kind: str, c: dict, parts: dict):
    if self.node['role'] == 'cloud':
      return self._answer_cloud(kind, c, parts)
    device = self._device()
    if kind == 'query.histogram':
      return {'histogram': device.histogram()}, {}
    if kind == 'train.backbone':
      device.receive_backbone(c['width'], c['depth'], parts['backbone'],
                              parts.get('reference'))
      return {}, {'done': 1}
    if kind == 'train.header':
      device.search_header()
      return {}, {'done': 1}
    if kind == 'train.round':
      out = device.train_round(int(c['round']), bool(c.get('introduce')))
      sent = {k: out[k] for k in ('importance', 'signature', 'layout')
              if out.get(k) is not None}
      return sent, {'train_samples': out['train_samples']}
    if kind == 'train.prune':
      device.prune_round(int(c['round']), parts.get('aggregated'))
      return {}, {'done': 1}
    if kind == 'query.metrics':
      record = device.metrics()
      return {'metrics': np.asarray(
          [record['test_accuracy'], record['total_params']], np.float32)}, {}
    raise ValueError(f'a device does not answer {kind!r}')

  def _answer_cloud(self, kind, c, parts):
    service = self._cloud()
    if kind == 'query.front':
      return {'front': service.front()}, {}
    if kind == 'query.backbone':
      return {'backbone': service.backbone(c['width'], c['depth'])}, {}
    if kind == 'train.metrics':
      service.receive_metrics(c['edge'], parts['metrics'])
      return {}, {'done': 1}
    raise ValueError(f'the cloud does not answer {kind!r}')
