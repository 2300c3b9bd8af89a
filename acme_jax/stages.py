"""The run, cloud and selection stages of ACME's loop as functions, shared
by the main loop (`pipeline.py`) and the paper-table experiments
(`experiments/`); the edge and device stages are in `device_stages.py`.

Each stage maps its inputs (and a key or seed) to its outputs; the cloud
stages and stage results are cached in the workdir, so an experiment run on
a finished workdir reuses the trained supernet instead of retraining it.
"""
import json
import time

import jax
import numpy as np

from acme_jax import data as data_lib
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import elastic, grid, importance, teacher
from acme_jax.config import ConfigError
from acme_jax.models import vit
from acme_jax.selection import costs, pareto, predictor
from acme_jax.system import mesh
from acme_jax.system import topology as topology_lib

# Independent PRNG streams per stage, so adding a stage never shifts another's.
TEACHER_INIT, HEAD_INIT, DEVICES, HEADERS, AGGREGATION = range(5)

# The cached cloud stages depend on these config sections only; later stages
# are recomputed when their own sections change, so e.g. a new partition
# reuses the trained supernet.
CLOUD_SECTIONS = ('seed', 'data', 'model', 'cloud')
DEVICE_SECTIONS = CLOUD_SECTIONS + ('selection', 'system', 'header',
                                   'aggregation')


def config_subset(config, sections) -> dict:
  full = json.loads(config.to_json_best_effort())
  return {k: full[k] for k in sections if k in full}


def _diff(a, b, prefix=''):
  keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else ()
  if not keys:
    return [prefix.rstrip('.')] if a != b else []
  out = []
  for k in keys:
    out += _diff(a.get(k), b.get(k), f'{prefix}{k}.')
  return out


_MISSING = object()


def _lookup(tree, dotted: str):
  for key in dotted.split('.'):
    if not isinstance(tree, dict) or key not in tree:
      return _MISSING
    tree = tree[key]
  return tree


def check_cloud_config(wd: workdir_lib.Workdir, config):
  """Refuse to resume cloud stages trained under a different config.
  Fields a workdir's record lacks were added by a later version, whose
  defaults keep the earlier behaviour: they do not block a resume."""
  path = wd / 'cloud/config.json'
  if not path.exists():
    return
  # Only the cloud sections bind a workdir (a record holding more, e.g. a
  # whole config, is compared on those).
  saved = {k: v for k, v in workdir_lib.read_json(path).items()
           if k in CLOUD_SECTIONS}
  current = config_subset(config, CLOUD_SECTIONS)
  diffs = sorted(d for d in _diff(saved, current)
                 if _lookup(saved, d) is not _MISSING)
  if diffs:
    raise ConfigError(
        diffs[0] if diffs else '<root>', '(changed)',
        f'{wd.path} holds cloud stages trained with a different config '
        f'(fields differ: {", ".join(diffs[:5])}); use a new --workdir')


def write_json(path, value):
  """Outputs (not caches) of a stage: only process 0 writes them."""
  if mesh.is_writer():
    workdir_lib.atomic_write_json(path, value)


def record_cloud_config(wd: workdir_lib.Workdir, config):
  """Written once the first cloud stage is committed (not before: a failed
  start must not bind the workdir to a config that trained nothing)."""
  path = wd / 'cloud/config.json'
  if not path.exists():
    workdir_lib.atomic_write_json(path, config_subset(config, CLOUD_SECTIONS))


def cached_stage(wd: workdir_lib.Workdir, name: str, config, sections,
                 compute):
  """`compute()` once per config of `sections`; reruns load the saved value
  (verified against its hash: a damaged copy is recomputed)."""
  fingerprint = config_subset(config, sections)
  if wd.valid_json(name):
    saved = workdir_lib.read_json(wd / name)
    if saved.get('config') == fingerprint:
      return saved['value']
  value = json.loads(json.dumps(compute(), default=workdir_lib._json_default))
  wd.write_json(name, {'config': fingerprint, 'value': value})
  return value


def prepare_run(config, workdir) -> workdir_lib.Workdir:
  """Everything a run checks before any work: the config, multi-host
  start-up, the device count the batches split over, the workdir."""
  from acme_jax import config as config_lib
  config_lib.validate(config)
  mesh.initialize(config.cloud.distributed)
  config_lib.check_devices(config, jax.device_count())
  return workdir_lib.Workdir(workdir)


# ----------------------------------------------------------------- data


