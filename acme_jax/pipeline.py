"""ACME's single loop (ACME.md 2), top-down, with every stage cached in the workdir.

    run(config, workdir)
      data      load the dataset; cut the cloud's share off the training set
      cloud     teacher -> importance reordering -> width stage -> width+depth
                stage -> grid measurement (accuracy, per-class accuracy, sizes)
      selection accuracy predictor -> costs -> Pareto Front Grid, baselines
      system    topology (edges, devices, budgets), non-IID device data
      edge      per-device backbone from budget + label histogram; backbones
                shipped (ledger); linear probe of each backbone on local data
      device    cached backbone features -> header NAS within the budget
      rounds    device <-> edge personalized aggregation, pruning, fine-tuning
      ledger    ACME vs the centralized baseline
      compare   headers: NAS vs fixed heads over backbone depths;
                aggregation: the five modes over the IID/C2/C3/C4 setups

Each stage is a pure function from its inputs (and a key or seed) to its
outputs; this module alone reads and writes the workdir, so a rerun with the
same workdir loads every finished stage instead of redoing it.
"""
import dataclasses
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
from acme_jax.device import customize, features
from acme_jax.edge import choice, rounds, similarity
from acme_jax.models import subnet as subnet_lib
from acme_jax.models import vit
from acme_jax.selection import costs, pareto, predictor
from acme_jax.system import ledger as ledger_lib
from acme_jax.system import topology as topology_lib
from acme_jax.system import transfers

# Independent PRNG streams per stage, so adding a stage never shifts another's.
_TEACHER_INIT, _HEAD_INIT, _DEVICES, _HEADERS, _AGGREGATION = range(5)


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
                          np.array([r['accuracy'] for r in grid_records]),
                          reduce_degree=True)
  per_class = predictor.fit(depth, width, np.array([
      [r['accuracy'] if a is None else a for a in r['per_class_accuracy']]
      for r in grid_records]), reduce_degree=True)
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


def device_splits(config, device_data, num_devices: int, num_classes: int,
                  scheme=None, fraction_per_class=None):
  """Each device's local (train, val, test) Splits from the configured partition."""
  sys_c = config.system
  parts = partition.partition(
      device_data.labels, num_devices, scheme or sys_c.partition, config.seed,
      alpha=sys_c.dirichlet_alpha, shards_per_device=sys_c.shards_per_device,
      fraction_per_class=fraction_per_class or sys_c.fraction_per_class,
      num_classes=num_classes)
  splits = []
  for device, idx in enumerate(parts):
    local = partition.local_splits(idx, device_data.labels, config.seed + device,
                                   sys_c.local_val_fraction,
                                   sys_c.local_test_fraction)
    splits.append(tuple(device_data.take(i) for i in local))
  return splits


def edge_choice(config, selection, topology, splits, num_classes):
  """(label histograms, picks): each device's backbone chosen at its edge."""
  cands = selection['candidates']
  histograms = [partition.label_histogram(train.labels, num_classes)
                for train, _, _ in splits]
  picks = choice.choose_backbones(
      [c['params'] for c in cands], [c['predicted_per_class'] for c in cands],
      histograms, [d.budget for d in topology.devices],
      config.system.header_allowance, on_front=[c['on_front'] for c in cands])
  return histograms, picks


def run_edge(config, cloud, selection, topology, splits, num_classes, log):
  """Edge choice per device, backbone delivery (ledger), linear probes."""
  model, supernet = cloud['model'], cloud['supernet']
  cands = selection['candidates']
  histograms, picks = edge_choice(config, selection, topology, splits,
                                  num_classes)

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


# The comparison experiments depend on everything but the engine strategy.
COMPARISON_SECTIONS = CLOUD_SECTIONS + ('selection', 'system', 'header',
                                       'baselines', 'aggregation')


