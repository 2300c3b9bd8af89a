"""The generated blocks' markdown, rendered from a run's results
(`readme_tables` writes them between their markers)."""
from acme_jax import report
from acme_jax import stats


def render_networked(results: dict) -> str:
  """The networked run's block: its devices, bytes, reply times and rounds
  (`networked/report.py`), and the scaling benchmark when it was merged."""
  from acme_jax.networked import report as net_report
  parts = [f"_Source: {_source(results, 'networked')}._",
           net_report.markdown(results, heading='####')]
  refused = [i for i in results.get('impostors', []) if i['refusal']]
  parts.append(f"Impostors (unregistered keys claiming a device): "
               f"{len(refused)} of {len(results.get('impostors', []))} "
               f"refused at activation. Tier restarts: "
               f"{results.get('restarts') or 'none'}.")
  if results.get('scaling'):
    rows = results['scaling']
    parts += ["#### Stock Flower and warm workers as device processes grow "
              '(`python -m benchmarks.networked`)',
              net_report.scaling_table(rows),
              'Median seconds from a request to its reply, per message:',
              net_report.reply_table(rows),
              '\n'.join(f'- {line}' for line in
                        net_report.summary_lines(rows))]
  return '\n\n'.join(p.strip() for p in parts)


def render_summary(results: dict) -> str:
  """The README's view of the paper block's results: each device's
  backbone, header and accuracy (the columns the main job's closing summary
  prints), the ledger's ratio, and ACME against the strongest federated
  baseline of each split."""
  devices = results['devices']
  mean = sum(d['test_accuracy'] for d in devices) / len(devices)
  parts = [f"_Source: {_source(results, 'devices')}._",
           'Each device after its header search and the aggregation rounds '
           '(one run):',
           report.device_summary_table(devices) +
           f'\n\nMean device test accuracy {mean:.3f}.']
  ledger = results['ledger']
  line = (f"Bytes moved: ACME / centralized = {ledger['ratio']:.4f} "
          f"(hop-weighted; unweighted {ledger['ratio_unweighted']:.4f}), "
          f"{ledger['acme']['total'] / 1e6:,.3f} MB against "
          f"{ledger['centralized']['total'] / 1e6:,.3f} MB")
  full = ledger.get('full_model_deployment')
  if full:
    line += (f"; ACME / full-model deployment = {full['ratio']:.4f} "
             '(hop-weighted)')
  parts.append(line + '.')
  baselines = results.get('baselines')
  if baselines:
    rows = []
    for setup in baselines['setups']:
      cells = baselines['by_setup'][setup]
      others = [m for m in baselines['methods'] if m != 'acme']
      best = max(others, key=lambda m: cells[m]['accuracy']['mean'])
      rows.append([setup, stats.fmt(cells['acme']['accuracy']), best,
                   stats.fmt(cells[best]['accuracy']),
                   stats.fmt_diff(baselines['acme_minus'][setup][best][
                       'accuracy']),
                   f"{cells[best]['bytes_vs_acme']:.2f}"])
    parts.append('ACME against the strongest federated baseline of each '
                 'data split:')
    parts.append(
        report.markdown_table(
            ['split', 'ACME', 'strongest baseline', 'its accuracy',
             'ACME - it', 'its bytes / ACME\'s'], rows) +
        f"\n\nMean device test accuracy, {baselines['repeats']} repeat(s); "
        '± = 95% CI over repeats; * = the paired difference\'s CI excludes '
        '0; strongest = the highest mean accuracy of the split.')
  return '\n\n'.join(parts)


def _source(results, section) -> str:
  p = results.get('provenance', {}).get(section, {})
  dirty = ' (with uncommitted changes)' if p.get('dirty') else ''
  xla = f", XLA_FLAGS=`{p['xla_flags']}`" if p.get('xla_flags') else ''
  return (f"commit `{p.get('commit', '?')}`{dirty}, {p.get('cpus', '?')} "
          f"CPUs ({p.get('machine', '?')}), {p.get('accelerators', '?')}, "
          f"jax {p.get('jax', '?')}{xla}")


def _verdict(cell) -> str:
  if cell['ci'] is None:
    return 'one repeat: no CI'
  if not cell['holds']:
    return 'not shown (CI includes 0)'
  return 'holds' if cell['mean'] > 0 else 'reversed (CI below 0)'


