"""GCIDE: an English dictionary's definitions as language-model text.

Debian's `dict-gcide` ships the GNU Collaborative International Dictionary
of English (v0.48: Webster's Revised Unabridged Dictionary of 1913 plus
WordNet 1.5 and later additions) in dictd's format under /usr/share/dictd:
`gcide.index`, one `headword<TAB>offset<TAB>length` line per headword
(offset and length in dictd's base64, A-Za-z0-9+/ most significant digit
first), and `gcide.dict.dz`, the articles' text (dictzip, which gzip reads;
a plain `gcide.dict` is read too).

Licence: GCIDE is free software under the GNU General Public License,
version 2 or later (/usr/share/doc/dict-gcide/copyright). Text derived from
it, and a model trained on it, should be treated as GPL-covered material.

Several headwords point at one article (`run` at `All fours`, which
defines "run on all fours"), so articles are read once each, in file order
(A to Z), which makes `load_definitions` deterministic. Each article is
cleaned of dictd's markup: pronunciations (`\\Ab*an"don\\`) and the
phonetic respelling after them dropped, the source tags ([1913 Webster],
[WordNet 1.5], [PJC], ...) dropped, cross-reference braces ({On} -> On)
and the syllable marks of run-on words ({In`con*sol"a*ble*ness}) removed,
the ASCII accent codes ([=a], ['e], [ae], [alpha], [sect], ...) turned into
Unicode (NFC), and whitespace collapsed (a newline between paragraphs).
Labels such as [Obs.] or [R.] and citations such as --Shak. are kept: they
are text. The converter left the next article's headword at the end of
some articles ("... [1913 Webster] Tergeminal"); that leak is dropped.
The 00-database-* metadata articles and fragments without a headword line
are skipped. Three stray cp1252 bytes are read as cp1252.
"""
import functools
import gzip
import os
import pathlib
import re
import unicodedata
from typing import NamedTuple, Optional

DEFAULT_DIR = '/usr/share/dictd'
APT_PACKAGE = 'dict-gcide'
_B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
_B64_VALUE = {c: i for i, c in enumerate(_B64)}


class Entry(NamedTuple):
  headword: str
  definition: str  # the cleaned article after its headword
  # Taken from WordNet (a [WordNet ...] source tag): text the WordNet tasks'
  # users hold, which a cloud corpus beside them leaves out.
  from_wordnet: bool = False


def b64_number(text: str) -> int:
  """dictd's base64 number: 'Gl8J' -> 1739017."""
  value = 0
  for c in text:
    value = value * 64 + _B64_VALUE[c]
  return value


# ------------------------------------------------------------ accent codes

_MARKS = {'=': '\u0304', "'": '\u0301', '`': '\u0300', '^': '\u0302',
          '"': '\u0308', '~': '\u0303', '.': '\u0307', ',': '\u0327',
          '*': '\u030a', '-': ''}  # [-e]: Webster's obscure vowel, plain
_GREEK = ('alpha beta gamma delta epsilon zeta eta theta iota kappa lambda '
          'mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega'
          ).split()
_SYMBOLS = {
    'ae': 'æ', 'AE': 'Æ', 'oe': 'œ', 'OE': 'Œ', '=ae': 'ǣ', '=oo': 'o\u0304o',
    'oo^': 'o\u0306o', 'imac': 'ī', 'aum': 'ä', 'asl': 'a', 'add': 'a\u0324',
    'udd': 'u\u0324', 'eth': 'ð', 'thorn': 'þ', 'yogh': 'ȝ', 'ng': 'ŋ',
    'th': 'th', 'root': '√', 'cuberoot': '∛', 'sect': '§', 'deg': '°',
    'pounds': '£', 'times': '×', 'div': '÷', 'divby': '÷', 'middot': '·',
    'para': '¶', 'nbsp': ' ', 'break': ' ', 'rarr': '→', 'hand': '☞',
    'flat': '♭', 'sharp': '♯', 'prime': '′', 'bprime': '″', 'bar': '|',
    'digamma': 'ϝ', 'dsdot': 'ḍ', 'filig': 'ﬁ', 'fllig': 'ﬂ', 'fflig': 'ﬀ',
    'ffilig': 'ﬃ', 'ffllig': 'ﬄ'}
