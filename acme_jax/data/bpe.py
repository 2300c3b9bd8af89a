"""A byte-level BPE tokenizer trained on the cloud's own text.

GPT-2 / Llama-3 / Qwen2 style: the ByteLevel pre-tokenizer maps every UTF-8
byte to a printable character (after GPT-2's word-splitting regex) and the
ByteLevel decoder maps them back, so the 256 byte symbols are always in the
vocabulary (`initial_alphabet`), no text is unknown, and
decode(encode(text)) == text for any Unicode string. No normalizer: what is
encoded is the text's exact bytes.

Special tokens, at fixed ids before the byte symbols and merges:
  0  `<|endoftext|>` (EOS_TOKEN): the document separator, eos and bos alike;
  1  `<pad>` (PAD_TOKEN): padding, the name `text.Tokenizer` looks for.
No post-processor: encoding adds no special token (a decoder's input is
plain tokens; `lm_corpus.pack` puts EOS between documents). Like every
added token, a literal '<|endoftext|>' inside a text still encodes as id 0.

Training is deterministic: the same texts, vocab_size and min_frequency
give a byte-identical tokenizer.json. tokenizers 0.23.3's BpeTrainer breaks
ties between equally frequent pairs by the pair's ids, not by hash order,
and serializes the vocabulary by id; checked across processes (Rust's
per-process hash seeds) and with RAYON_NUM_THREADS=1 and 2 (equal
sha256 of the json), so no thread or environment setting is needed.
The vocabulary holds fewer than vocab_size tokens when the texts have no
more pairs seen min_frequency times: read the real size from the file.
"""
import os
import pathlib
from typing import Iterable, Union

from acme_jax import workdir as workdir_lib

EOS_TOKEN = '<|endoftext|>'
PAD_TOKEN = '<pad>'
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)  # in id order
EOS_ID = 0
PAD_ID = 1
NUM_BYTES = 256  # the ByteLevel alphabet
MIN_VOCAB_SIZE = NUM_BYTES + len(SPECIAL_TOKENS) + 1  # at least one merge


def new_tokenizer():
  """An untrained byte-level BPE `tokenizers.Tokenizer`."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                     use_regex=True)
  tokenizer.decoder = decoders.ByteLevel()
  return tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int,
              path: Union[str, os.PathLike],
              min_frequency: int = 2) -> pathlib.Path:
  """Trains a byte-level BPE on `texts`; writes its tokenizer.json.

  Args:
    texts: the training text (a list, or any iterable of strings).
    vocab_size: the most tokens, specials and the 256 bytes included; more
      than 258.
    path: where tokenizer.json goes (written atomically; parent made).
    min_frequency: a pair merges only if seen at least this often.

  Returns:
    `path`, a tokenizer.json that `text.Tokenizer` reads (pad id PAD_ID).
  """
  import tokenizers
  from tokenizers import pre_tokenizers, trainers
  if isinstance(texts, str):
    raise ValueError('texts must be a sequence of strings, not one string')
  texts = list(texts)
  if not texts:
    raise ValueError('train_bpe needs texts: got none')
  bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
  if bad is not None:
    raise ValueError(f'texts[{bad}] is a {type(texts[bad]).__name__}, '
                     f'not a str')
  if not any(texts):
    raise ValueError(f'train_bpe needs text: all {len(texts)} texts are '
                     f'empty')
  if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or (
      vocab_size < MIN_VOCAB_SIZE):
    raise ValueError(f'vocab_size must be an int >= {MIN_VOCAB_SIZE} (256 '
                     f'bytes + {len(SPECIAL_TOKENS)} special tokens + a '
                     f'merge), got {vocab_size!r}')
  if isinstance(min_frequency, bool) or not isinstance(
      min_frequency, int) or min_frequency < 1:
    raise ValueError(f'min_frequency must be an int >= 1, got '
                     f'{min_frequency!r}')
  tokenizer = new_tokenizer()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency,
      special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False)
  tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
  ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
  if ids != [EOS_ID, PAD_ID]:  # tokenizers' contract: specials come first
    raise RuntimeError(f'special tokens got ids {ids}, not {[EOS_ID, PAD_ID]}'
                       f' (tokenizers {tokenizers.__version__})')
  path = pathlib.Path(path)
  workdir_lib.atomic_write_text(path, tokenizer.to_str(pretty=True))
  return path
