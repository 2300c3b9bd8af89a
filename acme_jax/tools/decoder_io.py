"""What the tools share for a checkpoint's inputs and outputs, and the
decoder's side of `tools/encode.py` (`tools/generate.py` and
`tools/export.py` use it too).

Defines no flags: the tools that import it each define their own
(`--checkpoint`, `--inputs`, `--output`, ...), and absl allows one
definition of a name per process.

A decoder's inputs are `input_ids` and `attention_mask` (B, T) integers
with right padding: every row is 1s then 0s, with at least one 1 (a row
with no real token has no next token and no defined output). Everything
is checked against the checkpoint's config.json before its weights load
(`config_model`).
"""
import os
import pathlib

import numpy as np

from acme_jax.errors import UserError
from acme_jax.models import checkpoints
from acme_jax.models import hf_decoder
from acme_jax.models import hf_import
from acme_jax.tools import flag_checks
from acme_jax.tools import output_file

FLOAT32 = 4


def load_inputs(path: str, flag: str = 'inputs', finite=()) -> dict:
  """The arrays of an .npz; the float ones named in `finite` must hold no
  NaN or infinity (it flows through every layer: every output NaN)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f'cannot read --{flag} {path}: '
                    f'{" ".join(str(e).split())}') from e
  for name in finite:
    value = arrays.get(name)
    if value is None or not np.issubdtype(value.dtype, np.inexact):
      continue
    bad = ~np.isfinite(value)
    if bad.any():
      raise UserError(f'--{flag}={path}: {name} holds {int(bad.sum())} '
                      f'non-finite value(s) (NaN or inf), the first at '
                      f'index {tuple(int(i) for i in np.argwhere(bad)[0])}; '
                      f'the outputs would be NaN')
  return arrays


def check_checkpoint(spec: str, output: str):
  """The checkpoint exists, and --output would not replace one of its
  files (its weights, config or tokenizer)."""
  path = checkpoints.resolve(spec)
  folder = path if path.is_dir() else path.parent
  if os.path.exists(output) and output_file.same_file(os.path.dirname(
      os.path.abspath(output)), folder):
    raise UserError(f'--output={output} would replace a file of the '
                    f'checkpoint {spec}; give a path outside {folder}')


def batched(fn, arrays: dict, batch_size: int) -> dict:
  """fn over row chunks of one size (the last padded with copies of its
  last row: one compile); `fn(chunk_index, **chunk)`."""
  n = len(next(iter(arrays.values())))
  size = max(1, min(batch_size, n))
  outs = []
  for index, start in enumerate(range(0, n, size)):
    chunk = {k: v[start:start + size] for k, v in arrays.items()}
    rows = len(next(iter(chunk.values())))
    if rows < size:
      chunk = {k: np.concatenate([v, np.repeat(v[-1:], size - rows, 0)])
               for k, v in chunk.items()}
    outs.append({k: np.asarray(v)[:rows]
                 for k, v in fn(index, **chunk).items()})
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def folder_of(path) -> pathlib.Path:
  path = pathlib.Path(path)
  return path if path.is_dir() else path.parent


def config_model(path, what: str = 'this tool'):
  """(the Decoder config.json describes, the config dict), weights unread;
  one line when the checkpoint is not a decoder."""
  kind = checkpoints.family(path)
  if kind != 'decoder':
    raise UserError(f'{what} needs a decoder checkpoint (llama, qwen2, '
                    f'mistral); {path} is a {kind}')
  config = hf_import.read_config(path)
  return hf_decoder.decoder_from_hf_config(config), config


def int_array(inputs: dict, name: str, shape, high: int) -> np.ndarray:
  """inputs[name] as int32, checked: integers of `shape` in [0, high)."""
  value = np.asarray(inputs[name])
  if not (np.issubdtype(value.dtype, np.integer) or value.dtype == bool):
    raise UserError(f'{name} must hold integers, got {value.dtype}')
  if value.shape != shape:
    raise UserError(f'{name} has shape {value.shape}, expected {shape} '
                    f'(as input_ids)')
  if value.size and (value.min() < 0 or value.max() >= high):
    raise UserError(f'{name} values must lie in [0, {high}), found '
                    f'[{value.min()}, {value.max()}]')
  return value.astype(np.int32)


def ids_shape(inputs: dict, who: str, flag: str = 'inputs') -> tuple:
  """The (batch, length) of input_ids, after checking that input_ids and
  attention_mask are there and neither dimension is empty."""
  for name in ('input_ids', 'attention_mask'):
    if name not in inputs:
      raise UserError(f'{who} needs {name} in --{flag} (has '
                      f'{sorted(inputs)})')
  shape = np.shape(inputs['input_ids'])
  if len(shape) != 2 or not all(shape):
    raise UserError(f'input_ids must be (batch, length) with both > 0, got '
                    f'shape {shape}')
  return shape


def prompts(model, inputs: dict, new_tokens: int = 0,
            flag: str = 'inputs') -> dict:
  """Checked int32 `input_ids` and `attention_mask` (right padding, every
  row at least one real token), the longest real row plus `new_tokens`
  within max_position_embeddings."""
  shape = ids_shape(inputs, 'a decoder', flag)
  ids = int_array(inputs, 'input_ids', shape, model.vocab_size)
  mask = int_array(inputs, 'attention_mask', shape, 2)
  lengths = mask.sum(1)
  empty = np.flatnonzero(lengths == 0)
  if empty.size:
    raise UserError(f'attention_mask row {empty[0]} has no real token '
                    f'({empty.size} such row(s)); every row needs one')
  right = np.arange(shape[1])[None] < lengths[:, None]
  bad = np.flatnonzero((mask != right).any(1))
  if bad.size:
    raise UserError(f'attention_mask row {bad[0]} is not right padding '
                    f'(1s then 0s): {mask[bad[0]].tolist()}')
  longest = int(lengths.max() if new_tokens else shape[1])
  if longest + new_tokens > model.max_positions:
    what = (f'the longest prompt ({longest} tokens) plus {new_tokens} new '
            f'tokens' if new_tokens else f'input_ids length {longest}')
    raise UserError(f'{what} exceeds the model\'s max_position_embeddings '
                    f'{model.max_positions}')
  return {'input_ids': ids, 'attention_mask': mask}


def encode(path, inputs: dict, batch_size: int, precision: str) -> dict:
  """`logits` (B, T, V) and `last_hidden_state` (B, T, D; after the final
  norm, HF's last hidden state) of a decoder checkpoint, float32; padded
  positions hold what the model computes there (HF's may differ)."""
  import jax  # pylint: disable=import-outside-toplevel
  model, _ = config_model(path, '--inputs with input_ids')
  feed = prompts(model, inputs)
  rows, length = feed['input_ids'].shape
  flag_checks.fits_memory(
      f'--inputs ({rows} x {length} tokens)',
      f'the logits ({rows}, {length}, {model.vocab_size}) float32',
      rows * length * (model.vocab_size + model.hidden_size) * FLOAT32)
  model, params, _ = checkpoints.load(path, num_classes=0)

  @jax.jit
  def run(params, input_ids, attention_mask):
    out = model.apply({'params': params}, input_ids,
                      attention_mask=attention_mask)
    return {'logits': out['lm_logits'], 'last_hidden_state': out['tokens']}

  with jax.default_matmul_precision(precision):
    out = batched(lambda _, **b: run(params, **b), feed, batch_size)
  return {k: out[k].astype(np.float32)
          for k in ('logits', 'last_hidden_state')}


def tool_main(run, holders: dict):
  """A tool's absl main(argv): no positional arguments, stderr kept to our
  one line, the compilation cache on, then `run` with the flags' values."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  from acme_jax import cli  # pylint: disable=import-outside-toplevel

  def main(argv):
    if len(argv) > 1:
      raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
    logging.set_verbosity(logging.ERROR)
    cli.enable_compilation_cache()
    run(**{name: holder.value for name, holder in holders.items()})
  return main
