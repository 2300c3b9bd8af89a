"""Bad inputs against the entry points, as a new user would give them: each
case's first line on stderr, exit code and seconds, as a markdown table
(the table of issue 35's closing note). Not a pytest module: the cases
train, fill disks and send signals, which take minutes; tests/ holds the
fast checks of each class.

  python tests/probe_inputs.py --out=/tmp/probe.md [--only=validation,...]

Needs Linux; the disk cases mount a small tmpfs (root only; skipped
otherwise). Every command runs in a fresh scratch directory S, so nothing
a case writes outside its workdir W goes unnoticed.
"""
import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable
MAIN = f'{PY} -m experiments.main --config=configs/default.py'


@dataclasses.dataclass
class Case:
  kind: str
  command: str                       # shell; {W}: the workdir
  setup: Optional[Callable] = None   # setup(S, W) before the command
  expect: int = 2
  signal_after: Optional[str] = None  # send SIGTERM/SIGINT after this line
  signum: int = signal.SIGTERM
  new: bool = False


def _tiny():
  sys.path.insert(0, str(ROOT / 'tests'))
  import test_multihost  # pylint: disable=import-outside-toplevel
  return ' '.join(test_multihost.TINY)


def _finished(tiny):
  """A finished tiny workdir, built once and copied per case."""
  path = pathlib.Path(tempfile.gettempdir()) / 'probe_finished'
  if not (path / 'results.json').exists():
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(f'{MAIN} --workdir={path} {tiny}', shell=True, cwd=ROOT,
                   check=True, capture_output=True)
  return path


def _copy_finished(tiny):
  def setup(s, w):
    shutil.copytree(_finished(tiny), w, dirs_exist_ok=True)
  return setup


def _write(name, text):
  def setup(s, w):
    (w / name).parent.mkdir(parents=True, exist_ok=True)
    (w / name).write_text(text)
  return setup


def _mkdir(name):
  def setup(s, w):
    (w / name).mkdir(parents=True)
  return setup


def _mount(size, name='', ro=False):
  def setup(s, w):
    target = w / name if name else w
    target.mkdir(parents=True, exist_ok=True)
    opts = f'size={size}' + (',ro' if ro else '')
    subprocess.run(['mount', '-t', 'tmpfs', '-o', opts, 'tmpfs',
                    str(target)], check=True)
  return setup