def load_data(config, log=print):
  """(dataset, the cloud's split, the devices' share of train)."""
  dataset = data_lib.load_dataset(config.data, config.seed,
                                 config.model.init_checkpoint)
  cloud_data, device_data = data_lib.cloud_device_split(
      dataset.train, config.data.cloud_fraction, config.seed)
  log(f'[data] {dataset.name}: {len(dataset.train)} train '
      f'({len(cloud_data)} cloud, {len(device_data)} devices), '
      f'{len(dataset.validation)} validation, {len(dataset.test)} test')
  return dataset, cloud_data, device_data


# ---------------------------------------------------------------- cloud


def build_model(config, dataset, key):
  """The supernet (reading the dataset's stored images through its input
  spec) and its initial params: imported HF weights, or fresh."""
  if config.model.init_checkpoint:
    from acme_jax.models import checkpoints
    model, params, _ = checkpoints.load(
        config.model.init_checkpoint, num_classes=dataset.num_classes,
        key=jax.random.fold_in(key, HEAD_INIT))
    return model.clone(input_spec=dataset.input_spec), params
  if config.model.get('family', 'vit') == 'bert':
    from acme_jax.models import bert
    model = bert.bert_from_config(config.model, dataset.num_classes,
                                  config.model.vocab_size).clone(
                                      input_spec=dataset.input_spec)
    return model, bert.init_params(model, jax.random.fold_in(
        key, TEACHER_INIT), dataset.input_spec.max_length)
  model = vit.vit_from_config(config.model, dataset.num_classes).clone(
      input_spec=dataset.input_spec)
  return model, vit.init_params(model, jax.random.fold_in(key, TEACHER_INIT),
                                dataset.image_shape)


def run_cloud(config, wd: workdir_lib.Workdir, dataset, cloud_data, log=print):
  """Teacher, reordering, elastic stages and grid measurement (ACME.md 3),
  each loaded from the workdir when a previous run committed it."""
  c = config.cloud
  check_cloud_config(wd, config)
  key = jax.random.key(config.seed)
  model, init = build_model(config, dataset, key)
  par = mesh.from_config(c)

  def fit_teacher():
    params, losses = teacher.train_teacher(model, init, cloud_data, c.teacher,
                                           c.batch_size, config.seed,
                                           par=par)
    write_json(wd / 'cloud/teacher_losses.json', losses)
    return params

  def elastic_stage(name, start, teacher_params, stage_config, stage_def,
                    seed):
    def fit():
      params, losses = elastic.train_elastic(
          model, start, teacher_params, cloud_data, stage_def, stage_config,
          c.batch_size, seed, desc=name, scheme=c.elastic_scheme, par=par,
          remat=c.get('remat', False))
      write_json(wd / f'cloud/{name}_losses.json', losses)
      return params
    return fit

  recomputed = []  # a stage recomputed invalidates every later one

  def stage(name, fit):
    t0 = time.time()
    done = wd.has_checkpoint(name) and not recomputed
    params = wd.cached_params(name, fit, init, recompute=bool(recomputed))
    if not done:
      recomputed.append(name)
    record_cloud_config(wd, config)
    log(f'[cloud] {name.split("/")[-1]} '
        f'{"loaded" if done else "trained"} ({time.time() - t0:.0f}s)')
    return params

  teacher_params = stage('cloud/teacher', fit_teacher)

  def fit_reordered():
    heads, neurons = importance.importance_scores(
        model, teacher_params, cloud_data, c.batch_size, c.importance_batches,
        par=par)
    return importance.reorder(model, teacher_params, heads, neurons)

  reordered = (stage('cloud/reordered', fit_reordered) if c.reorder
               else teacher_params)
  width_params = stage('cloud/width_stage', elastic_stage(
      'width_stage', reordered, reordered, c.width_stage,
      elastic.Stage.of((1.0,), c.width_mults), config.seed + 1))
  depth_teacher = c.depth_stage.teacher
  stage2_teacher = reordered if depth_teacher == 'teacher' else width_params
  supernet = stage('cloud/depth_stage', elastic_stage(
      'depth_stage', width_params, stage2_teacher, c.depth_stage,
      elastic.Stage.of(c.depth_mults, c.width_mults,
                       matched_teacher=depth_teacher == 'width_stage'),
      config.seed + 2))

  def measured(name, params, split):
    if recomputed and (wd / name).exists():
      (wd / name).unlink()  # measured on weights that were recomputed
    return wd.cached_json(name, lambda: grid.measure_grid(
        model, params, split, dataset.num_classes, c.depth_mults,
        c.width_mults, c.eval_batch_size, par=par))

  records = measured('cloud/grid.json', supernet, dataset.validation)
  tables = {
      'test': measured('cloud/grid_test.json', supernet, dataset.test),
      'teacher_cut_test': measured('cloud/grid_teacher_cut_test.json',
                                   teacher_params, dataset.test)}
  return {'model': model, 'supernet': supernet, 'grid': records, **tables}


