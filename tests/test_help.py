"""`--help` of every entry point lists --config and --workdir first (where
it has them), then its own flags in the order it defines them."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIRST = ('config', 'workdir')
# cli.main's flags, in the order it defines them (`shards` adds --shard).
JOB_FLAGS = ('config', 'workdir', 'validate_only', 'shard')

JOB = re.compile(r'^\s+cli\.main\(run', re.M)   # a cli.main(run) job
ENTRY_POINTS = sorted(
    f'{d.replace("/", ".")}.{p.stem}'
    for d in ('experiments', 'acme_jax/tools', 'benchmarks')
    for p in (ROOT / d).glob('*.py')
    if "if __name__ == '__main__':" in p.read_text())

# Every entry point imports JAX and most of the package before it parses a
# flag (~5 s of CPU each). One process imports what they share once, then
# runs each as `python -m` does (runpy, argv[0] the module's file) in a
# forked child of its own, two at a time.
RUNNER = r'''
import json, os, runpy, shutil, sys, tempfile, traceback
for shared in ('jax', 'flax.linen', 'sklearn.linear_model', 'scipy.stats',
               'acme_jax.cli', 'acme_jax.pipeline', 'acme_jax.world'):
  __import__(shared)
out, running, tmp = {}, {}, tempfile.mkdtemp()

def reap():
  pid, status = os.wait()
  module, path = running.pop(pid)
  with open(path + '.out') as o, open(path + '.err') as e:
    out[module] = [os.waitstatus_to_exitcode(status), o.read(), e.read()]

for module in sys.argv[1:]:
  while len(running) >= 2:
    reap()
  path = os.path.join(tmp, module)
  pid = os.fork()
  if pid == 0:
    os.dup2(os.open(path + '.out', os.O_WRONLY | os.O_CREAT), 1)
    os.dup2(os.open(path + '.err', os.O_WRONLY | os.O_CREAT), 2)
    code = 0
    try:
      sys.argv = [module, '--help']
      runpy.run_module(module, run_name='__main__', alter_sys=True)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:
      traceback.print_exc()
      code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  running[pid] = (module, path)
while running:
  reap()
shutil.rmtree(tmp)
print(json.dumps(out))
'''


def defined_flags(module: str) -> list:
  """The flags `module` defines, in source order (absl DEFINE_*, argparse
  add_argument, or cli.main's own)."""
  source = (ROOT / (module.replace('.', '/') + '.py')).read_text()
  if JOB.search(source):
    return [f for f in JOB_FLAGS
            if f != 'shard' or 'shards=True)' in source]
  return (re.findall(r"DEFINE_\w+\(\s*'(\w+)'", source) or
          re.findall(r"add_argument\(\s*'--(\w+)'", source))


def listed_flags(help_text: str) -> list:
  """The flags --help lists, in its order (absl's main-module section, or
  argparse's options less -h)."""
  if '\nflags:\n' in help_text:
    body = help_text.split('\nflags:\n', 1)[1].split('\nTry --help', 1)[0]
    return re.findall(r'^  (?:-\S+,)?--(?:\[no\])?(\w+):', body, re.M)
  body = help_text.split('\noptions:\n', 1)[1]
  return [f for f in re.findall(r'^  (?:-\w, )?--(\w+)', body, re.M)
          if f != 'help']


def expected(module: str) -> list:
  own = defined_flags(module)
  return [f for f in FIRST if f in own] + [f for f in own if f not in FIRST]


@pytest.fixture(scope='module')
def helps():
  runner = subprocess.Popen([sys.executable, '-c', RUNNER, *ENTRY_POINTS],
                            cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
  # One entry point the ordinary way too: the forked runs must print what
  # `python -m` prints.
  plain = subprocess.run([sys.executable, '-m', 'experiments.main', '--help'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
  out, err = runner.communicate(timeout=300)
  assert runner.returncode == 0, err[-2000:]
  results = json.loads(out)
  assert results['experiments.main'][:2] == [plain.returncode, plain.stdout]
  return results


def test_every_entry_point_is_covered():
  assert 'experiments.main' in ENTRY_POINTS
  assert {'acme_jax.tools.plan', 'acme_jax.tools.pfg', 'acme_jax.tools.encode',
          'acme_jax.tools.readme_tables'} <= set(ENTRY_POINTS)
  assert len([m for m in ENTRY_POINTS if m.startswith('experiments.')]) >= 9
  assert len([m for m in ENTRY_POINTS if m.startswith('benchmarks.')]) >= 8


@pytest.mark.parametrize('module', ENTRY_POINTS)
def test_help_lists_config_workdir_then_own_flags(helps, module):
  code, out, err = helps[module]
  assert code in (0, 1), (module, err[-2000:])  # absl's --help exits 1
  own = defined_flags(module)
  assert own, module
  assert listed_flags(out) == expected(module), (module, out)
