"""Language-model text as fixed-length blocks of token ids.

`tokenize_texts` turns texts into id lists with a tokenizer.json, adding
nothing (no special tokens, padding or truncation); `pack` joins the
documents into one stream, EOS between consecutive documents:

  doc0 EOS doc1 EOS doc2

and cuts it into rows of block_length, in order; the last row is padded
with pad_id, and a mask marks the real tokens (EOS included), so a loss
can skip the padding even when pad_id == eos_id. Empty documents are
skipped (no EOS EOS). A block may start or end mid-document: the usual
GPT-style packing, where every real token is a next-token target.
"""
import os
import pathlib
from typing import Sequence, Union

import numpy as np

_INT32_MAX = np.iinfo(np.int32).max


def _check_id(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      not 0 <= value <= _INT32_MAX):
    raise ValueError(f'{name} must be an int in [0, 2**31), got {value!r}')
  return int(value)


def pack(token_lists: Sequence[Sequence[int]], block_length: int,
         eos_id: int, pad_id: int):
  """(blocks, mask): int32 (N, block_length) ids and bool (N, block_length).

  Args:
    token_lists: the documents' ids, each a list or 1-D integer array.
    block_length: the row length (the decoder's context length).
    eos_id: put between consecutive non-empty documents.
    pad_id: fills the last row after the stream ends.

  Returns:
    blocks: the stream cut in rows, N = ceil(stream length / block_length)
      (0 rows when every document is empty); mask: True on real tokens.
    blocks[mask] is the stream itself, in order.
  """
  if isinstance(block_length, bool) or not isinstance(
      block_length, (int, np.integer)) or block_length < 1:
    raise ValueError(f'block_length must be a positive int, got '
                     f'{block_length!r}')
  eos_id, pad_id = _check_id('eos_id', eos_id), _check_id('pad_id', pad_id)
  pieces = []
  for i, tokens in enumerate(token_lists):
    ids = np.asarray(tokens)
    if ids.size == 0:
      continue
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f'token_lists[{i}] must be a 1-D list of ints, got '
                       f'shape {ids.shape} {ids.dtype}')
    if ids.min() < 0 or ids.max() > _INT32_MAX:
      raise ValueError(f'token_lists[{i}] has an id outside [0, 2**31): '
                       f'{int(ids.min())}..{int(ids.max())}')
    if pieces:
      pieces.append(np.array([eos_id], np.int32))
    pieces.append(ids.astype(np.int32))
  stream = np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)
  rows = -(-len(stream) // block_length)
  blocks = np.full((rows * block_length,), pad_id, np.int32)
  blocks[:len(stream)] = stream
  mask = np.arange(rows * block_length) < len(stream)
  return (blocks.reshape(rows, block_length),
          mask.reshape(rows, block_length))


def tokenize_texts(tokenizer_path: Union[str, os.PathLike],
                   texts: Sequence[str]) -> list:
  """Each text's ids (a list of ints) under a tokenizer.json, as they come:
  no special tokens added, no padding, no truncation (whatever the json
  sets)."""
  import tokenizers
  path = pathlib.Path(tokenizer_path)
  if not path.is_file():
    raise FileNotFoundError(f'no tokenizer.json at {path}')
  if isinstance(texts, str):
    raise ValueError('texts must be a sequence of strings, not one string')
  texts = list(texts)
  bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
  if bad is not None:
    raise ValueError(f'texts[{bad}] is a {type(texts[bad]).__name__}, '
                     f'not a str')
  tokenizer = tokenizers.Tokenizer.from_file(str(path))
  tokenizer.no_padding()
  tokenizer.no_truncation()
  if not texts:
    return []
  return [e.ids for e in tokenizer.encode_batch(texts,
                                                add_special_tokens=False)]
