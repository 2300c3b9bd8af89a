"""ACME's single loop (ACME.md 2), top-down, with every stage cached in the workdir.

    run(config, workdir)
      data      load the dataset; cut the cloud's share off the training set
      cloud     teacher -> importance reordering -> width stage -> width+depth
                stage -> grid measurement (accuracy, per-class accuracy, sizes)
      selection accuracy predictor -> costs -> Pareto Front Grid, baselines
      system    topology (edges, devices, budgets), non-IID device data
      edge      per-device backbone from budget + label histogram; backbones
                shipped (ledger); linear probe of each backbone on local data
      ledger    ACME vs the centralized baseline

Each stage is a pure function from its inputs (and a key or seed) to its
outputs; this module alone reads and writes the workdir, so a rerun with the
same workdir loads every finished stage instead of redoing it.
"""
import json
import time

import jax
import ml_collections
import numpy as np

from acme_jax import config as config_lib
from acme_jax import data as data_lib
from acme_jax import report
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import elastic, grid, importance, teacher
from acme_jax.data import partition
from acme_jax.device import features
from acme_jax.edge import choice
from acme_jax.models import subnet as subnet_lib
from acme_jax.models import vit
from acme_jax.selection import costs, pareto, predictor
from acme_jax.system import ledger as ledger_lib
from acme_jax.system import topology as topology_lib
from acme_jax.system import transfers

# Independent PRNG streams per stage, so adding a stage never shifts another's.
_TEACHER_INIT, _HEAD_INIT = 0, 1


# The cached cloud stages depend on these config sections only; later stages
# are cheap and recomputed, so e.g. a new partition reuses the trained supernet.
CLOUD_SECTIONS = ('seed', 'data', 'model', 'cloud')


def _config_subset(config, sections):
  full = json.loads(config.to_json_best_effort())
  return {k: full[k] for k in sections if k in full}


def _check_same_config(wd: workdir_lib.Workdir, config):
  """Refuse to resume cloud stages trained under a different config."""
  path = wd / 'cloud/config.json'
  current = _config_subset(config, CLOUD_SECTIONS)
  if path.exists():
    saved = workdir_lib.read_json(path)
    if saved != current:
      diffs = sorted(_diff(saved, current))
      raise config_lib.ConfigError(
          diffs[0] if diffs else '<root>', '(changed)',
          f'{wd.path} holds cloud stages trained with a different config '
          f'(fields differ: {", ".join(diffs[:5])}); use a new --workdir')
  else:
    workdir_lib.atomic_write_json(path, current)
  workdir_lib.atomic_write_json(wd / 'config.json',
                                json.loads(config.to_json_best_effort()))


def _diff(a, b, prefix=''):
  keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else ()
  if not keys:
    return [prefix.rstrip('.')] if a != b else []
  out = []
  for k in keys:
    out += _diff(a.get(k), b.get(k), f'{prefix}{k}.')
  return out


def build_model(config, num_classes: int, image_shape, key):
  """The supernet and its initial params: imported HF weights, or fresh."""
  if config.model.init_checkpoint:
    from acme_jax.models import hf_import
    return hf_import.load_hf_vit(config.model.init_checkpoint,
                                 num_classes=num_classes,
                                 key=jax.random.fold_in(key, _HEAD_INIT))
  model = vit.vit_from_config(config.model, num_classes)
  return model, vit.init_params(model, jax.random.fold_in(key, _TEACHER_INIT),
                                image_shape)


