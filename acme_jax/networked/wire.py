"""Bytes on the wire, counted at the socket: one relay per link.

A SuperNode reaches its edge's SuperLink through a relay that forwards the
TCP stream untouched (TLS stays end to end) and counts the bytes each way.
What it counts is what the network carries: Flower's serialized messages
plus HTTP, TLS, heartbeats and polling.
"""
import asyncio
import threading
from typing import Dict, Tuple


class Relays:
  """Byte-counting TCP relays, served from one background thread."""

  def __init__(self, host: str = '127.0.0.1', hold_s: float = 120.0):
    self.host, self.hold_s = host, hold_s
    self.counts: Dict[str, list] = {}   # link -> [bytes up, bytes down]
    self._loop = asyncio.new_event_loop()
    self._servers = []
    self._thread = threading.Thread(target=self._loop.run_forever,
                                    daemon=True)
    self._thread.start()

  def add(self, link: str, target: Tuple[str, int]) -> int:
    """A relay to `target` for `link`; returns the port it listens on."""
    self.counts.setdefault(link, [0, 0])
    return asyncio.run_coroutine_threadsafe(self._serve(link, target),
                                            self._loop).result()

  async def _serve(self, link, target):
    async def pipe(reader, writer, index):
      try:
        while True:
          data = await reader.read(65536)
          if not data:
            break
          self.counts[link][index] += len(data)
          writer.write(data)
          await writer.drain()
      except (ConnectionError, asyncio.CancelledError):
        pass
      finally:
        writer.close()

    async def dial(client_reader, client_writer):
      # While the target is down (an edge restarting), hold the client's
      # connection and keep dialing, as a slow network path would: closing
      # it at once would end the client's TLS handshake with an EOF, which
      # a Flower SuperNode does not retry.
      end = asyncio.get_running_loop().time() + self.hold_s
      while True:
        try:
          server_reader, server_writer = await asyncio.open_connection(
              *target)
          break
        except OSError:
          if asyncio.get_running_loop().time() > end:
            client_writer.close()
            return
          await asyncio.sleep(0.5)
      await asyncio.gather(pipe(client_reader, server_writer, 0),
                           pipe(server_reader, client_writer, 1))

    async def handle(client_reader, client_writer):
      try:
        await dial(client_reader, client_writer)
      except asyncio.CancelledError:
        # `close` ends it. Returning, not raising: asyncio's stream callback
        # asks a cancelled task for its exception and logs a traceback.
        client_writer.close()

    server = await asyncio.start_server(handle, self.host, 0)
    self._servers.append(server)
    return server.sockets[0].getsockname()[1]

  def totals(self) -> dict:
    return {link: {'up': up, 'down': down}
            for link, (up, down) in self.counts.items()}

  def close(self):
    async def stop():
      for server in self._servers:
        server.close()
      # The open connections end here, not as garbage at exit (asyncio
      # logs a line for every pending task it destroys).
      tasks = [t for t in asyncio.all_tasks()
               if t is not asyncio.current_task()]
      for task in tasks:
        task.cancel()
      await asyncio.gather(*tasks, return_exceptions=True)
    try:
      asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
    except TimeoutError:
      pass
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(timeout=5)
    if not self._thread.is_alive():
      self._loop.close()
