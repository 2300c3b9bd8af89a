"""Devices and the cloud: one ClientApp answering every ACME message type."""
from flwr.clientapp import ClientApp

from acme_jax.networked import handlers

app = ClientApp()


def _register(kind):
  group, action = kind.split('.')
  decorate = app.query(action) if group == 'query' else app.train(action)
  decorate(handlers.handle)


for _kind in handlers.KINDS:
  _register(_kind)
