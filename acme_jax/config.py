"""Config validation: every check in one place, run before any work.

A wrong value stops the run with one `ConfigError` naming the field, the value
given and what is allowed, instead of a trace from deep inside JAX. Allowed
values come from `choices`, sizes (the smallest subnet and header a budget
must hold) from `sizes`; of the tiers, validation reads only the data
tier's class count and a checkpoint's config.json, inside the checks that
need them.
"""
from acme_jax import checkpoint_fit
from acme_jax import config_value
from acme_jax import choices
from acme_jax import memory
from acme_jax import sizes
from acme_jax.checks import (boolean, check, fraction, is_int, is_number,
                             is_positive, non_negative_int,
                             non_negative_number, one_of, optimizer_fields,
                             ordered, positive_int, positive_number,
                             positive_numbers, some_of)
from acme_jax.errors import ConfigError  # noqa: F401 (config_lib.ConfigError)
from acme_jax import fingerprint
from acme_jax.models import subnet as subnet_lib


# Where every caller has looked for them.
subset = fingerprint.subset
repeat_fingerprint = fingerprint.repeat_fingerprint


def _is_param_count(v) -> bool:
  # A parameter budget may pass int32 (an LLM's billions): float64 holds
  # it exactly below 2**53.
  return isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**53


def _multipliers(config, field, count: int, what: str):
  values = check(
      config, field,
      lambda v: len(v) > 0 and all(is_number(x) and 0 < x <= 1 for x in v),
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
  non_negative_int(config, f'{prefix}.epochs')
  optimizer_fields(config, prefix)
  if elastic:
    for name in ('lambda_logits', 'lambda_hidden'):
      non_negative_number(config, f'{prefix}.{name}')


def validate(config):
  """Raise `ConfigError` for the first invalid field; return the config."""
  check(config, 'seed',
        lambda v: isinstance(v, int) and not isinstance(v, bool) and
        0 <= v < 2**32,
        'must be a whole number in 0..4294967295')
  _validate_data_and_model(config)
  _validate_cloud(config)
  _validate_selection_and_system(config)
  _validate_header(config)
  _validate_aggregation(config)
  if 'federated' in config:
    _validate_federated(config)
  config_value.validate(config)
  one_of(config, 'engine.strategy', choices.STRATEGIES)
  check(config, 'engine.chunk', lambda v: is_int(v) and v >= 0,
        'must be a whole number in 0..2147483647 (0: all users at once)')
  _check_header_allowance(config)
  non_negative_int(config, 'resume.every_steps')
  memory.check(config)
  return config


def _validate_data_and_model(config):
  one_of(config, 'data.name', choices.DATASETS)
  image_size = positive_int(config, 'data.image_size')
  fraction(config, 'data.cloud_fraction')
  non_negative_int(config, 'data.source_size')
  # Checked whatever the source: a bad value in a section the run does not
  # read is still a typo.
  one_of(config, 'data.synthetic.like', choices.SYNTHETIC_LIKE)
  non_negative_int(config, 'data.synthetic.num_train')
  non_negative_int(config, 'data.synthetic.num_test')
  non_negative_number(config, 'data.synthetic.noise')
  fraction(config, 'data.validation_fraction')
  non_negative_int(config, 'data.max_examples_per_split')

  family = config.model.get('family', 'vit')
  check(config, 'model.family', lambda v: v in choices.MODEL_FAMILIES,
        'must be vit, bert or decoder')
  text = config.data.name in choices.TEXT_DATASETS
  if (family != 'vit') != text:
    raise ConfigError('model.family', family,
                      f'does not read data.name = {config.data.name!r}: '
                      f'bert and decoder read text sources, vit images')
  if family == 'vit':
    patch = positive_int(config, 'model.patch_size')
    if image_size % patch:
      raise ConfigError('data.image_size', image_size,
                        f'must be divisible by model.patch_size = {patch}')
  else:
    length = positive_int(config, 'data.text.max_length')
    positive_int(config, 'model.vocab_size')
    if family == 'bert':
      positive_int(config, 'model.type_vocab_size')
    else:
      _validate_decoder(config)
    positions = positive_int(config, 'model.max_positions')
    if length > positions:
      raise ConfigError('data.text.max_length', length,
                        f'must be at most model.max_positions = {positions}')
    non_negative_int(config, 'data.text.min_examples_per_class')
    if non_negative_int(config, 'data.text.max_examples_per_class'):
      ordered(config, 'data.text.min_examples_per_class',
              'data.text.max_examples_per_class')
    if not config.model.init_checkpoint and not config.data.text.tokenizer:
      raise ConfigError('data.text.tokenizer', '',
                        'text needs a tokenizer.json: give its path, or a '
                        'model.init_checkpoint that has one')
    from acme_jax import data as data_lib
    try:
      data_lib.check_tokenizer(config.data, config.model.vocab_size)
    except (ValueError, OSError) as e:
      raise ConfigError('data.text.tokenizer', config.data.text.tokenizer,
                        str(e)) from e
  hidden = positive_int(config, 'model.hidden_size')
  positive_int(config, 'model.num_layers')
  heads = positive_int(config, 'model.num_heads')
  if hidden % heads and not config.model.get('head_dim'):
    raise ConfigError('model.num_heads', heads,
                      f'must divide model.hidden_size = {hidden}')
  positive_int(config, 'model.mlp_dim')
  # Above ~1 the epsilon, not the variance, normalises unit-scale
  # activations: every subnet trains at chance.
  check(config, 'model.layer_norm_eps', lambda v: is_positive(v) and v < 1,
        'must be a finite number in (0, 1), e.g. 1e-6')
  check(config, 'model.dtype', lambda v: v in choices.DTYPES,
        'must be float32 or bfloat16')
  checkpoint_fit.validate(config)


def _validate_decoder(config):
  """A decoder's own fields: KV groups dividing the query heads, RoPE."""
  heads = positive_int(config, 'model.num_heads')
  groups = positive_int(config, 'model.num_kv_heads')
  if heads % groups:
    raise ConfigError('model.num_kv_heads', groups,
                      f'must divide model.num_heads = {heads}')
  non_negative_int(config, 'model.head_dim')
  head_dim = sizes.decoder_head_dim(config.model)
  if head_dim % 2:
    raise ConfigError('model.head_dim', config.model.head_dim,
                      f'resolves to {head_dim}: rotary embeddings rotate '
                      f'pairs, so it must be even')
  check(config, 'model.rope_theta', lambda v: is_number(v) and v > 1,
        'must be a finite number > 1 (the rotary base, 10000 in Llama 2)')
  boolean(config, 'model.tie_word_embeddings')
  if 'qkv_bias' in config.model:
    boolean(config, 'model.qkv_bias')
  # Beyond ~1e6 the weighted loss overflows float32 on a bad batch.
  check(config, 'cloud.lm_weight', lambda v: is_number(v) and 0 <= v <= 1e6,
        'must be a finite number in [0, 1e6]')
  if config.cloud.get('pretrain') is not None:
    non_negative_int(config, 'cloud.pretrain.blocks')
    _stage(config, 'cloud.pretrain', elastic=False)


def _validate_cloud(config):
  heads, layers = config.model.num_heads, config.model.num_layers
  if config.model.get('family', 'vit') == 'decoder':
    # Widths keep whole KV groups (at least one) and round(F * w) neurons.
    _multipliers(config, 'cloud.width_mults', config.model.mlp_dim, 'neurons')
  else:
    _multipliers(config, 'cloud.width_mults', heads, 'heads')
  depths = _multipliers(config, 'cloud.depth_mults', layers, 'layers')
  for d in depths:
    kept = subnet_lib.kept_layer_indices(layers, d)
    if kept[-1] >= layers:
      raise ConfigError('cloud.depth_mults', tuple(depths),
                        f'{d} keeps layer index {kept[-1]} of {layers}')
  positive_int(config, 'cloud.batch_size')
  positive_int(config, 'cloud.eval_batch_size')
  one_of(config, 'cloud.elastic_scheme', choices.ELASTIC_SCHEMES)
  boolean(config, 'cloud.remat')
  one_of(config, 'cloud.param_sharding', choices.PARAM_SHARDINGS)
  _validate_distributed(config)
  boolean(config, 'cloud.reorder')
  positive_int(config, 'cloud.importance_batches')
  _stage(config, 'cloud.teacher', elastic=False)
  _stage(config, 'cloud.width_stage', elastic=True)
  _stage(config, 'cloud.depth_stage', elastic=True)
  one_of(config, 'cloud.depth_stage.teacher', choices.STAGE2_TEACHERS)


def _validate_distributed(config):
  d = 'cloud.distributed'
  def address(v):
    host, _, port = v.rpartition(':')
    return not v or (bool(host) and port.isdigit() and 0 < int(port) < 65536)

  check(config, f'{d}.coordinator', lambda v: isinstance(v, str) and
        address(v), 'must be empty or host:port with a port in 1..65535')
  positive_int(config, f'{d}.num_processes')
  check(config, f'{d}.process_id', lambda v: is_int(v) and 0 <= v < (
      config.cloud.distributed.num_processes),
        'must be in [0, num_processes)')
  boolean(config, f'{d}.auto')
  check(config, f'{d}.cpu_collectives', lambda v: v in choices.CPU_COLLECTIVES,
        "must be '', gloo or mpi")


def check_devices(config, device_count: int):
  """The cloud's global batches split evenly over the mesh's devices."""
  for field in ('batch_size', 'eval_batch_size'):
    value = config.cloud[field]
    if value % device_count:
      raise ConfigError(f'cloud.{field}', value,
                        f'must be a multiple of the {device_count} devices '
                        f'it is split over')


def _validate_header(config):
  # A header search of 0 epochs would pick an untrained controller's
  # sample: refused rather than given a meaning.
  for name in ('num_channels', 'num_nodes', 'batch_size', 'controller_hidden',
               'num_final_archs', 'lr_period', 'lr_period_mult',
               'search_epochs'):
    positive_int(config, f'header.{name}')
  for name in ('num_layers', 'finetune_epochs',
               'controller_steps_per_epoch'):
    non_negative_int(config, f'header.{name}')
  for name in ('lr_max', 'lr_min', 'temperature', 'tanh_constant',
               'op_tanh_reduce', 'controller_lr', 'reward_scale'):
    positive_number(config, f'header.{name}')
  for name in ('weight_decay', 'entropy_weight', 'grad_clip'):
    non_negative_number(config, f'header.{name}')
  ordered(config, 'header.lr_min', 'header.lr_max')
  positive_numbers(config, 'header.finetune_lrs')
  fraction(config, 'header.momentum', low_open=False)
  fraction(config, 'header.dropout_rate', low_open=False)
  fraction(config, 'header.baseline_decay', low_open=False)
  one_of(config, 'header.derive', choices.DERIVES)
  check(config, 'header.final_weights',
        lambda v: v in choices.FINAL_WEIGHTS, 'must be shared or scratch')
  one_of(config, 'header.features_from', choices.FEATURE_SOURCES)
  one_of(config, 'header.final_schedule', choices.FINAL_SCHEDULES)

  some_of(config, 'baselines.kinds', choices.HEAD_KINDS)
  positive_numbers(config, 'baselines.learning_rates')
  for field in ('baselines.depth_fractions', 'baselines.ablation_depths'):
    check(config, field,
          lambda v: len(v) > 0 and all(
              is_number(x) and 0 < x <= 1 and
              round(x * config.model.num_layers) >= 1 for x in v),
          'must be a non-empty list of numbers in (0, 1] that each keep at '
          'least one layer')
  positive_int(config, 'baselines.repeats')
  check(config, 'baselines.train_sizes',
        lambda v: len(v) > 0 and all(is_int(x) and x > 0 for x in v),
        'must be a non-empty list of positive integers')
  some_of(config, 'baselines.search_budgets', choices.SEARCH_BUDGETS)


def _validate_aggregation(config):
  a = 'aggregation'
  non_negative_int(config, f'{a}.rounds')
  fraction(config, f'{a}.prune_ratio', low_open=False)
  non_negative_int(config, f'{a}.local_epochs')
  non_negative_int(config, f'{a}.finetune_epochs')
  one_of(config, f'{a}.signature', choices.SIGNATURE_KINDS)
  one_of(config, f'{a}.taylor', choices.TAYLOR)
  one_of(config, f'{a}.reference_backbone', choices.REFERENCE_BACKBONES)
  one_of(config, f'{a}.js_variant', choices.JS_VARIANTS)
  positive_numbers(config, f'{a}.temperatures')
  positive_int(config, f'{a}.signature_samples')
  positive_number(config, f'{a}.temperature')
  check(config, f'{a}.self_weight', lambda v: is_number(v) and v < 1,
        'must be a finite number < 1 (negative = no override)')
  one_of(config, f'{a}.mode', choices.MODES)
  some_of(config, f'{a}.modes', choices.MODES)
  some_of(config, f'{a}.setups', choices.PARTITIONS)
  fraction(config, f'{a}.fraction_per_class', high_open=False)
  positive_int(config, f'{a}.repeats')
  check(config, f'{a}.test_on', lambda v: v in choices.TEST_ON,
        'must be local or class_matched')
  one_of(config, f'{a}.optimizer', choices.ROUND_OPTIMIZERS)
  positive_number(config, f'{a}.lr')
  fraction(config, f'{a}.momentum', low_open=False, high_open=True)
  positive_int(config, f'{a}.batch_size')
  one_of(config, f'{a}.prune_set', choices.PRUNE_SETS)
  fraction(config, f'{a}.criterion_momentum', low_open=False)
  boolean(config, f'{a}.finetune_last')


def _validate_federated(config):
  f = 'federated'
  some_of(config, f'{f}.methods', choices.FEDERATED_METHODS)
  some_of(config, f'{f}.setups', choices.PARTITIONS)
  for name in ('rounds', 'local_epochs', 'cloud_every', 'batch_size',
               'repeats'):
    positive_int(config, f'{f}.{name}')
  non_negative_int(config, f'{f}.finetune_epochs')
  positive_numbers(config, f'{f}.lrs')
  fraction(config, f'{f}.momentum', low_open=False)
  non_negative_number(config, f'{f}.weight_decay')
  fraction(config, f'{f}.kd_weight', low_open=False, high_open=False)
  positive_number(config, f'{f}.kd_temperature')


def _check_header_allowance(config):
  from acme_jax import data as data_lib
  allowance = config.system.header_allowance
  cells = sizes.max_header_cells(config)
  smallest = sizes.smallest_header(config, cells,
                                   data_lib.num_classes(config.data))
  if allowance < smallest:
    raise ConfigError(
        'system.header_allowance', allowance,
        f'must be at least the smallest header ({smallest} parameters: pools '
        f'only, {cells} cells, {config.header.num_channels} channels); raise '
        f'it or lower header.num_channels')


def _validate_selection_and_system(config):
  one_of(config, 'selection.cost_model', choices.COST_MODELS)
  check(config, 'selection.grid_size', lambda v: is_int(v) and v >= 2,
        'must be an integer >= 2')
  positive_int(config, 'selection.cells')
  non_negative_number(config, 'selection.sigma')
  fraction(config, 'selection.size_constraint', high_open=False)
  check(config, 'selection.front', lambda v: v in choices.FRONTS,
        'must be pfg or non_dominated')
  check(config, 'selection.edge_accuracy',
        lambda v: v in choices.EDGE_ACCURACY, 'must be measured or predicted')
  boolean(config, 'selection.baselines_realisable_only')

  edges = positive_int(config, 'system.num_edges')
  check(config, 'system.devices_per_edge',
        lambda v: len(v) in (1, edges) and all(is_int(x) and x > 0 for x in v),
        f'must be one positive count, or one per edge ({edges})')
  num_devices = sizes.num_devices(config)
  allowance = non_negative_int(config, 'system.header_allowance')
  check(config, 'system.budget_draw', lambda v: v in choices.BUDGET_DRAWS,
        'must be linspace or uniform')
  budgets = check(config, 'system.budgets',
                  lambda v: len(v) in (0, num_devices) and all(
                      _is_param_count(b) and b > 0 for b in v),
                  f'must be empty (drawn) or {num_devices} positive integers')
  if budgets:
    smallest = sizes.smallest_backbone(config) + allowance
    low = min(budgets)
    if low < smallest:
      raise ConfigError(
          'system.budgets', tuple(budgets),
          f'budget {low} is below the smallest subnet plus header allowance '
          f'({smallest} parameters); every budget must be >= {smallest}')
  one_of(config, 'system.partition', choices.PARTITIONS)
  positive_number(config, 'system.dirichlet_alpha')
  positive_int(config, 'system.shards_per_device')
  fraction(config, 'system.fraction_per_class', high_open=False)
  one_of(config, 'system.category_sampling', choices.CATEGORY_SAMPLING)
  fraction(config, 'system.local_val_fraction', low_open=False)
  fraction(config, 'system.local_test_fraction', low_open=False)
  if (config.system.local_val_fraction + config.system.local_test_fraction
      >= 1):
    raise ConfigError('system.local_test_fraction',
                      config.system.local_test_fraction,
                      'local_val_fraction + local_test_fraction must be < 1')
  for name, value in config.system.profile.items():
    if not (is_number(value) and value >= 0):
      raise ConfigError(f'system.profile.{name}', value,
                        'must be a finite number >= 0')
  if 'hardware' in config.system:
    config_value.validate_hardware(config, num_devices)
