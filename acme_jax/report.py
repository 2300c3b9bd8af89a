"""Tables (markdown) and plots (PNG) from results; no training logic here."""
import pathlib

from acme_jax import errors
from acme_jax import stats
from acme_jax.markdown import markdown_table  # noqa: F401 (re-exported)
from acme_jax.report_hardware import hardware_table, simulated_table
from acme_jax import workdir as workdir_lib
from acme_jax.provenance import provenance  # noqa: F401 (re-exported)


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
    if 'perplexity' in tst:
      rows[-1].update(test_perplexity=tst['perplexity'],
                      teacher_cut_test_perplexity=cut['perplexity'])
  return rows


def grid_table(grid) -> str:
  """The grid; a language model's adds test perplexity (the supernet's
  subnet and the teacher cut to its shape)."""
  lm = all('test_perplexity' in r for r in grid)
  extra = ['test ppl', 'teacher cut test ppl'] if lm else []
  return markdown_table(
      ['depth', 'width', 'params', 'val acc', 'test acc',
       'teacher cut test acc'] + extra,
      [[f"{r['depth_mult']:g}", f"{r['width_mult']:g}", f"{r['params']:,}",
        f"{r['accuracy']:.3f}", f"{r['test_accuracy']:.3f}",
        f"{r['teacher_cut_test_accuracy']:.3f}"] +
       ([f"{r['test_perplexity']:.1f}",
         f"{r['teacher_cut_test_perplexity']:.1f}"] if lm else [])
       for r in grid])


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


def baselines_table(baselines) -> str:
  """ACME and the federated baselines per setup: mean and worst-device
  test accuracy (± 95% CI over repeats), ACME minus the method (paired;
  * = its CI excludes 0), hop-weighted bytes and their ratio to ACME's,
  device-side training FLOPs and the chosen peak rate."""
  rows = []
  for setup in baselines['setups']:
    for name in baselines['methods']:
      cell = baselines['by_setup'][setup][name]
      minus = baselines['acme_minus'][setup].get(name)
      rates = sorted({r for r in cell['lrs'] if r is not None})
      rows.append([setup, name, stats.fmt(cell['accuracy']),
                   stats.fmt(cell['worst']),
                   stats.fmt_diff(minus['accuracy']) if minus else '',
                   stats.fmt_diff(minus['worst']) if minus else '',
                   _mb(cell['bytes']), f"{cell['bytes_vs_acme']:.2f}",
                   f"{cell['device_flops'] / 1e9:,.4g}",
                   '/'.join(f'{r:g}' for r in rates)])
  return (markdown_table(
      ['setup', 'method', 'mean test acc', 'worst-device test acc',
       'ACME - method (mean)', 'ACME - method (worst)', 'MB (hop-weighted)',
       'bytes / ACME', 'device GFLOPs', 'lr'], rows) +
          f"\n\n{baselines['repeats']} repeat(s); ± = 95% CI over repeats; "
          '* = the paired difference\'s CI excludes 0; device GFLOPs: mean '
          'training FLOPs per device; lr: the peak rate picked on '
          'validation.')


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


def device_summary_table(devices) -> str:
  """Per device its backbone, header, size against budget and accuracy."""
  return markdown_table(
      ['device', 'edge', 'backbone depth x width', 'backbone params',
       'header', 'total / budget', 'test acc'],
      [[d['device'], d['edge'], f"{d['depth_mult']:g} x {d['width_mult']:g}",
        f"{d['params']:,}",
        f"{d['header_cells']} cells, {d['header_params']:,}",
        f"{d['total_params']:,} / {d['budget']:,}",
        f"{d['test_accuracy']:.3f}"] for d in devices])


def summary(results: dict, paths) -> str:
  """What the main job ends with on the terminal: per device its backbone,
  header and accuracy, the ledger's ratios, and where the rest is."""
  devices = results['devices']
  ledger = results['ledger']
  lines = [device_summary_table(devices), '',
           f"mean device test accuracy "
           f"{sum(d['test_accuracy'] for d in devices) / len(devices):.3f}",
           f"ledger: ACME / centralized = {ledger['ratio']:.4f} "
           f"(hop-weighted)"]
  full = ledger.get('full_model_deployment')
  if full:
    lines[-1] += f"; ACME / full-model deployment = {full['ratio']:.4f}"
  lines += [''] + [f'{name + ":":9s}{path}' for name, path in paths]
  return '\n'.join(lines)


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


# results.json's sections of other JSON types than an object.
RESULTS_TYPES = {'dataset': str, 'devices': list}


def _json_kind(value) -> str:
  """What JSON calls `value`'s type."""
  for kind, name in ((bool, 'boolean'), (dict, 'object'), (list, 'array'),
                     (str, 'string'), ((int, float), 'number')):
    if isinstance(value, kind):
      return name
  return 'null'


