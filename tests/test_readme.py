"""The README's measured tables are what docs/readme_results.json renders,
and a claim's verdict follows its paired confidence interval."""
import json
import pathlib

import pytest

from acme_jax import stats
from acme_jax.tools import readme_tables


@pytest.mark.parametrize('name', list(readme_tables.BLOCKS))
def test_readme_block_is_generated_from_the_committed_results(name):
  block = readme_tables.BLOCKS[name]
  results = json.loads(block.snapshot.read_text())
  text = readme_tables.current_block(readme_tables.README.read_text(), block)
  assert text == block.render(results).strip(), (
      f'README drifted from {block.snapshot.name}: run python -m '
      f'acme_jax.tools.readme_tables --block={name} --results=<results.json>')


def test_splice_replaces_only_the_block():
  text = (f'intro\n{readme_tables.BEGIN}\nold\n{readme_tables.END}\n'
          'outro\n')
  out = readme_tables.splice(text, 'new')
  assert out.startswith('intro\n') and out.endswith('outro\n')
  assert readme_tables.current_block(out) == 'new'


def test_verdict_follows_the_paired_interval():
  up = stats.paired([0.9, 0.8, 0.85], [0.7, 0.65, 0.7])
  down = stats.paired([0.7, 0.65, 0.7], [0.9, 0.8, 0.85])
  unsure = stats.paired([0.8, 0.7, 0.9], [0.75, 0.8, 0.82])
  assert readme_tables._verdict(up) == 'holds'  # noqa: SLF001
  assert readme_tables._verdict(down).startswith('reversed')  # noqa: SLF001
  assert readme_tables._verdict(unsure).startswith('not shown')  # noqa: SLF001
  single = stats.paired([0.9], [0.8])
  assert readme_tables._verdict(single) == 'one repeat: no CI'  # noqa: SLF001


def test_a_source_names_the_xla_flags_it_ran_under(monkeypatch):
  """XLA's CPU threading changes float32 results' last bits, so a run under
  XLA_FLAGS says so in its provenance and in the README's source line."""
  from acme_jax import report
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  plain = report.provenance()
  assert 'xla_flags' not in plain
  flags = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
  monkeypatch.setenv('XLA_FLAGS', f' {flags} ')
  flagged = report.provenance()
  assert flagged == plain | {'xla_flags': flags}
  line = readme_tables._source(  # noqa: SLF001
      {'provenance': {'s': flagged}}, 's')
  assert line.endswith(f', XLA_FLAGS=`{flags}`')
  assert 'XLA_FLAGS' not in readme_tables._source(  # noqa: SLF001
      {'provenance': {'s': plain}}, 's')


@pytest.mark.slow
def test_the_readme_device_table_and_ledger_are_what_the_code_produces(
    tmp_path):
  """The default main job, run now, against the README's generated block:
  its per-device table and ledger, exactly (on the machine kind the block
  was made on; elsewhere floating point may move a cell)."""
  import platform
  import subprocess
  import sys
  from acme_jax import report
  snapshot = json.loads(readme_tables.BLOCKS['paper'].snapshot.read_text())
  made_on = snapshot['provenance']['devices']['machine']
  here = report.provenance()['machine']
  if made_on != here:
    pytest.skip(f'the block was made on {made_on}, this is {here} '
                f'({platform.machine()})')
  subprocess.run([sys.executable, '-m', 'experiments.main',
                  '--config=configs/default.py', f'--workdir={tmp_path}'],
                 cwd=readme_tables.ROOT, check=True, capture_output=True,
                 timeout=3600)
  ran = json.loads((tmp_path / 'results.json').read_text())
  block = readme_tables.current_block(readme_tables.README.read_text())
  assert report.devices_table(ran['devices']) in block
  assert report.ledger_table(ran['ledger']) in block


def test_the_readme_batched_choices_flops_are_what_the_code_compiles():
  """The FLOPs column of the README's per-device-architecture table
  (`benchmarks.batched_choices` at its defaults) is XLA's count for the
  current code; the times beside it are this machine's and not checked."""
  import jax
  from benchmarks import batched_choices
  if jax.default_backend() != 'cpu':
    pytest.skip('the README counts the CPU backend\'s programs')
  readme = (pathlib.Path(__file__).parent.parent / 'README.md').read_text()
  programs = batched_choices.programs()
  for name, program in programs.items():
    row = [line for line in readme.splitlines()
           if line.startswith(f'| {name} |')]
    assert len(row) == 1, name
    published = float(row[0].split('|')[2].split()[0].replace(',', ''))
    assert published == round(
        batched_choices.flops_per_device(*program) / 1e6, 1), name
