"""The supernet_value section (`experiments/supernet_value.py`): its summary
over repeats and its markdown tables."""
import math

import numpy as np

from acme_jax import stats
from acme_jax.cloud import cost


def _cell(values) -> dict:
  out = stats.mean_ci(values)
  return {'mean': out['mean'], 'ci95': out['ci'], 'values': out['values']}


def _shape_rows(config, repeats) -> list:
  arms, budgets = config.supernet_value.arms, config.supernet_value.budgets
  rows = []
  for i, first in enumerate(repeats[0]['shapes']):
    per = [rep['shapes'][i] for rep in repeats]
    ours = [r['supernet']['accuracy'] for r in per]
    row = {'depth': first['depth'], 'width': first['width'],
           'params': first['params'], 'supernet': _cell(ours)}
    lm = 'perplexity' in first['supernet']
    if lm:
      row['supernet']['perplexity'] = _cell(
          [r['supernet']['perplexity'] for r in per])
    for arm in arms:
      row[arm] = {}
      for budget in budgets:
        theirs = [r[arm][budget]['accuracy'] for r in per]
        cell = _cell(theirs)
        cell.update(steps=first[arm][budget]['steps'],
                    flops=first[arm][budget]['flops'],
                    seconds=float(np.mean([r[arm][budget]['seconds']
                                           for r in per])),
                    supernet_minus=stats.paired(ours, theirs))
        if lm:
          ppl = [r[arm][budget]['perplexity'] for r in per]
          cell['perplexity'] = _cell(ppl)
          cell['perplexity_supernet_minus'] = stats.paired(
              [r['supernet']['perplexity'] for r in per], ppl)
        row[arm][budget] = cell
    rows.append(row)
  return rows


def _seconds_per_flop(repeats, arm):
  """Measured wall seconds per training FLOP of `arm`'s equal-steps models
  (compile included), over the shapes trained and the repeats; or None."""
  cells = [r[arm]['equal_steps'] for rep in repeats for r in rep['shapes']
           if arm in r and 'equal_steps' in r[arm]]
  flops = sum(c['flops'] for c in cells)
  return sum(c['seconds'] for c in cells) / flops if flops else None


SHARED_STAGES = ('pretrain', 'teacher', 'reordered')
ELASTIC_STAGES = ('width_stage', 'depth_stage')


def _stage_seconds(times, names, optional=('pretrain', 'reordered')):
  if times is None or not all(n in times for n in names
                              if n not in optional):
    return None
  return float(sum(times.get(n, 0.0) for n in names))


def _cost(config, repeats) -> dict:
  """Training FLOPs and wall seconds of serving N budgets each way: one
  supernet, or one model per budget, sizes spread as the grid's cells,
  each at the supernet's steps (FLOPs: the grid cells' mean; seconds: those
  FLOPs at the seconds per FLOP measured on the shapes trained). No more
  models than the supernet has distinct uniform subnets are charged: past
  that, N budgets share shapes either way."""
  first = repeats[0]
  by_stage = first['by_stage']
  elastic, shared = cost.elastic_total(by_stage), cost.shared_total(by_stage)
  steps = first['supernet_steps']
  per_model = {arm: float(np.mean([c[arm] for c in first['grid_flops']])) *
               steps for arm in ('distilled', 'scratch')}
  rates = {arm: _seconds_per_flop(repeats, arm)
           for arm in ('distilled', 'scratch')}
  per_seconds = {arm: None if rates[arm] is None
                 else rates[arm] * per_model[arm] for arm in rates}
  distinct = first['distinct_shapes']
  times = first.get('cloud_seconds')
  shared_s = _stage_seconds(times, SHARED_STAGES)
  retrained = [r['supernet_seconds'] for r in repeats
               if r.get('supernet_seconds') is not None]
  elastic_s = (float(np.mean(retrained)) if retrained
               else _stage_seconds(times, ELASTIC_STAGES))

  def total(*parts):
    return None if any(p is None for p in parts) else float(sum(parts))

  by_n = []
  for n in config.supernet_value.budget_counts:
    models = min(n, distinct)
    scaled = {arm: None if per_seconds[arm] is None
              else models * per_seconds[arm] for arm in per_seconds}
    by_n.append({
        'budgets': n, 'models': models,
        'supernet': {'flops': shared + elastic,
                     'seconds': total(shared_s, elastic_s)},
        'distilled': {'flops': shared + models * per_model['distilled'],
                      'seconds': total(shared_s, scaled['distilled'])},
        'scratch': {'flops': models * per_model['scratch'],
                    'seconds': total(scaled['scratch'])}})
  return {'by_stage': by_stage, 'elastic_flops': elastic,
          'shared_flops': shared, 'per_model_flops': per_model,
          'per_model_seconds': per_seconds, 'seconds_per_flop': rates,
          'shared_seconds': shared_s, 'distinct_shapes': distinct,
          'elastic_seconds': elastic_s,
          'break_even': {
              'distilled': _cheaper_from(elastic, per_model['distilled'],
                                         distinct),
              'scratch': _cheaper_from(shared + elastic, per_model['scratch'],
                                       distinct)},
          'break_even_seconds': {
              'distilled': _cheaper_from(elastic_s, per_seconds['distilled'],
                                         distinct),
              'scratch': _cheaper_from(total(shared_s, elastic_s),
                                       per_seconds['scratch'], distinct)},
          # A None break-even above means "never" only where both sides'
          # seconds were measured.
          'seconds_measured': {
              'distilled': None not in (elastic_s, per_seconds['distilled']),
              'scratch': None not in (shared_s, elastic_s,
                                      per_seconds['scratch'])},
          'by_budgets': by_n}


