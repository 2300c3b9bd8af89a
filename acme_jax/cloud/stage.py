"""The cloud tier of the loop (docs/method.md 3): fine-tune the teacher, reorder
heads and neurons by importance, distil the width- then width+depth-elastic
supernet, and measure every trained subnet on the grid.

Each stage is committed to the workdir as a verified orbax checkpoint (or
JSON) and loaded on a rerun; a stage recomputed invalidates every later one,
and a workdir trained under other cloud settings is refused.
"""
import dataclasses
import time
from typing import Tuple

import jax

from acme_jax import config as config_lib
from acme_jax import errors
from acme_jax import resume
from acme_jax import streams
from acme_jax import training
from acme_jax import ownership
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import elastic, grid, importance, pretrain, teacher
from acme_jax.errors import ConfigError
from acme_jax.models import vit
from acme_jax.parallel import mesh

# The cloud's cached stages depend on these config sections only; later
# stages are recomputed when their own sections change, so e.g. a new
# partition reuses the trained supernet.
SECTIONS = ('seed', 'data', 'model', 'cloud')


@dataclasses.dataclass(frozen=True)
class CloudHparams:
  """config.cloud, typed: the grid, each stage's optimization, batches."""
  width_mults: Tuple[float, ...]
  depth_mults: Tuple[float, ...]
  eval_batch_size: int
  importance_batches: int
  importance_batch_size: int
  reorder: bool
  teacher: training.StageHparams
  width_stage: training.StageHparams
  depth_stage: training.StageHparams
  stage2_teacher: str             # choices.STAGE2_TEACHERS

  @classmethod
  def from_config(cls, config) -> 'CloudHparams':
    cloud = config.cloud
    elastic_fields = dict(scheme=cloud.elastic_scheme,
                          remat=cloud.get('remat', False))
    return cls(width_mults=tuple(cloud.width_mults),
               depth_mults=tuple(cloud.depth_mults),
               eval_batch_size=cloud.eval_batch_size,
               importance_batches=cloud.importance_batches,
               importance_batch_size=cloud.batch_size,
               reorder=cloud.reorder,
               teacher=training.StageHparams.from_config(
                   cloud.teacher, cloud.batch_size, config.seed),
               width_stage=training.StageHparams.from_config(
                   cloud.width_stage, cloud.batch_size,
                   config.seed + streams.WIDTH_STAGE_SEED, **elastic_fields),
               depth_stage=training.StageHparams.from_config(
                   cloud.depth_stage, cloud.batch_size,
                   config.seed + streams.DEPTH_STAGE_SEED, **elastic_fields),
               stage2_teacher=cloud.depth_stage.teacher)

  def width_stage_subnets(self) -> elastic.Stage:
    """Stage 1: every width at full depth."""
    return elastic.Stage.of((1.0,), self.width_mults, name='width_stage')

  def depth_stage_subnets(self) -> elastic.Stage:
    """Stage 2: the whole grid, each subnet distilled from the same-width
    teacher when the stage-2 teacher is the width stage's supernet."""
    return elastic.Stage.of(
        self.depth_mults, self.width_mults,
        matched_teacher=self.stage2_teacher == 'width_stage',
        name='depth_stage')

  def depth_stage_teacher(self, reordered, width_params):
    """Stage 2's teacher weights: the (reordered) fine-tuned teacher, or
    stage 1's width-elastic supernet."""
    return reordered if self.stage2_teacher == 'teacher' else width_params


@dataclasses.dataclass(frozen=True)
class Trained:
  """What the cloud holds after its stages: the supernet model and its
  params, and the grid's measurements."""
  model: vit.ViT               # or bert.Bert
  supernet: dict
  grid: list                   # validation: per subnet accuracy and sizes
  test: list                   # the same on the test split
  teacher_cut_test: list       # the teacher cut to each subnet, untrained


def pretrain_hparams(config):
  """config.cloud.pretrain as StageHparams, or None: only a fresh decoder
  with `blocks` > 0 pretrains."""
  section = config.cloud.get('pretrain')
  if (config.model.get('family', 'vit') != 'decoder' or section is None or
      not section.blocks or config.model.init_checkpoint):
    return None
  return training.StageHparams.from_config(
      section, config.cloud.batch_size,
      config.seed + streams.PRETRAIN_SEED)


