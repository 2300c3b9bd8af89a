"""Why one supernet: its subnets against a model trained for each shape,
what serving N budgets costs each way, and shapes between the grid.

  python -m experiments.supernet_value --config=configs/default.py --workdir=runs/default
  python -m experiments.supernet_value --config=configs/minilm_wordnet.py --workdir=runs/minilm
  python -m experiments.supernet_value --config=configs/decoder_wordnet.py:fast \
      --workdir=runs/decoder_fast

Reuses the workdir's cloud stages (trains them first if absent). For each
shape of `supernet_value.depths` x `widths` (paired grid cells; by
default the grid's diagonal, smallest to full), on the cloud's test split:

  supernet   the supernet's subnet; repeat r > 0 retrains the width and
             width+depth stages from the same reordered teacher with
             redrawn data order (repeat 0 is the workdir's supernet)
  distilled  the reordered teacher cut to the shape, distilled from the
             full teacher with the depth stage's losses and optimizer
             (`cloud/alternatives.py`)
  scratch    the shape from a fresh initialisation, trained on the labels
             with `supernet_value.scratch`'s recipe

each at two budgets: `equal_steps` (as many steps as the supernet's two
elastic stages together) and `equal_compute` (the grid's G cells trained
this way together cost what the supernet cost: each gets 1/G of it; the
distilled models share the supernet's teacher, so their share is of the
elastic stages' FLOPs, scratch's of the teacher's and elastic stages').
Every arm's schedule (warm-up, linear decay) is annealed over its own
budget. Repeat r redraws every arm's data order and scratch's
initialisation; differences are paired over repeats (supernet - arm) and
hold where their 95% CI excludes 0.

Also: `cost`, the training FLOPs and seconds of serving N budgets (N in
`budget_counts`) with one supernet or N models (each at `equal_steps`,
sizes spread as the grid's cells), and from which N the supernet is
cheaper; `between_grid`, the shapes of `between_grid.depths` x `widths`
that no grid cell is, against their nearest cells, and each device's
pick and accuracy when the edges may deliver them; and
`baselines_from_supernet`, every federated method started from the
supernet's subnets beside its usual start from the cut teacher, on
`federated.setups[0]` (the baselines' cache is shared). `--shard=K/N`
spreads the repeats over processes.
"""
import dataclasses
import functools
import time

import jax

from acme_jax import config as config_lib
from acme_jax import config_value
from acme_jax import errors
from acme_jax import figures
from acme_jax import report_value
from acme_jax import streams
from acme_jax import training
from acme_jax import world as world_lib
from acme_jax import workdir as workdir_lib
from acme_jax import sizes
from acme_jax.cloud import alternatives, cost, grid
from acme_jax.cloud import stage as cloud_stage
from acme_jax.edge import stage as edge_stage
from acme_jax.parallel import mesh
from acme_jax.selection import stage as selection_stage
from experiments import baselines
from experiments import table

NAME = 'supernet_value'
SECTIONS = cloud_stage.SECTIONS + ('supernet_value', 'between_grid')


def sections(config):
  """What a repeat depends on: the cloud's sections and the experiment's,
  the devices' (their picks between the grid), and the baselines' when it
  runs them."""
  if config.supernet_value.baselines_from_supernet:
    return tuple(dict.fromkeys(SECTIONS + baselines.SECTIONS))
  return tuple(dict.fromkeys(SECTIONS + world_lib.DEVICE_SECTIONS))


@dataclasses.dataclass(frozen=True)
class Plan:
  """The fixed inputs of every repeat: hyper-parameters, step budgets and
  FLOPs, derived from the config and the cloud's model alone."""
  cloud: cloud_stage.CloudHparams
  distilled: training.StageHparams
  scratch: training.StageHparams
  shapes: tuple                  # (depth, width) pairs compared
  steps: dict                    # arm -> budget -> [steps per shape]
  step_flops: dict               # arm -> [FLOPs of one step per shape]
  by_stage: dict                 # the cloud's FLOPs by stage
  grid_flops: list               # per grid cell its one-step FLOPs by arm
  distinct_shapes: int           # uniform subnets the supernet holds


