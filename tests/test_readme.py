"""The README's and docs/' measured tables are what their snapshots in
docs/ render, a claim's verdict follows its paired confidence interval, the
README stays short, and every relative link of README.md and docs/*.md
names a file of the repository."""
import json
import re

import pytest

from acme_jax import stats
from acme_jax.tools import readme_render
from acme_jax.tools import readme_tables


@pytest.mark.parametrize('name', list(readme_tables.BLOCKS))
def test_readme_block_is_generated_from_the_committed_results(name):
  block = readme_tables.BLOCKS[name]
  results = json.loads(block.snapshot.read_text())
  text = readme_tables.current_block(block.file.read_text(), block)
  assert text == block.render(results).strip(), (
      f'{block.file.name} drifted from {block.snapshot.name}: run python -m '
      f'acme_jax.tools.readme_tables --block={readme_tables.publisher(block)}'
      ' --results=<results.json>')


def test_every_block_lives_in_its_own_file_once():
  """Each block's markers appear exactly once, in its file and no other
  tracked markdown file, so --check and publishing see one copy."""
  pages = [readme_tables.README, *sorted(
      (readme_tables.ROOT / 'docs').glob('*.md'))]
  for block in readme_tables.BLOCKS.values():
    for page in pages:
      count = page.read_text().count(block.begin)
      assert count == (page == block.file), (block.name, page.name, count)
  assert readme_tables.BLOCKS['summary'].file == readme_tables.README
  assert (readme_tables.BLOCKS['summary'].snapshot ==
          readme_tables.BLOCKS['paper'].snapshot)


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
  assert readme_render._verdict(up) == 'holds'  # noqa: SLF001
  assert readme_render._verdict(down).startswith('reversed')  # noqa: SLF001
  assert readme_render._verdict(unsure).startswith('not shown')  # noqa: SLF001
  single = stats.paired([0.9], [0.8])
  assert readme_render._verdict(single) == 'one repeat: no CI'  # noqa: SLF001


