"""The networked loop with Flower's stock per-message ClientApp processes
and with warm device workers, side by side, as device processes grow.

  python -m benchmarks.networked --devices=6,12 --warm_only=24
  python -m benchmarks.networked --devices=6 --modes=warm --rounds=3

Each (count, mode) is a full networked run on this machine (2 edges, the
devices split evenly, iid data, the default model with short cloud and
header schedules: accuracy is not the point), every tier its own process
with TLS and device keys. The cloud stages are trained once and copied to
every run. Per run: seconds per round, the median seconds from a request to
its reply per message kind, and peak memory per process kind. A watchdog
stops a run when the machine's available memory falls below
--min_available_gb; the table says where it stopped and why. The last lines
read `networked at N devices: stock X s/round, warm Y s/round`.
"""
import json
import os
import pathlib
import shutil
import threading
import time

from absl import flags

from acme_jax import cli
from acme_jax import workdir as workdir_lib
from acme_jax import errors
from acme_jax.networked import launcher, processes, report
from benchmarks import inputs

DEVICES = flags.DEFINE_list('devices', ['6', '12'],
                            'device counts run in every mode of --modes')
WARM_ONLY = flags.DEFINE_list('warm_only', [],
                              'device counts run in warm mode only')
MODES = flags.DEFINE_list('modes', ['stock', 'warm'], 'stock and/or warm')
ROUNDS = flags.DEFINE_integer('rounds', 2, 'aggregation rounds per run',
                              lower_bound=1)
IN_FLIGHT = flags.DEFINE_integer(
    'in_flight', 4, 'requests an edge keeps in flight (network.max_in_flight; '
    '0 = all its devices at once)', lower_bound=0)
WORKDIR = flags.DEFINE_string('workdir', 'runs/bench_networked',
                              'one subdirectory per device count')
MIN_GB = flags.DEFINE_float('min_available_gb', 1.5,
                            'stop a run below this much available memory',
                            lower_bound=0.0)
RUN_TIMEOUT = flags.DEFINE_float('run_timeout_s', 7200.0,
                                 'stop a run that takes longer',
                                 lower_bound=1.0)
for _name in ('devices', 'warm_only'):
  # Two edges share the devices evenly.
  flags.register_validator(
      _name, lambda v: cli.whole_numbers(v, 2) and all(
          int(d) % 2 == 0 for d in v),
      f'--{_name} takes even device counts >= 2 (two edges share them), '
      f'e.g. 6,12')
flags.register_validator(
    'modes', lambda v: bool(v) and set(v) <= {'stock', 'warm'},
    '--modes takes stock and/or warm')