_SYMBOLS.update(zip(_GREEK, 'αβγδεζηθικλμνξοπρστυφχψω'))
_SYMBOLS.update(zip((n.capitalize() for n in _GREEK),
                    'ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ'))
_CODE = re.compile(r'\[([^\[\]\s]{1,8})\]')


def _accent(match) -> str:
  code = match.group(1)
  if code in _SYMBOLS:
    return _SYMBOLS[code]
  if len(code) == 2 and code[1].isalpha() and code[0] in _MARKS:
    return code[1] + _MARKS[code[0]]  # [=a], ['e], ["o], [,c], ...
  if len(code) == 2 and code[0].isalpha() and code[1] == '^':
    return code[0] + '\u0306'  # [a^]: breve
  return match.group(0)  # [Obs.], [R.], [He]: text


# ------------------------------------------------------------ cleaning

_SOURCE = re.compile(
    r'\[\s*(?:(?:1913 Webster|Webster 1913 Suppl\.|WordNet(?: 1\.\d| sense '
    r'\d+)|Century Dict\.,? 1906\.?|PJC\.?|AS|RDH|GG|RP|MW10|MI11|RHUD)'
    r'[\s+]*)+\]')
# A pronunciation and the phonetic respelling that may follow it.
_PRONUNCIATION = re.compile(r'\\[^\\]*\\(?:\s*\([^()]*\))?')
# Where markup was cut out: nothing before punctuation, else one space.
_GAP = '\x01'
_GAP_BEFORE_PUNCTUATION = re.compile(r'\s*\x01[\x01\s]*(?=[,;:.!?)\]])')
# A respelling elsewhere: stress or syllable marks inside a word, as in
# {Withdrew} (-drṳ") or Abattis, (ăb"ȧ*tĭs; French ȧ`bȧ`tē").
_RESPELLING = re.compile(
    r'\((?:(?=[^()]*[\w\u0300-\u036f][*"]\w)[^()]*|(?!")[^()\s]*")\)')
_BRACED = re.compile(r'\{([^{}]*)\}')
_SYLLABLE = re.compile(r'(?<=\w)[*"`]+(?=\w)')
_PARAGRAPH = re.compile(r'\n[ \t]*\n\s*')


def _strip_leak(article: str, next_article: str) -> str:
  """Drops the next headword that the converter appended to `article`."""
  tags = list(_SOURCE.finditer(article))
  tail = article[tags[-1].end():] if tags else ''
  if tail.strip() and len(tail.split()) <= 3:
    return article[:tags[-1].end()]
  words = article.rstrip().rsplit(None, 1)
  if (len(words) == 2 and words[1][-1].isalnum() and
      next_article.lower().startswith(words[1].lower())):
    return words[0]
  return article


def clean(article: str) -> Optional[Entry]:
  """One article's (headword, definition), or None for a fragment."""
  headword, slash, _ = article.partition('\\')
  headword = ' '.join(headword.split())
  if not slash or not headword or len(headword) > 80:
    return None
  text = _SOURCE.sub(_GAP, article.lstrip().replace(_GAP, ' '))
  text = _PRONUNCIATION.sub(_GAP, text)
  text = _CODE.sub(_accent, text)
  text = _RESPELLING.sub(_GAP, text)
  text = _GAP_BEFORE_PUNCTUATION.sub('', text).replace(_GAP, ' ')
  text = _BRACED.sub(lambda m: _SYLLABLE.sub('', m.group(1)), text)
  text = text.replace('{', '').replace('}', '')  # WordNet's unpaired ones
  text = unicodedata.normalize('NFC', text)
  headword = unicodedata.normalize('NFC', _SYLLABLE.sub('', _CODE.sub(
      _accent, headword)))
  paragraphs = (' '.join(p.split()) for p in _PARAGRAPH.split(text))
  text = '\n'.join(p for p in paragraphs if p)
  if text.startswith(headword):
    text = text[len(headword):]
  definition = text.lstrip(' ,;:\n')
  return (Entry(headword, definition, '[WordNet' in article) if definition
          else None)


