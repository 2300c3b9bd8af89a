"""WordNet supersenses: a real labelled text dataset that needs no download.

Debian's `wordnet-base` ships the Princeton WordNet 3.0 database
(/usr/share/wordnet/data.noun, data.verb, ...). Each synset line (wndb(5))
reads

  offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt
  [ptr...] [frames...] | gloss

and lex_filenum names the lexicographer file the synset was written in, its
supersense (noun.animal, verb.motion, ...: `LEXNAMES`). The task is to
classify a synset's gloss, optionally prefixed by its first lemma, into that
supersense: 26 noun + 15 verb classes by default, all of them text a
BERT-family encoder reads as is.

Classes with fewer than `min_examples_per_class` synsets are dropped; larger
ones are capped at `max_examples_per_class` (a seeded choice), which keeps
the classes closer to balanced (noun.artifact has ~11k synsets,
noun.motive 42) and the dataset small. Each class is then cut, seeded, into
test / validation / train, so every split sees every class. `index` is the
synset's position in the chosen dictionary files read in LEXNAMES' part of
speech order (noun, verb, adj, adv), source 'wordnet'.
"""
import dataclasses
import functools
import pathlib
import re
from typing import NamedTuple, Optional, Sequence

import numpy as np

from acme_jax.data import text as text_lib
from acme_jax.data.base import Dataset

DEFAULT_DIR = '/usr/share/wordnet'
POS = ('noun', 'verb', 'adj', 'adv')  # data.<pos> files, read in this order
TEST_FRACTION = 0.2
SOURCE = 'wordnet'

# The lexicographer files by lex_filenum (WordNet's lexnames(5)).
LEXNAMES = (
    'adj.all', 'adj.pert', 'adv.all', 'noun.Tops', 'noun.act',
    'noun.animal', 'noun.artifact', 'noun.attribute', 'noun.body',
    'noun.cognition', 'noun.communication', 'noun.event', 'noun.feeling',
    'noun.food', 'noun.group', 'noun.location', 'noun.motive', 'noun.object',
    'noun.person', 'noun.phenomenon', 'noun.plant', 'noun.possession',
    'noun.process', 'noun.quantity', 'noun.relation', 'noun.shape',
    'noun.state', 'noun.substance', 'noun.time', 'verb.body', 'verb.change',
    'verb.cognition', 'verb.communication', 'verb.competition',
    'verb.consumption', 'verb.contact', 'verb.creation', 'verb.emotion',
    'verb.motion', 'verb.perception', 'verb.possession', 'verb.social',
    'verb.stative', 'verb.weather', 'adj.ppl')

# Adjective lemmas carry a syntactic marker: able(a), galore(ip), ...
_MARKER = re.compile(r'\((?:a|p|ip)\)$')


class Synset(NamedTuple):
  offset: int
  lexfile: int     # lex_filenum: index into LEXNAMES
  ss_type: str     # n, v, a, s, r
  words: tuple     # lemmas, spaces for underscores, markers dropped
  gloss: str


def parse_line(line: str) -> Optional[Synset]:
  """One data-file line as a Synset; None for the license header's lines."""
  if not line or line.startswith(' '):
    return None
  head, _, gloss = line.partition(' | ')
  fields = head.split()
  w_cnt = int(fields[3], 16)
  words = tuple(_MARKER.sub('', w).replace('_', ' ')
                for w in fields[4:4 + 2 * w_cnt:2])
  return Synset(int(fields[0]), int(fields[1]), fields[2], words,
                gloss.strip())


def _check_pos(pos: Sequence[str]) -> tuple:
  pos = tuple(pos)
  unknown = [p for p in pos if p not in POS]
  if unknown or not pos:
    raise ValueError(f'wordnet parts of speech must be among '
                     f'{", ".join(POS)}; got {pos!r}')
  return tuple(p for p in POS if p in pos)  # canonical order, no repeats


@functools.lru_cache(maxsize=8)
def _read_file(path: str) -> tuple:
  with open(path, encoding='utf-8', errors='replace') as f:
    return tuple(s for s in map(parse_line, f) if s is not None)


def read_synsets(path=DEFAULT_DIR, pos=('noun', 'verb')) -> list:
  """Every synset of the data.<pos> files under `path`, in file order."""
  directory = pathlib.Path(path)
  files = [directory / f'data.{p}' for p in _check_pos(pos)]
  missing = [str(f) for f in files if not f.is_file()]
  if missing:
    raise ValueError(f'WordNet dictionary not found: {", ".join(missing)} '
                     f'missing; `apt-get install wordnet-base` (or set '
                     f'config.data.text.wordnet_dir)')
  return [s for f in files for s in _read_file(str(f.resolve()))]


def sentence(synset: Synset, with_lemma: bool = True) -> str:
  """The text a model reads: 'lemma: gloss', or the gloss alone."""
  if with_lemma and synset.words:
    return f'{synset.words[0]}: {synset.gloss}'
  return synset.gloss


def classes(lexfiles, min_examples_per_class: int = 0) -> tuple:
  """The lex_filenums kept as classes, ascending: label i is classes[i]."""
  values, counts = np.unique(np.asarray(lexfiles, np.int64),
                             return_counts=True)
  return tuple(int(v) for v, c in zip(values, counts)
               if c >= max(min_examples_per_class, 1))


