"""The report's tables of the devices as hardware: each deployed model's
predicted and measured latency and memory, and the simulated time of ACME
and the baselines (acme_jax/hardware/)."""
from acme_jax import stats
from acme_jax.markdown import markdown_table


def hardware_table(devices) -> str:
  """Per device its slowdown and budgets beside its deployed model's
  latency (predicted through the latency table, measured here; both at
  its slowdown) and peak memory."""
  budget = lambda v, unit: f'{v:g} {unit}' if v else 'none'  # noqa: E731
  rows = [[d['device'], f"{d['slowdown']:g}x",
           budget(d['latency_budget_ms'], 'ms'),
           f"{d['predicted_latency_ms']:.2f}",
           f"{d['measured_latency_ms']:.2f}",
           f"{d['predicted_latency_ms'] / d['measured_latency_ms'] - 1:+.0%}",
           budget(d['memory_budget_mb'], 'MiB'),
           f"{d['predicted_memory_mb']:.2f}",
           f"{d['measured_memory_mb']:.2f}",
           'misses ' + ' and '.join(d['budgets_missed'])
           if d.get('budgets_missed') else 'yes'] for d in devices]
  return (markdown_table(
      ['device', 'slowdown', 'latency budget', 'predicted ms',
       'measured ms', 'predicted vs measured', 'memory budget',
       'predicted MiB', 'measured MiB', 'within budgets (predicted)'],
      rows) +
      f"\n\nMeasured on {devices[0]['measured_on']}, batch as "
      f"system.hardware.batch; each device's times are this machine's "
      f"times its slowdown.")


def simulated_table(section) -> str:
  """The main job's simulated time by phase, then (after the baselines
  experiment) every method's seconds to its final accuracy."""
  acme = section.get('acme')
  parts = []
  if acme:
    rows = [[p['phase'], f"{p['seconds']:.2f}",
             f"{p['median_device_seconds']:.2f}", p['slowest_device']]
            for p in acme['phases']]
    rows.append(['**total**', f"{acme['seconds']:.2f}", '',
                 f"stragglers: {acme['straggler_seconds']:.2f} s "
                 f"({acme['straggler_share']:.0%})"])
    parts.append(markdown_table(
        ['ACME phase', 'seconds (slowest device)', 'median device',
         'slowest device'], rows))
  methods = section.get('methods')
  if methods:
    rows = [[name, stats.fmt(m['seconds'], 1),
             # (absent from a section written before it was recorded)
             stats.fmt_diff(m['minus_acme'], 1)
             if name != 'acme' and 'minus_acme' in m else '',
             stats.fmt(m['straggler_seconds'], 1),
             f"{m['mean_test_accuracy']:.3f}"]
            for name, m in methods.items()]
    first = next(iter(methods.values()))
    parts.append(markdown_table(
        ['method', 'simulated seconds to its final accuracy',
         'minus ACME\'s (paired)', 'of them waiting for stragglers',
         'mean test accuracy'], rows) +
        f"\n\n{first['setup']} partition, {first['repeats']} repeat(s); "
        f"± = 95% CI over repeats; * = the paired difference's CI "
        f"excludes 0.")
  return '\n\n'.join(parts)