def bench_config(devices: int, warm: bool = True):
  from configs import default
  config = default.get_config()
  for stage in (config.cloud.teacher, config.cloud.width_stage,
                config.cloud.depth_stage):
    stage.epochs = 2
  config.system.num_edges = 2
  config.system.devices_per_edge = (devices // 2,)
  config.system.partition = 'iid'
  header = config.header
  header.search_epochs, header.finetune_epochs, header.controller_steps_per_epoch = 1, 1, 2
  header.finetune_lrs = (0.03,)
  aggregation = config.aggregation
  aggregation.rounds, aggregation.local_epochs, aggregation.finetune_epochs = ROUNDS.value, 1, 1
  network = config.network
  network.max_in_flight = IN_FLIGHT.value
  network.warm_workers = warm
  network.timeout_s, network.setup_timeout_s = 1800.0, 3600.0
  network.join_timeout_s, network.run_timeout_s = 900.0, RUN_TIMEOUT.value
  return config


def _available_gb() -> float:
  for line in open('/proc/meminfo'):
    if line.startswith('MemAvailable:'):
      return int(line.split()[1]) / 2**20
  return float('nan')


KINDS = ('flower-supernode', 'flwr-clientapp', 'flower-superlink',
         'flwr-serverapp', 'flower-superexec', 'acme_jax.networked.worker')


def _tree_rss_gb(pid: int):
  """(total GB, {process kind: GB}) of `pid` and everything below it."""
  total, by_kind = 0, {}
  for p in [pid] + processes.descendants(pid):
    try:
      cmd = open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace')
      for line in open(f'/proc/{p}/status'):
        if line.startswith('VmRSS:'):
          kb = int(line.split()[1])
          total += kb
          kind = next((k for k in KINDS if k in cmd), 'other')
          by_kind[kind] = by_kind.get(kind, 0) + kb / 2**20
    except OSError:
      pass
  return total / 2**20, by_kind


class Watch:
  """Samples memory every second; kills the run when memory runs out."""

  def __init__(self, run: launcher.Launcher):
    self.run, self.peak_rss, self.min_available = run, 0.0, _available_gb()
    self.by_kind = {}  # per process kind, its peak summed RSS
    self.stopped = None
    self._done = threading.Event()
    threading.Thread(target=self._loop, daemon=True).start()

  def _loop(self):
    while not self._done.wait(1.0):
      total, by_kind = _tree_rss_gb(os.getpid())
      self.peak_rss = max(self.peak_rss, total)
      for kind, gb in by_kind.items():
        self.by_kind[kind] = max(self.by_kind.get(kind, 0.0), gb)
      available = _available_gb()
      self.min_available = min(self.min_available, available)
      if available < MIN_GB.value and self.stopped is None:
        self.stopped = f'memory: {available:.1f} GB available'
        self.run.procs.stop_all()

  def close(self):
    self._done.set()


def one_run(count: int, mode: str, wd: pathlib.Path, cloud) -> dict:
  """A networked run of `count` devices in `mode`; its row."""
  if cloud is not None and not (wd / 'cloud').exists():
    shutil.copytree(cloud, wd / 'cloud')
  run = launcher.Launcher(bench_config(count, mode == 'warm'), wd,
                          log=lambda *_: None)
  watch, t0 = Watch(run), time.time()
  row = {'devices': count, 'mode': mode}
  try:
    result = run.run()
    per_round = [max(e['rounds'][r]['seconds']
                     for e in result['edges'].values())
                 for r in range(ROUNDS.value)]
    row.update(status='finished', seconds=time.time() - t0,
               round_seconds=per_round,
               seconds_per_round=sum(per_round) / len(per_round),
               rounds_per_minute=60 * len(per_round) / sum(per_round),
               reply_seconds=result['reply_seconds'],
               answered=sum(len(e['rounds'][-1]['answered'])
                            for e in result['edges'].values()))
  except Exception as e:  # pylint: disable=broad-except
    row.update(status=watch.stopped or f'failed: {e}'[:200],
               seconds=time.time() - t0)
  finally:
    watch.close()
  row.update(peak_rss_gb=watch.peak_rss, min_available_gb=watch.min_available,
             processes=count + 3 * 2 + 2 + (count + 2 if mode == 'warm'
                                            else 0),
             peak_rss_by_kind_gb=watch.by_kind)
  return row


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  base = pathlib.Path(WORKDIR.value)
  plan = [(int(d), m) for d in DEVICES.value for m in MODES.value]
  plan += [(int(d), 'warm') for d in WARM_ONLY.value]
  inputs.networked({(count, mode): bench_config(count, mode == 'warm')
                    for count, mode in plan}, ROUNDS.value, IN_FLIGHT.value,
                   MIN_GB.value, RUN_TIMEOUT.value, base)
  cli.enable_compilation_cache()
  rows, cloud = [], None
  for count, mode in plan:
    row = one_run(count, mode, base / f'{mode}{count}', cloud)
    if row['status'] == 'finished' and cloud is None:
      cloud = base / f'{mode}{count}' / 'cloud'
    rows.append(row)
    print(json.dumps(row), flush=True)
    workdir_lib.atomic_write_json(base / 'results.json', rows)
  print('\n' + report.scaling_table(rows))
  print('\n' + report.reply_table(rows))
  print()
  for line in report.summary_lines(rows):
    print(line)


if __name__ == '__main__':
  cli.run_tool(main)
