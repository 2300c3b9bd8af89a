"""ACME's single loop (docs/method.md 2), top-down, with every stage cached in the
workdir.

    world     data and the devices' partition; the cloud's teacher,
              importance reordering, width and width+depth stages and grid
              measurement; selection (predictor, costs, Pareto Front Grid);
              the topology                                      (world.py)
    edge      per device: its backbone, chosen from its budget and label
              histogram, extracted and delivered (ledger); the device's
              cached features of it and a linear probe    (edge/stage.py)
    device    header NAS within the budget, fine-tuning, data signature
                                                        (device/stage.py)
    rounds    device <-> edge personalized importance aggregation, pruning,
              fine-tuning                           (federated/acme.py)
    report    the ledger against the centralized baseline; results.json,
              report.md, plots

The paper's comparison tables are experiments of their own (`experiments/`)
that build the same world and add their sections to the same results.
"""
import dataclasses

import jax
import numpy as np

from acme_jax import config as config_lib
from acme_jax import figures
from acme_jax import report
from acme_jax import resume
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax import workdir as workdir_lib
from acme_jax.device import signature as signature_lib
from acme_jax.device import stage as device_stage
from acme_jax.device import state as state_lib
from acme_jax.edge import stage as edge_stage
from acme_jax.federated import acme
from acme_jax.hardware import fleet as fleet_lib
from acme_jax.hardware import measure
from acme_jax.hardware import virtual_time
from acme_jax.models import subnet as subnet_lib
from acme_jax.hierarchy import ledger as ledger_lib
from acme_jax.hierarchy import transfers


def run(config, workdir, log=print):
  """Run (or resume) ACME on `config`, writing everything under `workdir`."""
  world = world_lib.build(config, workdir, log, hardware=True)
  log('[selection] ' + report.selection_line(world.selection))
  fingerprint = config_lib.repeat_fingerprint(config,
                                             world_lib.DEVICE_SECTIONS)
  if world.fleet is not None:
    fingerprint.update(world.fleet.fingerprint(config))
  # The header search and the rounds save their state mid-way
  # (config.resume.every_steps).
  partials = {name: resume.Partial(world.wd / f'devices.{name}',
                                   config.resume.every_steps, fingerprint)
              for name in ('search', 'rounds')}
  customized = world.wd.cached_stage(
      'devices.json', fingerprint,
      lambda: customize(world, log, partials=partials))
  for partial in partials.values():
    partial.finish()
  return write_report(world, customized, log)


def customize(world: world_lib.World, log=print, splits=None,
              key=None, partials=None) -> dict:
  """Edge, device and rounds for every device of the world (holding
  `splits`, default the world's; `key`, default the main job's);
  `partials`: the mid-stage checkpoints ({'search', 'rounds'}:
  `resume.Partial`) of the header search and the rounds."""
  partials = partials or {}
  config = world.config
  device_hp = device_stage.DeviceHparams.from_config(
      config, world.num_classes, world.fleet)
  rounds_hp = acme.RoundsHparams.from_config(config)
  if key is None:
    key = jax.random.fold_in(jax.random.key(config.seed), streams.DEVICES)
  delivery = edge_stage.deliver(config, world,
                                world.splits if splits is None else splits,
                                device_hp, log)
  headers = device_headers(world, device_hp, delivery, key, log,
                           partials.get('search'))
  for record, header in zip(delivery.records, headers):
    r = header.result
    record.update(header_arch=r['arch'], header_cells=r['n_layers'],
                  nas_header_params=r['nas_header_params'],
                  nas_test_accuracy=r['test_accuracy'],
                  finetune_lr=r['finetune_lr'])
  headers, digests = acme.run(rounds_hp, device_hp.nas, headers,
                              jax.random.fold_in(key, streams.ROUNDS),
                              ledger=delivery.ledger,
                              partial=partials.get('rounds'))
  return close(world, device_hp, delivery, headers, digests, log)


def device_headers(world: world_lib.World, hp: device_stage.DeviceHparams,
                   delivery: edge_stage.Delivery, key, log=print,
                   partial=None):
  """Per device: header NAS within the budget its backbone leaves, the
  final training, and its data signature; `key` is the device stage's.
  Returns the devices' `state.DeviceHeader`s."""
  headers = device_stage.search_headers(
      hp, delivery.features, device_stage.targets(hp, delivery.records, key),
      log=log, partial=partial)
  return with_signatures(world, headers, delivery.splits)


def with_signatures(world: world_lib.World, headers, splits):
  """The headers with each device's data signature (from its train split,
  through the reference backbone)."""
  signatures = signature_lib.signatures(
      signature_lib.SignatureHparams.from_config(world.config),
      world.cloud.model, world.cloud.supernet, [s[0] for s in splits],
      world.num_classes)
  return [dataclasses.replace(h, signature=s)
          for h, s in zip(headers, signatures)]