def _cheaper_from(supernet, per_model, distinct):
  """The fewest budgets N for which N separate models cost more than the
  supernet (`supernet`: what it costs beyond what both need); None where
  not measured or where even one model per distinct shape costs less."""
  if supernet is None or not per_model:
    return None
  n = math.floor(supernet / per_model) + 1
  return n if n <= distinct else None


def _baselines(repeats) -> dict:
  runs = [r['baselines'] for r in repeats]
  methods = list(runs[0]['teacher_cut'])
  acme = [r['acme'] for r in runs]
  out = {'setup': runs[0]['setup'], 'acme': _cell(acme), 'methods': {}}
  for m in methods:
    cut = [r['teacher_cut'][m] for r in runs]
    ours = [r['supernet'][m] for r in runs]
    out['methods'][m] = {
        'teacher_cut': _cell(cut), 'supernet': _cell(ours),
        'supernet_minus_teacher_cut': stats.paired(ours, cut),
        'acme_minus_supernet_start': stats.paired(acme, ours)}
  return out


def summarize(config, repeats) -> dict:
  out = {'repeats': len(repeats), 'shapes': _shape_rows(config, repeats),
         'cost': _cost(config, repeats),
         'between_grid': repeats[0]['between_grid']}
  devices = out['between_grid']['devices']
  if devices:
    out['between_grid']['device_means'] = {
        k: {'test_accuracy': float(np.mean([d[k]['test_accuracy']
                                            for d in devices])),
            'budget_used': float(np.mean([d[k]['budget_used']
                                          for d in devices]))}
        for k in ('grid', 'with_between')}
  if 'baselines' in repeats[0]:
    out['baselines_from_supernet'] = _baselines(repeats)
  return out


def _fmt(cell) -> str:
  return stats.fmt({'mean': cell['mean'], 'ci': cell['ci95']})


def _flops(x) -> str:
  return f'{x:.3g}'


def supernet_value_table(s: dict) -> str:
  rows = s['shapes']
  arms = [(a, b) for a in ('distilled', 'scratch') if a in rows[0]
          for b in rows[0][a]]
  lines = [f"#### Supernet subnets vs one model per shape ({s['repeats']} "
           f"repeats, test accuracy, mean ± 95% CI)", '',
           '| depth | width | params | supernet | ' +
           ' | '.join(f'{a} ({b.replace("_", " ")})' for a, b in arms) +
           ' |', '|---' * (4 + len(arms)) + '|']
  for r in rows:
    lines.append(f"| {r['depth']:g} | {r['width']:g} | {r['params']:,} | "
                 f"{_fmt(r['supernet'])} | " + ' | '.join(
                     _fmt(r[a][b]) for a, b in arms) + ' |')
  lines += ['', 'Supernet minus each arm, paired over repeats (* where the '
            'CI excludes 0); steps of each arm:', '',
            '| depth | width | ' + ' | '.join(
                f'{a} ({b.replace("_", " ")})' for a, b in arms) + ' |',
            '|---' * (2 + len(arms)) + '|']
  for r in rows:
    lines.append(f"| {r['depth']:g} | {r['width']:g} | " + ' | '.join(
        f"{stats.fmt_diff(r[a][b]['supernet_minus'])} "
        f"({r[a][b]['steps']:,} steps)" for a, b in arms) + ' |')
  if 'perplexity' in rows[0]['supernet']:
    lines += _perplexity_lines(rows, arms)
  c = s['cost']
  lines += ['', _cost_line(c), '',
            '| N budgets | models needed | one supernet | distilled models | '
            'models from scratch |', '|---|---|---|---|---|']
  for r in c['by_budgets']:
    lines.append(f"| {r['budgets']} | {r['models']} | " + ' | '.join(
        _flops(r[k]['flops']) + (f" ({r[k]['seconds']:.0f} s)"
                                 if r[k]['seconds'] is not None else '')
        for k in ('supernet', 'distilled', 'scratch')) + ' |')
  lines += _between_lines(s['between_grid'])
  if 'baselines_from_supernet' in s:
    lines += _baseline_lines(s['baselines_from_supernet'])
  return '\n'.join(lines) + '\n'