def cached_stage(wd: workdir_lib.Workdir, name: str, sections, compute):
  """`compute()` once per config of `sections`; reruns load the saved value."""
  path = wd / name
  fingerprint = _config_subset(wd.config, sections)
  if path.exists():
    saved = workdir_lib.read_json(path)
    if saved.get('config') == fingerprint:
      return saved['value']
  workdir_lib.atomic_write_json(path, {'config': fingerprint,
                                       'value': compute()})
  return workdir_lib.read_json(path)['value']


def _signature(config, model, supernet, reference_masks, train, num_classes,
               seed):
  if config.aggregation.signature == 'histogram':
    return similarity.histogram_signature(train.labels, num_classes)
  cls = features.backbone_tokens(model, supernet, reference_masks,
                                 train.images)[:, 0]
  n = config.aggregation.signature_samples
  labels = train.labels
  if len(labels) < n:
    # The prototype needs n samples per device; smaller devices resample with
    # replacement so every signature has the same shape (JS compares entries).
    idx = np.random.default_rng(seed).choice(len(labels), n, replace=True)
    cls, labels = cls[idx], labels[idx]
  return similarity.feature_signature(cls, n, seed, labels=labels)


def _self_weight(config):
  w = config.aggregation.self_weight
  return None if w < 0 else w


def prepare_headers(config, cloud, topology, splits, choices, key,
                    num_classes, ledger=None):
  """Per device: cached features of its backbone, NAS header within budget,
  data signature. Returns (DeviceHeaders, NAS results)."""
  model, supernet = cloud['model'], cloud['supernet']
  c = config.cloud
  reference = subnet_lib.for_model(model, min(c.width_mults),
                                   min(c.depth_mults))
  reference_masks = subnet_lib.masks(model, reference)
  if ledger is not None and config.aggregation.signature == 'features':
    # Feature signatures need one common reference backbone on every device.
    transfers.deliver_reference_backbone(
        ledger, topology, subnet_lib.extract(model, supernet, reference)[1])
  device_headers, results = [], []
  for device, (width, depth, backbone_params) in zip(topology.devices,
                                                     choices):
    sub = subnet_lib.for_model(model, width, depth)
    local = customize.local_features(model, supernet, sub, splits[device.id])
    result = customize.search_header(
        config, local, num_classes,
        jax.random.fold_in(jax.random.fold_in(key, 0), device.id),
        device.budget - backbone_params,
        customize.header_layers(config, width, depth))
    signature = _signature(config, model, supernet, reference_masks,
                           splits[device.id][0], num_classes,
                           config.seed + device.id)
    device_headers.append(rounds.DeviceHeader(
        device.id, device.edge_id, result['header'], result['state'],
        np.asarray(result['arch']), np.ones(config.header.num_channels,
                                            np.float32), local, signature))
    results.append(result)
  return device_headers, results


def _run_rounds(config, device_headers, mode, key, ledger=None):
  a = config.aggregation
  return rounds.run_rounds(
      device_headers, mode, rounds=a.rounds, prune_ratio=a.prune_ratio,
      local_epochs=a.local_epochs, finetune_epochs=a.finetune_epochs, key=key,
      signature_kind=a.signature, temperature=a.temperature,
      self_weight=_self_weight(config), ledger=ledger,
      train_kwargs=customize.train_kwargs(config))


