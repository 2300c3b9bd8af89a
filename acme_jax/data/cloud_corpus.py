"""The decoder family's cloud corpus: Debian's GCIDE dictionary definitions
(`data/gcide.py`, GPL), text no device holds. The articles GCIDE took from
WordNet are left out, since the WordNet tasks' users hold those glosses.

The tokenizer is a byte-level BPE the cloud trains on this corpus, so no
user's words shape the vocabulary; the cloud pretrains its decoder on the
same text packed into fixed-length blocks (`pretrain_blocks`).

`data.text.tokenizer = 'gcide-bpe:<vocab size>'` names it; it is trained
once per vocabulary size and GCIDE file and kept in the cache
($ACME_JAX_CACHE/tokenizers/), like an extracted checkpoint.
"""
import hashlib
import os
import pathlib

PREFIX = 'gcide-bpe:'


def is_cloud_bpe(spec) -> bool:
  return str(spec).startswith(PREFIX)


def vocab_size(spec) -> int:
  """N of 'gcide-bpe:N', checked: a whole number of at least
  bpe.MIN_VOCAB_SIZE (the 256 bytes, two specials, one merge)."""
  from acme_jax.data import bpe
  text = str(spec)[len(PREFIX):]
  if not text.isdigit() or not bpe.MIN_VOCAB_SIZE <= int(text) < 2**31:
    raise ValueError(f'give {PREFIX}<vocab size> with a whole number in '
                     f'{bpe.MIN_VOCAB_SIZE}..{2**31 - 1}, e.g. {PREFIX}8192')
  return int(text)


def path_for(spec, gcide_dir=None) -> pathlib.Path:
  """The trained tokenizer.json of `spec` (trained now if not cached)."""
  from acme_jax.data import bpe, gcide
  from acme_jax.models import checkpoints
  size = vocab_size(spec)
  gcide_dir = gcide_dir or gcide.DEFAULT_DIR
  index, data = gcide.files(gcide_dir)
  stamp = '|'.join(f'{f}:{os.stat(f).st_size}' for f in (index, data))
  digest = hashlib.sha256(stamp.encode()).hexdigest()[:12]
  target = (checkpoints.cache_dir() / 'tokenizers' /
            f'gcide-bpe-{size}-nowordnet-{digest}.json')
  if not target.is_file():
    bpe.train_bpe(gcide.load_definitions(gcide_dir, exclude_wordnet=True),
                  size, target)
  return target


def pretrain_blocks(tokenizer, block_length: int, max_blocks: int,
                    gcide_dir=None):
  """(blocks (N, block_length) int32, N <= max_blocks): the corpus
  tokenized with `tokenizer` (a tokenizer.json), documents joined by EOS,
  cut into blocks; the first max_blocks, in file order."""
  from acme_jax.data import bpe, gcide, lm_corpus
  texts = gcide.load_definitions(gcide_dir or gcide.DEFAULT_DIR,
                                 exclude_wordnet=True)
  blocks, tokens, kept = [], 0, []
  # Tokenize only what max_blocks needs (the whole corpus is ~9M tokens).
  for text in texts:
    kept.append(text)
    tokens += len(text) // 2
    if tokens > (max_blocks + 1) * block_length * 2:
      break
  ids = lm_corpus.tokenize_texts(tokenizer, kept)
  blocks, _ = lm_corpus.pack(ids, block_length, bpe.EOS_ID, bpe.PAD_ID)
  return blocks[:max_blocks]
