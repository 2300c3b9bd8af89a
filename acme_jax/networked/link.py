"""An edge's two links as Flower sees them: which node is which ACME
endpoint, and request/reply exchanges with timeouts, a window of requests
in flight, one log line per missing reply, and every message's serialized
size logged per peer, direction and kind (`messages.jsonl`).

The edge's ServerApp (`edge.py`) drives both of its links through this:
its devices and the cloud are SuperNodes of the edge's SuperLink, told apart
by what they answer to 'query.info'.
"""
import json
import pathlib
import time

from flwr.app import Message

from acme_jax.networked import payload


class EdgeError(RuntimeError):
  pass


class Link:
  """Edge `edge_id`'s nodes and exchanges over `grid` (a Flower Grid)."""

  def __init__(self, net, workdir, edge_id: int, grid,
               expected_devices: int, log=print):
    self.net, self.grid, self.id = net, grid, int(edge_id)
    self.dir = pathlib.Path(workdir)
    self.dir.mkdir(parents=True, exist_ok=True)
    self.expected = int(expected_devices)
    self._log = log
    self.nodes = {}            # ('device', id) | ('cloud', 0) -> node id
    self.info = {}             # device id -> what it said of itself

  def log(self, text):
    self._log(f'[edge {self.id}] {text}')

  def _record_message(self, peer, direction, kind, message, round_=None):
    entry = {'t': time.time(), 'peer': list(peer), 'direction': direction,
             'kind': kind, 'round': round_,
             'bytes': payload.message_bytes(message)}
    with open(self.dir / 'messages.jsonl', 'a') as f:
      f.write(json.dumps(entry) + '\n')

  # ------------------------------------------------------------- nodes

  def discover(self, wait: bool):
    """Maps Flower node ids to ACME endpoints (asking new nodes who they
    are); with `wait`, until the cloud and every expected device joined
    or `network.join_timeout_s` passed."""
    end = time.time() + self.net.join_timeout_s
    while True:
      known = set(self.nodes.values())
      online = set(self.grid.get_node_ids())
      fresh = sorted(online - known)
      for endpoint, node in list(self.nodes.items()):
        if node not in online:
          del self.nodes[endpoint]
      if fresh:
        replies = self.exchange(
            'query.info', {('node', n): ({}, {}) for n in fresh},
            self.net.timeout_s, by_node=True, record=False)
        for node, reply in replies.items():
          c = payload.control(reply)
          if c.get('role') == 'cloud':
            self.nodes[('cloud', 0)] = node[1]
          elif c.get('role') == 'device' and int(c['edge']) == self.id:
            device = int(c['device'])
            self.nodes[('device', device)] = node[1]
            self.info[device] = c
      devices = [k for k in self.nodes if k[0] == 'device']
      complete = ('cloud', 0) in self.nodes and len(devices) >= self.expected
      if complete or not wait or time.time() > end:
        return complete
      time.sleep(0.5)

  def devices(self):
    return sorted(k[1] for k in self.nodes if k[0] == 'device')

  # ---------------------------------------------------------- exchange

  def exchange(self, kind: str, requests: dict, timeout: float,
                by_node: bool = False, record: bool = True, round_=None):
    """Sends each endpoint its (payloads, control) request as `kind`;
    returns {endpoint: reply} for the replies that came back in time.
    Each request waits `timeout` seconds from when it is sent; at most
    `network.max_in_flight` are out at once (0: all). Missing and failed
    replies are logged, one line each."""
    queue = []
    for peer, (payloads, control) in requests.items():
      node = peer[1] if by_node else self.nodes.get(peer)
      if node is None:
        self.log(f'{kind}: {peer[0]} {peer[1]} is not connected; skipped')
        continue
      queue.append((peer, Message(payload.content(payloads, **control),
                                  dst_node_id=node, message_type=kind)))
    window = self.net.get('max_in_flight', 0) or len(queue)
    pending, replies = {}, {}

    def push(count):
      batch, queue[:count] = queue[:count], []
      for peer, msg in batch:
        if record:
          self._record_message(peer, 'down' if peer[0] == 'device' else 'up',
                               kind, msg, round_)
      ids = self.grid.push_messages([msg for _, msg in batch])
      for i, (peer, _) in zip(ids, batch):
        pending[i] = (peer, time.time() + timeout)

    push(window)
    while pending:
      for reply in self.grid.pull_messages(list(pending)):
        peer, _ = pending.pop(reply.metadata.reply_to_message_id,
                              (None, None))
        if peer is None:
          continue
        if reply.has_error():
          self.log(f'{kind}: {peer[0]} {peer[1]} failed: '
                   f'{reply.error.reason.strip().splitlines()[-1][:200]}')
          continue
        replies[peer] = reply
        if record:
          self._record_message(peer, 'up' if peer[0] == 'device' else 'down',
                               kind, reply, round_)
      now = time.time()
      for i, (peer, deadline) in list(pending.items()):
        if now > deadline:
          del pending[i]
          self.log(f'{kind}: no reply from {peer[0]} {peer[1]} within '
                   f'{timeout:.0f}s; going on without it')
      if queue and len(pending) < window:
        push(window - len(pending))
      if pending:
        time.sleep(0.2)
    return replies

  def _ask_cloud(self, kind, payloads=None, **control):
    cloud = ('cloud', 0)
    for attempt in range(self.net.retries + 1):
      if cloud not in self.nodes:
        self.discover(wait=True)
      reply = self.exchange(kind, {cloud: (payloads or {}, control)},
                             self.net.timeout_s).get(cloud)
      if reply is not None:
        return reply
    raise EdgeError(f'the cloud did not answer {kind} after '
                    f'{self.net.retries + 1} tries')