def run_devices(config, cloud, topology, splits, devices, ledger, key,
                num_classes, log):
  """Header NAS on every device's backbone, then ACME's aggregation rounds.

  Updates the device records in place; returns each device's final header
  parameter count.
  """
  choices = [(d['width_mult'], d['depth_mult'], d['params']) for d in devices]
  device_headers, results = prepare_headers(
      config, cloud, topology, splits, choices, key, num_classes, ledger)
  for record, result in zip(devices, results):
    record.update(header_arch=np.asarray(result['arch']).tolist(),
                  nas_header_params=result['header_params'],
                  nas_test_accuracy=result['test_accuracy'])
  _run_rounds(config, device_headers, config.aggregation.mode,
              jax.random.fold_in(key, 1), ledger)
  final = {}
  for record, dh in zip(devices, device_headers):
    header_params = dh.header_params()
    record.update(header_params=header_params,
                  total_params=record['params'] + header_params,
                  test_accuracy=dh.test_accuracy(),
                  channels_kept=int(dh.gates.sum()))
    if record['total_params'] > record['budget']:
      raise AssertionError(f'device {record["device"]} exceeds its budget')
    final[record['device']] = header_params
    log(f'[device] {record["device"]}: header {header_params:,} params '
        f'(NAS {record["nas_header_params"]:,}), total '
        f'{record["total_params"]:,} <= {record["budget"]:,}; test accuracy '
        f'{record["nas_test_accuracy"]:.3f} after NAS, '
        f'{record["test_accuracy"]:.3f} after {config.aggregation.rounds} '
        f'{config.aggregation.mode} rounds')
  return final


def compare_headers(config, cloud, topology, splits, key, num_classes, log):
  """NAS header vs fixed heads on full-width backbones at each depth fraction."""
  model, supernet = cloud['model'], cloud['supernet']
  rows = []
  for depth in config.baselines.depth_fractions:
    sub = subnet_lib.for_model(model, 1.0, depth)
    locals_ = [customize.local_features(model, supernet, sub, splits[d.id])
               for d in topology.devices]
    # The same per-device key at every depth: only the backbone changes.
    nas_acc = [customize.search_header(
        config, local, num_classes, jax.random.fold_in(key, d.id),
        config.system.header_allowance,
        customize.header_layers(config, 1.0, depth))['test_accuracy']
               for d, local in zip(topology.devices, locals_)]
    fixed = customize.baseline_accuracies(config, locals_, num_classes,
                                          config.seed)
    row = {'depth_fraction': depth, 'acme_nas': float(np.mean(nas_acc))}
    row.update({k: float(np.mean(v['test_accuracy'])) for k, v in
                fixed.items()})
    row['params'] = {k: int(np.mean(v['params'])) for k, v in fixed.items()}
    row['learning_rate'] = {k: v['learning_rate'] for k, v in fixed.items()}
    rows.append(row)
    log(f'[headers] depth {depth:g}: ' + ', '.join(
        f'{k} {row[k]:.3f}' for k in ('acme_nas',) + tuple(fixed)))
  heads = ('acme_nas',) + tuple(config.baselines.kinds)
  average = {k: float(np.mean([r[k] for r in rows])) for k in heads}
  return {'by_depth': rows, 'average': average,
          'acme_gain': {k: average['acme_nas'] - average[k]
                        for k in config.baselines.kinds}}


def class_matched_test(splits, test):
  """Each device's test set: the held-out test samples of its own classes.

  Category setups leave each device ~10 local test samples, too few to
  separate the modes; the test split restricted to the device's classes has
  the same label support and several times more samples.
  """
  out = []
  for train, val, _ in splits:
    keep = np.flatnonzero(np.isin(test.labels, np.unique(train.labels)))
    out.append((train, val, test.take(keep)))
  return out


