"""The devices of a run as hardware (config.system.hardware): the latency
table they are budgeted through, each device's profile, and what the
selection, the edges and the header search ask of them.

A run that sets `system.hardware.latency_table` loads the table before any
work (`from_config`, refusing one of another backend or family in one
line). Then:

  selection   the front's latency axis is the table's predicted backbone
              milliseconds (and every candidate carries its predicted ms
              and peak bytes);
  edge        a device gets only a backbone that, with room for the
              cheapest header, meets its latency budget at its slowdown
              and its memory budget (`feasible`);
  device      its header search keeps the header within what the backbone
              leaves of both budgets (`header_cost_limit`,
              `budgets.HeaderCost`);
  report      each deployed model's predicted latency beside its latency
              measured on this machine, both at the device's slowdown.
"""
import dataclasses
import json
import pathlib
from typing import Optional, Sequence, Tuple

import jax
import numpy as np

from acme_jax import errors
from acme_jax import sizes
from acme_jax import workdir as workdir_lib
from acme_jax.device import features as device_features
from acme_jax.device import header as header_lib
from acme_jax.device import stage as device_stage
from acme_jax.hardware import budgets
from acme_jax.hardware import features
from acme_jax.hardware import measure
from acme_jax.hardware import profile
from acme_jax.hardware import table as table_lib

# Added to config.seed: the devices' drawn profiles (+ each field's place
# in profile.FIELDS).
PROFILE_SEED = 100

# The jobs whose devices honour latency and memory budgets; every other
# refuses a latency table in this one line before any work.
ONLY = ('only experiments.main and experiments.baselines budget devices in '
        'ms and MiB (not the table experiments, which share one backbone '
        'per edge or fix the headers, nor the networked run)')
UNSUPPORTED = (f'system.hardware.latency_table is set, but {ONLY}: unset it '
               f'for this job')

# Relative slack of a budget check against the float32 the search and the
# front payload compute in.
TOLERANCE = 1e-5


@dataclasses.dataclass(frozen=True)
class Fleet:
  """A run's devices as hardware; `table` is what `benchmarks.latency`
  wrote."""
  table: dict
  table_sha256: str
  devices: Tuple[profile.Hardware, ...]
  arch: object             # sizes.architecture: the supernet's shape
  seq_len: int             # tokens a backbone runs over
  spec: header_lib.Spec    # the devices' header search space
  positions: int           # grid positions a header runs over
  batch: int               # the batch a deployed model's latency is read at
  header_layers: int       # config.header.num_layers (0: the prototype's
                           # rule): a header's cells follow its backbone

  @classmethod
  def from_config(cls, config, dataset, spec: header_lib.Spec,
                  num_devices: int) -> Optional['Fleet']:
    """The run's fleet, or None when its devices budget parameters only
    (no latency table)."""
    hw = config.system.hardware
    if not hw.latency_table:
      return None
    table = table_lib.load(hw.latency_table,
                           family=config.model.get('family', 'vit'))
    arch = sizes.architecture(config, dataset.num_classes)
    seq_len = (arch.num_tokens if hasattr(arch, 'num_tokens')
               else dataset.input_spec.max_length)
    grid = sizes.feature_shape(config)[1:-1]
    # Asked of the table now, so a batch it never measured is refused
    # before any training.
    for part in ('backbone', 'header'):
      for target in ('latency', 'memory'):
        table_lib.fitted(table, part, hw.batch, target)
    path = pathlib.Path(hw.latency_table)
    return cls(table, workdir_lib.file_hashes(path)[path.name],
               profile.devices(hw, num_devices, config.seed + PROFILE_SEED),
               arch, int(seq_len), spec, int(np.prod(grid)), int(hw.batch),
               int(config.header.num_layers))

  def fingerprint(self, config) -> dict:
    """What a cached device stage adds to its fingerprint: the table's
    content (the budgets read it) and config.latency (the deployed models
    are timed as it says)."""
    # As JSON has it (lists, not tuples): a cached stage compares it with
    # the fingerprint it saved.
    return json.loads(json.dumps({'latency_table_sha256': self.table_sha256,
                                  'latency': config.latency.to_dict()}))

  def backbone_costs(self, depths, widths) -> Tuple[np.ndarray, np.ndarray]:
    """(ms, bytes) the table predicts for these backbone subnets."""
    return budgets.backbone_costs(self.table, self.arch,
                                  list(zip(depths, widths)), self.seq_len,
                                  self.batch)

  def header_cost(self) -> budgets.HeaderCost:
    return budgets.HeaderCost.from_table(self.table, self.batch,
                                         self.positions)

  def header_reserve(self, depths, widths) -> Tuple[np.ndarray, np.ndarray]:
    """(ms, bytes) per backbone: the cheapest header a device running it
    gets (the smallest cell, as many cells as that backbone's headers
    have)."""
    costs = [budgets.header_reserve(
        self.table, self.spec, self.batch, self.positions,
        device_stage.header_cells(self.header_layers, w, d))
             for d, w in zip(depths, widths)]
    return (np.array([c[0] for c in costs]), np.array([c[1] for c in costs]))

  def feasible(self, depths, widths, backbone_ms,
               backbone_bytes) -> np.ndarray:
    """(D, N): candidate n (multipliers, predicted costs), with room for
    the cheapest header it would carry, meets device d's latency and memory
    budgets."""
    return budgets.feasible(self.devices, backbone_ms, backbone_bytes,
                            self.header_reserve(depths, widths))

  def check_servable(self, cells: Sequence[dict], budgets: Sequence[int],
                     allowance: int):
    """Refuses, in one line before any training, a device that no grid
    cell (`sizes.grid`) within its parameter budget can serve within its
    latency and memory budgets."""
    depths = [c['depth_mult'] for c in cells]
    widths = [c['width_mult'] for c in cells]
    ms, nbytes = self.backbone_costs(depths, widths)
    reserve_ms, reserve_bytes = self.header_reserve(depths, widths)
    ok = self.feasible(depths, widths, ms, nbytes)
    params = np.array([c['params'] for c in cells])
    for device, budget in enumerate(budgets):
      within = params + allowance <= budget
      if within.any() and not (within & ok[device]).any():
        hw = self.devices[device]
        fastest = hw.slowdown * float((ms + reserve_ms)[within].min())
        smallest = float((nbytes + reserve_bytes)[within].min()) / 2 ** 20
        raise errors.UserError(
            f'device {device}: no trained subnet within its parameter '
            f'budget {budget:,} meets its budgets of '
            f'{hw.latency_budget_ms or "no"} ms and '
            f'{hw.memory_budget_mb or "no"} MiB at {hw.slowdown:g}x '
            f'slowdown (the fastest, with its cheapest header, is predicted '
            f'at {fastest:.2f} ms; the smallest at {smallest:.2f} MiB): '
            f'raise system.hardware\'s budgets or lower its slowdown')

  def header_cost_limit(self, device: int, backbone_ms: float,
                        backbone_bytes: float) -> Tuple[float, float]:
    """(ms, bytes) on the table's machine that device `device`'s budgets
    leave its header beside a backbone of these predicted costs (inf where
    it has no such budget)."""
    hw = self.devices[device]
    ms = (hw.latency_budget_ms / hw.slowdown - backbone_ms
          if hw.latency_budget_ms else np.inf)
    nbytes = (hw.memory_budget_mb * 2 ** 20 - backbone_bytes
              if hw.memory_budget_mb else np.inf)
    return float(ms), float(nbytes)

  def device_fields(self, device: int, backbone_ms: float,
                    backbone_bytes: float) -> dict:
    """What a device's record says of its hardware and its backbone's
    predicted cost."""
    hw = self.devices[device]
    return {'slowdown': hw.slowdown,
            'latency_budget_ms': hw.latency_budget_ms,
            'memory_budget_mb': hw.memory_budget_mb,
            'uplink_mbps': hw.uplink_mbps, 'downlink_mbps': hw.downlink_mbps,
            'predicted_backbone_ms': hw.latency_ms(backbone_ms),
            'header_cost_limit': self.header_cost_limit(
                device, backbone_ms, backbone_bytes)}

  def deployed(self, record: dict, arch, n_layers: int, gates) -> dict:
    """The predicted latency (at the device's slowdown) and peak memory of
    a device's deployed model: its backbone and its pruned header."""
    hw = self.devices[record['device']]
    ms, nbytes = self.backbone_costs([record['depth_mult']],
                                     [record['width_mult']])
    row = features.header_row(self.spec, arch, n_layers, gates, self.batch,
                              self.positions)
    header_ms = table_lib.fitted(self.table, 'header', self.batch,
                                 'latency')([row])[0]
    header_bytes = table_lib.fitted(self.table, 'header', self.batch,
                                    'memory')([row])[0]
    return {'predicted_latency_ms': hw.latency_ms(ms[0] + header_ms),
            'predicted_memory_mb': float(nbytes[0] + header_bytes) / 2 ** 20}


