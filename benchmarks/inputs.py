"""Every benchmark's flags, checked before any work with the checks the main
job applies to the same values: each failure one line naming the flag
(`errors.boundary`: exit 2).

A benchmark's sizes stand for config fields (a model's layers, heads and
width, a batch, a header's channels): they are set in a config and checked
by the main job's whole validation (`config.validate`, its memory estimates
included, via `flag_checks.validated`); counts without a config field
(timed repetitions, steps) take the main job's count check. No absl flags
here: the tests call these with plain values.
"""
from acme_jax import checks
from acme_jax import choices
from acme_jax import errors
from acme_jax.tools import flag_checks
from acme_jax.tools import output_file

# The (depth, width) multipliers of the 4x4 grid the cloud benchmarks time.
GRID = (1.0, 0.75, 0.5, 0.25)
STEPS = ('teacher', 'elastic')
FLOAT = 4


def _model_config(base, fields: dict):
  """`base` with `fields` (config field -> (flag, value)) set, the grid
  at GRID. Only the sections the flags stand for are the benchmark's: the
  header's allowance is opened so a wide model is not refused for the
  header it would leave no room for (no header is trained here)."""
  for field, (_, value) in fields.items():
    section, name = field.rsplit('.', 1)
    checks.get(base, section)[name] = value
  base.cloud.width_mults = base.cloud.depth_mults = GRID
  base.header.num_channels = 1
  base.system.header_allowance = checks.MAX_INT
  return base


# benchmarks.elastic's flags, as the config fields they set.
ELASTIC_FIELDS = {'layers': 'model.num_layers', 'hidden': 'model.hidden_size',
                  'heads': 'model.num_heads', 'mlp': 'model.mlp_dim',
                  'image': 'data.image_size', 'patch': 'model.patch_size',
                  'batch': 'cloud.batch_size', 'dtype': 'model.dtype'}


def elastic(flags: dict):
  """benchmarks.elastic: a ViT of these sizes (`flags`: each of
  ELASTIC_FIELDS' flags and `reps`) trained on the 4x4 grid; with
  `family` 'decoder', `elastic_decoder`'s checks."""
  if flags.get('family') == 'decoder':
    return elastic_decoder(flags)
  from configs import default
  flag_checks.positive_ints({'reps': flags['reps']})
  fields = {field: (flag, flags[flag])
            for flag, field in ELASTIC_FIELDS.items()}
  config = _model_config(default.get_config(), fields)
  # Its elastic step keeps every layer's activations; it evaluates nothing.
  config.cloud.remat, config.cloud.eval_batch_size = False, 1
  flag_checks.validated(config, fields, 'benchmarks.elastic')


# The decoder's: its own sizes in place of the image's.
DECODER_FIELDS = dict(
    {k: v for k, v in ELASTIC_FIELDS.items() if k not in ('image', 'patch')},
    kv_heads='model.num_kv_heads', vocab='model.vocab_size',
    seq='data.text.max_length')


def elastic_decoder(flags: dict):
  """benchmarks.elastic --family=decoder: configs/decoder_wordnet.py's
  model at these sizes (`flags`: DECODER_FIELDS' flags and `reps`)."""
  from acme_jax.data import bpe
  from configs import decoder_wordnet
  flag_checks.positive_ints({'reps': flags['reps']})
  if flags['vocab'] < bpe.MIN_VOCAB_SIZE:
    raise errors.UserError(f'--vocab={flags["vocab"]} is invalid: a byte-'
                           f'level vocabulary has at least '
                           f'{bpe.MIN_VOCAB_SIZE} tokens')
  fields = {field: (flag, flags[flag])
            for flag, field in DECODER_FIELDS.items()}
  config = _model_config(decoder_wordnet.get_config(), fields)
  # Random ids: the config's tokenizer is sized to the vocabulary flag.
  config.data.text.tokenizer = f'gcide-bpe:{flags["vocab"]}'
  config.model.max_positions = max(config.model.max_positions, flags['seq'])
  config.cloud.remat, config.cloud.eval_batch_size = False, 1
  flag_checks.validated(config, fields, 'benchmarks.elastic')


def cloud(batch, reps, dtypes, steps, scheme, remat, peak_tflops,
          device_count: int):
  """benchmarks.cloud: ViT-B/16 at 224x224 (configs/cifar100_vit_b16)."""
  from configs import cifar100_vit_b16
  flag_checks.positive_ints({'batch': batch, 'reps': reps})
  flag_checks.flag(checks.some_of, 'dtypes', list(dtypes), choices.DTYPES)
  flag_checks.flag(checks.some_of, 'steps', list(steps), STEPS)
  flag_checks.flag(checks.non_negative_number, 'peak_tflops', peak_tflops)
  if batch % device_count:
    raise errors.UserError(f'--batch={batch} is invalid: it must be a '
                           f'multiple of the {device_count} devices it is '
                           f'split over')
  for dtype in dtypes:
    fields = {'cloud.batch_size': ('batch', batch),
              'cloud.elastic_scheme': ('scheme', scheme),
              'cloud.remat': ('remat', remat),
              'model.dtype': ('dtypes', dtype)}
    config = _model_config(cifar100_vit_b16.get_config(), fields)
    flag_checks.validated(config, fields, 'benchmarks.cloud')


