"""Every benchmark checks its flags before any work, with the checks the
main job applies to the same values (issue 35): zero or huge sizes,
unknown dtypes, heads that do not divide the width, zero steps. In-process
and fast (`benchmarks.inputs` takes plain values); the real commands run
in the slow test at the end."""
import pathlib
import re
import subprocess
import sys
import time

import pytest

from acme_jax import checks
from acme_jax.errors import ConfigError, UserError
from benchmarks import inputs
from configs import default

ROOT = pathlib.Path(__file__).resolve().parents[1]
ELASTIC = dict(layers=12, hidden=384, heads=6, mlp=1536, image=64, patch=8,
               batch=16, reps=3, dtype='float32')
CLOUD = dict(batch=2, reps=2, dtypes=['float32', 'bfloat16'],
             steps=['teacher', 'elastic'], scheme='static', remat=True,
             peak_tflops=0.0, device_count=1)


def test_the_defaults_pass():
  inputs.elastic(ELASTIC)
  inputs.cloud(**CLOUD)
  inputs.batched_choices(6, 32, 3, 3, 5)
  inputs.engine([2, 8, 32], 128, 5, 1024, 32)
  inputs.devices([8, 64, 256], ['loop', 'vmap'], 0)
  inputs.header(default.get_config(), 200, 128)


@pytest.mark.parametrize('change,message', [
    (dict(layers=0), '--layers=0 is invalid: must be a whole number'),
    (dict(batch=0), '--batch=0 is invalid'),
    (dict(patch=0), '--patch=0 is invalid'),
    (dict(reps=0), '--reps=0 is invalid'),
    (dict(heads=5), '--heads=5 is invalid: must divide --hidden = 384'),
    (dict(patch=7), '--image=64 is invalid: must be divisible by --patch'),
    (dict(heads=2), '0.25 keeps round(0.25*2) = 0 heads'),
    (dict(layers=2), '0.25 keeps round(0.25*2) = 0 layers'),
    (dict(hidden=2**31), f'must be a whole number in 1..{checks.MAX_INT}'),
    (dict(batch=10**6), 'needs at least'),
    (dict(image=2**20, patch=1), 'needs at least'),
])
def test_elastic(change, message):
  with pytest.raises(UserError, match=re.escape(message)):
    inputs.elastic(ELASTIC | change)


@pytest.mark.parametrize('change,message', [
    (dict(dtypes=['nosuch']), '--dtypes=nosuch is invalid: must list some '
     'of float32, bfloat16'),
    (dict(dtypes=[]), '--dtypes= is invalid'),
    (dict(steps=['nosuch']), '--steps=nosuch is invalid'),
    (dict(steps=[]), '--steps= is invalid'),
    (dict(batch=0), '--batch=0 is invalid'),
    (dict(batch=3, device_count=2), 'multiple of the 2 devices'),
    (dict(batch=100000), '--batch=100000 is invalid: training on 100000'),
    (dict(peak_tflops=-1.0), '--peak_tflops=-1.0 is invalid'),
    (dict(peak_tflops=float('nan')), '--peak_tflops=nan is invalid'),
    (dict(reps=2**40), '--reps=1099511627776 is invalid'),
])
def test_cloud(change, message):
  with pytest.raises(UserError, match=re.escape(message)):
    inputs.cloud(**(CLOUD | change))


def test_header_and_supernet_take_the_main_jobs_config_checks():
  config = default.get_config()
  with pytest.raises(UserError, match='--steps=0 is invalid'):
    inputs.header(config, 0, 128)  # it printed a table of zeros
  with pytest.raises(UserError, match='--samples=8 is invalid: it must be '
                     'at least config.header.batch_size = 32'):
    inputs.header(config, 200, 8)
  with pytest.raises(UserError, match='training split has 100'):
    inputs.header_samples(1000, 100, 'digits')
  config.cloud.batch_size = 0
  with pytest.raises(ConfigError, match='config.cloud.batch_size'):
    inputs.config(config, 'benchmarks.supernet')
  config = default.get_config()
  config.model.num_heads = 3
  with pytest.raises(ConfigError, match='must divide'):
    inputs.config(config, 'benchmarks.supernet')


def test_batched_choices_and_engine():
  with pytest.raises(UserError, match='--devices=3000000000 is invalid'):
    inputs.batched_choices(3 * 10**9, 32, 3, 3, 5)
  with pytest.raises(UserError, match='100000 channels needs at least'):
    inputs.batched_choices(6, 100000, 3, 3, 5)
  with pytest.raises(UserError, match='--devices=0 is invalid'):
    inputs.engine([2, 0], 128, 5, 1024, 32)
  with pytest.raises(UserError, match='1000000000 devices with their '
                     'batches'):
    inputs.engine([2, 10**9], 128, 5, 1024, 32)


