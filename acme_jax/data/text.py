"""Text as the pipeline's samples: token ids in `Split.images`.

A text split keeps the pipeline's `Split` unchanged: `images` holds int32
token ids (N, T), right-padded with the tokenizer's pad id to a fixed
T = data.text.max_length, so batches stack and jit sees one shape; the model
derives the attention mask as ids != pad_id (`TextSpec.attention_mask`).
`raw_nbytes` is each raw sentence's UTF-8 length: what a device stores and
the communication ledger counts, not the padded ids.
"""
import dataclasses
import io
import os
import pathlib
import zipfile
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from acme_jax import workdir as workdir_lib
from acme_jax.data.base import Dataset, Split

# Pad tokens looked up, in order, when the tokenizer.json names none.
_PAD_TOKENS = ('[PAD]', '<pad>', '<|pad|>')


@dataclasses.dataclass(frozen=True)
class TextSpec:
  """A text dataset's input spec: ids are already the model's input."""
  max_length: int
  pad_id: int
  vocab_size: Optional[int] = None  # of the tokenizer, to check a model

  def prepare(self, x, dtype=None):
    """The ids unchanged (the image spec's hook: nothing to resize)."""
    del dtype
    return x

  def attention_mask(self, ids):
    return ids != self.pad_id


def is_text(dataset) -> bool:
  """Whether a loaded Dataset holds token ids (a TextSpec), not images."""
  return isinstance(getattr(dataset, 'input_spec', None), TextSpec)


class Tokenizer:
  """A `tokenizers` tokenizer.json with our fixed-length padding.

  The json's own padding and truncation settings (MiniLM's pads to 128) are
  switched off so that `encode`'s max_length is the only one in force.
  Truncation stays the library's, which keeps the post-processor's special
  tokens ([CLS] ... [SEP]) inside max_length.
  """

  def __init__(self, path: Union[str, os.PathLike]):
    import tokenizers
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f'no tokenizer.json at {path}')
    self.path = path
    self._tok = tokenizers.Tokenizer.from_file(str(path))
    padding = self._tok.padding
    self.pad_id = self._find_pad_id(padding)
    self._tok.no_padding()
    self._tok.no_truncation()
    self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))

  def _find_pad_id(self, padding) -> int:
    if padding is not None:
      return int(padding['pad_id'])
    for token in _PAD_TOKENS:
      token_id = self._tok.token_to_id(token)
      if token_id is not None:
        return int(token_id)
    raise ValueError(f'{self.path} names no pad token (none of '
                     f'{", ".join(_PAD_TOKENS)})')

  def encode(self, sentences: Sequence[str], max_length: int):
    """(ids int32 (N, max_length) right-padded with pad_id, lengths (N,))."""
    if max_length < 1:
      raise ValueError(f'max_length must be positive, got {max_length}')
    sentences = list(sentences)
    ids = np.full((len(sentences), max_length), self.pad_id, np.int32)
    lengths = np.zeros((len(sentences),), np.int32)
    if not sentences:
      return ids, lengths
    self._tok.enable_truncation(max_length)
    try:
      encodings = self._tok.encode_batch(sentences)
    finally:
      self._tok.no_truncation()
    for i, encoding in enumerate(encodings):
      row = encoding.ids[:max_length]
      ids[i, :len(row)] = row
      lengths[i] = len(row)
    return ids, lengths

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids if i != self.pad_id])


def as_tokenizer(tokenizer) -> Tokenizer:
  """A Tokenizer from itself or from a tokenizer.json path."""
  return tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer(
      tokenizer)


def utf8_nbytes(sentences: Sequence[str]) -> np.ndarray:
  return np.asarray([len(s.encode('utf-8')) for s in sentences], np.int64)


def make_split(tokenizer: Tokenizer, texts: Sequence[str], labels, index,
               source: str, max_length: int) -> Split:
  """One text Split: ids (N, max_length) int32, labels, raw UTF-8 bytes."""
  ids, _ = tokenizer.encode(texts, max_length)
  return Split(ids, np.asarray(labels, np.int32).reshape(-1),
               np.asarray(index, np.int64).reshape(-1), source,
               utf8_nbytes(texts))


def tokenize_splits(tokenizer, max_length: int,
                    parts: Mapping[str, tuple]) -> dict:
  """{part: Split} from {part: (texts, labels, index, source)}, one tokenizer.

  The loaders' common last step; `tokenizer` is a Tokenizer or a path.
  """
  tokenizer = as_tokenizer(tokenizer)
  return {name: make_split(tokenizer, texts, labels, index, source,
                           max_length)
          for name, (texts, labels, index, source) in parts.items()}


def spec(tokenizer, max_length: int) -> TextSpec:
  tokenizer = as_tokenizer(tokenizer)
  return TextSpec(max_length, tokenizer.pad_id, tokenizer.vocab_size)


_SPLITS = ('train', 'validation', 'test')


def write_token_cache(path, dataset: Dataset):
  """Saves a tokenized dataset (atomically; a read-only cache is skipped)."""
  arrays = {'name': np.array(dataset.name),
            'num_classes': np.int64(dataset.num_classes),
            'spec': np.array([dataset.input_spec.max_length,
                              dataset.input_spec.pad_id,
                              dataset.input_spec.vocab_size or 0])}
  for name in _SPLITS:
    split = getattr(dataset, name)
    arrays.update({f'{name}.ids': split.images, f'{name}.labels': split.labels,
                   f'{name}.index': split.index,
                   f'{name}.source': np.array(split.source),
                   f'{name}.raw_nbytes': split.raw_nbytes})
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  try:
    workdir_lib.atomic_write_bytes(path, buffer.getvalue())
  except OSError:
    pass  # a read-only cache only costs the tokenization next time


def read_token_cache(path) -> Optional[Dataset]:
  """A dataset `write_token_cache` saved, or None if absent or damaged."""
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      splits = [Split(z[f'{n}.ids'], z[f'{n}.labels'], z[f'{n}.index'],
                      str(z[f'{n}.source']), z[f'{n}.raw_nbytes'])
                for n in _SPLITS]
      length, pad, vocab = (int(v) for v in z['spec'])
      return Dataset(str(z['name']), int(z['num_classes']), *splits,
                     TextSpec(length, pad, vocab or None))
  except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
    return None  # damaged: tokenize again