def claims(results: dict) -> str:
  """The paper's claims (docs/method.md 8) against this run, from paired CIs."""
  rows = []
  if 'headers' in results:
    for kind, cell in results['headers']['nas_minus'].items():
      rows.append([f'NAS header beats {kind} (average over depths)',
                   stats.fmt_diff(cell), _verdict(cell)])
  for c in results.get('header_budget', {}).get('cells', []):
    for other, key in (('the best fixed head', 'nas_minus_fixed_best'),
                       ('a random architecture', 'nas_minus_random')):
      rows.append([f"NAS header beats {other} ({c['train_samples']} "
                   f"samples, {c['budget']} budget)", stats.fmt_diff(c[key]),
                   _verdict(c[key])])
  if 'aggregation' in results:
    agg = results['aggregation']
    for temperature, setups in agg.get('paper_order', {}).items():
      for setup, pairs in setups.items():
        if setup == 'IID':
          continue
        for pair, cell in pairs.items():
          rows.append([f'{setup}, {temperature}: {pair} > 0',
                       stats.fmt_diff(cell), _verdict(cell)])
  baselines = results.get('baselines')
  for setup in (baselines or {}).get('setups', []):
    for name, minus in baselines['acme_minus'][setup].items():
      rows.append([f'{setup}: ACME beats {name} (mean device accuracy)',
                   stats.fmt_diff(minus['accuracy']),
                   _verdict(minus['accuracy'])])
  ledger = results['ledger']
  rows.append(['ACME moves 6% of the centralized bytes',
               f"{ledger['ratio']:.1%} (hop-weighted)", 'not reproduced'
               if ledger['ratio'] > 0.06 else 'holds'])
  full = ledger.get('full_model_deployment')
  if full:
    rows.append(['ACME moves 6% of full-model deployment\'s bytes',
                 f"{full['ratio']:.1%} (hop-weighted)", 'not reproduced'
                 if full['ratio'] > 0.06 else 'holds'])
  return report.markdown_table(['claim', 'measured (paired diff ± 95% CI)',
                                'verdict'], rows)


def render(results: dict) -> str:
  """The generated block (without markers) for `results`."""
  parts = []
  grid = results['cloud']['grid']
  parts += ['#### Cloud: the trained grid (validation and test accuracy)',
            f"_Source: {_source(results, 'cloud')}._", report.grid_table(grid)]
  parts += ['#### Devices after NAS and the aggregation rounds',
            report.devices_table(results['devices'])]
  ledger = results['ledger']
  parts += ['#### Communication ledger', report.ledger_table(ledger)]
  if 'headers' in results:
    parts += ['#### Headers: ACME NAS vs fixed heads (mean device test '
              'accuracy)', f"_Source: {_source(results, 'headers')}._",
              report.headers_table(results['headers'])]
  if 'aggregation' in results:
    parts += ['#### Aggregation modes (mean device test accuracy; gain over '
              'wo_pruning)', f"_Source: {_source(results, 'aggregation')}._",
              report.aggregation_table(results['aggregation'])]
  if 'header_budget' in results:
    parts += ['#### Headers by search budget and local data size',
              f"_Source: {_source(results, 'header_budget')}._",
              report.budget_table(results['header_budget'])]
  if 'engine_equivalence' in results:
    parts += ['#### The client engine: loop vs vmap',
              f"_Source: {_source(results, 'engine_equivalence')}._",
              report.engine_table(results['engine_equivalence'])]
  if 'baselines' in results:
    parts += ['#### ACME vs federated baselines (device test accuracy, bytes)',
              f"_Source: {_source(results, 'baselines')}._",
              report.baselines_table(results['baselines'])]
  if 'header_ablation' in results:
    parts += ['#### Why the searched header loses: an ablation',
              f"_Source: {_source(results, 'header_ablation')}._",
              report.ablation_table(results['header_ablation'])]
  if 'personal_lm' in results:
    parts += ['#### Personal language modelling (perplexity per head)',
              f"_Source: {_source(results, 'personal_lm')}._",
              report.personal_lm_table(results['personal_lm'])]
  if 'supernet_value' in results:
    parts += [render_supernet_value(results)]
  parts += ['#### The paper\'s claims on this run', claims(results)]
  return '\n\n'.join(parts)


def render_latency(results: dict) -> str:
  """benchmarks.latency's tables, with their source."""
  from acme_jax.hardware import table
  return '\n\n'.join([f"_Source: {_source(results, 'latency')}._",
                       table.markdown(results).strip()])


def render_hardware(results: dict) -> str:
  """The main job's devices as hardware: each deployed model's predicted
  and measured latency and memory, and the simulated time (with every
  baseline's once experiments.baselines has run), with their sources."""
  from acme_jax import report_hardware
  parts = [f"_Source: {_source(results, 'devices')}._",
           report_hardware.hardware_table(results['devices'])]
  if 'baselines' in results:
    parts.append(f"_Simulated time of the methods: "
                 f"{_source(results, 'baselines')}._")
  parts.append(report_hardware.simulated_table(results['simulated_time']))
  return '\n\n'.join(parts)


def render_supernet_value(results: dict) -> str:
  """experiments.supernet_value's tables, with their source."""
  from acme_jax import report_value
  return '\n\n'.join([
      f"_Source: {_source(results, 'supernet_value')}._",
      report_value.supernet_value_table(results['supernet_value']).strip()])
