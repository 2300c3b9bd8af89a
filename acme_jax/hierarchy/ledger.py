"""Communication ledger: every transfer between tiers, and the centralized baseline.

ACME's claim is about transmission volume, so every byte that crosses a tier is a
typed record (docs/method.md 7) and the ACME/centralized ratio comes from the same code for
any config, also in a dry "plan" mode that only knows shapes.

Hop weighting: a record says how many network hops its bytes travel (edge <-> device
or cloud <-> edge = 1; device <-> cloud via its edge = 2). Totals are hop-weighted
(bytes x hops) by default, i.e. the volume the network carries. The unweighted
totals (weighted=False) count what reaches its final recipient once: a payload
relayed by an edge (the cloud's backbone forwarded to devices) is recorded leg
by leg, and its first leg is marked `final=False`, so it adds to the network
volume but not to the end-to-end bytes. The centralized baseline's uploads and
downloads are single records over 2 hops, so both sides count a relayed
transfer the same way: once end to end, once per hop in the volume.
"""
import dataclasses
from typing import Iterable, Mapping, Optional, Sequence, Union

import jax
import numpy as np

TIERS = ('cloud', 'edge', 'device')
KINDS = ('raw_data', 'backbone', 'header', 'importance', 'signature', 'histogram',
         'front', 'metrics', 'weights')


@dataclasses.dataclass(frozen=True)
class Transfer:
  """One transfer from (src_tier, src_id) to (dst_tier, dst_id)."""
  round: int
  src_tier: str
  src_id: int
  dst_tier: str
  dst_id: int
  kind: str
  bytes: int    # bytes sent once by the source
  hops: int     # network hops they travel
  final: bool = True  # False: a relay leg (the next hop forwards it)

  @property
  def weighted_bytes(self) -> int:
    return self.bytes * self.hops

  def __post_init__(self):
    for tier in (self.src_tier, self.dst_tier):
      if tier not in TIERS:
        raise ValueError(f'unknown tier {tier!r}; allowed: {TIERS}')
    if self.kind not in KINDS:
      raise ValueError(f'unknown transfer kind {self.kind!r}; allowed: {KINDS}')
    for name in ('round', 'src_id', 'dst_id', 'bytes', 'hops'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f'{name} must be an int, got {value!r}')
      object.__setattr__(self, name, int(value))
    if self.round < 0 or self.src_id < 0 or self.dst_id < 0 or self.bytes < 0:
      raise ValueError(f'round, ids and bytes must be >= 0: {self}')
    if self.hops < 1:
      raise ValueError(f'hops must be >= 1, got {self.hops}')
    if (self.src_tier, self.src_id) == (self.dst_tier, self.dst_id):
      raise ValueError(f'a transfer needs two different endpoints: {self}')


Endpoint = Union[str, Sequence]


def _amount(record: Transfer, weighted: bool) -> int:
  if weighted:
    return record.weighted_bytes
  return record.bytes if record.final else 0


def tier_hops(src_tier: str, dst_tier: str) -> int:
  """Network hops between tiers: device <-> cloud goes via an edge (2), else 1."""
  return 2 if {src_tier, dst_tier} == {'device', 'cloud'} else 1


def endpoint(value: Endpoint) -> tuple:
  """(tier, id) from ('device', 3), ['edge', 0] (JSON) or 'cloud' (the one cloud, id 0)."""
  if isinstance(value, str):
    if value != 'cloud':
      raise ValueError(f"only 'cloud' may omit its id; got {value!r}")
    return ('cloud', 0)
  tier, node_id = value
  if tier not in TIERS:
    raise ValueError(f'unknown tier {tier!r}; allowed: {TIERS}')
  return (tier, int(node_id))


def payload_bytes(payload) -> int:
  """Bytes of a payload: an int is a byte count; else the sum of a pytree's leaves' nbytes."""
  if isinstance(payload, bool):
    raise ValueError('a payload cannot be a bool')
  if isinstance(payload, (int, np.integer)):
    if payload < 0:
      raise ValueError(f'byte count must be >= 0, got {payload}')
    return int(payload)
  return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(payload)))


