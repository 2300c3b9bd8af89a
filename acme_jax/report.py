"""Tables (markdown) and plots (PNG) from results; no training logic here."""
import os
import pathlib

from acme_jax import stats
from acme_jax import workdir as workdir_lib


def merge_grid(validation, test, teacher_cut_test):
  """One record per grid point: validation accuracy, test accuracy, and the
  test accuracy of the same cut of the teacher before elastic training."""
  rows = []
  for val, tst, cut in zip(validation, test, teacher_cut_test):
    assert (val['depth_mult'], val['width_mult']) == (tst['depth_mult'],
                                                      tst['width_mult'])
    rows.append({'depth_mult': val['depth_mult'],
                 'width_mult': val['width_mult'],
                 'params': val['params'], 'bytes': val['bytes'],
                 'accuracy': val['accuracy'],
                 'test_accuracy': tst['accuracy'],
                 'teacher_cut_test_accuracy': cut['accuracy']})
  return rows


def markdown_table(headers, rows) -> str:
  lines = ['| ' + ' | '.join(headers) + ' |',
           '|' + '|'.join('---:' for _ in headers) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def grid_table(grid) -> str:
  return markdown_table(
      ['depth', 'width', 'params', 'val acc', 'test acc',
       'teacher cut test acc'],
      [[f"{r['depth_mult']:g}", f"{r['width_mult']:g}", f"{r['params']:,}",
        f"{r['accuracy']:.3f}", f"{r['test_accuracy']:.3f}",
        f"{r['teacher_cut_test_accuracy']:.3f}"] for r in grid])


def _mb(n) -> str:
  return f'{n / 1e6:,.3f}'


def devices_table(devices) -> str:
  final = 'test_accuracy' in devices[0]
  extra = (['header params', 'total / budget', 'NAS test acc', 'final test acc']
           if final else [])
  return markdown_table(
      ['device', 'edge', 'depth', 'width', 'backbone params', 'predicted acc',
       'hist-weighted acc', 'probe test acc', 'local n'] + extra,
      [[d['device'], d['edge'], f"{d['depth_mult']:g}", f"{d['width_mult']:g}",
        f"{d['params']:,}", f"{d['predicted_accuracy']:.3f}",
        f"{d['histogram_weighted_accuracy']:.3f}",
        f"{d['linear_probe_test_accuracy']:.3f}",
        '/'.join(str(n) for n in d['local_samples'])] +
       ([f"{d['header_params']:,}",
         f"{d['total_params']:,} / {d['budget']:,}",
         f"{d['nas_test_accuracy']:.3f}", f"{d['test_accuracy']:.3f}"]
        if final else []) for d in devices])


def headers_table(headers) -> str:
  """Mean device test accuracy (± 95% CI over repeats) by backbone depth
  fraction, NAS header vs fixed heads, and the paired difference NAS - head
  (* = the CI excludes 0)."""
  kinds = list(headers['average'])
  rows = [[f"{r['depth_fraction']:g}"] +
          [stats.fmt(r['accuracy'][k]) for k in kinds]
          for r in headers['by_depth']]
  rows.append(['**average**'] + [stats.fmt(headers['average'][k])
                                 for k in kinds])
  rows.append(['NAS - head'] + [''] + [
      stats.fmt_diff(headers['nas_minus'][k]) for k in kinds[1:]])
  return (markdown_table(['depth fraction'] + kinds, rows) +
          f"\n\n{headers['repeats']} repeat(s); ± = 95% CI over repeats; "
          '* = the paired difference\'s CI excludes 0.')


def budget_table(budget) -> str:
  """Searched header vs random architecture vs the best fixed head by
  training samples per device and search budget, with the paired gains
  (* = the CI excludes 0)."""
  rows = [[c['train_samples'], c['budget'],
           f"{c['epochs']} x {c['controller_steps_per_epoch']}",
           stats.fmt(c['accuracy']['acme_nas']),
           stats.fmt(c['accuracy']['random_arch']),
           stats.fmt(c['accuracy']['fixed_best']),
           stats.fmt_diff(c['nas_minus_fixed_best']),
           stats.fmt_diff(c['nas_minus_random'])] for c in budget['cells']]
  return (markdown_table(
      ['train samples', 'budget', 'epochs x ctrl steps', 'searched',
       'random arch', 'best fixed head', 'searched - best fixed',
       'searched - random'], rows) +
          f"\n\n{budget['repeats']} repeat(s); depth fraction "
          f"{budget['depth_fraction']:g}; ± = 95% CI over repeats; * = the "
          'paired difference\'s CI excludes 0.')


def engine_table(result) -> str:
  """The device stage under the loop and vmap strategies: the same
  backbones, and mean device test accuracy with the paired difference."""
  rows = [['loop', stats.fmt(result['loop'])],
          ['vmap', stats.fmt(result['vmap'])],
          ['vmap - loop', stats.fmt_diff(result['vmap_minus_loop'])]]
  return (markdown_table(['strategy', 'mean device test accuracy'], rows) +
          f"\n\n{result['repeats']} repeats; same backbones: "
          f"{'yes' if result['same_backbones'] else 'no'}; same searched "
          f"architecture on {result['same_archs']} of {result['devices']} "
          'devices; ± = 95% CI; * = the CI excludes 0.')


def aggregation_table(aggregation) -> str:
  """Mean device test accuracy per mode and setup (± 95% CI), and the paired
  gain over wo_pruning (* = its CI excludes 0)."""
  setups = list(aggregation['by_setup'])
  modes = list(aggregation['by_setup'][setups[0]])
  rows = []
  for setup in setups:
    accs = aggregation['by_setup'][setup]
    rows.append([setup] + [stats.fmt(accs[m]) for m in modes])
  for setup in setups:
    gains = aggregation['gain_vs_wo_pruning'].get(setup, {})
    if gains:
      rows.append([f'{setup} gain'] + [
          stats.fmt_diff(gains[m]) if m in gains else '' for m in modes])
  return (markdown_table(['setup'] + modes, rows) +
          f"\n\n{aggregation['repeats']} repeat(s); ± = 95% CI over "
          'repeats; gain = paired difference to wo_pruning, * = its CI '
          'excludes 0.')


def ablation_table(ablation) -> str:
  """experiments.header_ablation: each column's accuracy and its paired
  difference to nas_shared (the prototype's procedure)."""
  columns = list(ablation['by_depth'][0]['accuracy'])
  rows = []
  for r in ablation['by_depth']:
    rows.append([f"{r['depth_fraction']:g}"] +
                [stats.fmt(r['accuracy'][k]) for k in columns])
    rows.append([f"{r['depth_fraction']:g}: minus nas_shared", ''] +
                [stats.fmt_diff(r['minus_nas_shared'][k])
                 for k in columns[1:]])
  return (markdown_table(['depth fraction'] + columns, rows) +
          f"\n\n{ablation['repeats']} repeat(s); ± = 95% CI; * = the paired "
          'difference to nas_shared has a CI excluding 0.')


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  return plt


def _err(cell):
  return 0.0 if cell['ci'] is None else cell['ci']


def headers_figure(headers):
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  depths = [r['depth_fraction'] for r in headers['by_depth']]
  for kind in headers['average']:
    cells = [r['accuracy'][kind] for r in headers['by_depth']]
    ax.errorbar(depths, [c['mean'] for c in cells],
                yerr=[_err(c) for c in cells], marker='o', capsize=3,
                lw=2.5 if kind == 'acme_nas' else 1.2, label=kind)
  ax.set_ylim(0, 1)
  ax.set_xlabel('backbone depth fraction (full width)')
  ax.set_ylabel('mean device test accuracy')
  ax.set_title(f'Header: ACME NAS vs fixed heads '
               f'({headers["repeats"]} repeats, 95% CI)')
  ax.legend()
  return fig


def aggregation_figure(aggregation):
  plt = _plt()
  setups = list(aggregation['by_setup'])
  modes = list(aggregation['by_setup'][setups[0]])
  fig, ax = plt.subplots(figsize=(8.5, 4.5))
  width = 0.8 / len(modes)
  for m, mode in enumerate(modes):
    cells = [aggregation['by_setup'][s][mode] for s in setups]
    ax.bar([i + m * width for i in range(len(setups))],
           [c['mean'] for c in cells], width,
           yerr=[_err(c) for c in cells], capsize=2, label=mode)
  ax.set_xticks([i + 0.4 - width / 2 for i in range(len(setups))], setups)
  ax.set_ylim(0, 1)  # from 0: bar heights compare honestly
  ax.set_ylabel('mean device test accuracy')
  ax.set_title(f'Personalized architecture aggregation '
               f'({aggregation["repeats"]} repeats, 95% CI)')
  ax.legend(fontsize=7, loc='lower right')
  return fig


def ledger_table(summary) -> str:
  """Bytes by kind (hop-weighted), ACME vs centralized, and the ratio."""
  kinds = list(summary['acme']['by_kind'])
  rows = [[k, _mb(summary['acme']['by_kind'][k]),
           _mb(summary['centralized']['by_kind'][k])] for k in kinds]
  rows.append(['**total**', _mb(summary['acme']['total']),
               _mb(summary['centralized']['total'])])
  text = (markdown_table(['kind', 'ACME MB', 'centralized MB'], rows) +
          f"\n\nACME / centralized = {summary['ratio']:.4f} "
          f"(hop-weighted; unweighted {summary['ratio_unweighted']:.4f})")
  full = summary.get('full_model_deployment')
  if full:
    text += (f"\n\nACME / full-model deployment = {full['ratio']:.4f} "
             f"(hop-weighted; unweighted {full['ratio_unweighted']:.4f}): "
             f"every device receiving the full pre-trained backbone, "
             f"{_mb(full['total'])} MB")
  return text


def picks_table(selection) -> str:
  """Every method's pick; 'real subnet' says whether its ratios realise one
  (>= 1 head and layer), which the prototype's baselines do not check."""
  fields = ['depth_mult', 'width_mult', 'accuracy', 'size', 'latency',
            'energy', 'tradeoff', 'mer', 'eer']

  def fmt(v):
    return 'n/a' if v is None else f'{v:.3f}'

  return markdown_table(['pick'] + fields + ['real subnet'], [
      [name] + [fmt(p[f]) for f in fields] +
      ['yes' if p.get('realisable', True) else '**no**']
      for name, p in selection['picks'].items()])


def selection_line(selection) -> str:
  pfg = selection['picks']['pfg']
  gain = selection['tradeoff_gain_vs_highest_accuracy']
  front = [c for c in selection['candidates'] if c['on_front']]
  return (f"PFG pick depth {pfg['depth_mult']:.2f} width "
          f"{pfg['width_mult']:.2f} (predicted acc {pfg['accuracy']:.3f}, "
          f"trade-off {pfg['tradeoff']:.3f}); trade-off gain vs highest "
          f"accuracy {'n/a' if gain is None else f'{gain:+.1%}'}; "
          f"{len(front)} of {len(selection['candidates'])} trained subnets "
          f"on the edges' front")


def provenance() -> dict:
  """Where results come from: the code's commit and the machine (no clock
  time, so reruns stay byte-identical)."""
  import platform
  import subprocess

  import jax
  root = pathlib.Path(__file__).resolve().parents[1]

  def git(*args):
    try:
      return subprocess.run(['git', *args], cwd=root, capture_output=True,
                            text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      return ''

  cpu = ''
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((l.split(':', 1)[1].strip() for l in f
                  if l.startswith('model name')), '')
  except OSError:
    pass
  return {'commit': git('rev-parse', '--short=12', 'HEAD'),
          'dirty': bool(git('status', '--porcelain', '--', 'acme_jax',
                            'configs', 'experiments')),
          'machine': f'{platform.machine()} {cpu}'.strip(),
          'cpus': os.cpu_count(),
          'accelerators': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
          'jax': jax.__version__}


def write_results(wd, sections: dict, config=None) -> dict:
  """Merges `sections` into results.json (with each section's provenance)
  and rewrites report.md."""
  path = wd / 'results.json'
  results = workdir_lib.read_json(path) if path.exists() else {}
  results.update(sections)
  here = provenance()
  results.setdefault('provenance', {}).update({k: here for k in sections})
  workdir_lib.atomic_write_json(path, results)
  if 'devices' in results:
    workdir_lib.atomic_write_text(wd / 'report.md', markdown_report(results))
  return workdir_lib.read_json(path)


def markdown_report(results) -> str:
  """The whole report as one markdown document (what `report.md` holds)."""
  sel = results['selection']
  gain = sel['tradeoff_gain_vs_highest_accuracy']
  parts = [
      f"# ACME on {results['dataset']}",
      '## Cloud: measured subnet grid',
      grid_table(results['cloud']['grid']),
      '## Selection: PFG and baselines (normalised values)',
      picks_table(sel),
      f"Trade-off gain of PFG vs highest accuracy: "
      f"{'n/a' if gain is None else f'{gain:+.1%}'}",
      '## Devices: backbone chosen at the edge',
      devices_table(results['devices']),
      '## Communication ledger',
      ledger_table(results['ledger']),
  ]
  if 'headers' in results:
    parts += ['## Headers: NAS vs fixed heads (mean device test accuracy)',
              headers_table(results['headers'])]
  if 'aggregation' in results:
    parts += ['## Aggregation modes (mean device test accuracy; gain over '
              'wo_pruning)', aggregation_table(results['aggregation'])]
  return '\n\n'.join(parts) + '\n'


def pareto_figure(selection, devices):
  """Predicted accuracy vs size over the fine grid, front and device picks."""
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  grid = selection['grid']
  params = [p / 1e3 for p in grid['params']]
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  ax.scatter(params, grid['accuracy'], s=8, c='0.75', label='fine grid')
  front = [i for i, f in enumerate(grid['on_front']) if f]
  ax.scatter([params[i] for i in front], [grid['accuracy'][i] for i in front],
             s=16, c='tab:blue', label='front')
  ax.scatter([d['params'] / 1e3 for d in devices],
             [d['predicted_accuracy'] for d in devices], s=90, marker='*',
             c='tab:red', label='device picks', zorder=3)
  for d in devices:
    ax.annotate(str(d['device']), (d['params'] / 1e3, d['predicted_accuracy']),
                textcoords='offset points', xytext=(4, 4), fontsize=8)
  ax.set_xlabel('backbone parameters (thousands)')
  ax.set_ylabel('predicted accuracy')
  ax.set_title('Pareto Front Grid and edge choices')
  ax.legend(loc='lower right')
  return fig
