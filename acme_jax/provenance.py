"""Where a process's results come from (`report.provenance`)."""
import functools
import os
import pathlib


@functools.lru_cache(maxsize=None)
def _measured() -> tuple:
  """Where results come from: the code's commit, the machine and XLA_FLAGS
  when set (no clock time, so reruns stay byte-identical). Measured once
  per process: a job that runs for hours records the commit it started
  from (`cli.main` asks at the start), not one made while it ran."""
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
  here = {'commit': git('rev-parse', '--short=12', 'HEAD'),
          'dirty': bool(git('status', '--porcelain', '--', 'acme_jax',
                            'configs', 'experiments')),
          'machine': f'{platform.machine()} {cpu}'.strip(),
          'cpus': os.cpu_count(),
          'accelerators': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
          'jax': jax.__version__}
  # XLA's CPU threading (and ISA caps) change float32 results' last bits.
  flags = os.environ.get('XLA_FLAGS', '').strip()
  return tuple((here | ({'xla_flags': flags} if flags else {})).items())


def provenance() -> dict:
  """A copy of this process's provenance (`_measured`)."""
  return dict(_measured())