def measure_deployed(fleet: Fleet, model, supernet, records, headers,
                     test_splits, features_from: str,
                     hp: measure.TimingHparams) -> list:
  """Per device, its deployed model timed on this machine (backbone, then
  its header on the backbone's tokens; all programs round-robin), at
  `fleet.batch` from its test inputs: the median ms at its slowdown and
  the peak memory XLA plans."""
  programs = []
  for record, header, test in zip(records, headers, test_splits):
    forward, dense = measure.backbone_program(
        model, supernet, record['depth_mult'], record['width_mult'],
        features_from)
    inputs = measure.batch_of(test.images, fleet.batch)
    # The header reads the backbone's tokens as the device caches them.
    tokens = device_features.header_tokens(
        model, np.asarray(jax.jit(forward)(dense, inputs)),
        device_features.patch_grid(model, test.images.shape[1:]))
    head, head_vars = measure.deployed_header_program(
        fleet.spec, {'params': header.state.child.params,
                     'batch_stats': header.state.child.batch_stats},
        header.arch, header.n_layers, header.gates)
    programs += [(forward, (dense, inputs)), (head, (head_vars, tokens))]
  timed = measure.timed_together(programs, hp)
  out = []
  for i, record in enumerate(records):
    backbone, head = timed[2 * i], timed[2 * i + 1]
    slowdown = fleet.devices[record['device']].slowdown
    out.append({
        'measured_latency_ms': slowdown * (backbone['median_ms'] +
                                           head['median_ms']),
        'measured_backbone_ms': slowdown * backbone['median_ms'],
        'measured_header_ms': slowdown * head['median_ms'],
        'measured_memory_mb': (backbone['peak_memory_bytes'] +
                               head['peak_memory_bytes']) / 2 ** 20,
        'measured_on': measure.machine()})
  return out


def within(record: dict, tolerance: float = TOLERANCE) -> Sequence[str]:
  """The budgets a device's deployed model misses by the prediction (empty
  when it meets them all)."""
  missed = []
  if record.get('latency_budget_ms') and (
      record['predicted_latency_ms'] > record['latency_budget_ms'] *
      (1 + tolerance)):
    missed.append('latency')
  if record.get('memory_budget_mb') and (
      record['predicted_memory_mb'] > record['memory_budget_mb'] *
      (1 + tolerance)):
    missed.append('memory')
  return missed
