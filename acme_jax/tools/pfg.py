"""Pareto-front selection from a measured grid, as one JSON object (docs/method.md 4).

For researchers: feed the cloud's measured (depth, width, accuracy) table, get
the PFG pick, the five baselines, their scores and the front.

  python -m acme_jax.tools.pfg --measured=grid.csv --size_constraint=0.8 \
      --cost_model=paper --grid=20 --cells=10
  python -m acme_jax.tools.pfg --measured=grid.csv --cost_model=exact \
      --config=configs/default.py
  python -m acme_jax.tools.pfg --measured=grid.csv --cost_model=exact \
      --arch='{"num_layers": 4, "num_heads": 4, "hidden_size": 64,
               "mlp_dim": 256, "patch_size": 4, "image_size": 16,
               "channels": 1, "num_classes": 10}'

The CSV needs columns depth_mult, width_mult, accuracy (others are ignored).
All sizes, latencies and energies in the output are min-max normalised over the
fine grid; mer / eer are null where the normalised cost is 0. Every flag is
checked before any work with the checks the main job applies to the config
fields it stands for (--grid: selection.grid_size, --profile:
system.profile, --arch: model.*, --config: the whole config); bad input
prints one line starting `error: ` on stderr and exits with status 2.
"""
import csv
import dataclasses
import importlib.util
import json
import math
import sys
from typing import Dict, List

import numpy as np

from acme_jax import checks
from acme_jax import choices
from acme_jax import errors
from acme_jax.selection import costs
from acme_jax.selection import pareto
from acme_jax.selection import predictor
from acme_jax.tools import flag_checks

REQUIRED_COLUMNS = ('depth_mult', 'width_mult', 'accuracy')
# (channels, classes) of the datasets configs name, for configs without them.
KNOWN_DATASETS = {'digits': (1, 10), 'cifar10': (3, 10), 'cifar100': (3, 100),
                  'cars196': (3, 196)}
ARCH_FIELDS = ('num_layers', 'num_heads', 'hidden_size', 'mlp_dim',
               'patch_size', 'channels', 'num_classes')


class InputError(ValueError):
  """Bad user input: reported as one line, never a traceback."""


def _parser() -> errors.OneLineParser:
  parser = errors.OneLineParser(prog='python -m acme_jax.tools.pfg',
                                description=__doc__.split('\n')[0])
  # --config first, as every entry point's --help lists it.
  parser.add_argument('--config', default=None,
                      help='exact: ml_collections config file (get_config())')
  parser.add_argument('--measured', required=True,
                      help='CSV with depth_mult,width_mult,accuracy')
  parser.add_argument('--size_constraint', type=float, default=0.8,
                      help='normalised size budget S in [0, 1]')
  parser.add_argument('--cost_model', choices=choices.COST_MODELS,
                      default='paper')
  parser.add_argument('--grid', type=int, default=20,
                      help='G: the fine grid is G x G ratios in [0, 1]')
  parser.add_argument('--cells', type=int, default=10, help='K cells per axis')
  parser.add_argument('--sigma', type=float, default=1e-6)
  parser.add_argument('--seed', type=int, default=0,
                      help='seed of the random baseline')
  parser.add_argument('--arch', default=None,
                      help='exact: JSON with ' + ', '.join(ARCH_FIELDS) +
                      ' and image_size or num_tokens')
  parser.add_argument('--channels', type=int, default=None,
                      help='exact with --config: overrides the dataset table')
  parser.add_argument('--num_classes', type=int, default=None,
                      help='exact with --config: overrides the dataset table')
  parser.add_argument('--profile', default=None,
                      help='JSON of DeviceProfile fields (default: prototype)')
  return parser


def read_measured(path: str):
  """(depth, width, accuracy) float arrays from the CSV, validated."""
  try:
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
      header = rows[0].keys() if rows else []
  except OSError as e:
    raise InputError(f'cannot read --measured file {path!r}: '
                     f'{e.strerror or e}') from None
  except (csv.Error, UnicodeDecodeError) as e:
    raise InputError(f'{path}: not a readable CSV ({e})') from None
  if not rows:
    raise InputError(f'{path}: no data rows (need a header '
                     f'{",".join(REQUIRED_COLUMNS)} and >= 6 rows)')
  missing = [c for c in REQUIRED_COLUMNS if c not in header]
  if missing:
    raise InputError(f'{path}: missing column(s) {", ".join(missing)}; '
                     f'found {", ".join(k for k in header if k)}')
  columns = {c: [] for c in REQUIRED_COLUMNS}
  for line, row in enumerate(rows, start=2):
    for column in REQUIRED_COLUMNS:
      text = row[column]
      try:
        value = float(text)
      except (TypeError, ValueError):
        raise InputError(f'{path}:{line}: {column} is not a number: '
                         f'{text!r}') from None
      if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InputError(f'{path}:{line}: {column}={text} is outside [0, 1]')
      columns[column].append(value)
  return tuple(np.array(columns[c]) for c in REQUIRED_COLUMNS)


