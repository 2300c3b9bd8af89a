"""The networked run's results: per-device records, and bytes three ways.

  ledger   the arrays of ACME's records (docs/method.md 7), what `hierarchy/ledger.py`
           counts in-process (the edges enter each record as it passes);
  message  the Flower messages that carried them, as Flower serializes them
           (requests and acks without a payload are 'control');
  wire     the TCP bytes each link carried (`wire.py`): messages plus HTTP,
           TLS, heartbeats and polling.
"""
import collections
import json
import math
import pathlib

from acme_jax import report as report_lib
from acme_jax import workdir as workdir_lib
from acme_jax.networked import names
from acme_jax.networked.edge import multipliers
from acme_jax.hierarchy.ledger import Ledger

# Which message (kind, direction) carries which ledger kind.
CARRIES = {
    ('query.front', 'down'): 'front',
    ('query.backbone', 'down'): 'backbone',
    ('query.histogram', 'up'): 'histogram',
    ('train.backbone', 'down'): 'backbone',
    ('train.round', 'up'): 'importance',
    ('train.prune', 'down'): 'importance',
    ('query.metrics', 'up'): 'metrics',
    ('train.metrics', 'up'): 'metrics',
}
# Ledger kinds without messages of their own: a device's signature and its
# header's layout ride in its reply to a round's first training, with the
# importances.
RIDERS = {'signature': 'importance', 'header': 'importance'}


def _messages(path: pathlib.Path):
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line]


def collect(wd, world, wire_totals=None) -> dict:
  wd = pathlib.Path(wd)
  devices, edges, messages, ledger = [], {}, [], Ledger()
  for e in world['edges']:
    d = wd / f'edge{e}'
    state = workdir_lib.read_json(d / 'state.json')
    edges[e] = {'rounds': state.get('rounds', []),
                'excluded': state.get('excluded', []),
                'seconds': state.get('seconds')}
    for record in Ledger.from_records(workdir_lib.read_json(
        d / 'ledger.json')):
      ledger.add(record)
    messages += [dict(m, edge=e) for m in _messages(d / 'messages.jsonl')]
  picks = {}
  for e in world['edges']:
    picks.update(workdir_lib.read_json(wd / f'edge{e}' / 'state.json').get(
        'picks', {}))
  selection = workdir_lib.read_json(wd / 'cloud' / 'selection.json')
  by_multipliers = {multipliers(c['width_mult'], c['depth_mult']): c
                    for c in selection['candidates']}
  for dev in world['devices']:
    path = wd / f'device{dev["id"]}' / 'record.json'
    if path.exists():
      record = workdir_lib.read_json(path)
      pick = picks[str(record['device'])]
      cand = by_multipliers[multipliers(pick['width_mult'],
                                        pick['depth_mult'])]
      record.update(
          predicted_accuracy=cand['predicted_accuracy'],
          measured_accuracy=cand['measured_accuracy'],
          histogram_weighted_accuracy=pick['score'])
      devices.append(record)
  return {'devices': devices, 'edges': edges,
          'bytes': byte_table(ledger, messages, wire_totals),
          'reply_seconds': reply_seconds(messages),
          'ledger': ledger.to_records()}


