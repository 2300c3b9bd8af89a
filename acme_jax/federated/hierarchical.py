"""The baselines' federated algorithm: hierarchical rounds over ACME's
devices, edges, budgets and ledger.

A method trains one weight-sharing supernet (the cloud's fine-tuned,
importance-reordered teacher) on raw device data; each device holds a part
of it (`holdings.Holding`). Per round every device downloads what it holds
from its edge, trains it for `local_epochs` (`local.train`) and uploads it;
each edge averages every parameter over the devices that hold it; every
`cloud_every` rounds, and after the last, the cloud averages the edges the
same way and sends the result back. Every transfer is a ledger record the
size of what is held, less what stays personal.

`algorithm(method, model, hp, params, devices)` is the method as a
`FederatedAlgorithm` (`init` and `apply` over explicit state, as fedjax's),
run by the driver of `federated/algorithm.py`; the methods
(`federated/fedavg.py` and its neighbours) are their `Method`, their
`holdings` and that value.
"""
from typing import Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax.federated import algorithm as algorithm_lib
from acme_jax.federated import holdings as holdings_lib
from acme_jax.federated import local
from acme_jax.federated.method import FederatedHparams, Method
from acme_jax.hierarchy.ledger import Ledger

BYTES = 4  # float32 parameters


class ServerState(NamedTuple):
  round: int
  cloud: dict                      # the global params
  edges: Dict[int, dict]           # each edge's params
  personal: Dict[int, dict]        # device id -> params that stay on it


def init(method: Method, params, devices) -> ServerState:
  personal = {d.id: {k: params[k] for k in method.personal}
              for d in devices}
  return ServerState(0, params, {d.edge: params for d in devices}, personal)


def shared_holder(method: Method, holder) -> dict:
  """What of a device's holding travels: all of it but personal params."""
  return {k: (jax.tree.map(np.zeros_like, v) if k in method.personal else v)
          for k, v in holder.items()}


@jax.jit
def average(trees, weights, previous):
  """Per element: sum_i w_i T_i / sum_i w_i where some w_i > 0, else the
  previous value. `trees` and `weights` are stacked along a first axis."""
  def mix(t, w, prev):
    total = w.sum(0)
    return jnp.where(total > 0,
                     (t * w).sum(0) / jnp.where(total > 0, total, 1.0), prev)
  return jax.tree.map(mix, trees, weights, previous)


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                      *trees)


def weight(method: Method, device) -> float:
  """A holder's weight: its train samples (FedAvg), or 1 (HeteroFL)."""
  return (float(device.sizes['train']) if method.weighting == 'samples'
          else 1.0)


def _send(ledger, src, dst, holder, r, final=True):
  if ledger is not None:
    ledger.send(src, dst, 'weights',
                BYTES * holdings_lib.held_count(holder), round=r, final=final)


def _held(weights):
  return jax.tree.map(lambda w: (w > 0).astype(np.float32), weights)


def apply(method: Method, model, hp: FederatedHparams, state: ServerState,
          devices, ledger: Optional[Ledger] = None):
  """One round. Returns (the next state, device id -> {'flops': its
  training FLOPs in the round})."""
  r = state.round
  edges = sorted({d.edge for d in devices})
  shared = {d.id: shared_holder(method, d.holding.holder) for d in devices}
  if r == 0:  # each edge fetches what its devices hold of the global model
    for e in edges:
      union = jax.tree.map(lambda *xs: np.maximum.reduce(xs), *[
          shared[d.id] for d in devices if d.edge == e])
      _send(ledger, 'cloud', ('edge', e), union, r, final=False)
  start = {}
  for d in devices:
    start[d.id] = dict(state.edges[d.edge], **state.personal[d.id])
    _send(ledger, ('edge', d.edge), ('device', d.id), shared[d.id], r)
  epochs = range(r * hp.local_epochs, (r + 1) * hp.local_epochs)
  trained, flops = local.train(
      model, method, hp, devices, start,
      jax.random.fold_in(jax.random.key(hp.seed), r), epochs,
      hp.rounds * hp.local_epochs)
  new_edges, edge_weights = dict(state.edges), {}
  for e in edges:
    members = [d for d in devices if d.edge == e]
    for d in members:
      _send(ledger, ('device', d.id), ('edge', e), shared[d.id], r)
    weights = [jax.tree.map(lambda m, w=weight(method, d): m * w,
                            shared[d.id]) for d in members]
    new_edges[e] = average(_stack([trained[d.id] for d in members]),
                           _stack(weights), state.edges[e])
    edge_weights[e] = jax.tree.map(lambda *ws: sum(ws), *weights)
  personal = {d.id: {k: trained[d.id][k] for k in method.personal}
              for d in devices}
  cloud = state.cloud
  if (r + 1) % hp.cloud_every == 0 or r + 1 == hp.rounds:
    for e in edges:
      _send(ledger, ('edge', e), 'cloud', _held(edge_weights[e]), r)
    cloud = average(_stack([new_edges[e] for e in edges]),
                    _stack([edge_weights[e] for e in edges]), state.cloud)
    for e in edges:
      new_edges[e] = cloud
      _send(ledger, 'cloud', ('edge', e), _held(edge_weights[e]), r)
  return (ServerState(r + 1, cloud, new_edges, personal),
          {d.id: {'flops': f} for d, f in zip(devices, flops)})


def algorithm(method: Method, model, hp: FederatedHparams, params,
              devices) -> algorithm_lib.FederatedAlgorithm:
  """`method`'s rounds from `params` over `devices` (`local.Device`s, the
  clients `apply` takes) as a `FederatedAlgorithm`."""
  return algorithm_lib.FederatedAlgorithm(
      name=method.name, rounds=hp.rounds,
      init=lambda: init(method, params, devices),
      apply=lambda state, clients, ledger=None: apply(
          method, model, hp, state, clients, ledger))


def deploy(method: Method, model, hp: FederatedHparams, state: ServerState,
           devices, ledger: Optional[Ledger] = None) -> dict:
  """After the rounds: each device downloads its part of its edge's final
  model, FedAvg's devices fine-tune it locally (`finetune_epochs`, the rate
  annealed again from the peak), and each is evaluated. Returns per device
  (lists in `devices` order) validation and test accuracy and fine-tuning
  FLOPs."""
  params = {}
  for d in devices:
    params[d.id] = dict(state.edges[d.edge], **state.personal[d.id])
    _send(ledger, ('edge', d.edge), ('device', d.id),
          shared_holder(method, d.holding.holder), hp.rounds)
  flops = [0.0] * len(devices)
  if method.finetune and hp.finetune_epochs:
    params, flops = local.train(
        model, method, hp, devices, params,
        jax.random.fold_in(jax.random.key(hp.seed), hp.rounds),
        range(hp.finetune_epochs), hp.finetune_epochs)
  return {split: local.accuracy(model, method, hp, devices, params, split)
          for split in ('val', 'test')} | {'flops': flops}
