"""Simulated (virtual) time of a federated run on the devices' hardware
(config.system.hardware, through the latency table).

A run is a sequence of phases: ACME's set-up (the front, the histograms and
the backbones delivered; the backbone run once over the local data, the
header search and its final training), each aggregation round, and the
closing report; a baseline's rounds and its deployment. In a phase each
device computes and transfers:

  compute   its FLOPs at its rate: the latency table's full backbone
            forward FLOPs per predicted second on the table's machine,
            divided by the device's slowdown (one rate per device, for
            every kind of work);
  transfer  the bytes it sends over its uplink and receives over its
            downlink (the ledger's device links; a zero bandwidth: free).

A phase lasts as long as its slowest device (synchronous rounds wait for
it); the run's virtual time is the sum of its phases. Links between the
cloud and the edges are not modelled (they take no time). Stragglers cost
what each phase waits past its median device.
"""
import dataclasses
from typing import Dict, List, Mapping, Sequence

import numpy as np

from acme_jax.hardware import features
from acme_jax.hardware import profile

# Ledger kinds of ACME's set-up (before the first round) and of its
# closing report (after the last).
SETUP_KINDS = ('front', 'histogram', 'backbone', 'raw_data')
CLOSING_KINDS = ('metrics',)


@dataclasses.dataclass(frozen=True)
class Phase:
  """What each device does in one phase: device id -> FLOPs it computes,
  bytes it sends, bytes it receives."""
  name: str
  flops: Mapping[int, float]
  up: Mapping[int, float]
  down: Mapping[int, float]


def device_rates(fleet) -> np.ndarray:
  """FLOPs per second of each device: the full backbone's forward FLOPs
  at the table's batch over its predicted time, slowed down."""
  row = features.backbone_row(fleet.arch, 1.0, 1.0, fleet.seq_len,
                              fleet.batch)
  ms, _ = fleet.backbone_costs([1.0], [1.0])
  table_rate = row['flops'] / (float(ms[0]) / 1e3)
  return np.array([table_rate / hw.slowdown for hw in fleet.devices])


def device_seconds(phase: Phase, device: int, rate: float,
                   hardware: profile.Hardware) -> float:
  return (phase.flops.get(device, 0.0) / rate +
          hardware.transfer_seconds(phase.up.get(device, 0.0),
                                    phase.down.get(device, 0.0)))


def timeline(phases: Sequence[Phase], rates: Sequence[float],
             hardware: Sequence[profile.Hardware]) -> dict:
  """The run's virtual seconds, its phases' (each its slowest device's),
  and what stragglers cost: per phase the wait past the median of the
  devices taking part in it, summed."""
  rows = []
  for phase in phases:
    # The devices taking part: a method that serves some devices leaves
    # the others idle, and they wait for no one.
    taking = [d for d in range(len(hardware)) if phase.flops.get(d) or
              phase.up.get(d) or phase.down.get(d)] or [0]
    each = np.array([device_seconds(phase, d, rates[d], hardware[d])
                     for d in taking])
    rows.append({'phase': phase.name, 'seconds': float(each.max()),
                 'median_device_seconds': float(np.median(each)),
                 'slowest_device': int(taking[int(each.argmax())])})
  total = sum(r['seconds'] for r in rows)
  straggling = sum(r['seconds'] - r['median_device_seconds'] for r in rows)
  return {'seconds': total, 'straggler_seconds': straggling,
          'straggler_share': straggling / total if total else 0.0,
          'phases': rows}


def _transfers(records, keep) -> Dict[str, Dict[int, float]]:
  """Bytes each device sent (`up`) and received (`down`) over its own link
  in the ledger `records` for which `keep(record)` holds."""
  up, down = {}, {}
  for r in records:
    if not keep(r):
      continue
    if r['src_tier'] == 'device':
      up[r['src_id']] = up.get(r['src_id'], 0.0) + r['bytes']
    if r['dst_tier'] == 'device':
      down[r['dst_id']] = down.get(r['dst_id'], 0.0) + r['bytes']
  return {'up': up, 'down': down}


def ledger_phases(records: Sequence[dict], setup_flops: Mapping[int, float],
                  round_flops: Sequence[Mapping[int, float]],
                  closing_flops: Mapping[int, float] = None,
                  setup_kinds=SETUP_KINDS,
                  closing_kinds=CLOSING_KINDS) -> List[Phase]:
  """A run's phases from its ledger records (`Ledger.to_records()`) and
  each phase's FLOPs per device: `setup` (the transfers of `setup_kinds`),
  round r (every other transfer recorded in round r), `closing` (those of
  `closing_kinds`, and any recorded after the last round: a baseline's
  deployment)."""
  rounds = len(round_flops)

  def phase_of(r) -> str:
    if r['kind'] in setup_kinds:
      return 'setup'
    if r['kind'] in closing_kinds or r['round'] >= rounds:
      return 'closing'
    return f"round {r['round']}"

  phases = [Phase('setup', dict(setup_flops), **_transfers(
      records, lambda r: phase_of(r) == 'setup'))]
  for i, flops in enumerate(round_flops):
    phases.append(Phase(f'round {i}', dict(flops), **_transfers(
        records, lambda r, i=i: phase_of(r) == f'round {i}')))
  phases.append(Phase('closing', dict(closing_flops or {}), **_transfers(
      records, lambda r: phase_of(r) == 'closing')))
  return phases


def acme_run(fleet, model, supernet, config, devices: Sequence[dict],
             records: Sequence[dict]) -> dict:
  """ACME's virtual time: each device's set-up and per-round FLOPs
  (`flops.acme_phase_flops`), its transfers from the ledger `records`."""
  from acme_jax.federated import flops as flops_lib
  by_phase = {d['device']: flops_lib.acme_phase_flops(model, supernet,
                                                      config, d)
              for d in devices}
  phases = ledger_phases(
      records, {d: f['setup'] for d, f in by_phase.items()},
      [{d: f['round'] for d, f in by_phase.items()}] *
      config.aggregation.rounds)
  return timeline(phases, device_rates(fleet), fleet.devices)


def baseline_run(fleet, history: Mapping[int, Sequence[dict]],
                 closing_flops: Mapping[int, float],
                 records: Sequence[dict], rounds: int) -> dict:
  """A baseline's virtual time: each device's FLOPs per round (its
  `history`, one dict per round with `flops`), its deployment's
  (`closing_flops`: local fine-tuning), its transfers from the ledger
  `records` (every one a round's: a baseline has no set-up)."""
  per_round = [{d: h[r]['flops'] for d, h in history.items() if r < len(h)}
               for r in range(rounds)]
  phases = ledger_phases(records, {}, per_round, closing_flops,
                         setup_kinds=(), closing_kinds=())
  return timeline(phases, device_rates(fleet), fleet.devices)