def close(world: world_lib.World, hp: device_stage.DeviceHparams,
          delivery: edge_stage.Delivery, headers, digests, log=print) -> dict:
  """The closing pass: each device's final header, test accuracy and
  size; its metrics to the edge and the cloud (ledger)."""
  config, topology = world.config, world.topology
  accuracy = state_lib.test_accuracy(hp.nas, headers, hp.strategy)
  params = state_lib.header_params(hp.nas.spec, headers)
  devices = delivery.records
  for record, header, acc, n in zip(devices, headers, accuracy, params):
    record.update(header_params=n, total_params=record['params'] + n,
                  test_accuracy=float(acc),
                  importance_sha256=digests[header.device],
                  gate_channels_live=state_lib.live_gate_channels(header))
    log(f'[device] {record["device"]}: header {n:,} params (NAS '
        f'{record["nas_header_params"]:,}), total {record["total_params"]:,} '
        f'<= {record["budget"]:,}; test accuracy '
        f'{record["nas_test_accuracy"]:.3f} after NAS, {acc:.3f} after '
        f'{config.aggregation.rounds} {config.aggregation.mode} rounds')
  if world.fleet is not None:
    deployed_hardware(world, devices, headers, delivery, log)
  ledger = delivery.ledger
  transfers.report_metrics(ledger, topology, {
      d['device']: np.asarray([d['test_accuracy'], d['total_params']],
                              np.float32) for d in devices})
  model_bytes = [subnet_lib.param_bytes(
      delivery.backbones[delivery.device_backbone[d.id]]) + 4 * params[d.id]
                 for d in topology.devices]
  out = {'devices': devices, 'ledger': ledger.to_records(),
         'model_bytes': model_bytes}
  if world.fleet is not None:
    out['simulated_time'] = virtual_time.acme_run(
        world.fleet, world.cloud.model, world.cloud.supernet, config,
        devices, out['ledger'])
    log(f"[hardware] simulated time {out['simulated_time']['seconds']:.1f} s"
        f", {out['simulated_time']['straggler_share']:.0%} of it waiting "
        f"for stragglers")
  return out


def deployed_hardware(world: world_lib.World, devices, headers,
                      delivery: edge_stage.Delivery, log=print):
  """Each device's deployed model (backbone and pruned header): its
  predicted latency and memory through the latency table, and both measured
  on this machine, at the device's slowdown."""
  fleet, config = world.fleet, world.config
  measured = fleet_lib.measure_deployed(
      fleet, world.cloud.model, world.cloud.supernet, devices, headers,
      [delivery.splits[d['device']][2] for d in devices],
      config.header.features_from,
      measure.TimingHparams(config.latency.warmup, config.latency.repeats))
  for record, header, timed in zip(devices, headers, measured):
    record.update(fleet.deployed(record, header.arch, header.n_layers,
                                 header.gates), **timed)
    missed = fleet_lib.within(record)
    record['budgets_missed'] = list(missed)
    log(f'[hardware] device {record["device"]}: predicted '
        f'{record["predicted_latency_ms"]:.2f} ms, measured '
        f'{record["measured_latency_ms"]:.2f} ms (budget '
        f'{record["latency_budget_ms"] or "none"}), '
        f'{record["predicted_memory_mb"]:.1f} MiB predicted'
        + (f'; misses its {" and ".join(missed)} budget by the prediction'
           if missed else ''))


def write_report(world: world_lib.World, customized: dict, log=print):
  """The ledger against the centralized baseline; results.json, report.md,
  the grid table and the Pareto plot."""
  wd, topology, splits = world.wd, world.topology, world.splits
  devices = customized['devices']
  ledger = ledger_lib.Ledger.from_records(customized['ledger'])
  centralized = transfers.centralized(
      topology,
      {d.id: splits[d.id][0].raw_bytes() for d in topology.devices},
      {d.id: customized['model_bytes'][d.id] for d in topology.devices})
  cloud = world.cloud
  full = subnet_lib.extract(cloud.model, cloud.supernet,
                            subnet_lib.for_model(cloud.model, 1.0, 1.0))[1]
  ledger_summary = ledger_lib.compare(
      ledger, centralized, ledger_lib.full_model_ledger(
          [d.id for d in topology.devices], subnet_lib.param_bytes(full)))
  results = {
      'dataset': world.dataset.name,
      'cloud': {
          'grid': report.merge_grid(cloud.grid, cloud.test,
                                    cloud.teacher_cut_test),
      },
      'selection': {k: world.selection[k] for k in
                    ('picks', 'tradeoff_gain_vs_highest_accuracy')},
      'devices': devices,
      'ledger': ledger_summary,
  }
  if 'simulated_time' in customized:
    # experiments.baselines adds every method's beside it.
    results['simulated_time'] = report.merged_section(
        wd, 'simulated_time', {'acme': customized['simulated_time']})
  workdir_lib.atomic_write_json(wd / 'ledger.json', ledger.to_records())
  workdir_lib.atomic_write_text(wd / 'cloud/grid.md',
                                report.grid_table(results['cloud']['grid']) +
                                '\n')
  results = report.write_results(wd, results, world.config)
  workdir_lib.atomic_save_figure(wd / 'pareto.png', figures.pareto_figure(
      world.selection, devices))
  # The full tables are in report.md; the terminal gets the summary.
  log('\n' + report.summary(results, [
      ('report', wd / 'report.md'), ('results', wd / 'results.json'),
      ('plots', wd / 'pareto.png')]))
  return results