def build_model(config, dataset, key):
  """The supernet (reading the dataset's stored images through its input
  spec) and its initial params: imported HF weights, or fresh."""
  if config.model.init_checkpoint:
    from acme_jax.models import checkpoints
    model, params, _ = checkpoints.load(
        config.model.init_checkpoint, num_classes=dataset.num_classes,
        key=jax.random.fold_in(key, streams.HEAD_INIT))
    fields = dict(input_spec=dataset.input_spec)
    if hasattr(model, 'pad_id'):  # padding is the tokenizer's, not config.json's
      fields['pad_id'] = dataset.input_spec.pad_id
    return model.clone(**fields), params
  if config.model.get('family', 'vit') == 'decoder':
    from acme_jax.models import decoder
    model = decoder.decoder_from_config(config.model, dataset.num_classes,
                                        dataset.input_spec)
    return model, decoder.init_params(model, jax.random.fold_in(
        key, streams.TEACHER_INIT), dataset.input_spec.max_length)
  if config.model.get('family', 'vit') == 'bert':
    from acme_jax.models import bert
    model = bert.bert_from_config(config.model, dataset.num_classes,
                                  config.model.vocab_size).clone(
                                      input_spec=dataset.input_spec)
    return model, bert.init_params(model, jax.random.fold_in(
        key, streams.TEACHER_INIT), dataset.input_spec.max_length)
  model = vit.vit_from_config(config.model, dataset.num_classes).clone(
      input_spec=dataset.input_spec)
  return model, vit.init_params(
      model, jax.random.fold_in(key, streams.TEACHER_INIT),
      dataset.image_shape)


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


STAGES = ('cloud/pretrain', 'cloud/teacher', 'cloud/reordered', 'cloud/width_stage',
          'cloud/depth_stage')


def check_config(wd: workdir_lib.Workdir, config):
  """Refuse to resume cloud stages trained under a different config, read
  from the fingerprint each stage's checkpoint seals inside itself (an
  edited one fails its seal and is recomputed). Fields a stored
  fingerprint lacks were added by a later version, whose defaults keep the
  earlier behaviour: they do not block a resume. A committed stage with no
  stored fingerprint (an earlier version's) is computed again."""
  current = config_lib.subset(config, SECTIONS)
  for name in STAGES:
    if not wd.has_checkpoint(name):
      continue
    saved = wd.stored_fingerprint(name)
    if not isinstance(saved, dict):
      workdir_lib.quarantine(wd / name, 'has no stored config')
      continue
    diffs = sorted(d for d in _diff(saved, current)
                   if _lookup(saved, d) is not _MISSING)
    if diffs:
      raise ConfigError(
          diffs[0], '(changed)',
          f'{wd / name} was trained with a different config (fields '
          f'differ: {", ".join(diffs[:5])}); use a new --workdir')


def require_trained(wd: workdir_lib.Workdir, config):
  """For a shard (which runs beside other shards): every cloud stage is
  committed, so none is trained twice at once."""
  check_config(wd, config)
  needed = [n for n in STAGES
            if n != 'cloud/reordered' or config.cloud.reorder]
  missing = [n for n in needed if not wd.has_checkpoint(n)]
  if missing:
    raise errors.UserError(
        f'--shard: {wd / missing[0]} is not trained yet, and shards train '
        f'nothing (they run side by side); run the command once without '
        f'--shard (or experiments.main) to train the cloud stages')


def _write_output(path, value):
  """Outputs (not caches) of a stage: only process 0 writes them."""
  if ownership.is_writer():
    workdir_lib.atomic_write_json(path, value)


SECONDS = 'cloud/seconds.json'


def record_seconds(wd: workdir_lib.Workdir, name: str, seconds: float):
  """Each stage's wall time when it was trained (`SECONDS`, by stage name):
  what experiments.supernet_value charges the supernet."""
  if not ownership.is_writer():
    return
  path = wd / SECONDS
  times = workdir_lib.read_json(path) if path.is_file() else {}
  times[name.split('/')[-1]] = seconds
  workdir_lib.atomic_write_json(path, times)


