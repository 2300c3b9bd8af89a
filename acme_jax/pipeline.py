"""ACME's single loop (ACME.md 2), top-down, with every stage cached in the workdir.

    run(config, workdir)
      data      load the dataset; cut the cloud's share off the training set
      cloud     teacher -> importance reordering -> width stage -> width+depth
                stage -> grid measurement (accuracy, per-class accuracy, sizes)
      selection accuracy predictor -> costs -> Pareto Front Grid, baselines;
                the trained subnets' non-dominated set for the edges
      system    topology (edges, devices, budgets), non-IID device data
      edge      per-device backbone from budget + label histogram; backbones
                shipped (ledger); linear probe of each backbone on local data
      device    cached backbone features -> header NAS within the budget
      rounds    device <-> edge personalized aggregation, pruning, fine-tuning
      ledger    ACME vs the centralized baseline
      report    results.json, report.md, plots

The paper's comparison tables are experiments of their own
(`experiments/headers.py`, `experiments/aggregation.py`) that reuse this
workdir's cloud stages and add their sections to the same results.
"""
import time

import jax
import ml_collections
import numpy as np

from acme_jax import device_stages
from acme_jax import report
from acme_jax import shapes
from acme_jax import stages
from acme_jax import workdir as workdir_lib
from acme_jax.device import features
from acme_jax.models import subnet as subnet_lib
from acme_jax.system import ledger as ledger_lib
from acme_jax.system import transfers


def deliver(config, cloud, selection, topology, splits, num_classes, log):
  """Edge choice per device, backbone delivery (ledger), linear probes."""
  model, supernet = cloud['model'], cloud['supernet']
  cands = selection['candidates']
  histograms, picks = device_stages.edge_choice(config, selection, topology,
                                                splits, num_classes)
  ledger = ledger_lib.Ledger()
  backbones, device_backbone, records = {}, {}, []

  def backbone(width, depth):
    key = (depth, width)
    if key not in backbones:
      sub = subnet_lib.for_model(model, width, depth)
      backbones[key] = subnet_lib.extract(model, supernet, sub)[1]
    return key

  for device, pick in zip(topology.devices, picks):
    cand = cands[pick.candidate]
    key = backbone(cand['width_mult'], cand['depth_mult'])
    device_backbone[device.id] = key
    if pick.params + config.system.header_allowance > device.budget:
      raise AssertionError(f'device {device.id}: backbone over budget')
    if subnet_lib.param_count(backbones[key]) != pick.params:
      raise AssertionError(f'device {device.id}: shipped backbone size '
                           f'differs from the one chosen')
    train, _, test = splits[device.id]
    sub = subnet_lib.for_model(model, cand['width_mult'], cand['depth_mult'])
    cls = [features.backbone_tokens(
        model, supernet, sub, s.images, config.cloud.eval_batch_size,
        source=config.header.features_from)[:, 0] for s in (train, test)]
    probe = features.linear_probe_accuracy(cls[0], train.labels, cls[1],
                                           test.labels, config.seed)
    records.append({
        'device': device.id, 'edge': device.edge_id, 'budget': device.budget,
        'width_mult': cand['width_mult'], 'depth_mult': cand['depth_mult'],
        'params': pick.params,
        'bytes': subnet_lib.param_bytes(backbones[key]),
        'predicted_accuracy': cand['predicted_accuracy'],
        'measured_accuracy': cand['measured_accuracy'],
        'histogram_weighted_accuracy': pick.score,
        'label_histogram': np.asarray(histograms[device.id]).astype(
            int).tolist(),
        'local_samples': [len(s) for s in splits[device.id]],
        'linear_probe_test_accuracy': probe})
    log(f'[edge] device {device.id} (edge {device.edge_id}, budget '
        f'{device.budget:,}): depth {cand["depth_mult"]:g} width '
        f'{cand["width_mult"]:g}, {pick.params:,} params, probe {probe:.3f}')
  reference = None
  a = config.aggregation
  if a.signature == 'features' and a.mode in ('pruning_per_js',
                                              'pruning_per_emd'):
    reference = backbone(*device_stages.reference_multipliers(config))
  transfers.deliver_backbones(
      ledger, topology, transfers.front_payload(cands),
      {d: h.astype(np.float32) for d, h in enumerate(histograms)},
      backbones, device_backbone, reference=reference)
  return records, ledger, backbones, device_backbone


