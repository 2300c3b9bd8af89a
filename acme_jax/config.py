"""Config validation: every check in one place, run before any work.

A wrong value stops the run with one `ConfigError` naming the field, the value
given and what is allowed, instead of a trace from deep inside JAX.
"""
import numbers

from acme_jax import data as data_lib
from acme_jax.models import subnet as subnet_lib


class ConfigError(ValueError):

  def __init__(self, field: str, value, allowed: str):
    self.field, self.value, self.allowed = field, value, allowed
    super().__init__(f'config.{field} = {value!r} is invalid: {allowed}')


def _get(config, field):
  node = config
  for part in field.split('.'):
    if part not in node:
      raise ConfigError(field, None, 'this field is required')
    node = node[part]
  return node


def _check(config, field, ok, allowed):
  value = _get(config, field)
  try:
    good = ok(value)
  except (TypeError, ValueError):
    good = False
  if not good:
    raise ConfigError(field, value, allowed)
  return value


def _is_int(v):
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v):
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _positive_int(config, field):
  return _check(config, field, lambda v: _is_int(v) and v > 0,
                'must be a positive integer')


def _non_negative_int(config, field):
  return _check(config, field, lambda v: _is_int(v) and v >= 0,
                'must be an integer >= 0')


def _fraction(config, field, low_open=True, high_open=True):
  lo, hi = ('(' if low_open else '['), (')' if high_open else ']')

  def ok(v):
    if not _is_number(v):
      return False
    above = v > 0 if low_open else v >= 0
    below = v < 1 if high_open else v <= 1
    return above and below

  return _check(config, field, ok, f'must be a number in {lo}0, 1{hi}')


def _multipliers(config, field, count: int, what: str):
  values = _check(
      config, field,
      lambda v: len(v) > 0 and all(_is_number(x) and 0 < x <= 1 for x in v),
      'must be a non-empty list of numbers in (0, 1], e.g. 0.25,0.5,1.0')
  for v in values:
    kept = int(round(v * count))
    if kept < 1:
      raise ConfigError(field, tuple(values),
                        f'{v} keeps round({v}*{count}) = 0 {what}; every '
                        f'multiplier must keep at least one')
  if len(set(values)) != len(values):
    raise ConfigError(field, tuple(values), 'must not repeat a value')
  return values


def _stage(config, prefix, elastic):
  _non_negative_int(config, f'{prefix}.epochs')
  for name in ('learning_rate', 'clip_norm'):
    _check(config, f'{prefix}.{name}', lambda v: _is_number(v) and v > 0,
           'must be a number > 0')
  _check(config, f'{prefix}.weight_decay', lambda v: _is_number(v) and v >= 0,
         'must be a number >= 0')
  _fraction(config, f'{prefix}.warmup_fraction', low_open=False)
  if elastic:
    for name in ('lambda_logits', 'lambda_hidden'):
      _check(config, f'{prefix}.{name}', lambda v: _is_number(v) and v >= 0,
             'must be a number >= 0')