def run_cloud(config, wd: workdir_lib.Workdir, dataset, cloud_data, key, log):
  """Teacher, reordering, elastic stages and grid measurement (ACME.md 3)."""
  c = config.cloud
  model, init = build_model(config, dataset.num_classes, dataset.image_shape,
                            key)

  def fit_teacher():
    params, losses = teacher.train_teacher(model, init, cloud_data, c.teacher,
                                           c.batch_size, config.seed)
    workdir_lib.atomic_write_json(wd / 'cloud/teacher_losses.json', losses)
    return params

  def elastic_stage(name, start, teacher_params, stage_config, depths, seed):
    def fit():
      masks = elastic.stage_subnets(model, depths, c.width_mults)
      params, losses = elastic.train_elastic(
          model, start, teacher_params, cloud_data, masks, stage_config,
          c.batch_size, seed, desc=name)
      workdir_lib.atomic_write_json(wd / f'cloud/{name}_losses.json', losses)
      return params
    return fit

  t0 = time.time()
  teacher_params = wd.cached_params('cloud/teacher', fit_teacher, init)
  log(f'[cloud] teacher ready ({time.time() - t0:.0f}s)')

  def fit_reordered():
    heads, neurons = importance.importance_scores(
        model, teacher_params, cloud_data, c.batch_size, c.importance_batches)
    return importance.reorder(model, teacher_params, heads, neurons)

  reordered = (wd.cached_params('cloud/reordered', fit_reordered, init)
               if c.reorder else teacher_params)
  width_params = wd.cached_params(
      'cloud/width_stage',
      elastic_stage('width_stage', reordered, reordered, c.width_stage, (1.0,),
                    config.seed + 1), init)
  log(f'[cloud] width-elastic stage ready ({time.time() - t0:.0f}s)')
  supernet = wd.cached_params(
      'cloud/depth_stage',
      elastic_stage('depth_stage', width_params, reordered, c.depth_stage,
                    c.depth_mults, config.seed + 2), init)
  log(f'[cloud] width+depth stage ready ({time.time() - t0:.0f}s)')

  def measure(params, split):
    return lambda: grid.measure_grid(model, params, split, dataset.num_classes,
                                     c.depth_mults, c.width_mults,
                                     c.eval_batch_size)

  records = wd.cached_json('cloud/grid.json',
                           measure(supernet, dataset.validation))
  tables = {
      'test': wd.cached_json('cloud/grid_test.json',
                             measure(supernet, dataset.test)),
      'teacher_cut_test': wd.cached_json(
          'cloud/grid_teacher_cut_test.json',
          measure(teacher_params, dataset.test)),
  }
  log(f'[cloud] grid measured ({time.time() - t0:.0f}s)')
  return {'model': model, 'supernet': supernet, 'grid': records, **tables}


def architecture(config, num_classes: int) -> costs.ViTArchitecture:
  m = config.model
  return costs.ViTArchitecture.for_images(
      config.data.image_size, num_layers=m.num_layers, num_heads=m.num_heads,
      hidden_size=m.hidden_size, mlp_dim=m.mlp_dim, patch_size=m.patch_size,
      channels=data_lib.channels(config.data.name), num_classes=num_classes)


def device_profile(config) -> costs.DeviceProfile:
  return costs.DeviceProfile(**config.system.profile.to_dict())


def _point(c: pareto.Candidates, i: int, score_table) -> dict:
  return {'depth_mult': float(c.depth_mult[i]),
          'width_mult': float(c.width_mult[i]),
          'accuracy': float(c.accuracy[i]), 'size': float(c.size[i]),
          'latency': float(c.latency[i]), 'energy': float(c.energy[i]),
          **{k: _finite(v[i]) for k, v in score_table.items()}}


def _finite(x):
  return float(x) if np.isfinite(x) else None


