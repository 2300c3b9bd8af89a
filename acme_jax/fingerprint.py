"""A stage's fingerprint: the config sections its outputs depend on, as
JSON. A cached output is reused only where its stored fingerprint equals
the run's."""
import json


def subset(config, sections) -> dict:
  """The JSON of `config`'s top-level `sections` (a stage's fingerprint)."""
  full = json.loads(config.to_json_best_effort())
  out = {k: full[k] for k in sections if k in full}
  # Shapes between the grid's points shape the device stages only when
  # the edges may deliver them; off, they leave every fingerprint as it was.
  if ('selection' in sections and 'between_grid' in full and
      full['between_grid'].get('deliver')):
    out['between_grid'] = full['between_grid']
  # Devices as hardware enter a fingerprint only once set: at their
  # defaults (no latency table, no budgets, free links) they change nothing.
  if 'system' in out and out['system'].get('hardware') == HARDWARE_OFF:
    out['system'] = {k: v for k, v in out['system'].items()
                     if k != 'hardware'}
  return out


HARDWARE_OFF = {'latency_table': '', 'batch': 1, 'slowdown': [1.0],
                'latency_budget_ms': [0.0], 'memory_budget_mb': [0.0],
                'uplink_mbps': [0.0], 'downlink_mbps': [0.0]}


def repeat_fingerprint(config, sections) -> dict:
  """`subset` without any section's `repeats`: repeat r of an experiment
  draws its keys and data from r alone, so a cached repeat serves a run
  with more (or fewer) repeats."""
  return {k: ({f: v for f, v in section.items() if f != 'repeats'}
              if isinstance(section, dict) else section)
          for k, section in subset(config, sections).items()}