def _held_by_a_job(tiny):
  """A first job running on W (it holds W's lock until it is killed)."""
  def setup(s, w):
    proc = subprocess.Popen(
        f'exec {MAIN} --workdir={w} {tiny} --config.cloud.teacher.epochs=50',
        shell=True, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    for line in proc.stdout:
      if line.startswith('[data]'):
        break
    s.joinpath('holder.pid').write_text(str(proc.pid))
    _HOLDERS.append(proc)
  return setup


_HOLDERS = []


def _killed_job(tiny):
  def setup(s, w):
    _held_by_a_job(tiny)(s, w)
    holder = _HOLDERS.pop()
    holder.kill()
    holder.wait()
  return setup


def cases(tiny):
  m = MAIN
  c = []
  add = lambda kind, cmd, **kw: c.append(Case(kind, cmd, **kw))  # noqa
  # ---- multi-host through the entry points
  add('multi-host', f'{m} --workdir={{W}} {tiny} '
      '--config.cloud.distributed.coordinator=127.0.0.1:12355 '
      '--config.cloud.distributed.num_processes=1 '
      '--config.cloud.distributed.process_id=0', expect=0)
  add('multi-host', f'{m} --workdir={{W}} --config.cloud.distributed.auto=True',
      new=True)
  add('multi-host', f'{m} --workdir={{W}} '
      '--config.cloud.distributed.coordinator=127.0.0.1:0', new=True)
  add('multi-host', f'{m} --workdir={{W}} '
      '--config.cloud.distributed.coordinator=:1234', new=True)
  add('multi-host', f'{m} --workdir={{W}} '
      '--config.cloud.distributed.coordinator=127.0.0.1:1234 '
      '--config.cloud.distributed.num_processes=2 '
      '--config.cloud.distributed.process_id=2', new=True)
  # ---- accepted values that failed late or silently
  for flag in ('cloud.teacher.learning_rate=inf', 'model.layer_norm_eps=inf',
               'header.lr_max=inf', 'header.lr_min=0.5',
               'header.temperature=inf', 'aggregation.temperature=1e-320',
               'federated.kd_temperature=inf',
               'cloud.teacher.epochs=100000000000000000000',
               'selection.grid_size=100000', 'header.batch_size=100000',
               'header.num_nodes=1000', 'header.controller_hidden=100000',
               'selection.sigma=inf'):
    add('validation', f'{m} --workdir={{W}} --config.{flag}')
  for flag in ('cloud.teacher.learning_rate=nan',
               'cloud.width_stage.learning_rate=-inf',
               'cloud.depth_stage.clip_norm=1e-300',
               'model.layer_norm_eps=2.0', 'header.dropout_rate=nan',
               'aggregation.lr=inf', 'system.dirichlet_alpha=inf',
               'selection.size_constraint=nan', 'data.cloud_fraction=inf',
               'federated.lrs=0.01,inf', 'header.finetune_lrs=nan',
               'aggregation.temperatures=1.0,0.0',
               'cloud.batch_size=1000000', 'header.num_channels=100000',
               'seed=4294967296', 'aggregation.rounds=1099511627776',
               'system.profile.g_n=inf', 'system.profile.k=nan',
               'header.controller_lr=1e-320', 'cloud.eval_batch_size=10000000',
               'federated.kd_weight=inf', 'aggregation.self_weight=-inf',
               'cloud.teacher.weight_decay=inf', 'data.synthetic.noise=inf'):
    add('validation', f'{m} --workdir={{W}} --config.{flag}', new=True)
  add('validation', f'{m} --workdir={{W}} {tiny}  # for the time of the next',
      expect=0, new=True)
  add('validation', f'{m} --workdir={{W}} {tiny} '
      '--config.cloud.eval_batch_size=100000', expect=0)
  add('validation', f'{m} --workdir={{W}} --config.data.name=synthetic '
      '--config.data.synthetic.num_train=100000000', new=True)
  # ---- workdir contents of the wrong shape
  for name, text in (('results.json', '[1, 2]'), ('results.json', 'null'),
                     ('results.json', '{"cloud": 1, "selection": []}')):
    add('workdir', f'{m} --workdir={{W}}  # {name} = {text}',
        setup=_write(name, text))
  add('workdir', f'{m} --workdir={{W}}  # ledger.json a directory',
      setup=_mkdir('ledger.json'))
  add('workdir', f'{m} --workdir={{W}}  # results.json a directory',
      setup=_mkdir('results.json'))
  add('workdir', f'{m} --workdir={{W}}  # cloud/teacher a file',
      setup=_write('cloud/teacher', 'x'))
  add('workdir', f'{m} --workdir={{W}}  # cloud a read-only mount',
      setup=_mount('1m', 'cloud', ro=True))
  add('workdir', f'{m} --workdir={{W}} {tiny}  # devices.json = [] resealed',
      setup=lambda s, w: (_copy_finished(tiny)(s, w),
                          (w / 'devices.json').write_text('[]'),
                          _reseal(w / 'devices.json')), expect=0)
  add('workdir', f'{m} --workdir={{W}} {tiny} '
      '--config.cloud.depth_stage.learning_rate=0.001  # finished with '
      'another cloud config', setup=_copy_finished(tiny))
  add('workdir', f'{m} --workdir={{W}} {tiny} '
      '--config.cloud.depth_stage.learning_rate=0.001  # ... and the stored '
      'fingerprints edited to match', setup=lambda s, w: (
          _copy_finished(tiny)(s, w), _forge(w)), expect=0)
  for name in ('report.md', 'pareto.png', 'selection.json', 'cloud/grid.md'):
    add('workdir', f'{m} --workdir={{W}}  # {name} a directory',
        setup=_mkdir(name), new=True)
  add('workdir', f'{m} --workdir={{W}}  # cloud a file', setup=_write('cloud', ''),
      new=True)
  add('workdir', f'{m} --workdir={{W}}  # results.json devices an object',
      setup=_write('results.json', '{"devices": {}}'), new=True)
  add('workdir', f'{m} --workdir={{W}}  # results.json provenance a list',
      setup=_write('results.json', '{"provenance": []}'), new=True)
  add('workdir', f'{PY} -m experiments.headers --config=configs/default.py '
      '--workdir={W}  # results.json = 3', setup=_write('results.json', '3'),
      new=True)
  add('workdir', f'{m} --workdir={{W}}  # W a read-only mount',
      setup=_mount('1m', ro=True), new=True)
  add('workdir', f'{m} --workdir={{W}}/x  # W a file', setup=lambda s, w: (
      w.rmdir(), w.write_text('')), new=True)
  # ---- one job per workdir
  add('lock', f'{m} --workdir={{W}} {tiny}  # while a job runs on W',
      setup=_held_by_a_job(tiny))
  add('lock', f'{PY} -m experiments.headers --config=configs/default.py '
      f'--workdir={{W}} {tiny}  # while a job runs on W',
      setup=_held_by_a_job(tiny), new=True)
  add('lock', f'{m} --workdir={{W}} --config.seed=-1  # while a job runs on W '
      '(the config is refused first)', setup=_held_by_a_job(tiny), new=True)
  add('lock', f'{m} --workdir={{W}} {tiny}  # after a job on W was killed '
      '(SIGKILL)', setup=_killed_job(tiny), expect=0, new=True)
  # ---- a full or read-only disk
  add('disk', f'{m} --workdir={{W}}  # W on a 3 MB disk', setup=_mount('3m'))
  add('disk', f'{m} --workdir={{W}} --config.resume.every_steps=0  # W on a '
      '400 kB disk', setup=_mount('400k'), new=True)
  # ---- signals
  add('signal', f'{m} --workdir={{W}}  # SIGTERM once training has begun',
      signal_after='[data]', expect=143)
  add('signal', f'{m} --workdir={{W}}  # Ctrl-C once training has begun',
      signal_after='[data]', signum=signal.SIGINT, expect=130)
  add('signal', f'{PY} -m experiments.headers --config=configs/default.py '
      '--workdir={W}  # SIGTERM', signal_after='[data]', expect=143, new=True)
  return c


def _reseal(path):
  from acme_jax import workdir as workdir_lib
  workdir_lib.seal(path)


def _forge(w):
  """The issue's edit, done to the stored fingerprint this time."""
  from acme_jax import workdir as workdir_lib
  for stage in ('teacher', 'reordered', 'width_stage', 'depth_stage'):
    path = w / 'cloud' / stage / workdir_lib.FINGERPRINT_NAME
    saved = json.loads(path.read_text())
    saved['cloud']['depth_stage']['learning_rate'] = 0.001
    path.write_text(json.dumps(saved))


def _snapshot(root: pathlib.Path) -> set:
  """Every path under the checkout but git's own (commits made meanwhile
  are not the case's)."""
  return {str(p) for p in root.rglob('*') if '.git' not in p.parts}


def run_case(case: Case, tiny) -> dict:
  scratch = pathlib.Path(tempfile.mkdtemp(prefix='probe_'))
  w = scratch / 'W'
  w.mkdir()
  mounts = []
  try:
    if case.setup:
      case.setup(scratch, w)
    mounts = [line.split()[1] for line in open('/proc/mounts')
              if line.split()[1].startswith(str(scratch))]
    before = _snapshot(ROOT)
    command = case.command.replace('{W}', str(w))
    if case.signal_after:  # the signal goes to the job, not to a shell
      command = 'exec ' + command
    t0 = time.time()
    proc = subprocess.Popen(
        command, shell=True, cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if case.signal_after:
      for line in proc.stdout:
        if line.startswith(case.signal_after):
          break
      time.sleep(1)
      os.killpg(proc.pid, case.signum)
    out, err = proc.communicate(timeout=1800)
    seconds = time.time() - t0
    err, out = err.replace(str(w), 'W'), out.replace(str(w), 'W')
    lines = [l for l in err.splitlines() if l.strip()
             and not l.startswith('[')]
    stray = sorted(_snapshot(ROOT) - before)
    return dict(kind=case.kind, new=case.new, command=case.command,
                code=proc.returncode, seconds=round(seconds, 1),
                lines=len(lines), first=(lines[0] if lines else ''),
                last_out=(out.strip().splitlines() or [''])[-1],
                expected=case.expect, stray=stray)
  finally:
    for proc in _HOLDERS:
      proc.kill()
      proc.wait()
    _HOLDERS.clear()
    for m in reversed(mounts):
      subprocess.run(['umount', m], check=False)
    shutil.rmtree(scratch, ignore_errors=True)


def table(rows, tiny: str) -> str:
  out = ['| # | class | new | command (W: workdir) | prints (stderr, first line) '
         '| exit | s | ok |', '|---:|---|---|---|---|---:|---:|---|']
  for i, r in enumerate(rows, 1):
    ok = (r['code'] == r['expected'] and
          (r['lines'] <= 1 or r['expected'] == 0) and not r['stray'])
    text = r['first'] or r['last_out']
    cmd = (r['command'].replace(sys.executable, 'python').replace(tiny, 'TINY')
           .replace('{W}', 'W').replace('|', '\\|'))
    out.append(f"| {i} | {r['kind']} | {'yes' if r['new'] else ''} | "
               f"`{cmd}` | {text.replace('|', '/')[:300]} | {r['code']} | "
               f"{r['seconds']} | {'yes' if ok else 'NO'} |")
  return '\n'.join(out)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', required=True)
  parser.add_argument('--only', default='')
  args = parser.parse_args()
  sys.path.insert(0, str(ROOT))
  tiny = _tiny()
  only = set(filter(None, args.only.split(',')))
  rows = []
  for case in cases(tiny):
    if only and case.kind not in only:
      continue
    rows.append(run_case(case, tiny))
    r = rows[-1]
    print(f"{r['code']:>4} {r['seconds']:>7}s {r['kind']}: "
          f"{r['first'][:150]}", flush=True)
    pathlib.Path(args.out).write_text(table(rows, tiny) + '\n')
    pathlib.Path(args.out).with_suffix('.json').write_text(
        json.dumps(rows, indent=1))


if __name__ == '__main__':
  main()
