"""ACME's single loop (ACME.md 2), top-down, with every stage cached in the workdir.

    run(config, workdir)
      data      load the dataset; cut the cloud's share off the training set
      cloud     teacher -> importance reordering -> width stage -> width+depth
                stage -> grid measurement (accuracy, per-class accuracy, sizes)

Each stage is a pure function from its inputs (and a key or seed) to its
outputs; this module alone reads and writes the workdir, so a rerun with the
same workdir loads every finished stage instead of redoing it.
"""
import json
import pathlib
import time

import jax
import ml_collections
import numpy as np

from acme_jax import config as config_lib
from acme_jax import data as data_lib
from acme_jax import report
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import elastic, grid, importance, teacher
from acme_jax.models import vit

# Independent PRNG streams per stage, so adding a stage never shifts another's.
_TEACHER_INIT, _HEAD_INIT = 0, 1


def _check_same_config(wd: workdir_lib.Workdir, config):
  """Refuse to resume a workdir that was made with a different config."""
  path = wd / 'config.json'
  current = json.loads(config.to_json_best_effort())
  if path.exists():
    saved = workdir_lib.read_json(path)
    if saved != current:
      diffs = sorted(_diff(saved, current))
      raise config_lib.ConfigError(
          diffs[0] if diffs else '<root>', '(changed)',
          f'{wd.path} holds a run made with a different config (fields '
          f'differ: {", ".join(diffs[:5])}); use a new --workdir')
  else:
    workdir_lib.atomic_write_json(path, current)


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

  results = {
      'dataset': dataset.name,
      'cloud': {
          'grid': report.merge_grid(cloud['grid'], cloud['test'],
                                    cloud['teacher_cut_test']),
      },
  }
  table = report.grid_table(results['cloud']['grid'])
  workdir_lib.atomic_write_text(wd / 'cloud/grid.md', table + '\n')
  workdir_lib.atomic_write_json(wd / 'results.json', results)
  log('\n' + table)
  log(f'\nresults: {wd / "results.json"}')
  return results
