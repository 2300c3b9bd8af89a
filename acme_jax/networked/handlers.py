"""What a SuperNode answers: the device's and the cloud's message handlers.

Flower's ClientApp calls `handle(message, context)` once per message (in a
fresh process), with the node's `--node-config`: its role ('device' or
'cloud'), its workdir and its config file; a device also its id, edge and
budget. Each handler maps a request to the device's or the cloud's step and
its reply to one of the ledger's payloads.
"""
import functools
import json

import ml_collections
import numpy as np
from flwr.app import Message

from acme_jax.networked import payload

KINDS = ('query.info', 'query.front', 'query.backbone', 'query.histogram',
         'query.metrics', 'train.backbone', 'train.header', 'train.round',
         'train.prune', 'train.metrics')


def config_from_json(path) -> ml_collections.ConfigDict:
  """The run's config as the launcher resolved it (lists back to tuples,
  as the config files write them)."""
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


def handle(message: Message, context) -> Message:
  node = context.node_config
  kind = message.metadata.message_type
  if kind not in KINDS:
    raise ValueError(f'unknown message type {kind!r}')
  if node['role'] == 'cloud':
    return _cloud(kind, message, str(node['workdir']))
  if node['role'] != 'device':
    raise ValueError(f'unknown node role {node["role"]!r}')
  if kind == 'query.info':  # cheap: no JAX import for who-are-you
    return _reply(message, role='device', device=int(node['device']),
                  edge=int(node['edge']), budget=int(node['budget']))
  from acme_jax.networked import device as device_lib
  device = device_lib.Device(_setup(str(node['config'])), node['workdir'],
                             node['device'], node['edge'], node['budget'])
  c, parts = payload.control(message), payload.payloads(message)
  if kind == 'query.histogram':
    return _reply(message, {'histogram': device.histogram()})
  if kind == 'train.backbone':
    device.receive_backbone(c['width'], c['depth'], parts['backbone'],
                            parts.get('reference'))
    return _reply(message, done=1)
  if kind == 'train.header':
    device.search_header()
    return _reply(message, done=1)
  if kind == 'train.round':
    out = device.train_round(int(c['round']), bool(c.get('introduce')))
    sent = {k: out[k] for k in ('importance', 'signature', 'layout')
            if out.get(k) is not None}
    return _reply(message, sent, train_samples=out['train_samples'])
  if kind == 'train.prune':
    device.prune_round(int(c['round']), parts.get('aggregated'))
    return _reply(message, done=1)
  if kind == 'query.metrics':
    record = device.metrics()
    return _reply(message, {'metrics': np.asarray(
        [record['test_accuracy'], record['total_params']], np.float32)})
  raise ValueError(f'a device does not answer {kind!r}')


def _cloud(kind, message, workdir):
  from acme_jax.networked import cloud as cloud_lib
  service = cloud_lib.Service(workdir)
  if kind == 'query.info':
    return _reply(message, role='cloud')
  if kind == 'query.front':
    return _reply(message, {'front': service.front()})
  if kind == 'query.backbone':
    c = payload.control(message)
    return _reply(message, {'backbone': service.backbone(c['width'],
                                                         c['depth'])})
  if kind == 'train.metrics':
    c = payload.control(message)
    service.receive_metrics(c['edge'], payload.payloads(message)['metrics'])
    return _reply(message, done=1)
  raise ValueError(f'the cloud does not answer {kind!r}')
