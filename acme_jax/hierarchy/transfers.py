"""What crosses the tiers in ACME and in the centralized baseline (docs/method.md 7).

Shared by the pipeline (real payloads: pytrees of arrays) and the plan tool
(byte counts from shapes), so both compute the ledger the same way.
"""
from typing import Hashable, Mapping, Optional

import numpy as np

from acme_jax.hierarchy.ledger import Ledger, centralized_ledger
from acme_jax.hierarchy.topology import Topology


FRONT_FIELDS = ('depth_mult', 'width_mult', 'accuracy', 'per_class', 'params',
                'on_front')
HARDWARE_FIELDS = ('latency_ms', 'memory_bytes')


def front_payload(candidates) -> dict:
  """What the cloud sends each edge (docs/method.md 4.4): per trained subnet its
  multipliers, accuracy, per-class accuracy, exact size and whether it is
  on the non-dominated set, and, when the devices budget latency and memory
  (`hardware.fleet`), its predicted ms and peak bytes on the latency
  table's machine; float32 arrays, as they travel."""
  fields = FRONT_FIELDS + tuple(k for k in HARDWARE_FIELDS
                                if candidates and k in candidates[0])
  return {k: np.asarray([c[k] for c in candidates], np.float32)
          for k in fields}


def deliver_backbones(ledger: Ledger, topology: Topology, front,
                      histograms: Mapping, backbones: Mapping,
                      device_backbone: Mapping,
                      reference: Optional[Hashable] = None):
  """The downward pass: front to edges, histograms up, backbones down.

  Args:
    front: payload sent once to every edge (the candidate table).
    histograms: device id -> label-histogram payload (device -> edge).
    backbones: backbone key -> payload (its extracted params, no head).
    device_backbone: device id -> backbone key.
    reference: key of the common reference backbone every device also needs
      (feature signatures, docs/method.md 6), or None.

  Each edge receives each distinct backbone its devices need once (a relay
  leg, `final=False`), then forwards one copy to each device that needs it;
  a device whose own backbone is the reference receives it once.
  """
  for edge in topology.edges:
    devices = [d.id for d in topology.devices_of(edge)]
    ledger.send('cloud', ('edge', edge), 'front', front)
    for device in devices:
      ledger.send(('device', device), ('edge', edge), 'histogram',
                  histograms[device])
    needed = {device_backbone[d] for d in devices}
    if reference is not None:
      needed.add(reference)
    for key in sorted(needed, key=repr):
      ledger.send('cloud', ('edge', edge), 'backbone', backbones[key],
                  final=False)
    for device in devices:
      for key in dict.fromkeys([device_backbone[device], reference]):
        if key is not None:
          ledger.send(('edge', edge), ('device', device), 'backbone',
                      backbones[key])


def report_metrics(ledger: Ledger, topology: Topology, metrics: Mapping,
                   round_: int = 0):
  """The closing pass: device metrics to the edge, the edge's summary to the cloud."""
  for edge in topology.edges:
    devices = [d.id for d in topology.devices_of(edge)]
    for device in devices:
      ledger.send(('device', device), ('edge', edge), 'metrics',
                  metrics[device], round=round_)
    ledger.send(('edge', edge), 'cloud', 'metrics',
                [metrics[d] for d in devices], round=round_)


def centralized(topology: Topology, raw_data_bytes: Mapping,
                model_bytes: Mapping) -> Ledger:
  """Every device uploads its raw training data and downloads its finished model."""
  ids = [d.id for d in topology.devices]
  return centralized_ledger(ids, {i: raw_data_bytes[i] for i in ids},
                            {i: model_bytes[i] for i in ids})
