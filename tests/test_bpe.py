"""Byte-level BPE training: specials, round trips, determinism, errors."""
import pytest

from acme_jax.data import bpe, text

TEXTS = ['the cat sat on the mat', 'the dog ran to the cat', 'a cat, a dog',
         'dogs and cats and mats'] * 5


@pytest.fixture(scope='module')
def tokenizer_json(tmp_path_factory):
  path = tmp_path_factory.mktemp('bpe') / 'a.json'
  return bpe.train_bpe(TEXTS, 300, path)


def test_special_ids_and_pad_found_by_text_tokenizer(tokenizer_json):
  import tokenizers
  tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
  assert tok.token_to_id('<|endoftext|>') == bpe.EOS_ID == 0
  assert tok.token_to_id('<pad>') == bpe.PAD_ID == 1
  assert 258 < tok.get_vocab_size() <= 300  # bytes + specials + merges
  assert tok.encode('the cat').ids == tok.encode(
      'the cat', add_special_tokens=True).ids  # no post-processor tokens
  assert len(tok.encode('the cat').ids) == 2  # ' cat' merged
  assert text.Tokenizer(tokenizer_json).pad_id == 1


@pytest.mark.parametrize('s', ['the cat', ' leading  spaces\tand\nlines ',
                               'Ünïcödé — 日本語 🙂 ǣ', '\x00\x7f', ''])
def test_round_trip_any_unicode(tokenizer_json, s):
  import tokenizers
  tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
  ids = tok.encode(s).ids
  assert tok.decode(ids) == s
  assert bpe.EOS_ID not in ids and bpe.PAD_ID not in ids


def test_deterministic_bytes(tokenizer_json, tmp_path):
  again = bpe.train_bpe(list(TEXTS), 300, tmp_path / 'sub' / 'b.json')
  assert again.read_bytes() == tokenizer_json.read_bytes()
  assert [p.name for p in again.parent.iterdir()] == ['b.json']  # no tmp


@pytest.mark.parametrize('texts,vocab,match', [
    ([], 300, 'needs texts'), (['', ''], 300, 'all 2 texts are empty'),
    ('abc', 300, 'not one string'), (['a', 3], 300, r'texts\[1\] is a int'),
    (TEXTS, 258, 'vocab_size must be an int >= 259'),
    (TEXTS, 300.0, 'vocab_size')])
def test_bad_input_one_line(tmp_path, texts, vocab, match):
  with pytest.raises(ValueError, match=match) as e:
    bpe.train_bpe(texts, vocab, tmp_path / 't.json')
  assert '\n' not in str(e.value) and not (tmp_path / 't.json').exists()