def validate(config):
  """Raise `ConfigError` for the first invalid field; return the config."""
  _check(config, 'seed', _is_int, 'must be an integer')

  _check(config, 'data.name', lambda v: v in data_lib.SUPPORTED,
         f'must be one of {", ".join(data_lib.SUPPORTED)}')
  image_size = _positive_int(config, 'data.image_size')
  _fraction(config, 'data.cloud_fraction')
  _non_negative_int(config, 'data.source_size')
  if config.data.name == 'synthetic':
    from acme_jax.data import synthetic
    _check(config, 'data.synthetic.like', lambda v: v in synthetic.SHAPES,
           f'must be one of {", ".join(synthetic.SHAPES)}')
    _non_negative_int(config, 'data.synthetic.num_train')
    _non_negative_int(config, 'data.synthetic.num_test')
    _check(config, 'data.synthetic.noise', lambda v: _is_number(v) and v >= 0,
           'must be a number >= 0')
  _fraction(config, 'data.validation_fraction')
  _non_negative_int(config, 'data.max_examples_per_split')

  family = config.model.get('family', 'vit')
  _check(config, 'model.family', lambda v: v in ('vit', 'bert'),
         'must be vit or bert')
  text = data_lib.is_text_source(config.data.name)
  if (family == 'bert') != text:
    raise ConfigError('model.family', family,
                      f'does not read data.name = {config.data.name!r}: '
                      f'bert reads text sources, vit images')
  if family == 'vit':
    patch = _positive_int(config, 'model.patch_size')
    if image_size % patch:
      raise ConfigError('data.image_size', image_size,
                        f'must be divisible by model.patch_size = {patch}')
  else:
    length = _positive_int(config, 'data.text.max_length')
    for name in ('vocab_size', 'type_vocab_size'):
      _positive_int(config, f'model.{name}')
    positions = _positive_int(config, 'model.max_positions')
    if length > positions:
      raise ConfigError('data.text.max_length', length,
                        f'must be at most model.max_positions = {positions}')
    _non_negative_int(config, 'data.text.min_examples_per_class')
    _non_negative_int(config, 'data.text.max_examples_per_class')
    if not config.model.init_checkpoint and not config.data.text.tokenizer:
      raise ConfigError('data.text.tokenizer', '',
                        'text needs a tokenizer.json: give its path, or a '
                        'model.init_checkpoint that has one')
  hidden = _positive_int(config, 'model.hidden_size')
  layers = _positive_int(config, 'model.num_layers')
  heads = _positive_int(config, 'model.num_heads')
  if hidden % heads:
    raise ConfigError('model.num_heads', heads,
                      f'must divide model.hidden_size = {hidden}')
  _positive_int(config, 'model.mlp_dim')
  _check(config, 'model.layer_norm_eps', lambda v: _is_number(v) and v > 0,
         'must be a number > 0')
  _check(config, 'model.dtype', lambda v: v in ('float32', 'bfloat16'),
         'must be float32 or bfloat16')

  _validate_checkpoint(config)

  _multipliers(config, 'cloud.width_mults', heads, 'heads')
  depths = _multipliers(config, 'cloud.depth_mults', layers, 'layers')
  for d in depths:
    kept = subnet_lib.kept_layer_indices(layers, d)
    if kept[-1] >= layers:
      raise ConfigError('cloud.depth_mults', tuple(depths),
                        f'{d} keeps layer index {kept[-1]} of {layers}')
  _positive_int(config, 'cloud.batch_size')
  _positive_int(config, 'cloud.eval_batch_size')
  from acme_jax.cloud import elastic
  from acme_jax.system import mesh
  _check(config, 'cloud.elastic_scheme', lambda v: v in elastic.SCHEMES,
         f'must be one of {", ".join(elastic.SCHEMES)}')
  _check(config, 'cloud.remat', lambda v: isinstance(v, bool),
         'must be True or False')
  _check(config, 'cloud.param_sharding',
         lambda v: v in mesh.PARAM_SHARDINGS,
         f'must be one of {", ".join(mesh.PARAM_SHARDINGS)}')
  _validate_distributed(config)
  _check(config, 'cloud.reorder', lambda v: isinstance(v, bool),
         'must be True or False')
  _positive_int(config, 'cloud.importance_batches')
  _stage(config, 'cloud.teacher', elastic=False)
  _non_negative_int(config, 'cloud.teacher.max_shift')
  _stage(config, 'cloud.width_stage', elastic=True)
  _stage(config, 'cloud.depth_stage', elastic=True)
  _check(config, 'cloud.depth_stage.teacher',
         lambda v: v in elastic.TEACHERS,
         f'must be one of {", ".join(elastic.TEACHERS)}')
  for stage in ('width_stage', 'depth_stage'):
    _non_negative_int(config, f'cloud.{stage}.max_shift')
  _validate_selection_and_system(config)
  _validate_device_sections(config)
  return config