def select(lexfiles, seed: int, min_examples_per_class: int = 0,
           max_examples_per_class: int = 0, validation_fraction: float = 0.1,
           test_fraction: float = TEST_FRACTION):
  """(kept lex_filenums, {'train'|'validation'|'test': positions}).

  Per class: a seeded permutation, capped at max_examples_per_class (0 = no
  cap), cut into test (test_fraction of the class), validation
  (validation_fraction of the rest, as TFDS sources hold it out of train)
  and train; each split is then shuffled. Positions index `lexfiles`.
  """
  if not (0 <= validation_fraction < 1 and 0 <= test_fraction < 1):
    raise ValueError(f'validation_fraction {validation_fraction} and '
                     f'test_fraction {test_fraction} must be in [0, 1)')
  lexfiles = np.asarray(lexfiles, np.int64)
  kept = classes(lexfiles, min_examples_per_class)
  rng = np.random.default_rng(seed)
  parts = {'train': [], 'validation': [], 'test': []}
  for lexfile in kept:
    members = rng.permutation(np.flatnonzero(lexfiles == lexfile))
    if max_examples_per_class:
      members = members[:max_examples_per_class]
    n_test = int(round(test_fraction * len(members)))
    n_val = int(round(validation_fraction * (len(members) - n_test)))
    parts['test'].append(members[:n_test])
    parts['validation'].append(members[n_test:n_test + n_val])
    parts['train'].append(members[n_test + n_val:])
  return kept, {name: rng.permutation(np.concatenate(p)).astype(np.int64)
                if p else np.zeros((0,), np.int64)
                for name, p in parts.items()}


@dataclasses.dataclass(frozen=True)
class Options:
  """Which glosses make the dataset, and how they are cut.

  path: the directory holding data.noun, data.verb, ...
  pos: which parts of speech ('noun', 'verb', 'adj', 'adv') to read.
  with_lemma: prefix each gloss with its synset's first lemma.
  min_examples_per_class: supersenses with fewer synsets are dropped.
  max_examples_per_class: at most this many synsets per class (0 = all).
  validation_fraction: share of each class's non-test synsets held out.
  test_fraction: share of each class's synsets held out for test.
  """
  path: str = DEFAULT_DIR
  pos: Sequence[str] = ('noun', 'verb')
  with_lemma: bool = True
  min_examples_per_class: int = 40
  max_examples_per_class: int = 400
  validation_fraction: float = 0.1
  test_fraction: float = TEST_FRACTION

  def selected(self, synsets, seed: int):
    return select([s.lexfile for s in synsets], seed,
                  self.min_examples_per_class, self.max_examples_per_class,
                  self.validation_fraction, self.test_fraction)


def summary(**options) -> dict:
  """What the plan tool sizes a run by, without a tokenizer: class count,
  examples outside test (train + validation), mean UTF-8 bytes of a kept
  sample. `options`: the fields of `Options`."""
  o = Options(**options)
  synsets = read_synsets(o.path, o.pos)
  lexfiles = [s.lexfile for s in synsets]
  kept, parts = o.selected(synsets, 0)
  members = np.isin(lexfiles, kept)
  nbytes = text_lib.utf8_nbytes(
      [sentence(s, o.with_lemma) for s, m in zip(synsets, members) if m])
  return {'num_classes': len(kept),
          'train_examples': len(parts['train']) + len(parts['validation']),
          'mean_sample_bytes': float(nbytes.mean()) if len(nbytes) else 0.0}


def load(tokenizer, max_length: int, seed: int, **options) -> Dataset:
  """The WordNet supersense dataset, tokenized.

  Args:
    tokenizer: a tokenizer.json path (or a `text.Tokenizer`).
    max_length: T, the fixed length ids are truncated and padded to.
    seed: seeds the per-class cap and the train/validation/test cut.
    **options: the fields of `Options` (which glosses, how they are cut).

  Returns:
    Dataset 'wordnet'; label i is the i-th kept supersense in lex_filenum
    order (`class_names` gives their names).
  """
  o = Options(**options)
  synsets = read_synsets(o.path, o.pos)
  kept, parts = o.selected(synsets, seed)
  if not kept:
    raise ValueError(f'no WordNet supersense in {o.pos} has '
                     f'{o.min_examples_per_class} synsets')
  label_of = {lexfile: i for i, lexfile in enumerate(kept)}
  tokenizer = text_lib.as_tokenizer(tokenizer)
  splits = text_lib.tokenize_splits(tokenizer, max_length, {
      name: ([sentence(synsets[i], o.with_lemma) for i in positions],
             [label_of[synsets[i].lexfile] for i in positions], positions,
             SOURCE)
      for name, positions in parts.items()})
  return Dataset('wordnet', len(kept), splits['train'], splits['validation'],
                 splits['test'], text_lib.spec(tokenizer, max_length))


def class_names(path=DEFAULT_DIR, pos=('noun', 'verb'),
                min_examples_per_class: int = 40) -> tuple:
  """The supersense name of each label, as `load` numbers them."""
  kept = classes([s.lexfile for s in read_synsets(path, pos)],
                 min_examples_per_class)
  return tuple(LEXNAMES[k] for k in kept)