# ------------------------------------------------------------- selection


def device_profile(config) -> costs.DeviceProfile:
  return costs.DeviceProfile(**config.system.profile.to_dict())


def _point(c: pareto.Candidates, i: int, score_table) -> dict:
  return {'depth_mult': float(c.depth_mult[i]),
          'width_mult': float(c.width_mult[i]),
          'accuracy': float(c.accuracy[i]), 'size': float(c.size[i]),
          'latency': float(c.latency[i]), 'energy': float(c.energy[i]),
          'realisable': bool(c.realisable[i]) if c.realisable is not None
          else True,
          **{k: _finite(v[i]) for k, v in score_table.items()}}


def _finite(x):
  return float(x) if np.isfinite(x) else None


def run_selection(config, grid_records, arch: costs.ViTArchitecture) -> dict:
  """Predictor, costs, PFG and baselines on the fine grid (ACME.md 4.1-4.3),
  and the edge's candidates (4.4): the trained and measured subnets, each
  with its predicted (overall and per-class) accuracy and exact size, flagged
  when on their exact non-dominated set."""
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
  model = costs.make_cost_model(s.cost_model, device_profile(config), arch)
  raw = model(d, w)
  realisable = (raw.heads >= 1) & (raw.layers >= 1)
  cands = pareto.candidates(d, w, acc, raw.size, raw.latency, raw.energy,
                            realisable=realisable)
  picked = pareto.select_all(cands, s.size_constraint, s.cells, s.sigma,
                             config.seed,
                             realisable_only=s.baselines_realisable_only)
  score_table = pareto.scores(cands.accuracy, cands.size, cands.energy)
  front = (picked.front if s.front == 'pfg' else
           pareto.non_dominated(cands.accuracy, cands.latency, cands.energy))
  picks = {name: _point(cands, i, score_table)
           for name, i in picked.picks.items()}
  gain = pareto.relative_gain(picks['pfg']['tradeoff'],
                              picks['highest_accuracy']['tradeoff'])
  on_front = np.zeros(len(cands), bool)
  on_front[front] = True

  # The edge chooses among trained subnets only (ACME.md 3.3, 4.4), scored
  # by their measured or predicted (per-class) validation accuracy.
  trained_costs = model(depth, width)
  predicted = overall(depth, width)
  candidates = []
  for i, r in enumerate(grid_records):
    measured_per_class = [r['accuracy'] if a is None else a
                          for a in r['per_class_accuracy']]
    predicted_per_class = per_class(depth[i:i + 1], width[i:i + 1])[0]
    measured = s.edge_accuracy == 'measured'
    candidates.append({
        'depth_mult': float(r['depth_mult']),
        'width_mult': float(r['width_mult']), 'params': int(r['params']),
        'measured_accuracy': float(r['accuracy']),
        'predicted_accuracy': float(predicted[i]),
        'accuracy': float(r['accuracy'] if measured else predicted[i]),
        'per_class': (measured_per_class if measured
                      else predicted_per_class.tolist()),
        'latency': float(trained_costs.latency[i]),
        'energy': float(trained_costs.energy[i])})
  keep = set(pareto.non_dominated_min(
      -np.array([c['accuracy'] for c in candidates]),
      np.array([c['params'] for c in candidates], float),
      trained_costs.latency, trained_costs.energy).tolist())
  for i, c in enumerate(candidates):
    c['on_front'] = i in keep
  return {
      'picks': picks,
      'tradeoff_gain_vs_highest_accuracy': gain,
      'front': [_point(cands, i, score_table) for i in front],
      'grid': {'depth_mult': d.tolist(), 'width_mult': w.tolist(),
               'accuracy': acc.tolist(), 'params': raw.size.tolist(),
               'on_front': on_front.tolist(),
               'realisable': realisable.tolist()},
      'candidates': candidates,
  }


# --------------------------------------------------------------- system


def num_devices(config) -> int:
  per_edge = tuple(config.system.devices_per_edge)
  return (per_edge[0] * config.system.num_edges if len(per_edge) == 1
          else sum(per_edge))


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
