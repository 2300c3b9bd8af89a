"""Plan mode: the communication ledger of a full-size run from shapes alone.

  python -m acme_jax.tools.plan --config=configs/cifar100_vit_b16.py

No training, no data: model sizes come from the exact closed-form parameter
count, device data sizes from the configured partition applied to a balanced
label array of the dataset's training-set size, and backbones are chosen as
the largest grid subnet within each budget (no accuracies exist yet; accuracy
grows with size on every measured grid). The header rounds are counted as
the pipeline records them. Raw data is counted as a device stores it (native
resolution, uint8 or the dataset's encoded bytes); the same upload at the
model's input resolution is printed as a labelled sensitivity line. Prints
bytes by kind for ACME and the centralized baseline, and the ratio, with the
assumptions it rests on.
"""
import sys

import numpy as np
from ml_collections import config_flags

from acme_jax import choices
from acme_jax import cli
from acme_jax import config as config_lib
from acme_jax import data as data_lib
from acme_jax import errors
from acme_jax import report
from acme_jax import sizes
from acme_jax.data import partition
from acme_jax.data import stage as data_stage
from acme_jax.device import header as header_lib
from acme_jax.device import signature as signature_lib
from acme_jax.edge import choice
from acme_jax.selection import costs
from acme_jax.hierarchy import ledger as ledger_lib
from acme_jax.hierarchy import topology as topology_lib
from acme_jax.hierarchy import transfers

_CONFIG = config_flags.DEFINE_config_file('config', None,
                                          'Path to a configs/*.py file.')

FLOAT32 = 4


def gate_units(config) -> int:
  """Floats of one importance vector: every gate channel of the header."""
  header = config.header
  spec = header_lib.Spec(num_classes=1,
                         feature_dim=1,
                         num_channels=header.num_channels,
                         num_nodes=header.num_nodes,
                         max_layers=sizes.max_header_cells(config))
  return sum(int(np.prod(s)) for s in header_lib.gate_shapes(spec).values())


def record_header_rounds(config, ledger, topology, arch):
  """The device <-> edge rounds of docs/method.md 6, as the pipeline records them."""
  aggregation = config.aggregation
  # wo_pruning and pruning_alone exchange nothing (`federated.acme`).
  if aggregation.mode in ('wo_pruning', 'pruning_alone'):
    return
  personalized = aggregation.mode in choices.PERSONALIZED_MODES
  signature = (aggregation.signature_samples * arch.hidden_size
               if aggregation.signature == 'features'
               else arch.num_classes) * FLOAT32
  layout = (2 + 4 * config.header.num_nodes) * FLOAT32   # prune.Layout
  importance = gate_units(config) * FLOAT32
  for r in range(aggregation.rounds):
    for d in topology.devices:
      edge = ('edge', d.edge_id)
      if r == 0:
        if personalized:
          ledger.send(('device', d.id), edge, 'signature', signature,
                      round=r)
        ledger.send(('device', d.id), edge, 'header', layout, round=r)
      ledger.send(('device', d.id), edge, 'importance', importance, round=r)
      ledger.send(edge, ('device', d.id), 'importance', importance, round=r)

# Transfers a plan records one by one (~10 us and ~0.25 kB each: 2.9
# million took 39 s and 0.74 GB here): beyond this a plan runs for minutes
# and holds gigabytes, for a typo (1e8 rounds).
MAX_TRANSFERS = 3_000_000


def transfer_count(config) -> int:
  """The transfers `plan` records for `config` (validated), at most: the
  header rounds' (docs/method.md 6) dominate."""
  devices, edges = sizes.num_devices(config), config.system.num_edges
  a = config.aggregation
  rounds = 0
  if a.mode not in ('wo_pruning', 'pruning_alone') and a.rounds:
    # Importance up and down every round; the header layout (and a
    # signature, personalized) in round 0.
    rounds = devices * (2 * a.rounds + 1 +
                        (a.mode in choices.PERSONALIZED_MODES))
  grid = len(config.cloud.width_mults) * len(config.cloud.depth_mults)
  # Front, backbones and metrics per edge; histogram, two backbones,
  # metrics and the centralized upload and download per device.
  return rounds + edges * (grid + 3) + 6 * devices


def check_size(config):
  """Refuses, before any work, a plan of more than MAX_TRANSFERS."""
  count = transfer_count(config)
  if count > MAX_TRANSFERS:
    a = config.aggregation
    raise errors.UserError(
        f'this plan would record {count:,} transfers (config.aggregation.'
        f'rounds = {a.rounds:,} {a.mode} rounds x {sizes.num_devices(config):,}'
        f' devices x 2 importance vectors); the plan tool records at most '
        f'{MAX_TRANSFERS:,} (about 40 s and 1 GB): lower '
        f'config.aggregation.rounds or the device count')