# ------------------------------------------------------------ reading


def files(path) -> tuple:
  """(index, dictionary) under `path`; one line naming the apt package when
  either is missing."""
  directory = pathlib.Path(path)
  index = directory / 'gcide.index'
  data = next((f for f in (directory / 'gcide.dict.dz',
                           directory / 'gcide.dict') if f.is_file()),
              directory / 'gcide.dict.dz')
  missing = [str(f) for f in (index, data) if not f.is_file()]
  if missing:
    raise FileNotFoundError(
        f'GCIDE dictionary not found: {", ".join(missing)} missing; '
        f'`apt-get install {APT_PACKAGE}` (or pass its directory)')
  return index, data


def _spans(index: pathlib.Path) -> list:
  spans = set()
  with open(index, encoding='utf-8', errors='replace') as f:
    for number, line in enumerate(f, 1):
      fields = line.rstrip('\n').split('\t')
      try:
        spans.add((b64_number(fields[1]), b64_number(fields[2])))
      except (IndexError, KeyError):
        raise ValueError(f'{index}:{number} is not a dictd index line '
                         f'(headword<TAB>offset<TAB>length)') from None
  return sorted(spans)


def _decode(raw: bytes) -> str:
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError:
    return raw.decode('cp1252', errors='replace')


@functools.lru_cache(maxsize=2)
def _articles(index: str, data: str, stamp: tuple) -> tuple:
  """The articles' raw text, each once, in file order."""
  del stamp  # in the key only: an edited file is read again
  opener = gzip.open if data.endswith('.dz') else open
  with opener(data, 'rb') as f:
    raw = f.read()
  spans = _spans(pathlib.Path(index))
  if spans and spans[-1][0] + spans[-1][1] > len(raw):
    raise ValueError(f'{data} is shorter than {index} says '
                     f'({len(raw)} < {sum(spans[-1])} bytes)')
  return tuple(_decode(raw[o:o + n]) for o, n in spans)


def _entries(articles, max_entries: Optional[int]):
  for i, article in enumerate(articles):
    if max_entries is not None and max_entries <= 0:
      return
    if article.startswith('00-'):  # 00-database-info, ...
      continue
    following = articles[i + 1] if i + 1 < len(articles) else ''
    entry = clean(_strip_leak(article, following))
    if entry is not None:
      yield entry
      max_entries = None if max_entries is None else max_entries - 1


@functools.lru_cache(maxsize=2)
def _all_entries(index: str, data: str, stamp: tuple) -> tuple:
  return tuple(_entries(_articles(index, data, stamp), None))


def read_entries(path=DEFAULT_DIR, max_entries: Optional[int] = None) -> list:
  """The first max_entries (None: all) articles under `path` as Entries,
  in file order. Reading all takes ~5 s (cached per process); a few hundred
  well under one."""
  if max_entries is not None and max_entries < 0:
    raise ValueError(f'max_entries must be >= 0 or None, got {max_entries}')
  index, data = files(path)
  stamp = tuple((os.stat(f).st_size, os.stat(f).st_mtime_ns)
                for f in (index, data))
  key = str(index.resolve()), str(data.resolve()), stamp
  if max_entries is None:
    return list(_all_entries(*key))
  return list(_entries(_articles(*key), max_entries))


def load_definitions(path=DEFAULT_DIR, max_entries: Optional[int] = None,
                     exclude_wordnet: bool = False) -> list:
  """'headword: definition' texts, in file order, the first max_entries;
  `exclude_wordnet` leaves out the articles GCIDE took from WordNet."""
  return [f'{e.headword}: {e.definition}'
          for e in read_entries(path, max_entries)
          if not (exclude_wordnet and e.from_wordnet)]