def customize_devices(config, cloud, selection, topology, splits, num_classes,
                      log):
  """Edge choice, header NAS and ACME's rounds for every device."""
  devices, ledger, backbones, device_backbone = deliver(
      config, cloud, selection, topology, splits, num_classes, log)
  key = jax.random.fold_in(jax.random.key(config.seed), stages.DEVICES)
  choices = [(d['width_mult'], d['depth_mult'], d['params']) for d in devices]
  headers = device_stages.device_headers(config, cloud, topology, splits,
                                         choices, jax.random.fold_in(key, 0),
                                         num_classes, log)
  for record, header in zip(devices, headers):
    r = header.result
    record.update(header_arch=r['arch'], header_cells=r['n_layers'],
                  nas_header_params=r['nas_header_params'],
                  nas_test_accuracy=r['test_accuracy'],
                  finetune_lr=r['finetune_lr'])
  device_stages.run_rounds(config, headers, num_classes,
                           config.aggregation.mode, jax.random.fold_in(key, 1),
                           ledger=ledger)
  accuracy = device_stages.test_accuracies(config, headers, num_classes)
  params = device_stages.header_params(config, headers, num_classes)
  for record, header, acc, n in zip(devices, headers, accuracy, params):
    record.update(header_params=n, total_params=record['params'] + n,
                  test_accuracy=float(acc),
                  importance_sha256=header.result['importance_sha256'],
                  gate_channels_live=int(sum(
                      np.sum(np.asarray(g) > 0)
                      for g in jax.tree.leaves(header.gates))))
    if record['total_params'] > record['budget']:
      raise AssertionError(f'device {record["device"]} exceeds its budget')
    log(f'[device] {record["device"]}: header {n:,} params (NAS '
        f'{record["nas_header_params"]:,}), total {record["total_params"]:,} '
        f'<= {record["budget"]:,}; test accuracy '
        f'{record["nas_test_accuracy"]:.3f} after NAS, {acc:.3f} after '
        f'{config.aggregation.rounds} {config.aggregation.mode} rounds')
  transfers.report_metrics(ledger, topology, {
      d['device']: np.asarray([d['test_accuracy'], d['total_params']],
                              np.float32) for d in devices})
  model_bytes = [subnet_lib.param_bytes(backbones[device_backbone[d.id]]) +
                 4 * params[d.id] for d in topology.devices]
  return {'devices': devices, 'ledger': ledger.to_records(),
          'model_bytes': model_bytes}


def run(config: ml_collections.ConfigDict, workdir, log=print):
  """Run (or resume) ACME on `config`, writing everything under `workdir`."""
  wd = stages.prepare_run(config, workdir)
  t0 = time.time()
  dataset, cloud_data, device_data = stages.load_data(config, log)
  num_devices = stages.num_devices(config)
  splits = device_stages.check_partition(config, device_data, num_devices,
                                         dataset.num_classes)
  cloud = stages.run_cloud(config, wd, dataset, cloud_data, log)
  log(f'[cloud] grid measured ({time.time() - t0:.0f}s)')
  arch = shapes.architecture(config, dataset.num_classes)
  selection = stages.run_selection(config, cloud['grid'], arch)
  workdir_lib.atomic_write_json(wd / 'selection.json', selection)
  log('[selection] ' + report.selection_line(selection))

  topology = stages.build_topology(config, cloud['grid'])
  customized = stages.cached_stage(
      wd, 'devices.json', config, stages.DEVICE_SECTIONS,
      lambda: customize_devices(config, cloud, selection, topology, splits,
                                dataset.num_classes, log))
  devices = customized['devices']
  ledger = ledger_lib.Ledger.from_records(customized['ledger'])
  centralized = transfers.centralized(
      topology,
      {d.id: splits[d.id][0].raw_bytes() for d in topology.devices},
      {d.id: customized['model_bytes'][d.id] for d in topology.devices})
  ledger_summary = ledger_lib.compare(ledger, centralized)

  results = {
      'dataset': dataset.name,
      'cloud': {
          'grid': report.merge_grid(cloud['grid'], cloud['test'],
                                    cloud['teacher_cut_test']),
      },
      'selection': {k: selection[k] for k in
                    ('picks', 'tradeoff_gain_vs_highest_accuracy')},
      'devices': devices,
      'ledger': ledger_summary,
  }
  workdir_lib.atomic_write_json(wd / 'ledger.json', ledger.to_records())
  workdir_lib.atomic_write_text(wd / 'cloud/grid.md',
                                report.grid_table(results['cloud']['grid']) +
                                '\n')
  results = report.write_results(wd, results, config)
  workdir_lib.atomic_save_figure(wd / 'pareto.png', report.pareto_figure(
      selection, devices))
  log('\n' + report.grid_table(results['cloud']['grid']))
  log('\n' + report.devices_table(devices))
  log('\n' + report.ledger_table(ledger_summary))
  log(f'\nresults: {wd / "results.json"}, report: {wd / "report.md"}, '
      f'plots: {wd / "pareto.png"}')
  return results