def reply_seconds(messages) -> dict:
  """Per message kind, the median and max seconds from a request to its
  reply: the device's work plus Flower's cost of a message (a fresh
  ClientApp process per message, its imports, polling)."""
  sent, waits = {}, collections.defaultdict(list)
  for m in messages:
    key = (m['edge'], m['kind'], tuple(m['peer']), m['round'])
    out = m['direction'] == ('down' if m['peer'][0] == 'device' else 'up')
    if out:
      sent.setdefault(key, []).append(m['t'])
    elif sent.get(key):
      waits[m['kind']].append(m['t'] - sent[key].pop(0))
  return {k: {'median': float(sorted(v)[len(v) // 2]), 'max': max(v),
              'replies': len(v)} for k, v in sorted(waits.items())}


def byte_table(ledger: Ledger, messages, wire_totals=None) -> dict:
  """Per link tier and per ledger kind: ledger, message and wire bytes."""
  by_kind = collections.defaultdict(lambda: {'messages': 0, 'message_bytes': 0,
                                             'ledger_bytes': 0})
  for m in messages:
    kind = CARRIES.get((m['kind'], m['direction']), 'control')
    by_kind[kind]['messages'] += 1
    by_kind[kind]['message_bytes'] += m['bytes']
  for r in ledger:
    by_kind[r.kind]['ledger_bytes'] += r.bytes
  links = {}
  for tier, pred in (('edge-device', lambda r: 'device' in
                      (r.src_tier, r.dst_tier)),
                     ('cloud-edge', lambda r: 'cloud' in
                      (r.src_tier, r.dst_tier))):
    led = sum(r.bytes for r in ledger if pred(r))
    msg = sum(m['bytes'] for m in messages
              if (m['peer'][0] == 'device') == (tier == 'edge-device'))
    entry = {'ledger_bytes': led, 'message_bytes': msg}
    if wire_totals is not None:
      prefix = 'device' if tier == 'edge-device' else 'cloud_at_edge'
      wire = [v for k, v in wire_totals.items() if k.startswith(prefix)]
      entry['wire_up'] = sum(v['up'] for v in wire)
      entry['wire_down'] = sum(v['down'] for v in wire)
      entry['wire_bytes'] = entry['wire_up'] + entry['wire_down']
      entry['wire_over_ledger'] = (entry['wire_bytes'] / led if led
                                   else None)
    entry['message_over_ledger'] = msg / led if led else None
    links[tier] = entry
  kinds = {}
  for k, v in sorted(by_kind.items()):
    if k in RIDERS:  # no message of its own: see its carrier's row
      kinds[k] = dict(v, messages=None, message_bytes=None,
                      message_over_ledger=None, carried_by=RIDERS[k])
      continue
    riders = sorted(r for r, c in RIDERS.items() if c == k and r in by_kind)
    carried = v['ledger_bytes'] + sum(by_kind[r]['ledger_bytes']
                                      for r in riders)
    kinds[k] = dict(v, message_over_ledger=(v['message_bytes'] / carried
                                            if carried else None))
    if riders:
      kinds[k].update(carries=riders, carried_ledger_bytes=carried)
  return {'by_kind': kinds, 'by_link': links}


# Per-device fields a networked run must reproduce exactly; multipliers
# travel as float32 in the front, so they match to 1e-6.
EXACT = ('edge', 'budget', 'params', 'bytes', 'header_arch', 'header_cells',
         'nas_header_params', 'nas_test_accuracy', 'finetune_lr',
         'importance_sha256', 'header_params', 'total_params',
         'test_accuracy', 'gate_channels_live', 'label_histogram',
         'local_samples', 'linear_probe_test_accuracy', 'predicted_accuracy',
         'measured_accuracy')
CLOSE = ('width_mult', 'depth_mult', 'histogram_weighted_accuracy')


def _ledger_key(r):
  return (r['src_tier'], r['src_id'], r['dst_tier'], r['dst_id'], r['kind'],
          r['bytes'], r['final'], r['round'])


def compare(networked: dict, in_process_devices, in_process_ledger) -> dict:
  """Where a networked run differs from the in-process run of the same
  config: {'devices': {id: [fields]}, 'missing': [ids], 'ledger_equal'}."""
  got = {d['device']: d for d in networked['devices']}
  out = {'devices': {}, 'missing': []}
  for want in in_process_devices:
    have = got.get(want['device'])
    if have is None:
      out['missing'].append(want['device'])
      continue
    bad = [k for k in EXACT if have.get(k) != want.get(k)]
    bad += [k for k in CLOSE if abs(have[k] - want[k]) > 1e-6]
    if bad:
      out['devices'][want['device']] = bad
  # By repr: a ledger's `round` is None for setup records, an int later.
  out['ledger_equal'] = (sorted(map(_ledger_key, networked['ledger']),
                                key=repr) ==
                         sorted(map(_ledger_key, in_process_ledger),
                                key=repr))
  out['compared'] = len(in_process_devices)
  return out


def _ratio(x):
  return '-' if x is None else f'{x:.3f}'


def markdown(results, heading: str = '#') -> str:
  b = results['bytes']
  sub = heading + '#' if heading == '#' else heading
  out = [f'{heading} Networked run', '',
         f'{len(results["devices"])} devices reported; '
         f'{results.get("seconds", 0):.0f} s in all.', '']
  rows = [[d['device'], d['edge'], f'{d["depth_mult"]:g}',
           f'{d["width_mult"]:g}', d['total_params'],
           f'{d["nas_test_accuracy"]:.3f}', f'{d["test_accuracy"]:.3f}']
          for d in sorted(results['devices'], key=lambda d: d['device'])]
  out += [report_lib.markdown_table(
      ['device', 'edge', 'depth', 'width', 'params', 'NAS acc', 'final acc'],
      rows), '']
  rows = []
  for k, v in b['by_kind'].items():
    if v.get('carried_by'):
      rows.append([k, '-', v['ledger_bytes'],
                   f'in {v["carried_by"]}\'s', '-'])
    else:
      label = ' + '.join([k] + v.get('carries', []))
      rows.append([k, v['messages'], v['ledger_bytes'], v['message_bytes'],
                   _ratio(v['message_over_ledger']) +
                   (f' ({label})' if v.get('carries') else '')])
  riders = {k: v['carries'] for k, v in b['by_kind'].items()
            if v.get('carries')}
  note = ' '.join(
      f'{" and ".join(f"`{x}`" for x in r)} ride{"s" if len(r) == 1 else ""} '
      f'in `{k}`\'s messages (the reply to a round\'s first training), so '
      f'that row\'s ratio is over {" + ".join([k] + r)}.'
      for k, r in riders.items())
  out += [f'{sub} Bytes by record kind', '',
          'Every ledger kind with its own bytes. ' + note, '',
          report_lib.markdown_table(
              ['kind', 'messages', 'ledger bytes', 'message bytes',
               'message / ledger'], rows), '']
  rows = []
  for tier, v in b['by_link'].items():
    rows.append([tier, v['ledger_bytes'], v['message_bytes'],
                 v.get('wire_bytes', '-'), _ratio(v['message_over_ledger']),
                 _ratio(v.get('wire_over_ledger'))])
  out += [f'{sub} Bytes by link', '', report_lib.markdown_table(
      ['link', 'ledger bytes', 'message bytes', 'wire bytes (TCP)',
       'message / ledger', 'wire / ledger'], rows), '']
  rows = [[k, v['replies'], f'{v["median"]:.1f}', f'{v["max"]:.1f}']
          for k, v in results.get('reply_seconds', {}).items()]
  out += [f'{sub} Seconds from request to reply', '', report_lib.markdown_table(
      ['message', 'replies', 'median', 'max'], rows), '']
  for e, edge in results['edges'].items():
    for r in edge['rounds']:
      out.append(f'- edge {e} round {r["round"]}: trained '
                 f'{r["answered"]} of {r["members"]}, pruned {r["pruned"]} '
                 f'({r["seconds"]:.1f} s)')
  return '\n'.join(out) + '\n'


def scaling_table(rows) -> str:
  """benchmarks/networked.py's rows as a table."""
  out = []
  for r in rows:
    seconds = r.get('round_seconds', [])
    status = r['status'] if len(r['status']) <= 60 else r['status'][:57] + '...'
    out.append([r['devices'], r.get('mode', 'stock'), status,
                ' / '.join(f'{s:.0f}' for s in seconds) or '-',
                f"{r['rounds_per_minute']:.2f}" if 'rounds_per_minute' in r
                else '-', f"{r['peak_rss_gb']:.1f}",
                f"{r['min_available_gb']:.1f}", f"{r['seconds']:.0f}"])
    kinds = r.get('peak_rss_by_kind_gb', {})
    out[-1].append(', '.join(f'{_kind(k)} {v:.1f}' for k, v in
                             sorted(kinds.items())) or '-')
  return report_lib.markdown_table(
      ['devices', 'mode', 'status', 's per round', 'rounds / min',
       'peak RSS (GB)', 'min available (GB)', 'wall (s)',
       'peak RSS by process kind (GB)'], out)


def _kind(process: str) -> str:
  """'flwr-clientapp' -> 'clientapp', 'acme_jax.networked.worker' ->
  'worker'."""
  return process.split('-')[-1].split('.')[-1]


def reply_table(rows) -> str:
  """Median seconds from request to reply per message kind, one column per
  benchmark run (devices, mode)."""
  kinds = sorted({k for r in rows for k in r.get('reply_seconds', {})})
  runs = [r for r in rows if r.get('reply_seconds')]
  return report_lib.markdown_table(
      ['message'] + [f"{r['devices']} {r.get('mode', 'stock')}" for r in runs],
      [[k] + [f"{r['reply_seconds'][k]['median']:.1f}"
              if k in r['reply_seconds'] else '-' for r in runs]
       for k in kinds])


def summary_lines(rows) -> list:
  """`networked at N devices: stock X s/round, warm Y s/round` per count."""
  out = []
  for count in sorted({r['devices'] for r in rows}):
    parts = []
    for mode in ('stock', 'warm'):
      r = next((r for r in rows if r['devices'] == count and
                r.get('mode', 'stock') == mode), None)
      if r is not None:
        parts.append(f"{mode} {r['seconds_per_round']:.1f} s/round"
                     if 'seconds_per_round' in r else f"{mode} {r['status']}")
    out.append(f'networked at {count} devices: ' + ', '.join(parts))
  return out


def main(argv=None):
  """python -m acme_jax.networked.report --networked=W --in_process=W2"""
  from acme_jax import errors
  p = errors.OneLineParser(prog='python -m acme_jax.networked.report')
  p.add_argument('--networked', required=True, help='a networked workdir')
  p.add_argument('--in_process', required=True,
                 help='an experiments.main workdir of the same config')
  args = p.parse_args(argv)
  return errors.boundary(_compare_workdirs, args)


def _read_json(directory: str, flag: str, name: str, made_by: str):
  from acme_jax import errors
  path = pathlib.Path(directory) / name
  if not path.is_file():
    raise errors.UserError(f'--{flag}={directory} has no {name}; give the '
                           f'workdir of a finished {made_by} run')
  try:
    return path, json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise errors.UserError(f'{path} is not valid JSON ({e}); rerun '
                           f'{made_by} on that workdir') from None
  except OSError as e:
    raise errors.UserError(f'{path} cannot be read ({e.strerror}); give '
                           f'the workdir of a finished {made_by} run') \
        from None


LEDGER_FIELDS = ('src_tier', 'src_id', 'dst_tier', 'dst_id', 'kind', 'bytes',
                 'final', 'round')


def _records(path, data, section, fields, numbers, made_by):
  """`data[section]` (or `data` itself, section None) must be a list of
  records with `fields`, `numbers` among them numeric: else one line naming
  the file and what to do."""
  from acme_jax import errors
  what = f'its "{section}" section' if section else 'it'

  def fix(why):  # not str.format: a path may hold braces
    return (f'{path} is not what {made_by} writes ({why}); rerun {made_by} '
            'on that workdir')

  if section is not None:
    if not isinstance(data, dict):
      raise errors.UserError(fix(f'it holds a JSON {names.json_type(data)}, '
                                 'not an object'))
    if section not in data:
      raise errors.UserError(fix(f'it has no "{section}" section'))
    data = data[section]
  if not isinstance(data, list) or not all(isinstance(r, dict)
                                           for r in data):
    raise errors.UserError(fix(f'{what} is not a list of records'))
  for r in data:
    missing = [f for f in fields if f not in r]
    if missing:
      raise errors.UserError(fix(
          f'a record of {what} has no {", ".join(missing)}'))
    bad = [f for f in numbers
           if isinstance(r[f], bool) or not isinstance(r[f], (int, float))
           or not math.isfinite(r[f])]
    if bad:
      raise errors.UserError(fix(
          f'a record of {what} has a {", ".join(bad)} that is not a finite '
          'number'))
  return data


def _compare_workdirs(args) -> int:
  path, net = _read_json(args.networked, 'networked', 'networked.json',
                         'experiments.networked')
  fields = ('device',) + CLOSE
  _records(path, net, 'devices', fields, fields, 'experiments.networked')
  _records(path, net, 'ledger', LEDGER_FIELDS, (), 'experiments.networked')
  path, results = _read_json(args.in_process, 'in_process', 'results.json',
                             'experiments.main')
  devices = _records(path, results, 'devices', fields, fields,
                     'experiments.main')
  path, ledger = _read_json(args.in_process, 'in_process', 'ledger.json',
                            'experiments.main')
  _records(path, ledger, None, LEDGER_FIELDS, (), 'experiments.main')
  diff = compare(net, devices, ledger)
  print(json.dumps(diff))
  same = not diff['devices'] and not diff['missing'] and diff['ledger_equal']
  print(f'{diff["compared"]} devices: ' + (
      'every field and every ledger record equal' if same else 'DIFFERENT'))
  return 0 if same else 1


if __name__ == '__main__':
  raise SystemExit(main())