class Ledger:
  """An append-only list of Transfers with totals by kind, tier direction and link."""

  def __init__(self, records: Iterable[Transfer] = ()):
    self._records = []
    for record in records:
      self.add(record)

  @property
  def records(self) -> tuple:
    return tuple(self._records)

  def __len__(self) -> int:
    return len(self._records)

  def __iter__(self):
    return iter(self._records)

  def add(self, record: Transfer) -> Transfer:
    if not isinstance(record, Transfer):
      raise ValueError(f'expected a Transfer, got {type(record).__name__}')
    self._records.append(record)
    return record

  def send(self, src: Endpoint, dst: Endpoint, kind: str, payload, *,
           round: int = 0, hops: int = None, final: bool = True) -> Transfer:
    """Record `payload` (pytree of arrays, or an int byte count) going src -> dst.

    Hops follow from the tiers (`tier_hops`); a `hops` that disagrees is refused.
    `final=False` marks a relay leg (see the module docstring).
    """
    src_tier, src_id = endpoint(src)
    dst_tier, dst_id = endpoint(dst)
    expected = tier_hops(src_tier, dst_tier)
    if hops is not None and hops != expected:
      raise ValueError(f'{src_tier} -> {dst_tier} has hops={expected}, not '
                       f'hops={hops}')
    return self.add(Transfer(round, src_tier, src_id, dst_tier, dst_id, kind,
                             payload_bytes(payload), expected, bool(final)))

  def _sum(self, key, weighted: bool) -> dict:
    totals = {}
    for record in self._records:
      amount = _amount(record, weighted)
      totals[key(record)] = totals.get(key(record), 0) + amount
    return totals

  def total(self, weighted: bool = True) -> int:
    """Hop-weighted network volume (bytes x hops, every leg), or with
    weighted=False the bytes delivered end to end (relay legs skipped)."""
    return sum(_amount(r, weighted) for r in self._records)

  def by_kind(self, weighted: bool = True) -> dict:
    """kind -> bytes; hop-weighted unless weighted=False."""
    return self._sum(lambda r: r.kind, weighted)

  def by_direction(self, weighted: bool = True) -> dict:
    """(src_tier, dst_tier) -> bytes, e.g. ('device', 'edge'); hop-weighted by default."""
    return self._sum(lambda r: (r.src_tier, r.dst_tier), weighted)

  def by_link(self, weighted: bool = True) -> dict:
    """((src_tier, src_id), (dst_tier, dst_id)) -> bytes between logical endpoints."""
    return self._sum(lambda r: ((r.src_tier, r.src_id), (r.dst_tier, r.dst_id)),
                     weighted)

  def by_device(self, weighted: bool = True) -> dict:
    """device id -> {'down': bytes it received, 'up': bytes it sent}."""
    out = {}
    for (src, dst), amount in self.by_link(weighted).items():
      for (tier, i), way in ((dst, 'down'), (src, 'up')):
        if tier == 'device':
          entry = out.setdefault(i, {'down': 0, 'up': 0})
          entry[way] += amount
    return out

  def to_records(self) -> list:
    """JSON-ready list of dicts, one per transfer, in order."""
    return [dataclasses.asdict(r) for r in self._records]

  @classmethod
  def from_records(cls, records: Iterable[Mapping]) -> 'Ledger':
    fields = [f.name for f in dataclasses.fields(Transfer)]
    required = set(fields) - {'final'}
    ledger = cls()
    for row in records:
      missing = required - set(row)
      if missing:
        raise ValueError(f'record lacks {sorted(missing)}: {row}')
      ledger.add(Transfer(**{name: row[name] for name in fields
                             if name in row}))
    return ledger

  def summary(self) -> dict:
    """JSON-ready totals, hop-weighted and unweighted."""
    def direction(totals):
      return {f'{s}->{d}': v for (s, d), v in sorted(totals.items())}
    return {
        'total': self.total(), 'total_unweighted': self.total(weighted=False),
        'by_kind': dict(sorted(self.by_kind().items())),
        'by_kind_unweighted': dict(sorted(self.by_kind(weighted=False).items())),
        'by_direction': direction(self.by_direction()),
        'by_direction_unweighted': direction(self.by_direction(weighted=False)),
    }