def check_results(path):
  """results.json, which every job merges its section into at its end, is
  a JSON object of sections of the right types: checked before any work,
  in one line naming the file."""
  if not pathlib.Path(path).is_file():
    return
  value = workdir_lib.read_json(path)
  if not isinstance(value, dict):
    raise errors.UserError(
        f'{path} holds a JSON {_json_kind(value)}, not an object of '
        f'sections; move it away (each job writes its section again)')
  for section in value:
    kind = RESULTS_TYPES.get(section, dict)
    if not isinstance(value[section], kind):
      raise errors.UserError(
          f'{path}: section {section!r} should be a JSON '
          f'{_json_kind(kind())} but is a JSON {_json_kind(value[section])}; '
          f'move the file away (each job writes its section again)')


def merged_section(wd, name: str, update: dict) -> dict:
  """results.json's section `name` with `update`'s keys replaced, the rest
  kept (a section several jobs write parts of)."""
  path = wd / 'results.json'
  section = (workdir_lib.read_json(path).get(name, {})
             if path.exists() else {})
  return {**section, **update}


def write_results(wd, sections: dict, config=None) -> dict:
  """Merges `sections` into results.json (with each section's provenance)
  and rewrites report.md."""
  path = wd / 'results.json'
  results = workdir_lib.read_json(path) if path.exists() else {}
  results.update(sections)
  here = provenance()
  results.setdefault('provenance', {}).update({k: here for k in sections})
  workdir_lib.atomic_write_json(path, results)
  workdir_lib.atomic_write_text(wd / 'report.md', markdown_report(results))
  return workdir_lib.read_json(path)


def markdown_report(results) -> str:
  """The whole report as one markdown document (what `report.md` holds):
  the main job's sections and each experiment's that has run."""
  parts = [f"# ACME on {results.get('dataset', 'its dataset')}"]
  if 'devices' in results:
    sel = results['selection']
    gain = sel['tradeoff_gain_vs_highest_accuracy']
    parts += [
        '## Cloud: measured subnet grid',
        grid_table(results['cloud']['grid']),
        '## Selection: PFG and baselines (normalised values)',
        picks_table(sel),
        f"Trade-off gain of PFG vs highest accuracy: "
        f"{'n/a' if gain is None else f'{gain:+.1%}'}",
        '## Devices: backbone chosen at the edge',
        devices_table(results['devices']),
    ]
    if 'predicted_latency_ms' in results['devices'][0]:
      parts += ['## Devices as hardware: deployed model, predicted and '
                'measured', hardware_table(results['devices'])]
    if 'simulated_time' in results:
      parts += ['## Simulated time (devices as hardware)',
                simulated_table(results['simulated_time'])]
    parts += [
        '## Communication ledger',
        ledger_table(results['ledger']),
    ]
  if 'headers' in results:
    parts += ['## Headers: NAS vs fixed heads (mean device test accuracy)',
              headers_table(results['headers'])]
  if 'aggregation' in results:
    parts += ['## Aggregation modes (mean device test accuracy; gain over '
              'wo_pruning)', aggregation_table(results['aggregation'])]
  if 'baselines' in results:
    parts += ['## ACME and the federated baselines',
              baselines_table(results['baselines'])]
  if 'personal_lm' in results:
    parts += ['## Personal language modelling',
              personal_lm_table(results['personal_lm'])]
  if 'supernet_value' in results:
    from acme_jax import report_value
    parts += ['## Why one supernet',
              report_value.supernet_value_table(results['supernet_value'])]
  return '\n\n'.join(parts) + '\n'


def personal_lm_table(summary) -> str:
  """experiments.personal_lm's tables: each arm's perplexity, and the
  paired differences in log perplexity."""
  arms = summary['perplexity']
  rows = [[arm, f"{arms[arm]['mean']:.2f}",
           '' if arms[arm]['ci'] is None else f"{arms[arm]['ci']:.2f}",
           '' if arm not in summary.get('live_share', {}) else
           f"{summary['live_share'][arm]['mean']:.2f}"]
          for arm in arms]
  diffs = [[name, f"{d['mean']:+.4f}",
            '' if d['ci'] is None else f"{d['ci']:.4f}",
            'yes' if d.get('holds') else 'no']
           for name, d in summary['log_perplexity_difference'].items()]
  return '\n\n'.join([
      'Personal language modelling: mean test perplexity over devices '
      '(geometric mean of each device\'s), mean and 95% CI over repeats; '
      'live = the share of its gate channels a device keeps after the '
      'rounds',
      markdown_table(['head', 'perplexity', '95% CI', 'live'], rows),
      markdown_table(['difference in log perplexity', 'mean', '95% CI',
                      'holds'], diffs)])