def run(config, wd: workdir_lib.Workdir, dataset, cloud_data,
        log=print) -> Trained:
  """Teacher, reordering, elastic stages and grid measurement (docs/method.md 3),
  each loaded from the workdir when a previous run committed it."""
  hp = CloudHparams.from_config(config)
  check_config(wd, config)
  model, init = build_model(config, dataset, jax.random.key(config.seed))
  par = mesh.from_config(config.cloud)
  recomputed = []  # a stage recomputed invalidates every later one

  def stage(name, fit):
    t0 = time.time()
    done = wd.has_checkpoint(name) and not recomputed
    params = wd.cached_params(name, fit, init, recompute=bool(recomputed),
                              fingerprint=config_lib.subset(config,
                                                            SECTIONS))
    if not done:
      recomputed.append(name)
      record_seconds(wd, name, time.time() - t0)
    log(f'[cloud] {name.split("/")[-1]} '
        f'{"loaded" if done else "trained"} ({time.time() - t0:.0f}s)')
    return params

  def partial(name):
    return resume.Partial(wd / name, config.resume.every_steps, fingerprint={
        'cloud': config_lib.subset(config, SECTIONS),
        'recomputed': list(recomputed)})

  def fit_teacher():
    params, losses = teacher.train_teacher(
        model, init, cloud_data, hp.teacher, par=par,
        partial=partial('cloud/teacher'),
        lm_weight=config.cloud.get('lm_weight', 1.0))
    _write_output(wd / 'cloud/teacher_losses.json', losses)
    return params

  def fit_elastic(name, start, teacher_params, subnets, stage_hp):
    def fit():
      params, losses = elastic.train_elastic(
          model, start, teacher_params, cloud_data, subnets, stage_hp,
          par=par, partial=partial(f'cloud/{name}'))
      _write_output(wd / f'cloud/{name}_losses.json', losses)
      return params
    return fit

  pretrain_hp = pretrain_hparams(config)
  if pretrain_hp is not None:
    def fit_pretrain():
      from acme_jax import data as data_lib
      from acme_jax.data import cloud_corpus
      blocks = cloud_corpus.pretrain_blocks(
          data_lib.tokenizer_path(config.data, config.model.init_checkpoint),
          dataset.input_spec.max_length, config.cloud.pretrain.blocks)
      params, losses = pretrain.train_lm(model, init, blocks, pretrain_hp,
                                         par=par,
                                         partial=partial('cloud/pretrain'))
      _write_output(wd / 'cloud/pretrain_losses.json', losses)
      return params
    init = stage('cloud/pretrain', fit_pretrain)

  teacher_params = stage('cloud/teacher', fit_teacher)

  def fit_reordered():
    heads, neurons = importance.importance_scores(
        model, teacher_params, cloud_data, hp.importance_batch_size,
        hp.importance_batches, par=par)
    return importance.reorder(model, teacher_params, heads, neurons)

  reordered = (stage('cloud/reordered', fit_reordered) if hp.reorder
               else teacher_params)
  width_params = stage('cloud/width_stage', fit_elastic(
      'width_stage', reordered, reordered, hp.width_stage_subnets(),
      hp.width_stage))
  supernet = stage('cloud/depth_stage', fit_elastic(
      'depth_stage', width_params,
      hp.depth_stage_teacher(reordered, width_params),
      hp.depth_stage_subnets(), hp.depth_stage))

  def measured(name, params, split):
    # A copy measured on weights since recomputed is measured again (the
    # same decision in every process of a multi-host run).
    return wd.cached_json(name, lambda: grid.measure_grid(
        model, params, split, dataset.num_classes, hp.depth_mults,
        hp.width_mults, hp.eval_batch_size, par=par),
                          recompute=bool(recomputed))

  return Trained(
      model=model, supernet=supernet,
      grid=measured('cloud/grid.json', supernet, dataset.validation),
      test=measured('cloud/grid_test.json', supernet, dataset.test),
      teacher_cut_test=measured('cloud/grid_teacher_cut_test.json',
                                teacher_params, dataset.test))