def _per_device(value, device_ids: Sequence[int], name: str) -> list:
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    return [int(value)] * len(device_ids)
  if isinstance(value, Mapping):
    missing = [d for d in device_ids if d not in value]
    if missing:
      raise ValueError(f'{name} lacks devices {missing}')
    return [int(value[d]) for d in device_ids]
  values = [int(v) for v in value]
  if len(values) != len(device_ids):
    raise ValueError(f'{len(values)} {name} for {len(device_ids)} devices')
  return values


def centralized_ledger(device_ids: Sequence[int], raw_data_bytes,
                       model_bytes) -> Ledger:
  """The centralized baseline: upload all raw training data, download finished models.

  Each device sends its raw training data to the cloud (kind 'raw_data', 2 hops:
  device -> edge -> cloud) and receives its customized model (kind 'weights', 2
  hops). `raw_data_bytes` and `model_bytes` are one int for every device, a list in
  `device_ids` order, or a mapping device id -> bytes.
  """
  device_ids = [int(d) for d in device_ids]
  if len(set(device_ids)) != len(device_ids):
    raise ValueError(f'device ids repeat: {device_ids}')
  uploads = _per_device(raw_data_bytes, device_ids, 'raw_data_bytes')
  downloads = _per_device(model_bytes, device_ids, 'model_bytes')
  ledger = Ledger()
  for device, up, down in zip(device_ids, uploads, downloads):
    ledger.send(('device', device), 'cloud', 'raw_data', up, hops=2)
    ledger.send('cloud', ('device', device), 'weights', down, hops=2)
  return ledger


def full_model_ledger(device_ids: Sequence[int], full_model_bytes: int
                      ) -> Ledger:
  """The "full-model deployment" scenario (docs/method.md 7; the large model
  deployed close to every user, as the paper's introduction puts it): each
  device receives the full pre-trained backbone from the cloud (kind
  'weights', 2 hops) instead of a customized subnet; no data moves."""
  ledger = Ledger()
  for device in device_ids:
    ledger.send('cloud', ('device', int(device)), 'weights',
                int(full_model_bytes), hops=2)
  return ledger


def compare(acme: Ledger, centralized: Ledger,
            full_model: Optional[Ledger] = None) -> dict:
  """JSON-ready totals by kind for both ledgers and the ratio ACME / centralized.

  'ratio' uses hop-weighted totals (bytes x hops), 'ratio_unweighted' plain bytes.
  'acme_raw_data_off_device' is the raw data ACME moved off devices (should be 0).
  With `full_model`, 'full_model_deployment' holds that scenario's totals
  and ACME's ratios to it, labelled apart from the centralized baseline.
  """
  kinds = sorted(set(acme.by_kind()) | set(centralized.by_kind()))

  def side(ledger):
    weighted, unweighted = ledger.by_kind(), ledger.by_kind(weighted=False)
    return {'total': ledger.total(), 'total_unweighted': ledger.total(weighted=False),
            'by_kind': {k: weighted.get(k, 0) for k in kinds},
            'by_kind_unweighted': {k: unweighted.get(k, 0) for k in kinds}}

  acme_side, central_side = side(acme), side(centralized)
  if central_side['total'] == 0:
    raise ValueError('the centralized ledger moves no bytes; no ratio to compute')
  out = {
      'acme': acme_side,
      'centralized': central_side,
      'ratio': acme_side['total'] / central_side['total'],
      'ratio_unweighted': (acme_side['total_unweighted']
                           / central_side['total_unweighted']),
      'acme_raw_data_off_device': sum(
          r.bytes for r in acme if r.kind == 'raw_data' and r.src_tier == 'device'),
  }
  if full_model is not None:
    out['full_model_deployment'] = {
        'total': full_model.total(),
        'total_unweighted': full_model.total(weighted=False),
        'ratio': acme.total() / full_model.total(),
        'ratio_unweighted': (acme.total(weighted=False) /
                             full_model.total(weighted=False))}
  return out
