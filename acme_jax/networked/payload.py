"""ACME's records as Flower messages, and what each one weighs.

A payload (a pytree of nested dicts of arrays, as the ledger records it)
travels as one `ArrayRecord` keyed by its '/'-joined paths; control values
(round numbers, multipliers) as a `ConfigRecord`. `message_bytes` is the
size Flower serializes a message to (its content-addressed objects), which
`wire.py`'s socket counts then add HTTP, TLS and polling to.
"""
import pathlib
from typing import Mapping, Optional

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

PAYLOAD = 'payload'
CONTROL = 'control'


def flatten(tree, prefix: str = '') -> dict:
  """{'a/b': array} for a nested dict of arrays (a bare array: {'': a})."""
  if not isinstance(tree, Mapping):
    return {prefix: np.asarray(tree)}
  out = {}
  for key in sorted(tree):
    if '/' in str(key):
      raise ValueError(f'payload key {key!r} contains "/"')
    out.update(flatten(tree[key], f'{prefix}/{key}' if prefix else str(key)))
  return out


def unflatten(flat: Mapping):
  if list(flat) == ['']:
    return flat['']
  tree = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def content(payloads: Optional[Mapping] = None, **control) -> RecordDict:
  """A message's content: named payloads (each a pytree) and control values."""
  records = {}
  for name, tree in (payloads or {}).items():
    records[f'{PAYLOAD}.{name}'] = ArrayRecord(
        {k: Array(np.ascontiguousarray(v)) for k, v in flatten(tree).items()})
  if control:
    records[CONTROL] = ConfigRecord(control)
  return RecordDict(records)


def payloads(message: Message) -> dict:
  """{name: pytree} of a message's payloads."""
  out = {}
  for name, record in message.content.array_records.items():
    if name.startswith(f'{PAYLOAD}.'):
      out[name[len(PAYLOAD) + 1:]] = unflatten(
          {k: v.numpy() for k, v in record.items()})
  return out


def control(message: Message) -> dict:
  records = message.content.config_records
  return dict(records[CONTROL]) if CONTROL in records else {}


def message_bytes(message: Message) -> int:
  """Bytes of the message as Flower serializes it for the wire: every
  nested object's deflated size. The array data (Flower's `ArrayChunk`s,
  nearly all of the bytes) is counted from its length rather than
  serialized again: Flower serializes it when it pushes the message."""
  from flwr.app.message.arraychunk import ArrayChunk
  from flwr.supercore.inflatable.inflatable_object import (
      get_all_nested_objects)
  total = 0
  for obj in get_all_nested_objects(message).values():
    if isinstance(obj, ArrayChunk):
      total += _chunk_bytes(len(obj.data))
    else:
      total += len(obj.deflate())
  return total


def _chunk_bytes(n: int) -> int:
  """A deflated ArrayChunk of n data bytes: its header (which names the
  body's length) and the data."""
  from flwr.app.message.arraychunk import ArrayChunk
  empty = len(ArrayChunk(memoryview(b'')).deflate())  # header with length 0
  return empty - 1 + len(str(n)) + n


def save_npz(path, tree):
  """A payload kept on disk (what the cloud serves, what an edge relays),
  written atomically."""
  path = pathlib.Path(path)
  tmp = path.with_suffix('.tmp.npz')
  np.savez(tmp, **{k.replace('/', '|'): v for k, v in flatten(tree).items()})
  tmp.replace(path)


def load_npz(path):
  with np.load(path) as f:
    return unflatten({k.replace('|', '/'): f[k] for k in f.files})