def run_selection(config, grid_records, arch: costs.ViTArchitecture) -> dict:
  """Predictor, costs, PFG and baselines on the fine grid (ACME.md 4.1-4.3),
  plus the edge's candidate table: the distinct real subnets on the front."""
  s = config.selection
  depth = np.array([r['depth_mult'] for r in grid_records])
  width = np.array([r['width_mult'] for r in grid_records])
  overall = predictor.fit(depth, width,
                          np.array([r['accuracy'] for r in grid_records]))
  per_class = predictor.fit(depth, width, np.array([
      [r['accuracy'] if a is None else a for a in r['per_class_accuracy']]
      for r in grid_records]))
  d, w, acc = predictor.predict_grid(overall, s.grid_size)
  raw = costs.make_cost_model(s.cost_model, device_profile(config), arch)(d, w)
  cands = pareto.candidates(d, w, acc, raw.size, raw.latency, raw.energy)
  picked = pareto.select_all(cands, s.size_constraint, s.cells, s.sigma,
                             config.seed)
  score_table = pareto.scores(cands.accuracy, cands.size, cands.energy)
  front = (picked.front if s.front == 'pfg' else
           pareto.non_dominated(cands.accuracy, cands.latency, cands.energy))
  picks = {name: _point(cands, i, score_table)
           for name, i in picked.picks.items()}
  gain = pareto.relative_gain(picks['pfg']['tradeoff'],
                              picks['highest_accuracy']['tradeoff'])

  # A fine-grid ratio is realised as whole heads and layers; the edge ranks
  # the distinct real subnets, predicted at their realised ratios.
  on_front = np.zeros(len(cands), bool)
  on_front[front] = True
  table = {}
  for i in range(len(cands)):
    heads, _, layers = costs.subnet_shape(arch, d[i], w[i])
    if heads < 1 or layers < 1:
      continue
    key = (layers, heads)
    entry = table.setdefault(key, {
        'depth_mult': layers / arch.num_layers,
        'width_mult': heads / arch.num_heads, 'on_front': False})
    entry['on_front'] |= bool(on_front[i])
  candidates = sorted(table.values(),
                      key=lambda e: (e['depth_mult'], e['width_mult']))
  for e in candidates:
    e['params'] = costs.exact_param_count(arch, e['depth_mult'],
                                          e['width_mult'])
    e['predicted_accuracy'] = float(overall(e['depth_mult'], e['width_mult'])[0])
    e['predicted_per_class'] = per_class(e['depth_mult'],
                                         e['width_mult'])[0].tolist()
  return {
      'picks': picks,
      'tradeoff_gain_vs_highest_accuracy': gain,
      'front': [_point(cands, i, score_table) for i in front],
      'grid': {'depth_mult': d.tolist(), 'width_mult': w.tolist(),
               'accuracy': acc.tolist(), 'params': raw.size.tolist(),
               'on_front': on_front.tolist()},
      'candidates': candidates,
  }


def smallest_backbone(config, num_classes: int) -> int:
  arch = architecture(config, num_classes)
  return min(costs.exact_param_count(arch, d, w)
             for d in config.cloud.depth_mults
             for w in config.cloud.width_mults)


def build_topology(config, grid_records) -> topology_lib.Topology:
  """Edges, devices, budgets (params of backbone + header) and profiles."""
  sys_c = config.system
  per_edge = tuple(sys_c.devices_per_edge)
  per_edge = per_edge[0] if len(per_edge) == 1 else list(per_edge)
  num_devices = (per_edge * sys_c.num_edges if isinstance(per_edge, int)
                 else sum(per_edge))
  budgets = tuple(sys_c.budgets)
  if not budgets:
    sizes = [r['params'] for r in grid_records]
    low = min(sizes) + sys_c.header_allowance
    high = max(sizes) + sys_c.header_allowance
    budgets = (np.linspace(low, high, num_devices).round().astype(int).tolist()
               if sys_c.budget_draw == 'linspace' else ('uniform', low, high))
  return topology_lib.build_topology(sys_c.num_edges, per_edge, budgets,
                                     device_profile(config), seed=config.seed)


def device_splits(config, device_data, num_devices: int, num_classes: int):
  """Each device's local (train, val, test) Splits from the configured partition."""
  sys_c = config.system
  parts = partition.partition(
      device_data.labels, num_devices, sys_c.partition, config.seed,
      alpha=sys_c.dirichlet_alpha, shards_per_device=sys_c.shards_per_device,
      fraction_per_class=sys_c.fraction_per_class, num_classes=num_classes)
  splits = []
  for device, idx in enumerate(parts):
    local = partition.local_splits(idx, device_data.labels, config.seed + device,
                                   sys_c.local_val_fraction,
                                   sys_c.local_test_fraction)
    splits.append(tuple(device_data.take(i) for i in local))
  return splits


