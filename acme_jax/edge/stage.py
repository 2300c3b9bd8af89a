"""The edge tier of the loop (docs/method.md 4.4, 7): each device's backbone,
chosen by its edge, extracted and delivered, and the device's cached
features of it.

Each edge receives the cloud's front and its devices' label histograms,
chooses per device the trained subnet with the best histogram-weighted
accuracy that fits its budget (less the header allowance), fetches each
distinct backbone once and forwards it; every transfer is a ledger record.
The device then runs its backbone once over its local data (the cached
features its header trains on) and a linear probe measures what the
backbone alone knows of that data.
"""
import dataclasses
from typing import List

import numpy as np

from acme_jax.data import partition
from acme_jax.device import features
from acme_jax.device import signature as signature_lib
from acme_jax.device import stage as device_stage
from acme_jax.edge import choice
from acme_jax.models import subnet as subnet_lib
from acme_jax.hierarchy import ledger as ledger_lib
from acme_jax.hierarchy import transfers


@dataclasses.dataclass(frozen=True)
class EdgeHparams:
  """What an edge decides with (config.system)."""
  header_allowance: int   # parameters every budget keeps for the header
  probe_seed: int

  @classmethod
  def from_config(cls, config) -> 'EdgeHparams':
    return cls(config.system.header_allowance, config.seed)


def choose(hp: EdgeHparams, front, histograms, budgets, feasible=None):
  """The edge's choice (docs/method.md 4.4) for devices with these label histograms
  and budgets, from the front payload alone: what an edge decides with.
  `feasible` (D, N): which candidates meet each device's latency and
  memory budgets (`hardware.fleet.Fleet.feasible`)."""
  return choice.choose_backbones(
      front['params'].astype(np.int64), front['per_class'], histograms,
      budgets, hp.header_allowance, on_front=front['on_front'] > 0,
      feasible=feasible)


def label_histograms(splits, num_classes: int) -> list:
  return [partition.label_histogram(train.labels, num_classes)
          for train, _, _ in splits]


def edge_choice(hp: EdgeHparams, selection, topology, splits,
                num_classes: int, fleet=None):
  """(label histograms, picks): each device's backbone chosen at its edge,
  from the front payload the edge receives (`transfers.front_payload`);
  with a `fleet`, within each device's latency and memory budgets too."""
  histograms = label_histograms(splits, num_classes)
  front = transfers.front_payload(selection['candidates'])
  candidates = selection['candidates']
  # The multipliers as the devices will read them (not float32-rounded):
  # they set the header's cell count, hence its reserve.
  feasible = (None if fleet is None else fleet.feasible(
      [c['depth_mult'] for c in candidates],
      [c['width_mult'] for c in candidates], front['latency_ms'],
      front['memory_bytes']))
  picks = choose(hp, front, histograms, [d.budget for d in topology.devices],
                 feasible)
  return histograms, picks


@dataclasses.dataclass
class Delivery:
  """The edge tier's outcome: per device its record (choice, sizes, probe),
  local splits and cached features; the ledger so far; the extracted
  backbones."""
  records: List[dict]
  splits: list
  features: List[features.LocalFeatures]
  ledger: ledger_lib.Ledger
  backbones: dict          # (depth, width) -> extracted params (no head)
  device_backbone: dict    # device id -> its backbone's key


def deliver(config, world, splits, device_hp: device_stage.DeviceHparams,
            log=print, one_per_edge: bool = False) -> Delivery:
  """Edge choice per device of `world` holding `splits`, backbone
  extraction and delivery (ledger), the devices' cached features and
  linear probes. `one_per_edge`: every device of an edge gets the backbone
  chosen for the edge's smallest budget (it fits them all; the aggregation
  experiment's set-up)."""
  hp = EdgeHparams.from_config(config)
  model, supernet = world.cloud.model, world.cloud.supernet
  candidates = world.selection['candidates']
  topology = world.topology
  histograms, picks = edge_choice(hp, world.selection, topology, splits,
                                  world.num_classes, world.fleet)
  if one_per_edge:
    lead = {}
    for device in sorted(topology.devices, key=lambda d: (d.budget, d.id)):
      lead.setdefault(device.edge_id, device.id)
    picks = [picks[lead[d.edge_id]] for d in topology.devices]
  backbones = {}

  def backbone(width, depth):
    key = (depth, width)
    if key not in backbones:
      sub = subnet_lib.for_model(model, width, depth)
      backbones[key] = subnet_lib.extract(model, supernet, sub)[1]
    return key

  chosen = [candidates[p.candidate] for p in picks]
  device_backbone = {d.id: backbone(c['width_mult'], c['depth_mult'])
                     for d, c in zip(topology.devices, chosen)}
  locals_ = device_stage.local_features(
      device_hp, model, supernet,
      [subnet_lib.for_model(model, c['width_mult'], c['depth_mult'])
       for c in chosen], [splits[d.id] for d in topology.devices])
  records = []
  for device, pick, cand, local in zip(topology.devices, picks, chosen,
                                       locals_):
    probe = device_stage.linear_probe(local, hp.probe_seed)
    records.append({
        'device': device.id, 'edge': device.edge_id, 'budget': device.budget,
        'width_mult': cand['width_mult'], 'depth_mult': cand['depth_mult'],
        'params': pick.params,
        'bytes': subnet_lib.param_bytes(backbones[device_backbone[device.id]]),
        'predicted_accuracy': cand['predicted_accuracy'],
        'measured_accuracy': cand['measured_accuracy'],
        'histogram_weighted_accuracy': pick.score,
        'label_histogram': np.asarray(histograms[device.id]).astype(
            int).tolist(),
        'local_samples': [len(s) for s in splits[device.id]],
        'linear_probe_test_accuracy': probe})
    if world.fleet is not None:
      records[-1].update(world.fleet.device_fields(
          device.id, cand['latency_ms'], cand['memory_bytes']))
    log(f'[edge] device {device.id} (edge {device.edge_id}, budget '
        f'{device.budget:,}): depth {cand["depth_mult"]:g} width '
        f'{cand["width_mult"]:g}, {pick.params:,} params, probe {probe:.3f}')
  reference = (backbone(*signature_lib.reference_multipliers(config))
               if signature_lib.needs_reference(config) else None)
  ledger = ledger_lib.Ledger()
  transfers.deliver_backbones(
      ledger, topology, transfers.front_payload(candidates),
      {d: h.astype(np.float32) for d, h in enumerate(histograms)},
      backbones, device_backbone, reference=reference)
  return Delivery(records, splits, locals_, ledger, backbones,
                  device_backbone)