def config(config, what: str):
  """benchmarks.supernet and .header: their --config as the main job
  checks it; the benchmarks build a ViT."""
  from acme_jax import config as config_lib
  config_lib.validate(config)
  if config.model.get('family', 'vit') != 'vit':
    raise errors.UserError(f'{what} times a ViT; --config has '
                           f'model.family = {config.model.family!r}')
  return config


def latency(config):
  """benchmarks.latency: its --config as the main job checks it (every
  family: the latency section, the grid, the header)."""
  from acme_jax import config as config_lib
  return config_lib.validate(config)


def header(config_, steps, samples):
  """benchmarks.header, before the data is loaded."""
  config(config_, 'benchmarks.header')
  flag_checks.positive_ints({'steps': steps, 'samples': samples})
  batch = config_.header.batch_size
  if samples < batch:
    # Each step draws a batch of distinct samples.
    raise errors.UserError(f'--samples={samples} is invalid: it must be at '
                           f'least config.header.batch_size = {batch}')


def header_samples(samples, available: int, dataset: str):
  """benchmarks.header, once the training split's size is known."""
  if samples > available:
    raise errors.UserError(f'--samples={samples} is invalid: the {dataset} '
                           f'training split has {available}')


def batched_choices(devices, channels, nodes, layers, reps):
  """benchmarks.batched_choices: `devices` headers stacked."""
  given = {'devices': devices, 'channels': channels, 'nodes': nodes,
           'layers': layers, 'reps': reps}
  flag_checks.positive_ints(given)
  # memory.estimates' header terms (config.header.num_nodes, .batch_size):
  # every (cell, node, branch, input) op's weights with gradient and a
  # stacked copy, and a batch of 32 on 16 positions, per device.
  weights = layers * nodes * 2 * (nodes + 2) * 3 * 2 * channels**2 * FLOAT * 3
  activations = 32 * 16 * channels * FLOAT * layers * nodes * 2 * 6
  flag_checks.fits_memory(
      f'--devices={devices} --channels={channels} --nodes={nodes} '
      f'--layers={layers}',
      f'{devices} stacked headers of {layers} cells x {nodes} nodes x '
      f'{channels} channels', devices * (weights + activations))


def engine(devices, hidden, reps, feature_size: int, batch: int):
  """benchmarks.engine: `devices` lists device counts."""
  for count in devices:
    flag_checks.positive_ints({'devices': count})
  flag_checks.positive_ints({'hidden': hidden, 'reps': reps})
  # Every device's 4-8 batches of features, its MLP with momentum and the
  # stacked strategies' copies.
  largest = max(devices)
  per_device = (8 * batch * feature_size + 3 * 2 *
                (feature_size * hidden + hidden * 10)) * FLOAT
  flag_checks.fits_memory(f'--devices={largest} --hidden={hidden}',
                          f'{largest} devices with their batches and MLPs',
                          largest * per_device)


def devices(users, strategies, chunk):
  """benchmarks.devices: configs/many_users.py at each user count."""
  from configs import many_users
  flag_checks.flag(checks.non_negative_int, 'chunk', chunk)
  for count in users:
    flag_checks.positive_ints({'users': count})
    for strategy in strategies:
      base = many_users.get_config(str(count))
      base.engine.strategy, base.engine.chunk = strategy, chunk
      flag_checks.validated(base, {
          'engine.strategy': ('strategies', strategy),
          'engine.chunk': ('chunk', chunk),
          'system.devices_per_edge': ('users', count),
          'data.synthetic.num_train': ('users', count)},
                            'configs/many_users.py')


def networked(configs: dict, rounds, in_flight, min_available_gb,
              run_timeout_s, workdir):
  """benchmarks.networked: `configs` maps (device count, mode) to the run's
  config (its `bench_config`), each checked as experiments.networked
  checks its config."""
  from acme_jax.networked import settings
  flag_checks.positive_ints({'rounds': rounds})
  flag_checks.flag(checks.non_negative_int, 'in_flight', in_flight)
  flag_checks.flag(checks.non_negative_number, 'min_available_gb',
                   min_available_gb)
  flag_checks.flag(checks.positive_number, 'run_timeout_s', run_timeout_s)
  for (count, mode), config_ in configs.items():
    fields = {'aggregation.rounds': ('rounds', rounds),
              'network.max_in_flight': ('in_flight', in_flight),
              'network.run_timeout_s': ('run_timeout_s', run_timeout_s),
              'system.devices_per_edge': ('devices', count),
              'network.warm_workers': ('modes', mode)}
    flag_checks.validated(config_, fields, 'benchmarks.networked',
                          also=(settings.validate,))
  blocked = errors.file_in_the_way(workdir)
  if blocked is not None:
    raise errors.UserError(f'--workdir={workdir} is invalid: {blocked} is a '
                           f'file; give a directory')
  existing = next(p for p in [workdir, *workdir.parents] if p.exists())
  problem = output_file.unwritable(existing)
  if problem:
    raise errors.UserError(f'--workdir={workdir} is invalid: {existing} is '
                           f'not writable ({problem})')
