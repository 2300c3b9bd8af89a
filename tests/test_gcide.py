"""GCIDE parsing: a synthetic dictd dictionary, and the real one if there."""
import gzip
import pathlib

import pytest

from acme_jax.data import gcide

ARTICLES = [
    '00-database-short\n   A test dictionary\n',
    'Abandon \\A*ban"don\\, v. t. [imp. & p. p. {Abandoned}.] [F.\n'
    '   abandonner.]\n   1. To give up wholly; to d[\'e]sert. [Obs.]\n'
    '      [1913 Webster]\n\n   2. To leave. --Shak.\n   [1913 Webster]\n'
    '   Abase\n',
    'Abase \\A*base"\\ ([.a]*b[=a]s"), v. t.\n   To lower; -- {Ab"a*sing}'
    ' (-b[=a]s"[i^]ng).\n   [WordNet 1.5 +PJC]\n',
    'fragment without a headword line\n',
]


def _b64(n: int) -> str:
  digits = ''
  while True:
    digits = gcide._B64[n % 64] + digits
    n //= 64
    if not n:
      return digits


def _write(directory: pathlib.Path, articles=ARTICLES, extra_index=()):
  data, lines, offset = b'', [], 0
  for article in articles:
    raw = article.encode()
    lines.append((article.split(' ')[0].split('\n')[0], offset, len(raw)))
    data, offset = data + raw, offset + len(raw)
  lines.append(('run', lines[1][1], lines[1][2]))  # one article, two names
  with gzip.open(directory / 'gcide.dict.dz', 'wb') as f:
    f.write(data)
  (directory / 'gcide.index').write_text(''.join(
      f'{h}\t{_b64(o)}\t{_b64(n)}\n' for h, o, n in lines) + ''.join(
          extra_index))
  return directory


def test_b64_number():
  assert gcide.b64_number('Gl8J') == 6 * 64**3 + 37 * 64**2 + 60 * 64 + 9
  assert gcide.b64_number('BAA') == 4096 and gcide.b64_number('/') == 63
  assert all(gcide.b64_number(_b64(n)) == n for n in (0, 63, 64, 99999))


def test_synthetic_dictionary(tmp_path):
  entries = gcide.read_entries(_write(tmp_path))
  assert [e.headword for e in entries] == ['Abandon', 'Abase']
  assert entries[0].definition == (
      'v. t. [imp. & p. p. Abandoned.] [F. abandonner.] 1. To give up '
      'wholly; to désert. [Obs.]\n2. To leave. --Shak.')  # no leaked Abase
  assert entries[1].definition == 'v. t. To lower; -- Abasing.'
  assert gcide.load_definitions(tmp_path, max_entries=1) == [
      'Abandon: ' + entries[0].definition]
  assert gcide.load_definitions(tmp_path, max_entries=0) == []


def test_missing_and_malformed(tmp_path):
  with pytest.raises(FileNotFoundError, match='apt-get install dict-gcide'
                     ) as e:
    gcide.load_definitions(tmp_path / 'none')
  assert str(tmp_path / 'none' / 'gcide.index') in str(e.value)
  _write(tmp_path, extra_index=['broken line\n'])
  with pytest.raises(ValueError, match=r'gcide.index:6 is not a dictd'):
    gcide.read_entries(tmp_path)
  with pytest.raises(ValueError, match='max_entries'):
    gcide.load_definitions(tmp_path, max_entries=-1)


@pytest.mark.skipif(not pathlib.Path(gcide.DEFAULT_DIR, 'gcide.index'
                                     ).is_file(),
                    reason='dict-gcide not installed (apt-get install '
                    'dict-gcide)')
def test_real_dictionary_first_entries():
  texts = gcide.load_definitions(max_entries=300)
  assert len(texts) == 300 and texts == gcide.load_definitions(
      max_entries=300)
  joined = '\n'.join(texts)
  for markup in ('[1913 Webster]', '\\', '{', '}', '[=a]', '00-database'):
    assert markup not in joined
  assert any(t.startswith('A: ') for t in texts)
