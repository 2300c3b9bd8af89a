"""The latency table: what `benchmarks.latency` measured on one backend and
the predictors fitted on it (`latency.json`), and its markdown view. A run
that budgets in milliseconds reads it, and refuses one measured on another
backend."""
import pathlib

from acme_jax import errors
from acme_jax import provenance
from acme_jax import report
from acme_jax import workdir as workdir_lib
from acme_jax.hardware import measure
from acme_jax.hardware import predictor as predictor_lib


def build(config, rows: list, fits: dict, split_seed: int) -> dict:
  """latency.json's content. `fits`: {'latency': predictor.by_group(...),
  'memory': ...}. Its top-level `predictor` fields are the backbone's at the
  first batch measured; `split_seed` drew the held-out models."""
  first = f"backbone@{config.latency.batches[0]}"
  chosen = fits['latency'][first]
  scored = chosen['test'][chosen['kind']]
  return {'backend': measure.backend(), 'machine': measure.machine(),
          'provenance': {'latency': provenance.provenance()},
          'family': config.model.get('family', 'vit'),
          'latency_config': config.latency.to_dict(),
          'split_seed': split_seed,
          'measured': rows,
          'predictor': {'kind': chosen['kind'], 'part': first,
                        'rmse_ms': scored['rmse'],
                        'within_10pct': scored['within_10pct'],
                        'latency': fits['latency'],
                        'memory': fits['memory']}}


def write(wd, result: dict):
  workdir_lib.atomic_write_json(wd / 'latency.json', result)
  workdir_lib.atomic_write_text(wd / 'latency.md', markdown(result))


def load(path, backend: str = None, family: str = None) -> dict:
  """A latency table, refused in one line when it was measured on a backend
  other than `backend` (default: this process's) or for another model
  family than `family` (when given)."""
  path = pathlib.Path(path)
  try:
    table = workdir_lib.read_json(path)
  except (OSError, ValueError) as e:
    raise errors.UserError(f'cannot read the latency table {path}: '
                           f'{e}') from None
  if not isinstance(table, dict) or 'predictor' not in table:
    raise errors.UserError(f'{path} is not a latency table (no predictor); '
                           f'write one with python -m benchmarks.latency')
  want = backend or measure.backend()
  if table.get('backend') != want:
    raise errors.UserError(
        f'{path} was measured on {table.get("backend")} '
        f'({table.get("machine")}); this run needs {want} latencies: '
        f'measure them here with python -m benchmarks.latency')
  if family is not None and table.get('family') != family:
    raise errors.UserError(
        f'{path} measured a {table.get("family")} supernet; this run\'s is '
        f'a {family}: measure it with python -m benchmarks.latency and this '
        f'run\'s --config')
  return table


def fitted(table: dict, part: str, batch: int,
           target: str = 'latency') -> predictor_lib.Fitted:
  """The chosen predictor of `part` at `batch` (`target` latency or
  memory)."""
  groups = table['predictor'][target]
  name = f'{part}@{batch}'
  if name not in groups:
    raise errors.UserError(
        f'the latency table has no {part} measured at batch {batch}; it has '
        f'{sorted(groups)} (set latency.batches and measure again)')
  return predictor_lib.Fitted.from_dict(groups[name]['model'])


def _ms(row) -> str:
  return f"{row['median_ms']:.2f} ({row['p10_ms']:.2f}-{row['p90_ms']:.2f})"


def markdown(result: dict) -> str:
  rows = result['measured']
  batches = sorted({r['batch'] for r in rows})
  lines = [f"Latency on {result['backend']} ({result['machine']}), "
           f"{result['family']}: median (10th-90th percentile) ms per "
           f"call; peak memory as XLA plans it.", '']
  backbone = {}
  for r in rows:
    if r['part'] == 'backbone':
      backbone.setdefault((r['depth'], r['width']), {})[r['batch']] = r
  table_rows = []
  for (d, w), by_batch in backbone.items():
    any_row = next(iter(by_batch.values()))
    table_rows.append(
        [f'{d:g}', f'{w:g}', 'grid' if any_row['grid'] else 'off grid',
         f"{any_row['params']:,}"] +
        [_ms(by_batch[b]) if b in by_batch else '' for b in batches] +
        [f"{by_batch[b]['peak_memory_bytes'] / 2**20:.1f}"
         if b in by_batch else '' for b in batches])
  lines.append(report.markdown_table(
      ['depth', 'width', 'where', 'params'] +
      [f'ms, batch {b}' for b in batches] +
      [f'MiB, batch {b}' for b in batches], table_rows))
  headers = [r for r in rows if r['part'] == 'header']
  if headers:
    lines += ['', f'{len(headers) // len(batches)} headers: ' + '; '.join(
        f"batch {b}: {min(r['median_ms'] for r in headers if r['batch'] == b):.2f}"
        f"-{max(r['median_ms'] for r in headers if r['batch'] == b):.2f} ms"
        for b in batches)]
  for target, unit, scale in (('latency', 'ms', 1.0),
                              ('memory', 'MiB', 2.0 ** -20)):
    kinds = sorted({k for g in result['predictor'][target].values()
                    for k in g['validation']})
    fit_rows = []
    for name, g in result['predictor'][target].items():
      scored = g['test'][g['kind']]
      fit_rows.append(
          [name, g['kind']] +
          [f"{g['validation'][k]['relative_rmse']:.0%}"
           if k in g['validation'] else '' for k in kinds] +
          [f"{scored['rmse'] * scale:.3g}",
           f"{scored['within_10pct']:.0%}",
           f"{scored['max_rel_error']:.0%}", scored['n']])
    lines += ['', f'{target.capitalize()} predictors: the relative RMSE '
              f'of each kind on validation (leave-one-out; the lowest is '
              f"chosen), and the chosen kind's error on the held-out "
              f'models:', '',
              report.markdown_table(
                  ['part@batch', 'chosen'] + [f'val. {k}' for k in kinds] +
                  [f'test RMSE ({unit})', 'within 10%', 'worst', 'held out'],
                  fit_rows)]
  return '\n'.join(lines) + '\n'