def _load_config(path: str):
  try:
    spec = importlib.util.spec_from_file_location('pfg_config', path)
    if spec is None or spec.loader is None:
      raise ImportError('not a Python file')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception as e:  # any failure in user code is an input error
    raise InputError(f'cannot load --config {path!r}: '
                     f'{type(e).__name__}: {e}') from None
  # The main job's whole validation (it imports JAX: only for --config).
  from acme_jax import config as config_lib
  try:
    return config_lib.validate(config)
  except (errors.ConfigError, AttributeError, KeyError, TypeError) as e:
    raise InputError(f'--config={path} is not a valid config: {e}') from None


def architecture_from_config(config, channels=None,
                             num_classes=None) -> costs.ViTArchitecture:
  """ViT architecture from `config.model` and `config.data`."""
  data = config.data
  known = KNOWN_DATASETS.get(data.get('name', ''), (None, None))
  channels = channels or data.get('channels', None) or known[0]
  num_classes = num_classes or data.get('num_classes', None) or known[1]
  if channels is None or num_classes is None:
    raise InputError(f'config.data (name {data.get("name", "")!r}) gives no '
                     'channels / num_classes; pass --channels and '
                     '--num_classes')
  model = config.model
  try:
    return costs.ViTArchitecture.for_images(
        image_size=data.image_size, patch_size=model.patch_size,
        num_layers=model.num_layers, num_heads=model.num_heads,
        hidden_size=model.hidden_size, mlp_dim=model.mlp_dim,
        channels=channels, num_classes=num_classes)
  except (AttributeError, KeyError) as e:
    raise InputError(f'config lacks a model/data field: {e}') from None
  except TypeError as e:
    raise InputError(f'config model/data field of the wrong type: {e}') \
        from None


def architecture_from_json(text: str) -> costs.ViTArchitecture:
  try:
    fields = json.loads(text)
  except json.JSONDecodeError as e:
    raise InputError(f'--arch is not valid JSON: {e}') from None
  if not isinstance(fields, dict):
    raise InputError('--arch must be a JSON object')
  missing = [f for f in ARCH_FIELDS if f not in fields]
  if 'num_tokens' not in fields and 'image_size' not in fields:
    missing.append('image_size (or num_tokens)')
  if missing:
    raise InputError(f'--arch lacks {", ".join(missing)}')
  unknown = set(fields) - set(ARCH_FIELDS) - {'num_tokens', 'image_size'}
  if unknown:
    raise InputError('--arch has unknown field(s) '
                     + ', '.join(sorted(unknown)))
  check_arch(fields)
  if 'num_tokens' in fields:
    fields.pop('image_size', None)
    return costs.ViTArchitecture(**fields)
  return costs.ViTArchitecture.for_images(**fields)


# --arch's fields and the config fields whose checks they take.
ARCH_CHECKS = {
    'num_layers': 'model.num_layers', 'num_heads': 'model.num_heads',
    'hidden_size': 'model.hidden_size', 'mlp_dim': 'model.mlp_dim',
    'patch_size': 'model.patch_size', 'image_size': 'data.image_size',
    'num_tokens': 'the token count', 'channels': 'the channels',
    'num_classes': 'the class count'}


def check_arch(fields: dict):
  """--arch's sizes with the main job's model checks: positive whole
  numbers, heads dividing the width, the patch dividing the image."""
  for name, field in ARCH_CHECKS.items():
    if name in fields:
      try:
        checks.positive_int(fields, name)
      except errors.ConfigError as e:
        raise InputError(f'--arch {name} = {fields[name]!r} is invalid: '
                         f'{e.allowed} (as {field})') from None
  if fields['hidden_size'] % fields['num_heads']:
    raise InputError(f'--arch num_heads = {fields["num_heads"]} must divide '
                     f'hidden_size = {fields["hidden_size"]} (as '
                     f'model.num_heads)')
  if 'image_size' in fields and fields['image_size'] % fields['patch_size']:
    raise InputError(f'--arch image_size = {fields["image_size"]} must be '
                     f'divisible by patch_size = {fields["patch_size"]} (as '
                     f'data.image_size)')


