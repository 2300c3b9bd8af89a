"""The tools' edges (issue 35): readme_tables refuses results that would
delete a published table and writes nothing before every check passed;
encode refuses an output that is one of its inputs, non-finite inputs and
an unwritable output; pfg and plan check their inputs as the main job
checks the same values. In-process and fast; the real commands run in the
slow test at the end."""
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from acme_jax import config as config_lib
from acme_jax.errors import ConfigError, UserError
from acme_jax.tools import encode, output_file, pfg, plan, readme_tables
from acme_jax.tools import results_check
from configs import default

ROOT = pathlib.Path(__file__).resolve().parents[1]
VIT = ROOT / 'tests' / 'fixtures' / 'hf_vit_tiny'
# The sections `make tables` adds to a main job's results.json.
TABLES = ('headers', 'aggregation', 'header_budget', 'engine_equivalence',
          'baselines')


def _snapshot() -> dict:
  return json.loads(readme_tables.BLOCKS['paper'].snapshot.read_text())


def _main_job_results() -> dict:
  """What experiments.main writes: the snapshot without the tables."""
  return {k: v for k, v in _snapshot().items() if k not in TABLES}


@pytest.fixture
def repo(readme_repo):
  return readme_repo


def _files(root) -> dict:
  return {p: p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def _publish(results_path, *extra):
  from absl import flags
  flags.FLAGS(['readme_tables', f'--results={results_path}', *extra])
  try:
    readme_tables.main(['readme_tables'])
  finally:
    flags.FLAGS.unparse_flags()


def test_a_main_jobs_results_would_delete_five_tables_and_are_refused(
    repo, tmp_path):
  results = tmp_path / 'results.json'
  results.write_text(json.dumps(_main_job_results()))
  before = _files(repo)
  with pytest.raises(UserError) as refused:
    _publish(results)
  message = str(refused.value)
  assert f'lacks {", ".join(TABLES)}' in message
  assert 'publishing would delete a table' in message
  assert all(f'python -m experiments.{t}' in message for t in TABLES)
  assert _files(repo) == before


def test_nothing_is_written_until_every_block_is_checked(repo, tmp_path):
  """The summary block's markers are gone from the README: the paper block
  and the snapshot, checked first, are not written either."""
  readme = repo / 'README.md'
  summary = readme_tables.BLOCKS['summary']
  readme.write_text(readme.read_text().replace(summary.end, ''))
  new = _snapshot()
  new['ledger']['ratio'] = 0.5
  results = tmp_path / 'results.json'
  results.write_text(json.dumps(new))
  before = _files(repo)
  with pytest.raises(UserError, match='README.md has no summary block'):
    _publish(results)
  assert _files(repo) == before


def test_a_read_only_docs_folder_is_refused_before_any_write(
    repo, tmp_path, monkeypatch):
  path = tmp_path / 'results.json'
  path.write_text(json.dumps(_snapshot()))
  monkeypatch.setattr(readme_tables.output_file, 'unwritable', lambda d: (
      'Read-only file system' if d == repo else ''))
  before = _files(repo)
  with pytest.raises(UserError, match=r'is not writable \(Read-only'):
    _publish(path)  # README.md's folder: after docs/, before any write
  assert _files(repo) == before


@pytest.mark.parametrize('change,message', [
    (lambda r: r.update(headers=[1, 2]), 'its headers is a list'),
    (lambda r: r.update(cloud='x'), 'cloud is a string'),
    (lambda r: r.pop('ledger'), 'ledger is missing'),
    (lambda r: r['devices'][0].update(test_accuracy=float('nan')),
     'non-finite number at devices.0.test_accuracy'),
    (lambda r: r['baselines']['by_setup'].clear(),
     'not the results of a run the paper block shows'),
])
def test_results_of_the_wrong_shape_are_one_line(repo, tmp_path, change,
                                                 message):
  results = _snapshot()
  change(results)
  path = tmp_path / 'results.json'
  path.write_text(json.dumps(results))
  before = _files(repo)
  with pytest.raises(UserError, match=message):
    _publish(path)
  assert _files(repo) == before


@pytest.mark.parametrize('text,message', [
    ('[1, 2]', 'holds a list, not an object'), ('null', 'holds null'),
    ('{broken', 'is not valid JSON')])
def test_a_results_file_that_is_not_an_object(tmp_path, text, message):
  path = tmp_path / 'results.json'
  path.write_text(text)
  with pytest.raises(UserError, match=message):
    results_check.read_json(str(path), 'results')
  with pytest.raises(UserError, match='is a directory'):
    results_check.read_json(str(tmp_path), 'results')


def test_a_block_publishes_the_tables_its_snapshot_holds():
  paper = readme_tables.BLOCKS['paper']
  assert set(results_check.published(paper)) == {
      'cloud', 'devices', 'ledger', *TABLES}
  text = readme_tables.BLOCKS['text']
  assert set(results_check.published(text)) == {
      'cloud', 'devices', 'ledger', 'headers', 'aggregation'}
  assert 'scaling' in results_check.published(readme_tables.BLOCKS[
      'networked'])


def test_publishing_takes_scaling_only_for_the_networked_block(repo,
                                                               tmp_path):
  path = tmp_path / 'results.json'
  path.write_text(json.dumps(_snapshot()))
  with pytest.raises(UserError, match='--scaling is published with '
                     '--block=networked'):
    _publish(path, f'--scaling={path}')


# ------------------------------------------------------------------ encode


def _write(path, text='x'):
  path.write_text(text)
  return str(path)


def test_encode_refuses_an_output_that_is_an_input(tmp_path, monkeypatch):
  src = _write(tmp_path / 'in.npz')
  (tmp_path / 'link.npz').symlink_to(src)
  os.link(src, tmp_path / 'hard.npz')
  monkeypatch.chdir(tmp_path)
  for output in (src, str(tmp_path / 'link.npz'), 'in.npz', './in.npz',
                 str(tmp_path / 'hard.npz')):
    with pytest.raises(UserError, match='would overwrite the input'):
      output_file.check(output, {'inputs': src, 'text': None})
  text = _write(tmp_path / 'lines.txt')
  with pytest.raises(UserError, match='--text='):
    output_file.check('lines.txt', {'inputs': None, 'text': text})
  output_file.check('out.npz', {'inputs': src})  # a new file: fine


def test_encode_refuses_an_output_it_cannot_write(tmp_path, monkeypatch):
  afile = _write(tmp_path / 'afile')
  with pytest.raises(UserError, match='is a directory'):
    output_file.check(str(tmp_path), {})
  with pytest.raises(UserError, match='which is a file'):
    output_file.check(f'{afile}/out.npz', {})
  with pytest.raises(UserError, match='does not exist'):
    output_file.check(str(tmp_path / 'nowhere' / 'out.npz'), {})
  if os.path.exists('/dev/null'):
    with pytest.raises(UserError, match='not a regular file'):
      output_file.check('/dev/null', {})

  def read_only(*args, **kwargs):
    raise OSError(30, 'Read-only file system')

  monkeypatch.setattr(output_file.tempfile, 'NamedTemporaryFile', read_only)
  with pytest.raises(UserError, match=r'not writable \(Read-only file'):
    output_file.check(str(tmp_path / 'out.npz'), {})


def test_a_failed_save_is_one_line_and_leaves_nothing(tmp_path,
                                                      monkeypatch):
  def full(path, data):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(output_file.workdir_lib, 'atomic_write_bytes', full)
  with pytest.raises(UserError, match='cannot write --output .*: No space'):
    output_file.save(str(tmp_path / 'out.npz'), lambda f: f.write(b'x'))
  assert list(tmp_path.iterdir()) == []


def test_encode_refuses_non_finite_inputs(tmp_path):
  images = np.zeros((2, 4, 4, 1), np.float32)
  images[1, 2, 3, 0] = np.inf
  path = tmp_path / 'in.npz'
  np.savez(path, pixel_values=images, other=np.full(3, np.nan))
  with pytest.raises(UserError, match=r'pixel_values holds 1 non-finite '
                     r'value\(s\) .* index \(1, 2, 3, 0\)'):
    encode._load_inputs(str(path))  # noqa: SLF001
  np.savez(path, pixel_values=images[:1], other=np.full(3, np.nan))
  assert set(encode._load_inputs(str(path))) == {  # noqa: SLF001
      'pixel_values', 'other'}  # arrays it does not read are not checked


def test_encode_refuses_to_replace_a_checkpoint_file(tmp_path):
  with pytest.raises(UserError, match='would replace a file of the '
                     'checkpoint'):
    encode._check_checkpoint(str(VIT), str(VIT / 'config.json'))  # noqa: SLF001
  encode._check_checkpoint(str(VIT), str(tmp_path / 'o.npz'))  # noqa: SLF001


# --------------------------------------------------------------------- pfg


def _pfg(capsys, *args) -> str:
  with pytest.raises(SystemExit) as stopped:
    pfg.main(['--measured=absent.csv', *args])
  assert stopped.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  return lines[0]


@pytest.mark.parametrize('args,message', [
    (['--profile={"g_n": -1}'], '--profile g_n = -1 is invalid'),
    (['--profile={"k": Infinity}'], 'k = inf is invalid'),
    (['--profile={"k": "10"}'], "k = '10' is invalid"),
    (['--profile={"kk": 1}'], 'unknown field(s) kk'),
    (['--profile=[1]'], '--profile must be a JSON object'),
    (['--sigma=inf'], '--sigma=inf is invalid: must be a finite number'),
    (['--size_constraint=nan'], '--size_constraint=nan is invalid'),
    (['--grid=1'], '--grid=1 is invalid: must be an integer >= 2'),
    (['--grid=100000'], '--grid=100000 must be in [2, 1000]'),
    (['--cells=0'], '--cells=0 is invalid'),
    (['--seed=-1'], '--seed=-1 is invalid'),
    (['--arch={}'], '--arch only with --cost_model=exact'),
    (['--cost_model=exact', '--arch=' + json.dumps(dict(
        num_layers=4, num_heads=3, hidden_size=64, mlp_dim=256, patch_size=4,
        image_size=16, channels=1, num_classes=10))],
     'num_heads = 3 must divide hidden_size = 64'),
    (['--cost_model=exact', '--arch=' + json.dumps(dict(
        num_layers=0, num_heads=4, hidden_size=64, mlp_dim=256, patch_size=4,
        image_size=16, channels=1, num_classes=10))],
     'num_layers = 0 is invalid'),
    (['--cost_model=exact', '--arch={"num_layers": 4}', '--channels=3'],
     '--channels and --num_classes are read with --config'),
])
def test_pfg_flags_are_checked_before_the_csv_is_read(capsys, args, message):
  assert message in _pfg(capsys, *args)


@pytest.mark.parametrize('field,flag,values', [
    ('selection.sigma', '--sigma', [-1.0, float('inf'), 0.0, 1e-6]),
    ('selection.size_constraint', '--size_constraint',
     [0.0, 1.5, float('nan'), 1.0, 0.3]),
    ('selection.cells', '--cells', [0, -2, 1, 10]),
    ('selection.grid_size', '--grid', [1, 0, 2, 50]),
    ('seed', '--seed', [-1, 2**32, 0, 7]),
    ('system.profile.g_n', '--profile', [-1.0, float('inf'), 0.0, 5.0]),
])
def test_pfg_refuses_what_the_main_job_refuses(field, flag, values):
  """The same values, the same verdicts: config.validate on the default
  config with the field set, and pfg's checks on the flag."""
  for value in values:
    config = default.get_config()
    section, name = field.rsplit('.', 1) if '.' in field else ('', field)
    node = config
    for part in filter(None, section.split('.')):
      node = node[part]
    node[name] = value
    try:
      config_lib.validate(config)
      main_job = True
    except ConfigError:
      main_job = False
    args = pfg._parser().parse_args(['--measured=x.csv'])  # noqa: SLF001
    if flag == '--profile':
      args.profile = json.dumps({'g_n': value})
    else:
      setattr(args, {'--size_constraint': 'size_constraint',
                     '--grid': 'grid'}.get(flag, flag[2:]), value)
    try:
      pfg.check_args(args)
      pfg._profile(args.profile)  # noqa: SLF001
      tool = True
    except (ValueError, UserError):
      tool = False
    assert tool == main_job, (field, value, main_job)


# -------------------------------------------------------------------- plan


def test_plan_refuses_an_absurd_plan_up_front():
  config = default.get_config()
  config.aggregation.rounds = 10**8
  start = time.perf_counter()
  with pytest.raises(UserError) as refused:
    plan.plan(config)
  assert time.perf_counter() - start < 1
  assert ('would record 1,200,000,' in str(refused.value) and
          f'at most {plan.MAX_TRANSFERS:,}' in str(refused.value))
  config.aggregation.rounds = 2**31
  with pytest.raises(ConfigError, match='aggregation.rounds'):
    plan.plan(config)  # the main job's own bound first


def test_plans_transfer_count_bounds_what_it_records(monkeypatch):
  from acme_jax.hierarchy import ledger as ledger_lib
  recorded = []
  add = ledger_lib.Ledger.add
  monkeypatch.setattr(ledger_lib.Ledger, 'add',
                      lambda self, r: recorded.append(r) or add(self, r))
  config = default.get_config()
  config.aggregation.rounds = 7
  plan.plan(config)
  rounds = [r for r in recorded if r.kind == 'importance']
  assert len(rounds) == 7 * 6 * 2
  assert len(recorded) <= plan.transfer_count(config) < 2 * len(recorded)


# ------------------------------------------------ the real commands (slow)

PY = sys.executable


@pytest.mark.slow
def test_the_real_commands_are_one_line_and_exit_2(tmp_path):
  results = tmp_path / 'results.json'
  results.write_text(json.dumps(_main_job_results()))
  image = tmp_path / 'in.npz'
  np.savez(image, pixel_values=np.zeros((1, 16, 16, 3), np.float32))
  bad = tmp_path / 'nan.npz'
  np.savez(bad, pixel_values=np.full((1, 16, 16, 3), np.nan, np.float32))
  before = _files(ROOT / 'docs') | {readme_tables.README:
                                    readme_tables.README.read_bytes()}
  cases = [
      (['acme_jax.tools.readme_tables', f'--results={results}'],
       'lacks headers, aggregation'),
      (['acme_jax.tools.encode', f'--checkpoint={VIT}', f'--inputs={image}',
        f'--output={image}'], 'would overwrite the input'),
      (['acme_jax.tools.encode', f'--checkpoint={VIT}', f'--inputs={bad}',
        f'--output={tmp_path}/out.npz'], 'non-finite'),
      (['acme_jax.tools.pfg', '--measured=x.csv', '--profile={"g_n": -1}'],
       'g_n = -1 is invalid'),
      (['acme_jax.tools.plan', '--config=configs/default.py',
        '--config.aggregation.rounds=100000000'], 'would record'),
  ]
  for args, expected in cases:
    start = time.perf_counter()
    done = subprocess.run([PY, '-m', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert done.returncode == 2, (args, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    assert expected in lines[0], lines[0]
    assert time.perf_counter() - start < 60, args
  assert image.read_bytes()[:2] == b'PK'  # the input is still the input
  assert not (tmp_path / 'out.npz').exists()
  after = _files(ROOT / 'docs') | {readme_tables.README:
                                   readme_tables.README.read_bytes()}
  assert after == before