def _perplexity_lines(rows, arms) -> list:
  """A language model's test perplexity per arm (lower is better), and the
  supernet's minus each arm's, paired over repeats."""
  fmt = lambda c: stats.fmt({'mean': c['mean'], 'ci': c['ci95']},  # noqa
                            1)
  lines = ['', 'Test perplexity (lower is better), mean ± 95% CI; then the '
           "supernet's minus each arm's, paired (* where the CI excludes 0; "
           'negative: the supernet is better):', '',
           '| depth | width | supernet | ' + ' | '.join(
               f'{a} ({b.replace("_", " ")})' for a, b in arms) + ' |',
           '|---' * (3 + len(arms)) + '|']
  for r in rows:
    lines.append(f"| {r['depth']:g} | {r['width']:g} | "
                 f"{fmt(r['supernet']['perplexity'])} | " + ' | '.join(
                     f"{fmt(r[a][b]['perplexity'])} "
                     f"({stats.fmt_diff(r[a][b]['perplexity_supernet_minus'], 1)})"
                     for a, b in arms) + ' |')
  return lines


def _from(n, measured: bool = True) -> str:
  if not measured:
    return 'not measured'
  return 'never (within its distinct shapes)' if n is None else f'N = {n}'


def _cost_line(c) -> str:
  be, bs = c['break_even'], c['break_even_seconds']
  known = c.get('seconds_measured', {'distilled': True, 'scratch': True})
  return (f"Training cost of serving N budgets, in FLOPs (and seconds on "
          f"this machine): the teacher and its importance scores, which the "
          f"supernet and the distilled models both need, "
          f"{_flops(c['shared_flops'])}; the supernet's elastic stages "
          f"{_flops(c['elastic_flops'])}; one model at equal steps, distilled "
          f"{_flops(c['per_model_flops']['distilled'])}, from scratch "
          f"{_flops(c['per_model_flops']['scratch'])}. The supernet holds "
          f"{c['distinct_shapes']} distinct uniform subnets, so no more "
          f"models are charged. The supernet costs less than distilled "
          f"models from {_from(be['distilled'])} "
          f"(seconds: {_from(bs['distilled'], known['distilled'])}) and than "
          f"models from scratch from {_from(be['scratch'])} "
          f"(seconds: {_from(bs['scratch'], known['scratch'])}).")


def _between_lines(b) -> list:
  lines = ['', '#### Between the grid points', '']
  if not b['shapes']:
    return lines + [f"No shape asked for lies between the grid's points: "
                    f"{len(b['coincide'])} land on grid cells (widths snap "
                    f"to whole heads, depths to whole layers)."]
  lines += ['| depth | width | layers x heads | params | test accuracy | '
            'cell below | cell above |', '|---|---|---|---|---|---|---|']
  for r in b['shapes']:
    lines.append(
        f"| {r['depth']:g} | {r['width']:g} | {r['layers']} x {r['heads']} "
        f"| {r['params']:,} | {r['accuracy']:.3f} | " + ' | '.join(
            '—' if c is None else
            f"{c['accuracy']:.3f} ({c['params']:,})"
            for c in (r['below'], r['above'])) + ' |')
  if b.get('device_means'):
    g, w = b['device_means']['grid'], b['device_means']['with_between']
    moved = sum(d['with_between']['between_grid'] for d in b['devices'])
    lines += ['', f"Devices ({moved} of {len(b['devices'])} get a shape "
              f"between the grid): mean test accuracy {g['test_accuracy']:.3f}"
              f" on grid picks, {w['test_accuracy']:.3f} with the shapes "
              f"between; backbone share of the budget {g['budget_used']:.2f}"
              f" -> {w['budget_used']:.2f}."]
  return lines


def _baseline_lines(b) -> list:
  lines = ['', f"#### Federated methods from the supernet's subnets "
           f"({b['setup']}; mean device test accuracy)", '',
           f"ACME: {_fmt(b['acme'])}", '',
           '| method | from the cut teacher | from the supernet | '
           'difference | ACME minus |', '|---|---|---|---|---|']
  for m, r in b['methods'].items():
    lines.append(f"| {m} | {_fmt(r['teacher_cut'])} | {_fmt(r['supernet'])}"
                 f" | {stats.fmt_diff(r['supernet_minus_teacher_cut'])} | "
                 f"{stats.fmt_diff(r['acme_minus_supernet_start'])} |")
  return lines