def _validate_distributed(config):
  d = 'cloud.distributed'
  _check(config, f'{d}.coordinator', lambda v: isinstance(v, str) and (
      not v or ':' in v), 'must be empty or host:port')
  _positive_int(config, f'{d}.num_processes')
  _check(config, f'{d}.process_id', lambda v: _is_int(v) and 0 <= v < (
      config.cloud.distributed.num_processes),
         'must be in [0, num_processes)')
  _check(config, f'{d}.auto', lambda v: isinstance(v, bool),
         'must be True or False')
  _check(config, f'{d}.cpu_collectives', lambda v: v in ('', 'gloo', 'mpi'),
         "must be '', gloo or mpi")


def check_devices(config, device_count: int):
  """The cloud's global batches split evenly over the mesh's devices."""
  for field in ('batch_size', 'eval_batch_size'):
    value = config.cloud[field]
    if value % device_count:
      raise ConfigError(f'cloud.{field}', value,
                        f'must be a multiple of the {device_count} devices '
                        f'it is split over')


def _validate_checkpoint(config):
  """A checkpoint must exist and fit config.model and the data: read from
  its config.json alone, before anything is loaded or trained."""
  path = config.model.init_checkpoint
  if not path:
    return
  if config.model.get('family', 'vit') == 'bert':
    _validate_text_checkpoint(config)
    return
  from acme_jax.models import hf_import
  try:
    problems = hf_import.mismatches(
        hf_import.read_config(path), config.model, config.data.image_size,
        data_lib.channels(config.data))
  except ValueError as e:
    raise ConfigError('model.init_checkpoint', path, str(e)) from e
  if problems:
    raise ConfigError('model.init_checkpoint', path,
                      'does not fit the config: ' + '; '.join(problems))


def _validate_text_checkpoint(config):
  """A BERT checkpoint (directory or pip:) must exist and match
  config.model, read from its config.json; a text source needs a tokenizer."""
  from acme_jax.models import checkpoints, hf_import
  path = config.model.init_checkpoint
  try:
    local = checkpoints.resolve(path)
    hf = hf_import.read_config(str(local))
  except ValueError as e:
    raise ConfigError('model.init_checkpoint', path, str(e)) from e
  m = config.model
  wanted = {'hidden_size': m.hidden_size, 'num_hidden_layers': m.num_layers,
            'num_attention_heads': m.num_heads,
            'intermediate_size': m.mlp_dim, 'vocab_size': m.vocab_size,
            'max_position_embeddings': m.max_positions,
            'type_vocab_size': m.type_vocab_size}
  problems = [f'{k} {hf.get(k)} vs config.model {v}'
              for k, v in wanted.items() if hf.get(k) != v]
  if hf.get('model_type', 'bert') != 'bert':
    problems.append(f'model_type {hf.get("model_type")!r} is not bert')
  if problems:
    raise ConfigError('model.init_checkpoint', path,
                      'does not fit the config: ' + '; '.join(problems))
  if (not config.data.text.tokenizer and
      checkpoints.tokenizer_path(local) is None):
    raise ConfigError('data.text.tokenizer', '',
                      f'{path} has no tokenizer.json; give its path')