def test_a_source_names_the_xla_flags_it_ran_under(monkeypatch):
  """XLA's CPU threading changes float32 results' last bits, so a run under
  XLA_FLAGS says so in its provenance and in the README's source line."""
  from acme_jax import provenance
  from acme_jax import report
  # Measured once per process (the commit a job started from): cleared here
  # to measure under each environment.
  provenance._measured.cache_clear()  # noqa: SLF001
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  plain = report.provenance()
  assert 'xla_flags' not in plain
  flags = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
  monkeypatch.setenv('XLA_FLAGS', f' {flags} ')
  provenance._measured.cache_clear()  # noqa: SLF001
  flagged = report.provenance()
  provenance._measured.cache_clear()  # noqa: SLF001
  assert flagged == plain | {'xla_flags': flags}
  line = readme_render._source(  # noqa: SLF001
      {'provenance': {'s': flagged}}, 's')
  assert line.endswith(f', XLA_FLAGS=`{flags}`')
  assert 'XLA_FLAGS' not in readme_render._source(  # noqa: SLF001
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
  paper = readme_tables.BLOCKS['paper']
  block = readme_tables.current_block(paper.file.read_text(), paper)
  assert report.devices_table(ran['devices']) in block
  assert report.ledger_table(ran['ledger']) in block


# Slow (~90 s on a cold XLA cache): the 10-minute budget.
@pytest.mark.slow
def test_the_readme_batched_choices_flops_are_what_the_code_compiles():
  """The FLOPs column of the per-device-architecture table in docs/scale.md
  (`benchmarks.batched_choices` at its defaults) is XLA's count for the
  current code; the times beside it are this machine's and not checked."""
  import jax
  from benchmarks import batched_choices
  if jax.default_backend() != 'cpu':
    pytest.skip('the README counts the CPU backend\'s programs')
  readme = (readme_tables.ROOT / 'docs' / 'scale.md').read_text()
  programs = batched_choices.programs()
  for name, program in programs.items():
    row = [line for line in readme.splitlines()
           if line.startswith(f'| {name} |')]
    assert len(row) == 1, name
    published = float(row[0].split('|')[2].split()[0].replace(',', ''))
    assert published == round(
        batched_choices.flops_per_device(*program) / 1e6, 1), name


def test_publishing_the_paper_block_writes_the_summary_too(tmp_path,
                                                           readme_repo):
  """`paper` and `summary` render one snapshot: publishing it rewrites both
  blocks, each in its own file, and nothing else."""
  root, blocks = readme_repo, readme_tables.BLOCKS
  results = json.loads(blocks['paper'].snapshot.read_text())
  results['ledger']['ratio'] = 0.5  # a new run's numbers
  (tmp_path / 'new.json').write_text(json.dumps(results))
  untouched = {p: p.read_text() for p in (root / 'docs').glob('*.md')
               if p.name != 'results.md'}
  from absl import flags
  flags.FLAGS(['readme_tables', f'--results={tmp_path / "new.json"}',
               '--block=paper'])
  try:
    readme_tables.main([])
  finally:
    flags.FLAGS.unparse_flags()
  for name in ('paper', 'summary'):
    block = blocks[name]
    assert readme_tables.current_block(
        block.file.read_text(), block) == block.render(results).strip()
  assert 'ACME / centralized = 0.5000' in (root / 'README.md').read_text()
  assert json.loads(blocks['paper'].snapshot.read_text()) == results
  assert {p: p.read_text() for p in untouched} == untouched


def test_the_readme_is_at_most_250_lines():
  """The README is an entry point; everything else is one link away in
  docs/."""
  lines = readme_tables.README.read_text().splitlines()
  assert len(lines) <= 250, len(lines)


_LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def _anchors(markdown: str) -> set:
  """GitHub's heading anchors of a markdown text (headings in fenced code
  blocks are not headings)."""
  anchors, seen, fenced = set(), {}, False
  for line in markdown.splitlines():
    if line.startswith('```'):
      fenced = not fenced
      continue
    heading = re.match(r'#{1,6} (.*)', line)
    if fenced or not heading:
      continue
    slug = re.sub(r'[^\w\- ]', '', heading.group(1).strip().lower())
    slug = slug.replace(' ', '-')
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    anchors.add(slug if count == 0 else f'{slug}-{count}')
  return anchors


def _links(markdown: str) -> list:
  """Every markdown link target outside fenced code blocks and code
  spans."""
  targets, fenced = [], False
  for line in markdown.splitlines():
    if line.startswith('```'):
      fenced = not fenced
      continue
    if not fenced:
      targets += _LINK.findall(re.sub(r'`[^`]*`', '', line))
  return targets


def test_every_relative_link_names_a_file_of_the_repository():
  """Links of README.md and docs/*.md: a relative path exists inside the
  repository, and an anchor names a heading of the page it points to."""
  root = readme_tables.ROOT.resolve()
  pages = [readme_tables.README, *sorted((root / 'docs').glob('*.md'))]
  checked = 0
  for page in pages:
    for target in _links(page.read_text()):
      if re.match(r'[a-z]+:', target):  # http(s), mailto: not ours
        continue
      path, _, anchor = target.partition('#')
      file = (page.parent / path).resolve() if path else page.resolve()
      assert file.is_relative_to(root), (page.name, target)
      assert file.exists(), (page.name, target)
      if anchor and file.suffix == '.md':
        assert anchor in _anchors(file.read_text()), (page.name, target)
      checked += 1
  assert checked >= 10  # the README's links to docs/ at least


def test_the_link_check_sees_what_it_should():
  text = ('# A title\n## The engine: loop vs vmap\n```\n# not a heading\n'
          '[x](in_code.md)\n```\n[a](docs/a.md#b) `[c](d.md)` '
          '[e](https://x.org/f)\n')
  assert _links(text) == ['docs/a.md#b', 'https://x.org/f']
  assert _anchors(text) == {'a-title', 'the-engine-loop-vs-vmap'}


def test_provenance_is_what_the_process_started_with(monkeypatch):
  """A job records the commit and flags it started from (`cli.main` asks
  first), not those of a commit made while it ran; callers get copies."""
  from acme_jax import provenance
  provenance._measured.cache_clear()  # noqa: SLF001
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  first = provenance.provenance()
  first['commit'] = 'changed by a caller'
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=false')
  later = provenance.provenance()
  provenance._measured.cache_clear()  # noqa: SLF001
  assert 'xla_flags' not in later
  assert later['commit'] != 'changed by a caller'
