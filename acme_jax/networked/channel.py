"""The local channel between a SuperNode's ClientApp and its warm worker.

Flower's deployment runtime starts a fresh ClientApp process for every
message. In warm mode that process only forwards: it hands the message's
kind, control values and arrays to the node's long-lived worker
(`worker.py`) over a Unix socket and returns the worker's answer. Nothing
here imports JAX.

The socket is the worker's security boundary: it lives in a directory only
its owner can enter, the socket itself is mode 0600, and the worker also
checks that the peer runs as its own user. A frame is a magic line, a
length-prefixed JSON header naming each array (payload, path, dtype,
shape) and the arrays' raw bytes; nothing is unpickled, and object dtypes
are refused.
"""
import hashlib
import json
import os
import pathlib
import socket
import stat
import struct
import tempfile

import numpy as np

MAGIC = b'ACME-WORKER/1\n'
MAX_HEADER = 1 << 20
PING = 'worker.ping'  # is it up? (answered without work)
# sockaddr_un holds 108 bytes; deep workdirs get a private directory in /tmp.
MAX_SOCKET_PATH = 100


class WorkerUnavailable(ConnectionError):
  """No worker answers at the socket (not started, dead, or restarting)."""


class Refused(ValueError):
  """A peer or a frame the worker does not accept (one line, the reason)."""


class WorkerFailed(RuntimeError):
  """The worker took the request and failed; its one-line reason."""


def socket_path(workdir, name: str) -> pathlib.Path:
  """Where the worker of node `name` (whose workdir is `workdir`) listens."""
  workdir = pathlib.Path(workdir).resolve()
  path = workdir / f'{name}.sock'
  if len(str(path)) <= MAX_SOCKET_PATH:
    return path
  digest = hashlib.sha256(str(workdir).encode()).hexdigest()[:16]
  return pathlib.Path(tempfile.gettempdir()) / f'acme-{os.getuid()}-{digest}' \
      / f'{name}.sock'


def private_dir(path: pathlib.Path):
  """Makes `path`'s directory, owned by this user and closed to others
  (mode 0700 where it is ours alone to set); refuses one another user owns
  or others may enter."""
  d = path.parent
  d.mkdir(parents=True, exist_ok=True)
  info = d.stat()
  if info.st_uid != os.getuid():
    raise Refused(f'{d} belongs to uid {info.st_uid}, not this user')
  if d.name.startswith('acme-'):  # our own directory under /tmp
    os.chmod(d, 0o700)
  elif stat.S_IMODE(info.st_mode) & 0o002:
    raise Refused(f'{d} is writable by every user')


def listen(path: pathlib.Path) -> socket.socket:
  """A listening Unix socket at `path`, mode 0600 (a stale one replaced)."""
  private_dir(path)
  if path.exists() or path.is_symlink():
    path.unlink()
  server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  old = os.umask(0o177)  # the socket file is born 0600: no window
  try:
    server.bind(str(path))
  finally:
    os.umask(old)
  os.chmod(path, 0o600)
  server.listen(16)
  return server


def peer_uid(conn: socket.socket) -> int:
  creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                          struct.calcsize('3i'))
  return struct.unpack('3i', creds)[1]


# ----------------------------------------------------------------- frames


def send(conn: socket.socket, header: dict, arrays: dict):
  """One frame: `header` (JSON) and `arrays` {(payload, path): ndarray}."""
  blobs = [(key, np.asarray(value, order='C')) for key, value in
           sorted(arrays.items())]
  header = dict(header, arrays=[
      [key[0], key[1], a.dtype.str, list(a.shape), a.nbytes]
      for key, a in blobs])
  text = json.dumps(header).encode()
  conn.sendall(MAGIC + struct.pack('>Q', len(text)) + text)
  for _, a in blobs:
    conn.sendall(a.tobytes())


def _exact(conn: socket.socket, n: int) -> bytes:
  chunks, left = [], n
  while left:
    chunk = conn.recv(min(left, 1 << 20))
    if not chunk:
      raise ConnectionError(f'the peer closed the channel with {left} of '
                            f'{n} bytes unread')
    chunks.append(chunk)
    left -= len(chunk)
  return b''.join(chunks)


def receive(conn: socket.socket):
  """(header, arrays) of one frame; `Refused` for anything malformed."""
  if _exact(conn, len(MAGIC)) != MAGIC:
    raise Refused('not an ACME worker frame')
  size, = struct.unpack('>Q', _exact(conn, 8))
  if size > MAX_HEADER:
    raise Refused(f'a {size}-byte header (at most {MAX_HEADER})')
  try:
    header = json.loads(_exact(conn, size))
    specs = header.pop('arrays')
  except (ValueError, KeyError, AttributeError) as e:
    raise Refused(f'an unreadable header ({e})') from None
  arrays = {}
  for name, path, dtype, shape, nbytes in specs:
    dt = np.dtype(dtype)
    if dt.hasobject or nbytes != int(np.prod(shape)) * dt.itemsize:
      raise Refused(f'array {name}/{path}: {dtype} {shape} in {nbytes} bytes')
    arrays[(name, path)] = np.frombuffer(
        _exact(conn, nbytes), dt).reshape(shape).copy()
  return header, arrays


# ------------------------------------------------------------ the client


def flatten_payloads(payloads: dict, flatten) -> dict:
  return {(name, path): value for name, tree in (payloads or {}).items()
          for path, value in flatten(tree).items()}


def unflatten_payloads(arrays: dict, unflatten) -> dict:
  names = sorted({name for name, _ in arrays})
  return {name: unflatten({path: v for (n, path), v in arrays.items()
                           if n == name}) for name in names}


def request(path, kind: str, control: dict, arrays: dict):
  """Sends one request to the worker at `path`; returns its (control,
  arrays). `WorkerUnavailable` when nothing answers there; `WorkerFailed`
  (one line) when the worker refused or failed the request."""
  conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  try:
    try:
      conn.connect(str(path))
    except OSError as e:
      raise WorkerUnavailable(f'no worker at {path} ({e.strerror})') from None
    try:
      send(conn, {'kind': kind, 'control': control}, arrays)
      header, out = receive(conn)
    except (ConnectionError, Refused) as e:
      raise WorkerUnavailable(f'the worker at {path} went away ({e})') \
          from None
  finally:
    conn.close()
  if header.get('error'):
    raise WorkerFailed(header['error'])
  return header.get('control', {}), out