def plan(world: world_lib.World) -> Plan:
  config, model = world.config, world.cloud.model
  params, n = world.cloud.supernet, len(world.cloud_data)
  hp = cloud_stage.CloudHparams.from_config(config)
  batch = config.cloud.batch_size
  distilled = dataclasses.replace(
      hp.depth_stage, seed=config.seed + streams.DISTILLED_SEED)
  scratch = training.StageHparams.from_config(
      config.supernet_value.scratch, batch,
      config.seed + streams.SCRATCH_SEED, epochs=0)
  pretrain = cloud_stage.pretrain_hparams(config)
  by_stage = cost.supernet_flops(
      model, params, hp, n, pretrain.total_steps(
          config.cloud.pretrain.blocks) if pretrain else 0)
  shapes = tuple(config_value.compared_shapes(config))
  step_fns = {'distilled': cost.distilled_step, 'scratch': cost.scratch_step}
  step_flops = {arm: [fn(model, params, d, w, batch) for d, w in shapes]
                for arm, fn in step_fns.items()}
  cells = grid.grid_points(hp.depth_mults, hp.width_mults)
  budget = {'distilled': cost.elastic_total(by_stage),
            'scratch': cost.elastic_total(by_stage) +
                       cost.shared_total(by_stage)}
  supernet_steps = (hp.width_stage.total_steps(n) +
                    hp.depth_stage.total_steps(n))
  if not supernet_steps:
    raise errors.UserError(
        'experiments.supernet_value: cloud.width_stage.epochs and '
        'cloud.depth_stage.epochs are both 0, so the one-shape models have '
        'no step budget; train the supernet for at least one epoch')
  steps = {arm: {'equal_steps': [supernet_steps] * len(shapes),
                 'equal_compute': cost.equal_compute_steps(
                     budget[arm], step_flops[arm], len(cells))}
           for arm in step_fns}
  grid_flops = [{'depth': d, 'width': w,
                 **{arm: fn(model, params, d, w, batch)
                    for arm, fn in step_fns.items()}} for d, w in cells]
  return Plan(hp, distilled, scratch, shapes, steps, step_flops, by_stage,
              grid_flops, grid.distinct_uniform_shapes(model))


def train_cell(world, p: Plan, teacher, arm: str, budget: str, i: int,
               repeat: int) -> dict:
  """One model of shape `p.shapes[i]` trained `arm`'s way on `budget`,
  measured on the cloud's test split (`teacher()`: the reordered
  teacher's weights)."""
  config, model = world.config, world.cloud.model
  depth, width = p.shapes[i]
  steps = p.steps[arm][budget][i]
  par = mesh.from_config(config.cloud)
  reordered = teacher() if arm == 'distilled' else None  # not timed
  t0 = time.time()
  if arm == 'distilled':
    student, params, losses = alternatives.train_distilled(
        model, reordered, world.cloud_data, depth, width,
        alternatives.reseeded(p.distilled, repeat, steps=steps), par=par)
  else:
    # Keyed by the shape's grid cell, not its place in the list compared:
    # a cached model is the one a fresh run would train.
    cell = grid.grid_points(p.cloud.depth_mults, p.cloud.width_mults).index(
        (depth, width))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
        jax.random.key(config.seed), streams.SUPERNET_VALUE_EXPERIMENT),
        repeat), cell)
    student, params, losses = alternatives.train_scratch(
        model, world.cloud.supernet, world.cloud_data, (depth, width),
        alternatives.reseeded(p.scratch, repeat, steps=steps), key,
        lm_weight=config.cloud.get('lm_weight', 1.0), par=par)
  seconds = time.time() - t0
  measured = grid.measure_model(student, params, world.dataset.test,
                                world.num_classes,
                                config.cloud.eval_batch_size, par)
  measured.pop('per_class_accuracy')
  return {'steps': steps, 'flops': steps * p.step_flops[arm][i],
          'seconds': seconds, 'final_loss': losses[-1], **measured}


def repeat_supernet(world, p: Plan, teacher, repeat: int, log):
  """(params, training seconds or None) of repeat `repeat`'s supernet."""
  if repeat == 0:
    return world.cloud.supernet, None
  name = f'experiments/{NAME}/repeat_{repeat}/supernet'
  timing = {}

  def fit():
    reordered = teacher()
    t0 = time.time()
    out = alternatives.retrain_supernet(
        world.cloud.model, reordered, world.cloud_data,
        p.cloud, repeat, par=mesh.from_config(world.config.cloud))
    timing['seconds'] = time.time() - t0
    return out

  params = world.wd.cached_params(
      name, fit, world.cloud.supernet,
      fingerprint=config_lib.subset(world.config, cloud_stage.SECTIONS))
  seconds = world.wd.cached_stage(
      f'{name}_seconds.json',
      config_lib.subset(world.config, cloud_stage.SECTIONS),
      lambda: timing.get('seconds'))
  log(f'[{NAME}] repeat {repeat}: supernet retrained')
  return params, seconds