def test_devices():
  with pytest.raises(UserError, match='--chunk=-1 is invalid'):
    inputs.devices([8], ['loop'], -1)
  with pytest.raises(UserError, match=r'--users=8000000000 is invalid'):
    inputs.devices([8 * 10**9], ['loop'], 0)


def _network_config(devices=6):
  config = default.get_config()
  config.system.num_edges = 2
  config.system.devices_per_edge = (devices // 2,)
  return config


def test_networked(tmp_path):
  good = {(6, 'warm'): _network_config()}
  inputs.networked(good, 2, 4, 1.5, 7200.0, tmp_path / 'bench')
  for args, message in [
      ((0, 4, 1.5, 7200.0), '--rounds=0 is invalid'),
      ((2, -1, 1.5, 7200.0), '--in_flight=-1 is invalid'),
      ((2, 4, float('nan'), 7200.0), '--min_available_gb=nan is invalid'),
      ((2, 4, 1.5, float('inf')), '--run_timeout_s=inf is invalid')]:
    with pytest.raises(UserError, match=re.escape(message)):
      inputs.networked(good, *args, tmp_path)
  afile = tmp_path / 'afile'
  afile.write_text('x')
  with pytest.raises(UserError, match='is a file; give a directory'):
    inputs.networked(good, 2, 4, 1.5, 7200.0, afile / 'bench')
  two = _network_config(2)
  two.network.min_devices = 2
  with pytest.raises(UserError, match='config.network.min_devices = 2'):
    inputs.networked({(2, 'warm'): two}, 2, 4, 1.5, 7200.0, tmp_path)


def test_every_benchmark_checks_its_flags_first():
  """Each entry point of benchmarks/ calls its `inputs` check in main (or
  in run, where `cli.main(run)` gives it --config and --workdir), before
  its first line of work."""
  for path in sorted((ROOT / 'benchmarks').glob('*.py')):
    text = path.read_text()
    if "if __name__ == '__main__':" not in text:
      continue
    entry = '\ndef run(' if 'cli.main(run)' in text else '\ndef main('
    body = text[text.index(entry):]
    assert re.search(r"\n  (\w+ = )?inputs\.\w+\(", body), path.name


# ------------------------------------------------ the real commands (slow)


@pytest.mark.slow
def test_the_real_benchmark_commands_are_one_line_and_exit_2():
  cases = [(['benchmarks.elastic', '--layers=0'], '--layers=0 is invalid'),
           (['benchmarks.elastic', '--heads=5'], 'must divide --hidden'),
           (['benchmarks.cloud', '--dtypes=nosuch'], '--dtypes=nosuch'),
           (['benchmarks.header', '--steps=0'], '--steps=0 is invalid'),
           (['benchmarks.supernet', '--config.cloud.batch_size=0'],
            'config.cloud.batch_size = 0 is invalid'),
           (['benchmarks.batched_choices', '--channels=100000'],
            'needs at least'),
           (['benchmarks.engine', '--devices=100000000'], 'needs at least'),
           (['benchmarks.devices', '--users=8', '--chunk=3000000000'],
            '--chunk=3000000000 is invalid'),
           (['benchmarks.networked', '--rounds=3000000000'],
            '--rounds=3000000000 is invalid')]
  for args, expected in cases:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, '-m', *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert done.returncode == 2, (args, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    assert expected in lines[0], lines[0]
    assert done.stdout == '', args
    assert time.perf_counter() - start < 60, args


@pytest.mark.parametrize('change, flag', [
    ({'kv_heads': 3}, '--kv_heads'),   # does not divide 8 query heads
    ({'vocab': 10}, '--vocab'),
    ({'seq': 0}, '--seq'),
    ({'heads': 7}, '--heads'),         # 384 / 7 is no whole head size
])
def test_decoder_elastic_flags_are_one_line(change, flag):
  flags = dict(layers=6, hidden=384, heads=8, kv_heads=4, mlp=1024,
               vocab=8192, seq=48, batch=16, reps=3, dtype='float32')
  flags.update(change)
  with pytest.raises(UserError) as info:
    inputs.elastic_decoder(flags)
  assert flag in str(info.value) and '\n' not in str(info.value)