def _profile(text) -> costs.DeviceProfile:
  """--profile's DeviceProfile; each entry checked as the main job checks
  config.system.profile's."""
  if text is None:
    return costs.DeviceProfile()
  names = [f.name for f in dataclasses.fields(costs.DeviceProfile)]
  try:
    fields = json.loads(text)
  except ValueError as e:
    raise InputError(f'--profile is not valid JSON ({e})') from None
  if not isinstance(fields, dict):
    raise InputError(f'--profile must be a JSON object of some of '
                     f'{", ".join(names)}')
  unknown = sorted(set(fields) - set(names))
  if unknown:
    raise InputError(f'--profile has unknown field(s) {", ".join(unknown)}; '
                     f'it takes {", ".join(names)}')
  for name, value in fields.items():
    try:
      checks.non_negative_number(fields, name)
    except errors.ConfigError as e:
      raise InputError(f'--profile {name} = {value!r} is invalid: '
                       f'{e.allowed} (as config.system.profile.{name})') \
          from None
  return costs.DeviceProfile(**{k: float(v) for k, v in fields.items()})


def _finite_or_none(value):
  value = float(value)
  return value if math.isfinite(value) else None


def _point(grid: pareto.Candidates, score, index: int) -> Dict:
  return {'width_mult': float(grid.width_mult[index]),
          'depth_mult': float(grid.depth_mult[index]),
          'accuracy': float(grid.accuracy[index]),
          'size': float(grid.size[index]),
          'latency': float(grid.latency[index]),
          'energy': float(grid.energy[index]),
          'tradeoff': _finite_or_none(score['tradeoff'][index]),
          'mer': _finite_or_none(score['mer'][index]),
          'eer': _finite_or_none(score['eer'][index])}


def run(args) -> Dict:
  """The whole selection; returns the JSON-ready result."""
  pareto.check_size_constraint(args.size_constraint)
  if args.cost_model == 'exact':
    if (args.config is None) == (args.arch is None):
      raise InputError('--cost_model=exact needs exactly one of --config or '
                       '--arch')
    if args.config is not None:
      arch = architecture_from_config(_load_config(args.config), args.channels,
                                      args.num_classes)
    else:
      arch = architecture_from_json(args.arch)
  else:
    arch = None
  cost_model = costs.make_cost_model(args.cost_model, _profile(args.profile),
                                     arch)
  depth_measured, width_measured, acc_measured = read_measured(args.measured)
  surface = predictor.fit(depth_measured, width_measured, acc_measured)
  depth, width, accuracy = predictor.predict_grid(surface, args.grid)
  raw = cost_model(depth, width)
  grid = pareto.candidates(depth, width, accuracy, raw.size, raw.latency,
                           raw.energy)
  selection = pareto.select_all(grid, args.size_constraint, args.cells,
                                args.sigma, args.seed)
  score = pareto.scores(grid.accuracy, grid.size, grid.energy)
  result = {name: _point(grid, score, index)
            for name, index in selection.picks.items()}
  result['tradeoff_gain_vs_highest_accuracy'] = pareto.relative_gain(
      result['pfg']['tradeoff'], result['highest_accuracy']['tradeoff'])
  result['front'] = [_point(grid, score, i) for i in selection.front]
  return result


MAX_GRID = 1000  # 1e6 candidates, ~0.3 GB; 1e5 would ask for ~75 GiB
EXACT_ONLY = ('config', 'arch', 'channels', 'num_classes')


def check_args(args):
  """Every flag checked before any work, with the checks the main job
  applies to the config fields they stand for (`config.validate`)."""
  if args.grid > MAX_GRID:
    raise InputError(f'--grid={args.grid} must be in [2, {MAX_GRID}] (the '
                     f'fine grid has grid^2 candidates)')
  flag_checks.flag(checks.check, 'grid', args.grid,  # selection.grid_size
                   lambda v: checks.is_int(v) and v >= 2,
                   'must be an integer >= 2')
  flag_checks.flag(checks.positive_int, 'cells', args.cells)
  flag_checks.flag(checks.non_negative_number, 'sigma', args.sigma)
  flag_checks.flag(checks.fraction, 'size_constraint', args.size_constraint,
                   True, False)
  flag_checks.flag(checks.check, 'seed', args.seed,  # config.seed
                   lambda v: 0 <= v < 2**32,
                   'must be a whole number in 0..4294967295')
  for name in ('channels', 'num_classes'):
    if getattr(args, name) is not None:
      flag_checks.flag(checks.positive_int, name, getattr(args, name))
  if args.cost_model != 'exact':
    given = [f'--{n}' for n in EXACT_ONLY if getattr(args, n) is not None]
    if given:
      raise InputError(f'{", ".join(given)} only with --cost_model=exact '
                       f'(the paper model reads no architecture)')
  if args.channels is not None or args.num_classes is not None:
    if args.config is None:
      raise InputError('--channels and --num_classes are read with --config '
                       '(--arch holds its own)')


def main(argv: List[str] = None) -> int:
  args = _parser().parse_args(argv)
  try:
    check_args(args)
    result = run(args)
  except (ValueError, errors.UserError) as e:
    # InputError, the flag checks and the library's validation errors.
    errors.report_and_exit(e)
  print(json.dumps(result, indent=2, allow_nan=False))
  return 0


if __name__ == '__main__':
  sys.exit(main())