def one_repeat(world: world_lib.World, repeat: int, log) -> dict:
  config = world.config
  p = plan(world)
  # Restored once per repeat, and only if a model is trained.
  teacher = functools.cache(functools.partial(baselines.teacher_params,
                                              world))
  supernet, supernet_seconds = repeat_supernet(world, p, teacher, repeat,
                                               log)
  records = grid.measure_points(world.cloud.model, supernet,
                                world.dataset.test, world.num_classes,
                                p.shapes, config.cloud.eval_batch_size)
  fingerprint = config_lib.subset(config, cloud_stage.SECTIONS)
  scratch_recipe = config.supernet_value.scratch.to_dict()
  shapes = []
  for i, ((depth, width), record) in enumerate(zip(p.shapes, records)):
    row = {'depth': depth, 'width': width, 'params': record['params'],
           'supernet': {k: record[k] for k in ('accuracy', 'perplexity')
                        if k in record}}
    for arm in config.supernet_value.arms:
      row[arm] = {budget: world.wd.cached_stage(
          f'experiments/{NAME}/repeat_{repeat}/{arm}_{budget}_'
          f'd{depth:g}_w{width:g}.json',
          dict(fingerprint, steps=p.steps[arm][budget][i],
               **({'scratch': scratch_recipe, 'init': 'grid_cell'}
                  if arm == 'scratch' else {})),
          functools.partial(train_cell, world, p, teacher, arm, budget, i,
                            repeat))
                  for budget in config.supernet_value.budgets}
      log(f'[{NAME}] repeat {repeat} d{depth:g} w{width:g}: supernet '
          f'{row["supernet"]["accuracy"]:.3f}, {arm} ' + ', '.join(
              f'{b} {c["accuracy"]:.3f}' for b, c in row[arm].items()))
    shapes.append(row)
  out = {'shapes': shapes, 'supernet_seconds': supernet_seconds,
         'by_stage': p.by_stage, 'grid_flops': p.grid_flops,
         'distinct_shapes': p.distinct_shapes,
         'supernet_steps': p.steps['distilled']['equal_steps'][0]}
  if repeat == 0:
    out['between_grid'] = between_grid(world, log)
    out['cloud_seconds'] = cloud_seconds(world)
  if config.supernet_value.baselines_from_supernet:
    out['baselines'] = baselines_from_supernet(world, repeat, log)
  return out


def cloud_seconds(world: world_lib.World):
  """The workdir's cloud stages' wall times as trained (None for a workdir
  whose stages predate their timing)."""
  path = world.wd / cloud_stage.SECONDS
  return workdir_lib.read_json(path) if path.is_file() else None


def between_grid(world: world_lib.World, log) -> dict:
  """The shapes between the grid's points against their nearest cells,
  and every device's pick without and with them (the edge's rule)."""
  config, model, supernet = world.config, world.cloud.model, world.cloud.supernet
  asked = list(zip(config.between_grid.depths, config.between_grid.widths))
  shapes, coincide = grid.between_points(model, config.cloud.depth_mults,
                                         config.cloud.width_mults, asked)
  bs = config.cloud.eval_batch_size
  val = grid.measure_points(model, supernet, world.dataset.validation,
                            world.num_classes, shapes, bs)
  test = grid.measure_points(model, supernet, world.dataset.test,
                             world.num_classes, shapes, bs)
  cells = world.cloud.test
  rows = []
  for v, t in zip(val, test):
    below = max((c for c in cells if c['params'] <= t['params']),
                key=lambda c: c['params'], default=None)
    above = min((c for c in cells if c['params'] >= t['params']),
                key=lambda c: c['params'], default=None)
    rows.append({'depth': t['depth_mult'], 'width': t['width_mult'],
                 'layers': len(t['layers']), 'heads': t['heads'],
                 'params': t['params'], 'accuracy': t['accuracy'],
                 'val_accuracy': v['accuracy'],
                 'below': _cell_summary(below), 'above': _cell_summary(above)})
  log(f'[{NAME}] between the grid: {len(shapes)} new shapes, '
      f'{len(coincide)} land on grid cells')
  return {'shapes': rows,
          'coincide': [{'depth': d, 'width': w, 'cell': list(c)}
                       for (d, w), c in coincide.items()],
          'devices': device_picks(world, val) if shapes else []}