def run_edge(config, cloud, selection, topology, splits, num_classes, log):
  """Edge choice per device, backbone delivery (ledger), linear probes."""
  model, supernet = cloud['model'], cloud['supernet']
  cands = selection['candidates']
  histograms = [partition.label_histogram(train.labels, num_classes)
                for train, _, _ in splits]
  picks = choice.choose_backbones(
      [c['params'] for c in cands], [c['predicted_per_class'] for c in cands],
      histograms, [d.budget for d in topology.devices],
      config.system.header_allowance, on_front=[c['on_front'] for c in cands])

  ledger = ledger_lib.Ledger()
  backbones, device_backbone, records = {}, {}, []
  front_payload = {k: np.asarray([c[k] for c in cands], np.float32) for k in
                   ('depth_mult', 'width_mult', 'predicted_accuracy',
                    'predicted_per_class', 'params')}
  for device, pick in zip(topology.devices, picks):
    cand = cands[pick.candidate]
    sub = subnet_lib.for_model(model, cand['width_mult'], cand['depth_mult'])
    if pick.candidate not in backbones:
      backbones[pick.candidate] = subnet_lib.extract(model, supernet, sub)[1]
    device_backbone[device.id] = pick.candidate
    assert pick.params + config.system.header_allowance <= device.budget
    assert subnet_lib.param_count(backbones[pick.candidate]) == pick.params
    train, _, test = splits[device.id]
    masks = subnet_lib.masks(model, sub)
    cls = [features.backbone_tokens(model, supernet, masks, s.images)[:, 0]
           for s in (train, test)]
    probe = features.linear_probe_accuracy(cls[0], train.labels, cls[1],
                                           test.labels, config.seed)
    records.append({
        'device': device.id, 'edge': device.edge_id, 'budget': device.budget,
        'width_mult': cand['width_mult'], 'depth_mult': cand['depth_mult'],
        'params': pick.params,
        'bytes': subnet_lib.param_bytes(backbones[pick.candidate]),
        'predicted_accuracy': cand['predicted_accuracy'],
        'histogram_weighted_predicted_accuracy': pick.score,
        'off_front_fallback': pick.fallback,
        'label_histogram': histograms[device.id].tolist(),
        'local_samples': [len(s) for s in splits[device.id]],
        'linear_probe_test_accuracy': probe})
    log(f'[edge] device {device.id} (edge {device.edge_id}, budget '
        f'{device.budget:,}): depth {cand["depth_mult"]:g} width '
        f'{cand["width_mult"]:g}, {pick.params:,} params, probe {probe:.3f}')
  transfers.deliver_backbones(
      ledger, topology, front_payload,
      {d: h.astype(np.float32) for d, h in enumerate(histograms)},
      backbones, device_backbone)
  return records, ledger, backbones, device_backbone


def run(config: ml_collections.ConfigDict, workdir, log=print):
  """Run (or resume) ACME on `config`, writing everything under `workdir`."""
  config_lib.validate(config)
  wd = workdir_lib.Workdir(workdir)
  _check_same_config(wd, config)
  key = jax.random.key(config.seed)

  dataset = data_lib.load_dataset(config.data, config.seed)
  cloud_data, device_data = data_lib.cloud_device_split(
      dataset.train, config.data.cloud_fraction, config.seed)
  log(f'[data] {dataset.name}: {len(dataset.train)} train '
      f'({len(cloud_data)} cloud, {len(device_data)} devices), '
      f'{len(dataset.validation)} validation, {len(dataset.test)} test')

  cloud = run_cloud(config, wd, dataset, cloud_data, key, log)
  arch = architecture(config, dataset.num_classes)
  selection = run_selection(config, cloud['grid'], arch)
  workdir_lib.atomic_write_json(wd / 'selection.json', selection)
  log(f'[selection] PFG pick {selection["picks"]["pfg"]}, trade-off gain vs '
      f'highest accuracy {selection["tradeoff_gain_vs_highest_accuracy"]}')

  topology = build_topology(config, cloud['grid'])
  splits = device_splits(config, device_data, topology.num_devices,
                         dataset.num_classes)
  devices, ledger, backbones, device_backbone = run_edge(
      config, cloud, selection, topology, splits, dataset.num_classes, log)
  transfers.report_metrics(ledger, topology, {
      d['device']: np.asarray([d['linear_probe_test_accuracy'], d['params']],
                              np.float32) for d in devices})
  centralized = transfers.centralized(
      topology,
      {d.id: splits[d.id][0].raw_bytes() for d in topology.devices},
      {d.id: subnet_lib.param_bytes(backbones[device_backbone[d.id]])
       for d in topology.devices})
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
  workdir_lib.atomic_write_json(wd / 'results.json', results)
  workdir_lib.atomic_write_text(wd / 'report.md', report.markdown_report(
      results))
  workdir_lib.atomic_save_figure(wd / 'pareto.png', report.pareto_figure(
      selection, devices))
  log('\n' + report.grid_table(results['cloud']['grid']))
  log('\n' + report.devices_table(devices))
  log('\n' + report.ledger_table(ledger_summary))
  log(f'\nresults: {wd / "results.json"}, report: {wd / "report.md"}')
  return results
