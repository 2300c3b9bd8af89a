"""The cloud's side of the networked loop (docs/method.md 3, 4, 7).

`prepare` runs the in-process cloud and selection stages in the cloud's
workdir, then lays out what the cloud serves: the front payload and every
trained subnet's extracted backbone. `Service` answers the edges' requests
from those files (a Flower ClientApp starts afresh for every message, so
nothing is recomputed per request).
"""
import pathlib

import numpy as np

from acme_jax import workdir as workdir_lib
from acme_jax.networked import payload

SERVE = 'serve'


def backbone_name(width: float, depth: float) -> str:
  return f'backbone_w{float(width):g}_d{float(depth):g}'


def prepare(config, workdir, log=print) -> dict:
  """Cloud stages, selection and the served files; returns the world's
  topology (device ids, edges, budgets) for whoever starts the devices."""
  # Here, not at the top: the cloud's message handlers (`Service`) import
  # this module in a fresh process per message and need none of JAX.
  from acme_jax import world as world_lib
  from acme_jax.device import signature as signature_lib
  from acme_jax.models import subnet as subnet_lib
  from acme_jax.hierarchy import transfers
  world = world_lib.build(config, workdir, log)
  selection = world.selection
  serve = world.wd / SERVE
  serve.mkdir(exist_ok=True)
  payload.save_npz(serve / 'front.npz',
                   transfers.front_payload(selection['candidates']))
  model, supernet = world.cloud.model, world.cloud.supernet
  multipliers = {(c['width_mult'], c['depth_mult'])
                 for c in selection['candidates']}
  multipliers.add(signature_lib.reference_multipliers(config))
  for width, depth in sorted(multipliers):
    path = serve / f'{backbone_name(width, depth)}.npz'
    if not path.exists():
      sub = subnet_lib.for_model(model, width, depth)
      payload.save_npz(path, subnet_lib.extract(model, supernet, sub)[1])
  topology = world.topology
  layout = {'devices': [{'id': d.id, 'edge': d.edge_id, 'budget': d.budget}
                        for d in topology.devices],
            'edges': list(topology.edges)}
  workdir_lib.atomic_write_json(world.wd / 'world.json', layout)
  return layout


class Service:
  """What the cloud answers, from its workdir."""

  def __init__(self, workdir):
    self.dir = pathlib.Path(workdir)

  def front(self) -> dict:
    return payload.load_npz(self.dir / SERVE / 'front.npz')

  def backbone(self, width: float, depth: float):
    path = self.dir / SERVE / f'{backbone_name(width, depth)}.npz'
    if not path.exists():
      raise ValueError(f'the cloud has no trained backbone width {width} '
                       f'depth {depth}')
    return payload.load_npz(path)

  def receive_metrics(self, edge: int, metrics):
    """An edge's closing summary: per device [test accuracy, params]."""
    workdir_lib.atomic_write_json(
        self.dir / f'metrics_edge{int(edge)}.json',
        {k: np.asarray(v).tolist() for k, v in payload.flatten(
            metrics).items()})
