"""What `readme_tables` checks before it publishes: a results file holds
every section its blocks publish, each of its JSON type and finite.

A block publishes the sections it always shows and the optional tables its
committed snapshot holds now, so a results file without one of them (the
main job's own results.json before `make tables` adds the comparison
tables) is refused rather than deleting that table from the README.
"""
import json
import math
import pathlib

from acme_jax import errors

ROOT = pathlib.Path(__file__).resolve().parents[2]

# What each section of a results.json is and which command adds it to a
# run's workdir (the `make tables` steps after the main job).
RUN = {'cloud': dict, 'devices': list, 'ledger': dict}
TABLES = {'headers': dict, 'aggregation': dict, 'header_budget': dict,
           'engine_equivalence': dict, 'baselines': dict,
           'header_ablation': dict, 'personal_lm': dict,
           'supernet_value': dict}
NETWORKED = {'devices': list, 'edges': dict, 'bytes': dict}
NETWORKED_EXTRAS = {'reply_seconds': dict, 'impostors': list,
                     'restarts': (dict, type(None)), 'scaling': list}
LATENCY = {'measured': list, 'predictor': dict}
MAKERS = {name: f'python -m experiments.{name}' for name in TABLES}
# What a block's --results is, where it is not a run's results.json.
SOURCES = {'networked': 'the networked.json experiments.networked writes',
           **{f'latency_{family}': 'the latency.json benchmarks.latency '
              'writes' for family in ('vit', 'text', 'decoder')}}
JSON_TYPES = {dict: 'an object', list: 'a list', str: 'a string',
              int: 'a number', float: 'a number', bool: 'a boolean',
              type(None): 'null'}


def json_type(value) -> str:
  return JSON_TYPES.get(type(value), type(value).__name__)


def rel(path: pathlib.Path) -> str:
  try:
    return str(pathlib.Path(path).relative_to(ROOT))
  except ValueError:
    return str(path)


def read_json(path: str, flag: str, kind=dict,
              what: str = 'a run\'s results.json'):
  """The JSON value of --flag=path, of `kind`; anything else one line."""
  file = pathlib.Path(path)
  if file.is_dir():
    raise errors.UserError(f'--{flag}={path} is a directory; give {what}')
  if not file.is_file():
    raise errors.UserError(f'--{flag}={path}: no such file; give {what}')
  try:
    value = json.loads(file.read_text())
  except (OSError, UnicodeDecodeError) as e:
    raise errors.UserError(f'cannot read --{flag}={path}: {e}') from None
  except ValueError as e:
    raise errors.UserError(f'--{flag}={path} is not valid JSON ({e})') from None
  if not isinstance(value, kind):
    raise errors.UserError(f'--{flag}={path} holds {json_type(value)}, not '
                           f'{json_type(kind())} as {what} does')
  return value


def published(block) -> dict:
  """{section: JSON type} that `block` publishes now: those it always shows
  and the optional ones its committed snapshot holds. New results must
  have them all: publishing must never delete a table."""
  try:
    snapshot = json.loads(block.snapshot.read_text())
  except (OSError, ValueError):
    snapshot = {}
  held = snapshot if isinstance(snapshot, dict) else {}
  return {**block.required,
          **{k: t for k, t in block.optional.items() if k in held}}


def non_finite(value, where: str):
  """The dotted place of the first NaN or infinity in `value`, or None
  (json reads NaN and Infinity; a table must not show them)."""
  if isinstance(value, float) and not math.isfinite(value):
    return where
  items = (value.items() if isinstance(value, dict) else
           enumerate(value) if isinstance(value, list) else ())
  for key, item in items:
    found = non_finite(item, f'{where}.{key}')
    if found:
      return found
  return None


def check_results(results: dict, blocks: list, path: str):
  """Every section the blocks publish is there, of its type and finite."""
  for block in blocks:
    run = [f'{k} is missing' if k not in results else
           f'{k} is {json_type(results[k])}'
           for k, kind in block.required.items()
           if not isinstance(results.get(k), kind)]
    if run:
      raise errors.UserError(
          f'--results={path} is not the results of a run the {block.name} '
          f'block shows ({", ".join(run)}); give '
          f'{SOURCES.get(block.name, "the results.json its job writes")}')
  wanted = {}
  for block in blocks:
    for name, kind in published(block).items():
      wanted.setdefault(name, (kind, block))
  missing = [k for k in wanted if k not in results]
  if missing:
    block = wanted[missing[0]][1]
    them = 'it' if len(missing) == 1 else 'them'
    steps = [MAKERS[k] for k in missing if k in MAKERS]
    how = (f'add {them} to the run first ({"; ".join(steps)}, each with '
           f'the run\'s --config and --workdir; make tables runs them all)'
           if steps else 'give --scaling=<a benchmarks.networked '
           'results.json> beside the run')
    raise errors.UserError(
        f'--results={path} lacks {", ".join(missing)}, which the '
        f'{block.name} block of {rel(block.file)} publishes now '
        f'({rel(block.snapshot)} has {them}), so publishing would delete '
        f'a table; {how}')
  for name, (kind, block) in wanted.items():
    if not isinstance(results[name], kind):
      raise errors.UserError(
          f'--results={path}: its {name} is {json_type(results[name])}, '
          f'not what the {block.name} block shows; give '
          f'{SOURCES.get(block.name, "the results.json its job writes")}')
    bad = non_finite(results[name], name)
    if bad:
      raise errors.UserError(
          f'--results={path} holds a non-finite number at {bad}; a table '
          f'would show it: rerun what wrote it instead of publishing')