def plan(config) -> dict:
  """Ledger comparison (as `ledger.compare`) plus the plan's facts.

  'sensitivity' holds the same comparison with raw data counted at the
  model's input resolution (uint8) instead of as stored.
  """
  # The main job's checks first (its bounds and memory estimates too),
  # then the plan's own size.
  config_lib.validate(config)
  check_size(config)
  name = config.data.name
  num_classes = data_lib.num_classes(config.data)
  arch = sizes.architecture(config, num_classes)
  grid = sizes.grid(config)
  topo_hp = topology_lib.TopologyHparams.from_config(config)
  topology = topology_lib.from_hparams(topo_hp, [g['params'] for g in grid])

  # Balanced labels of the training set, minus the cloud's share.
  n_train = data_lib.train_examples(config.data)
  if name != 'digits':  # the loader holds validation out of train
    n_train = int(round(n_train * (1 - config.data.validation_fraction)))
  per_class_devices = int(round((1 - config.data.cloud_fraction) *
                                (n_train // num_classes)))
  labels = np.repeat(np.arange(num_classes), per_class_devices)
  # The partition the run makes (every scheme option, as data/stage reads
  # them), on these stand-in labels.
  hp = data_stage.PartitionHparams.from_config(config)
  train_counts = {
      i: len(partition.local_splits(idx, labels, hp.seed + i,
                                    hp.val_fraction, hp.test_fraction)[0])
      for i, idx in enumerate(data_stage.device_indices(hp, labels,
                                                        num_classes))}

  params = [g['params'] for g in grid]
  proxy = np.tile(np.asarray(params, float)[:, None] / max(params),
                  (1, num_classes))  # accuracy proxy: grows with size
  picks = choice.choose_backbones(
      params, proxy, np.ones((topology.num_devices, num_classes)),
      [d.budget for d in topology.devices], topo_hp.header_allowance)

  ledger = ledger_lib.Ledger()
  front_bytes = len(grid) * (5 + num_classes) * FLOAT32
  keys = [(g['depth_mult'], g['width_mult']) for g in grid]
  backbones = {k: g['params'] * FLOAT32 for k, g in zip(keys, grid)}
  reference = None
  if signature_lib.needs_reference(config):
    width, depth = signature_lib.reference_multipliers(config)
    reference = (depth, width)
    backbones.setdefault(reference, FLOAT32 * costs.exact_param_count(
        arch, depth, width))
  transfers.deliver_backbones(
      ledger, topology, front_bytes,
      {d.id: num_classes * FLOAT32 for d in topology.devices}, backbones,
      {d.id: keys[pick.candidate] for d, pick in zip(topology.devices, picks)},
      reference=reference)
  record_header_rounds(config, ledger, topology, arch)
  transfers.report_metrics(ledger, topology,
                           {d.id: 2 * FLOAT32 for d in topology.devices})
  models = {d.id: (pick.params + topo_hp.header_allowance) * FLOAT32
            for d, pick in zip(topology.devices, picks)}
  native = data_lib.native_sample_bytes(config.data)
  model_input = data_lib.model_input_bytes(config.data)
  full_model = ledger_lib.full_model_ledger(
      [d.id for d in topology.devices],
      FLOAT32 * costs.exact_param_count(arch, 1.0, 1.0))
  summary = ledger_lib.compare(ledger, transfers.centralized(
      topology, {i: n * (native + 4) for i, n in train_counts.items()},
      models), full_model)
  summary['full_model_params'] = costs.exact_param_count(arch, 1.0, 1.0)
  summary['sensitivity'] = {
      'raw_sample_bytes': model_input,
      'comparison': ledger_lib.compare(ledger, transfers.centralized(
          topology, {i: n * (model_input + 4)
                     for i, n in train_counts.items()}, models))}
  summary['raw_sample_bytes'] = native
  summary['devices'] = [
      {'device': d.id, 'budget': d.budget, 'train_samples': train_counts[d.id],
       'depth_mult': grid[p.candidate]['depth_mult'],
       'width_mult': grid[p.candidate]['width_mult'], 'params': p.params,
       'flops_per_token': grid[p.candidate]['flops_per_token']}
      for d, p in zip(topology.devices, picks)]
  return summary


def main(argv):
  del argv
  config = cli.config_value(_CONFIG, sys.argv)
  summary = plan(config)
  allowance = topology_lib.TopologyHparams.from_config(config).header_allowance
  print(report.markdown_table(
      ['device', 'budget', 'train samples', 'depth', 'width', 'backbone params',
       'MFLOPs / token'],
      [[d['device'], f"{d['budget']:,}", d['train_samples'],
        f"{d['depth_mult']:g}", f"{d['width_mult']:g}", f"{d['params']:,}",
        f"{d['flops_per_token'] / 1e6:.1f}"]
       for d in summary['devices']]))
  print()
  print(report.ledger_table(summary))
  full = summary['full_model_deployment']
  print(f"\nfull-model deployment: ACME / full-model deployment = "
        f"{full['ratio']:.4f} (hop-weighted; unweighted "
        f"{full['ratio_unweighted']:.4f}); every device receiving the full "
        f"pre-trained backbone ({summary['full_model_params']:,} parameters) "
        f"instead of its customized subnet.")
  sens = summary['sensitivity']
  print(f"\nSensitivity (not the result): with the raw upload counted at the "
        f"model's input resolution ({sens['raw_sample_bytes']:,} bytes per "
        f"sample instead of {summary['raw_sample_bytes']:,}), ACME / "
        f"centralized = {sens['comparison']['ratio']:.4f} (unweighted "
        f"{sens['comparison']['ratio_unweighted']:.4f}).")
  print(f"\nAssumptions: {config.data.name} uploaded as stored on the device "
        f"({summary['raw_sample_bytes']:,} bytes per sample) plus a 4-byte "
        f"label; float32 weights; device<->cloud = 2 hops, other links 1 hop "
        f"(bytes x hops; unweighted = bytes delivered end to end, a relayed "
        f"payload counted once); backbones = largest grid subnet within "
        f"budget - header allowance ({allowance:,}), "
        f"without the cloud's classifier; an edge receives each distinct "
        f"backbone once; {config.aggregation.rounds} "
        f"{config.aggregation.mode} rounds with {config.aggregation.signature} "
        f"signatures; the centralized download is backbone + header "
        f"allowance.")


if __name__ == '__main__':
  cli.run_tool(main)