def compare_aggregation(config, cloud, selection, topology, device_data, test,
                        key, num_classes, log):
  """Mean device test accuracy of every mode on every non-IID setup."""
  a = config.aggregation
  by_setup, spread = {}, {}
  for s, setup in enumerate(a.setups):
    splits = device_splits(config, device_data, topology.num_devices,
                           num_classes, scheme=setup,
                           fraction_per_class=a.fraction_per_class)
    if a.test_on == 'class_matched':
      splits = class_matched_test(splits, test)
    _, picks = edge_choice(config, selection, topology, splits, num_classes)
    cands = selection['candidates']
    choices = [(cands[p.candidate]['width_mult'],
                cands[p.candidate]['depth_mult'], p.params) for p in picks]
    setup_key = jax.random.fold_in(key, s)
    base, _ = prepare_headers(config, cloud, topology, splits, choices,
                              setup_key, num_classes)
    # Paired comparison: every mode starts from the same headers and uses the
    # same training keys, so differences between modes come from the mode.
    # Repeats average over independent keys.
    accs = {mode: [] for mode in a.modes}
    for repeat in range(a.repeats):
      rounds_key = jax.random.fold_in(jax.random.fold_in(setup_key, 1), repeat)
      for mode in a.modes:
        devices = [dataclasses.replace(d, gates=d.gates.copy()) for d in base]
        _run_rounds(config, devices, mode, rounds_key)
        accs[mode].append(float(np.mean([d.test_accuracy() for d in devices])))
    by_setup[setup] = {mode: float(np.mean(v)) for mode, v in accs.items()}
    spread[setup] = {mode: float(np.std(v)) for mode, v in accs.items()}
    log(f'[aggregation] {setup}: ' + ', '.join(
        f'{k} {v:.3f}' for k, v in by_setup[setup].items()))
  gains = {setup: {mode: acc - accs['wo_pruning'] for mode, acc in accs.items()
                   if mode != 'wo_pruning'}
           for setup, accs in by_setup.items() if 'wo_pruning' in accs}
  return {'by_setup': by_setup, 'gain_vs_wo_pruning': gains,
          'std_over_repeats': spread, 'repeats': a.repeats}


def run(config: ml_collections.ConfigDict, workdir, log=print):
  """Run (or resume) ACME on `config`, writing everything under `workdir`."""
  config_lib.validate(config)
  wd = workdir_lib.Workdir(workdir)
  wd.config = config
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

  def customize_devices():
    devices, ledger, backbones, device_backbone = run_edge(
        config, cloud, selection, topology, splits, dataset.num_classes, log)
    final_headers = run_devices(config, cloud, topology, splits, devices,
                                ledger, jax.random.fold_in(key, _DEVICES),
                                dataset.num_classes, log)
    transfers.report_metrics(ledger, topology, {
        d['device']: np.asarray([d['test_accuracy'], d['total_params']],
                                np.float32) for d in devices})
    model_bytes = [subnet_lib.param_bytes(backbones[device_backbone[d.id]]) +
                   4 * final_headers[d.id] for d in topology.devices]
    return {'devices': devices, 'ledger': ledger.to_records(),
            'model_bytes': model_bytes}

  customized = cached_stage(wd, 'devices.json', COMPARISON_SECTIONS,
                            customize_devices)
  devices = customized['devices']
  ledger = ledger_lib.Ledger.from_records(customized['ledger'])
  centralized = transfers.centralized(
      topology,
      {d.id: splits[d.id][0].raw_bytes() for d in topology.devices},
      {d.id: customized['model_bytes'][d.id] for d in topology.devices})
  ledger_summary = ledger_lib.compare(ledger, centralized)

  headers = cached_stage(
      wd, 'headers.json', COMPARISON_SECTIONS, lambda: compare_headers(
          config, cloud, topology, splits, jax.random.fold_in(key, _HEADERS),
          dataset.num_classes, log))
  aggregation = cached_stage(
      wd, 'aggregation.json', COMPARISON_SECTIONS,
      lambda: compare_aggregation(
          config, cloud, selection, topology, device_data, dataset.test,
          jax.random.fold_in(key, _AGGREGATION), dataset.num_classes, log))

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
      'headers': headers,
      'aggregation': aggregation,
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
  workdir_lib.atomic_save_figure(wd / 'headers.png',
                                 report.headers_figure(headers))
  workdir_lib.atomic_save_figure(wd / 'aggregation.png',
                                 report.aggregation_figure(aggregation))
  log('\n' + report.grid_table(results['cloud']['grid']))
  log('\n' + report.devices_table(devices))
  log('\n' + report.ledger_table(ledger_summary))
  log('\n' + report.headers_table(headers))
  log('\n' + report.aggregation_table(aggregation))
  log(f'\nresults: {wd / "results.json"}, report: {wd / "report.md"}')
  return results
