"""TFDS text classification sources (SST-2, IMDB, AG News), read without
TensorFlow.

Like the image sources (`tfds_loader`), samples come from `tfds.data_source`
(random access into array_record files), so the dataset must already be
prepared in `data_dir` in array_record format: nothing is downloaded. The
validation split is a seeded held-out fraction of the TFDS train split; the
test split is the labelled evaluation split (for glue/sst2, whose test
labels are hidden (-1), that is GLUE's 'validation'). Sentences are
tokenized once on the host (`text.tokenize_splits`): ids int32 (N, T) padded
with the tokenizer's pad id, `raw_nbytes` the UTF-8 size of the raw text.
"""
import dataclasses
import importlib

import numpy as np
import tensorflow_datasets as tfds

from acme_jax.data import text as text_lib
from acme_jax.data import base
from acme_jax.data.base import Dataset


@dataclasses.dataclass(frozen=True)
class Source:
  num_classes: int
  fields: tuple           # text features, joined by a newline
  test_split: str         # the labelled split used as test
  train_examples: int     # size of the TFDS train split
  mean_sample_bytes: int  # approximate UTF-8 bytes of one sample (plan tool)
  module: str = ''        # builder module that registers the name, if lazy


SOURCES = {
    'glue/sst2': Source(2, ('sentence',), 'validation', 67_349, 54,
                        'tensorflow_datasets.text.glue'),
    'imdb_reviews': Source(2, ('text',), 'test', 25_000, 1_325),
    'ag_news_subset': Source(4, ('title', 'description'), 'test', 120_000,
                             236),
}
SUPPORTED = tuple(SOURCES)
NUM_CLASSES = {name: s.num_classes for name, s in SOURCES.items()}

_CHUNK = 512  # examples read together


def _as_str(value) -> str:
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='replace')
  return str(value)


def example_text(example, fields) -> str:
  """One TFDS example's text: its `fields` decoded and joined by newlines."""
  return '\n'.join(_as_str(example[f]) for f in fields)


def read(source, index: np.ndarray, fields, split: str = ''):
  """(texts, labels int32) of the examples `index` of a data source, read in
  ascending order (sequential in the file) and returned in `index` order."""
  index = np.asarray(index, np.int64)
  texts = [''] * len(index)
  labels = np.empty((len(index),), np.int32)
  order = np.argsort(index, kind='stable')
  for start in range(0, len(order), _CHUNK):
    positions = order[start:start + _CHUNK]
    examples = [source[int(i)] for i in index[positions]]
    for pos, ex in zip(positions, examples):
      texts[pos] = example_text(ex, fields)
      labels[pos] = int(ex['label'])
  if len(labels) and labels.min() < 0:
    raise ValueError(f'split {split!r} has unlabelled examples (label '
                     f'{labels.min()}); it cannot be a training or test split')
  return texts, labels


def _sources(name: str, splits, data_dir):
  """The TFDS data sources of `splits`, or the one-line 'not prepared' error."""
  module = SOURCES[name].module
  if module:
    try:  # registers builders that TFDS's lazy registry misses (glue)
      importlib.import_module(module)
    except ImportError:
      pass  # a prepared data_dir is still readable from its files
  try:
    return tfds.data_source(name, split=list(splits), data_dir=data_dir,
                            download=False)
  except (NotImplementedError, KeyError, AssertionError, FileNotFoundError,
          tfds.core.registered.DatasetNotFoundError) as e:
    raise FileNotFoundError(
        f'TFDS {name!r} is not prepared in array_record format under data_dir='
        f'{data_dir or "(TFDS default)"}; nothing is downloaded at run time, '
        f'so prepare it on a connected machine beforehand (e.g. `tfds build '
        f'{name} --file_format=array_record`).') from e


def load(name: str, tokenizer, max_length: int, seed: int,
         validation_fraction: float = 0.1, data_dir: str | None = None,
         max_examples_per_split: int | None = None) -> Dataset:
  """Loads a TFDS text dataset into memory as token ids.

  Args:
    name: one of `SUPPORTED`.
    tokenizer: a tokenizer.json path (or a `text.Tokenizer`).
    max_length: T, the fixed length ids are truncated and padded to.
    seed: seeds the train/validation split and the order of every split.
    validation_fraction: fraction of the TFDS train split held out.
    data_dir: TFDS data directory holding the prepared (array_record) dataset.
    max_examples_per_split: if set, each split keeps at most this many
      (randomly chosen) samples; for smoke runs.

  Returns:
    The dataset; train and validation index into the TFDS 'train' split,
    test into `SOURCES[name].test_split`.
  """
  base.check_tfds_args(name, SUPPORTED, validation_fraction,
                       max_examples_per_split, kind='TFDS text dataset')
  info = SOURCES[name]
  tokenizer = text_lib.as_tokenizer(tokenizer)  # fail before reading data
  train_source, test_source = _sources(name, ('train', info.test_split),
                                       data_dir)
  rng = np.random.default_rng(seed)
  train_order = rng.permutation(len(train_source))
  test_order = rng.permutation(len(test_source))
  n_val = int(round(validation_fraction * len(train_order)))
  parts = {'train': ('train', train_source, train_order[n_val:]),
           'validation': ('train', train_source, train_order[:n_val]),
           'test': (info.test_split, test_source, test_order)}
  raw = {}
  for part, (split, source, index) in parts.items():
    index = index[:max_examples_per_split]
    texts, labels = read(source, index, info.fields, split)
    raw[part] = (texts, labels, index, split)
  splits = text_lib.tokenize_splits(tokenizer, max_length, raw)
  return Dataset(name, info.num_classes, splits['train'],
                 splits['validation'], splits['test'],
                 text_lib.spec(tokenizer, max_length))