def _validate_device_sections(config):
  from acme_jax.data import partition
  from acme_jax.device import features, heads, nas
  from acme_jax.edge import rounds, similarity
  from acme_jax.system import engine
  for name in ('num_channels', 'num_nodes', 'batch_size', 'controller_hidden',
               'num_final_archs'):
    _positive_int(config, f'header.{name}')
  for name in ('num_layers', 'search_epochs', 'finetune_epochs',
               'controller_steps_per_epoch', 'lr_period', 'lr_period_mult'):
    _non_negative_int(config, f'header.{name}')
  for name in ('lr_period', 'lr_period_mult'):
    _positive_int(config, f'header.{name}')
  for name in ('lr_max', 'lr_min', 'temperature', 'tanh_constant',
               'op_tanh_reduce', 'controller_lr', 'reward_scale'):
    _check(config, f'header.{name}', lambda v: _is_number(v) and v > 0,
           'must be a number > 0')
  for name in ('weight_decay', 'entropy_weight', 'grad_clip'):
    _check(config, f'header.{name}', lambda v: _is_number(v) and v >= 0,
           'must be a number >= 0')
  _check(config, 'header.finetune_lrs',
         lambda v: len(v) > 0 and all(_is_number(x) and x > 0 for x in v),
         'must be a non-empty list of numbers > 0')
  _fraction(config, 'header.momentum', low_open=False)
  _fraction(config, 'header.dropout_rate', low_open=False)
  _fraction(config, 'header.baseline_decay', low_open=False)
  _check(config, 'header.derive', lambda v: v in nas.DERIVES,
         f'must be one of {", ".join(nas.DERIVES)}')
  _check(config, 'header.final_weights',
         lambda v: v in ('shared', 'scratch'), 'must be shared or scratch')
  _check(config, 'header.features_from',
         lambda v: v in features.FEATURE_SOURCES,
         f'must be one of {", ".join(features.FEATURE_SOURCES)}')

  kinds = tuple(heads.BASELINES)
  _check(config, 'baselines.kinds', lambda v: all(k in kinds for k in v),
         f'must list some of {", ".join(kinds)}')
  _check(config, 'baselines.learning_rates',
         lambda v: len(v) > 0 and all(_is_number(x) and x > 0 for x in v),
         'must be a non-empty list of numbers > 0')
  _check(config, 'baselines.depth_fractions',
         lambda v: len(v) > 0 and all(_is_number(x) and 0 < x <= 1 and
                                      round(x * config.model.num_layers) >= 1
                                      for x in v),
         'must be a non-empty list of numbers in (0, 1] that each keep at '
         'least one layer')
  _positive_int(config, 'baselines.repeats')
  _check(config, 'baselines.ablation_depths',
         lambda v: len(v) > 0 and all(_is_number(x) and 0 < x <= 1 and
                                      round(x * config.model.num_layers) >= 1
                                      for x in v),
         'must be a non-empty list of numbers in (0, 1] that each keep at '
         'least one layer')

  a = 'aggregation'
  _non_negative_int(config, f'{a}.rounds')
  _fraction(config, f'{a}.prune_ratio', low_open=False)
  _non_negative_int(config, f'{a}.local_epochs')
  _non_negative_int(config, f'{a}.finetune_epochs')
  _check(config, f'{a}.signature',
         lambda v: v in similarity.SIGNATURE_KINDS,
         f'must be one of {", ".join(similarity.SIGNATURE_KINDS)}')
  _check(config, f'{a}.taylor', lambda v: v in rounds.TAYLOR,
         f'must be one of {", ".join(rounds.TAYLOR)}')
  _check(config, f'{a}.reference_backbone',
         lambda v: v in similarity.REFERENCE_BACKBONES,
         f'must be one of {", ".join(similarity.REFERENCE_BACKBONES)}')
  _check(config, f'{a}.js_variant', lambda v: v in similarity.JS_VARIANTS,
         f'must be one of {", ".join(similarity.JS_VARIANTS)}')
  _check(config, f'{a}.temperatures',
         lambda v: len(v) > 0 and all(_is_number(x) and x > 0 for x in v),
         'must be a non-empty list of numbers > 0')
  _positive_int(config, f'{a}.signature_samples')
  _check(config, f'{a}.temperature', lambda v: _is_number(v) and v > 0,
         'must be a number > 0')
  _check(config, f'{a}.self_weight', lambda v: _is_number(v) and v < 1,
         'must be < 1 (negative = no override)')
  _check(config, f'{a}.mode', lambda v: v in similarity.MODES,
         f'must be one of {", ".join(similarity.MODES)}')
  _check(config, f'{a}.modes',
         lambda v: len(v) > 0 and all(m in similarity.MODES for m in v),
         f'must list some of {", ".join(similarity.MODES)}')
  _check(config, f'{a}.setups',
         lambda v: len(v) > 0 and all(m in partition.SCHEMES for m in v),
         f'must list some of {", ".join(partition.SCHEMES)}')
  _fraction(config, f'{a}.fraction_per_class', high_open=False)
  _positive_int(config, f'{a}.repeats')
  _check(config, f'{a}.test_on', lambda v: v in ('local', 'class_matched'),
         'must be local or class_matched')
  _check(config, 'engine.strategy', lambda v: v in engine.STRATEGIES,
         f'must be one of {", ".join(engine.STRATEGIES)}')
  _check(config, 'engine.chunk', lambda v: isinstance(v, int) and v >= 0,
         'must be a whole number >= 0 (0: all users at once)')
  _check_header_allowance(config)


