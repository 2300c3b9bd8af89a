"""Packing documents into LM blocks, and plain tokenization."""
import numpy as np
import pytest

from acme_jax.data import bpe, lm_corpus

EOS, PAD = 0, 1


def test_pack_hand_computed():
  blocks, mask = lm_corpus.pack([[5, 6, 7], [], [8], [9, 10]], 3, EOS, PAD)
  # stream: 5 6 7 EOS 8 EOS 9 10 (the empty document skipped)
  np.testing.assert_array_equal(blocks, [[5, 6, 7], [0, 8, 0], [9, 10, 1]])
  np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 1], [1, 1, 0]])
  assert blocks.dtype == np.int32 and mask.dtype == bool


def test_pack_exact_fit_and_empty():
  blocks, mask = lm_corpus.pack([np.array([2, 3]), [4, 5, 6]], 3, EOS, EOS)
  np.testing.assert_array_equal(blocks, [[2, 3, 0], [4, 5, 6]])
  assert mask.all()  # no padding row when the stream fits exactly
  blocks, mask = lm_corpus.pack([[], []], 4, EOS, PAD)
  assert blocks.shape == mask.shape == (0, 4)


def test_pack_every_token_once_in_order():
  rng = np.random.default_rng(0)
  docs = [rng.integers(2, 500, rng.integers(0, 20)) for _ in range(50)]
  blocks, mask = lm_corpus.pack(docs, 16, EOS, PAD)
  stream = blocks[mask]
  real = [d for d in docs if len(d)]
  assert len(stream) == sum(map(len, real)) + len(real) - 1
  pieces = np.split(stream, np.flatnonzero(stream == EOS))
  for doc, piece in zip(real, pieces):
    np.testing.assert_array_equal(piece[piece != EOS], doc)
  assert (blocks[~mask] == PAD).all() and (~mask).sum() < 16


@pytest.mark.parametrize('args,match', [
    (([[1]], 0, EOS, PAD), 'block_length'), (([[1]], 4, -1, PAD), 'eos_id'),
    (([[1]], 4, EOS, 2**31), 'pad_id'), (([[1, -3]], 4, EOS, PAD), r'\[0\]'),
    (([[[1, 2]]], 4, EOS, PAD), '1-D'), (([[1.5]], 4, EOS, PAD), '1-D')])
def test_pack_bad_input_one_line(args, match):
  with pytest.raises(ValueError, match=match) as e:
    lm_corpus.pack(*args)
  assert '\n' not in str(e.value)


def test_tokenize_texts_plain_ids(tmp_path):
  texts = ['hello world', 'hello there world'] * 3
  path = bpe.train_bpe(texts, 270, tmp_path / 'tok.json')
  ids = lm_corpus.tokenize_texts(path, ['hello world', '', 'Ω'])
  assert isinstance(ids, list) and ids[1] == [] and len(ids[2]) == 2
  assert all(isinstance(i, int) and i > bpe.PAD_ID for i in ids[0] + ids[2])
  assert lm_corpus.tokenize_texts(path, []) == []
  with pytest.raises(FileNotFoundError, match='no tokenizer.json at'):
    lm_corpus.tokenize_texts(tmp_path / 'missing.json', ['a'])