def _cell_summary(cell):
  if cell is None:
    return None
  return {'depth': cell['depth_mult'], 'width': cell['width_mult'],
          'params': cell['params'], 'accuracy': cell['accuracy']}


def device_picks(world: world_lib.World, between_val: list) -> list:
  """Per device: its budget, and for the grid alone and with the shapes
  between, its edge's pick, the backbone's share of the budget left after
  the header allowance, and the pick's accuracy on the device's test split
  (the cloud's classifier; no header)."""
  config, model = world.config, world.cloud.model
  hp = selection_stage.SelectionHparams.from_config(config)
  arch = sizes.architecture(config, world.num_classes)
  edge_hp = edge_stage.EdgeHparams.from_config(config)
  out = [{'device': d.id, 'budget': d.budget} for d in world.topology.devices]
  for name, extra in (('grid', []), ('with_between', between_val)):
    selection = selection_stage.run(hp, world.cloud.grid, arch,
                                    between_grid=extra)
    _, picks = edge_stage.edge_choice(edge_hp, selection, world.topology,
                                      world.splits, world.num_classes)
    for row, device, pick in zip(out, world.topology.devices, picks):
      cand = selection['candidates'][pick.candidate]
      test = world.splits[device.id][2]
      acc = grid.measure_points(model, world.cloud.supernet, test,
                                world.num_classes,
                                [(cand['depth_mult'], cand['width_mult'])],
                                config.cloud.eval_batch_size)[0]['accuracy']
      row[name] = {'depth': cand['depth_mult'], 'width': cand['width_mult'],
                   'params': pick.params, 'between_grid':
                   bool(cand.get('between_grid')),
                   'budget_used': pick.params / max(
                       device.budget - edge_hp.header_allowance, 1),
                   'test_accuracy': acc}
  return out


def baselines_from_supernet(world: world_lib.World, repeat: int, log) -> dict:
  """Every method on `federated.setups[0]` of `repeat`, from the cut
  teacher (the baselines experiment's cached run, shared) and from the
  supernet ACME's devices get their subnets from."""
  config = world.config
  setup = config.federated.setups[0]
  fingerprint = config_lib.repeat_fingerprint(config, baselines.SECTIONS)
  cut = world.wd.cached_stage(
      f'experiments/baselines/repeat_{repeat}/{setup}.json', fingerprint,
      lambda: baselines.one_setup(world, repeat, 0, log))

  def from_supernet():
    hp, splits, _ = baselines.repeat_setup(world, repeat, 0)
    return baselines.run_methods(world, world.cloud.supernet, splits, hp)

  ours = world.wd.cached_stage(
      f'experiments/{NAME}/repeat_{repeat}/baselines_{setup}.json',
      fingerprint, from_supernet)
  out = {'setup': setup, 'acme': baselines.mean_accuracy(cut['acme']),
         'teacher_cut': {m: baselines.mean_accuracy(cut[m])
                         for m in config.federated.methods},
         'supernet': {m: baselines.mean_accuracy(ours[m])
                      for m in config.federated.methods}}
  log(f'[{NAME}] repeat {repeat} baselines from the supernet: ' + ', '.join(
      f'{m} {out["teacher_cut"][m]:.3f} -> {out["supernet"][m]:.3f}'
      for m in config.federated.methods))
  return out


def partitions(config):
  return (baselines.partitions(config, config.federated.setups[:1])
          if config.supernet_value.baselines_from_supernet else [])


def run(config, workdir, log=print, shard=None):
  experiment = table.Experiment(NAME, sections(config),
                                repeats_in=NAME,
                                markdown=report_value.supernet_value_table,
                                figure=figures.cost_figure)
  return experiment.run(config, workdir, log, shard, one_repeat,
                        functools.partial(report_value.summarize, config),
                        partitions(config))


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run, shards=True)