def _check_header_allowance(config):
  from acme_jax import shapes
  allowance = config.system.header_allowance
  cells = (config.header.num_layers or 3) + 2
  smallest = shapes.smallest_header(config, cells)
  if allowance < smallest:
    raise ConfigError(
        'system.header_allowance', allowance,
        f'must be at least the smallest header ({smallest} parameters: pools only, '
        f'{cells} cells, {config.header.num_channels} channels); raise it or '
        f'lower header.num_channels')


def _validate_selection_and_system(config):
  from acme_jax.data import partition
  from acme_jax.selection import costs
  _check(config, 'selection.cost_model', lambda v: v in costs.COST_MODELS,
         f'must be one of {", ".join(costs.COST_MODELS)}')
  _check(config, 'selection.grid_size', lambda v: _is_int(v) and v >= 2,
         'must be an integer >= 2')
  _positive_int(config, 'selection.cells')
  _check(config, 'selection.sigma', lambda v: _is_number(v) and v >= 0,
         'must be a number >= 0')
  _fraction(config, 'selection.size_constraint', high_open=False)
  _check(config, 'selection.front', lambda v: v in ('pfg', 'non_dominated'),
         'must be pfg or non_dominated')
  _check(config, 'selection.edge_accuracy',
         lambda v: v in ('measured', 'predicted'), 'must be measured or predicted')
  _check(config, 'selection.baselines_realisable_only',
         lambda v: isinstance(v, bool), 'must be True or False')

  edges = _positive_int(config, 'system.num_edges')
  per_edge = _check(config, 'system.devices_per_edge',
                    lambda v: len(v) in (1, edges) and all(
                        _is_int(x) and x > 0 for x in v),
                    f'must be one positive count, or one per edge ({edges})')
  num_devices = (per_edge[0] * edges if len(per_edge) == 1 else sum(per_edge))
  allowance = _non_negative_int(config, 'system.header_allowance')
  _check(config, 'system.budget_draw', lambda v: v in ('linspace', 'uniform'),
         'must be linspace or uniform')
  budgets = _check(config, 'system.budgets',
                   lambda v: len(v) in (0, num_devices) and all(
                       _is_int(b) and b > 0 for b in v),
                   f'must be empty (drawn) or {num_devices} positive integers')
  if budgets:
    from acme_jax import shapes
    smallest = shapes.smallest_backbone(config) + allowance
    low = min(budgets)
    if low < smallest:
      raise ConfigError(
          'system.budgets', tuple(budgets),
          f'budget {low} is below the smallest subnet plus header allowance '
          f'({smallest} parameters); every budget must be >= {smallest}')
  _check(config, 'system.partition', lambda v: v in partition.SCHEMES,
         f'must be one of {", ".join(partition.SCHEMES)}')
  _check(config, 'system.dirichlet_alpha', lambda v: _is_number(v) and v > 0,
         'must be a number > 0')
  _positive_int(config, 'system.shards_per_device')
  _fraction(config, 'system.fraction_per_class', high_open=False)
  _fraction(config, 'system.local_val_fraction', low_open=False)
  _fraction(config, 'system.local_test_fraction', low_open=False)
  if (config.system.local_val_fraction + config.system.local_test_fraction
      >= 1):
    raise ConfigError('system.local_test_fraction',
                      config.system.local_test_fraction,
                      'local_val_fraction + local_test_fraction must be < 1')
  for name, value in config.system.profile.items():
    if not (_is_number(value) and value >= 0):
      raise ConfigError(f'system.profile.{name}', value,
                        'must be a number >= 0')
