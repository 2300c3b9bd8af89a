"""Write a subnet of a decoder checkpoint as a Hugging Face model folder.

  python -m acme_jax.tools.export --checkpoint=DIR --depth=D --width=W \\
      --output=DIR2

--checkpoint is a Llama / Qwen2 / Mistral folder (or `pip:<dist>`). The
subnet is the one the method trains (docs/method.md 3.1, `models/subnet.py`
`for_model`): round(D * L) of the L layers, evenly spread, the first kept;
in every kept layer round(G * W) of the G KV groups (at least one) with
their query heads, and round(F * W) of the F MLP neurons (at least one).

Which heads and neurons are kept: the checkpoint is first reordered by
importance (docs/method.md 3.3, `cloud/importance.py`: DynaBERT's scores
from the gradients of the next-token loss on a calibration batch, then a
function-preserving permutation, most important first), and the subnet
keeps the front. The calibration batch:

  * --calibration=IN.npz: its `input_ids` and `attention_mask` (B, T),
    right-padded as for the encode and generate tools;
  * else, when the checkpoint has a tokenizer.json: `CALIBRATION_TEXT` of
    acme_jax/tools/export.py (a fixed English paragraph of 155 words),
    tokenized without special tokens and cut into rows of `ROW_TOKENS` (64)
    tokens (max_position_embeddings if smaller), each row starting with
    the config's bos_token_id where it has one; the last row right-padded.
    A tokenizer giving ids beyond the model's vocabulary is refused;
    give --calibration then;
  * else: `RANDOM_ROWS` (8) rows of `ROW_TOKENS` ids drawn uniformly from
    the vocabulary with numpy's default_rng(`RANDOM_SEED` = 0). Random ids
    are a weak signal of what matters on text: pass --calibration with
    real text for a subnet you mean to use.

The batch is scored in batches of --batch_size rows (the scores accumulate
gradients batch after batch, so they depend on it) at 'highest' matmul
precision. Padding never counts: the loss and the attention see a row's
real tokens only, whatever ids the padding holds.

DIR2 is written as `models/hf_decoder.py` `export` writes it: config.json
(the checkpoint's, with the subnet's num_hidden_layers,
num_attention_heads, num_key_value_heads and intermediate_size; float32),
model.safetensors (float32, the LM head included) and the checkpoint's
tokenizer files (tokenizer.json, tokenizer_config.json,
special_tokens_map.json, generation_config.json) where it has them; into a
temporary folder beside DIR2 first, then renamed, so DIR2 is whole or
absent. The same command writes the same bytes.

Every flag is checked before the weights load: --depth and --width in
(0, 1], a subnet of at least one layer, DIR2 new, its parent an existing
writable folder, --calibration readable and valid for the checkpoint.
"""
import os

import jax
import numpy as np
from absl import flags

from acme_jax import checks
from acme_jax import cli
from acme_jax import errors
from acme_jax.cloud import importance
from acme_jax.data.base import Split
from acme_jax.errors import UserError
from acme_jax.models import checkpoints
from acme_jax.models import hf_decoder
from acme_jax.models import subnet as subnet_lib
from acme_jax.tools import decoder_io
from acme_jax.tools import flag_checks
from acme_jax.tools import output_file

ROW_TOKENS = 64
RANDOM_ROWS = 8
RANDOM_SEED = 0
CALIBRATION_TEXT = (
    'The library opens at nine in the morning, and by ten most of the long '
    'tables are taken. Students spread their notes beside old atlases, a '
    'retired teacher reads the newspaper from the first page to the last, '
    'and two children whisper over a book about volcanoes. Outside, the '
    'market is busy: a baker sells warm bread, a fisherman weighs the '
    'morning catch, and the smell of coffee drifts across the square. When '
    'it starts to rain, people hurry under the arches and wait, talking '
    'about the weather, the prices of vegetables and the football match on '
    'Sunday. In the afternoon the sun comes back. The river is high after '
    'the storm, and a small boat carries tourists past the bridge, the '
    'church and the houses painted yellow, blue and green. Every evening '
    'the lights come on one by one, the shops close, and the town grows '
    'quiet until the bells ring again at seven.')


def define_flags(flag_values=flags.FLAGS) -> dict:
  """This tool's flags (name -> holder), defined when it runs: the encode
  tool defines --checkpoint and --output too, and a process that imports
  both (the tests) may hold one definition of each."""
  fv = dict(flag_values=flag_values)
  return {
      'checkpoint': flags.DEFINE_string(
          'checkpoint', None, 'A Hugging Face decoder folder, or pip:<dist>.',
          **fv),
      'depth': flags.DEFINE_float(
          'depth', None, 'Depth multiplier in (0, 1]: round(D * L) layers.',
          **fv),
      'width': flags.DEFINE_float(
          'width', None, 'Width multiplier in (0, 1]: of the KV groups (with '
          'their query heads) and of the MLP neurons.', **fv),
      'output': flags.DEFINE_string(
          'output', None, 'The new Hugging Face folder to write.', **fv),
      'calibration': flags.DEFINE_string(
          'calibration', None, '.npz with input_ids and attention_mask to '
          'score importance on (default: the documented fixed batch).', **fv),
      'batch_size': flags.DEFINE_integer(
          'batch_size', 8, 'Calibration rows per importance batch.', **fv),
  }


def check_flags(checkpoint, depth, width, output, calibration=None,
                batch_size=8):
  """The flags alone, and DIR2's place, before any file is read."""
  if not checkpoint:
    raise UserError('--checkpoint is required (a decoder folder or '
                    'pip:<dist>)')
  for name, value in (('depth', depth), ('width', width)):
    if value is None:
      raise UserError(f'--{name} is required (a number in (0, 1])')
    flag_checks.flag(lambda c, f: checks.fraction(c, f, high_open=False),
                     name, value)
  flag_checks.flag(checks.positive_int, 'batch_size', batch_size)
  if not output:
    raise UserError('--output is required (a new folder)')
  if os.path.lexists(output):
    raise UserError(f'--output={output} exists; give a new folder (it is '
                    f'never replaced)')
  parent = os.path.dirname(os.path.abspath(output))
  blocked = errors.file_in_the_way(parent)
  if blocked is not None:
    raise UserError(f'--output={output} is under {blocked}, which is a file')
  if not os.path.isdir(parent):
    raise UserError(f'--output\'s parent folder {parent} does not exist')
  problem = output_file.unwritable(parent)
  if problem:
    raise UserError(f'--output\'s parent folder {parent} is not writable '
                    f'({problem})')
  if calibration is not None and not calibration:
    raise UserError('--calibration is empty; give an .npz or leave it out')


def subnet_for(model, depth: float, width: float):
  """The (width, depth) subnet; one line when it keeps no layer."""
  kept = subnet_lib.kept_layer_indices(model.num_layers, depth)
  if not kept:
    raise UserError(f'--depth={depth} keeps round({depth} * '
                    f'{model.num_layers}) = 0 of the checkpoint\'s '
                    f'{model.num_layers} layers; give at least '
                    f'{0.5 / model.num_layers:.3g}')
  return subnet_lib.for_model(model, width, depth)


def default_calibration(path, model, hf_config: dict) -> dict:
  """The documented fixed batch (module docstring)."""
  length = min(ROW_TOKENS, model.max_positions)
  tokenizer = checkpoints.tokenizer_path(path)
  if tokenizer is None:
    rng = np.random.default_rng(RANDOM_SEED)
    ids = rng.integers(0, model.vocab_size, (RANDOM_ROWS, length))
    return {'input_ids': ids.astype(np.int32),
            'attention_mask': np.ones(ids.shape, np.int32)}
  import tokenizers  # pylint: disable=import-outside-toplevel
  tok = tokenizers.Tokenizer.from_file(os.fspath(tokenizer))
  tok.no_padding()
  tok.no_truncation()
  text = tok.encode(CALIBRATION_TEXT, add_special_tokens=False).ids
  bos = hf_config.get('bos_token_id')
  head = ([bos] if isinstance(bos, int) and 0 <= bos < model.vocab_size
          and length > 1 else [])
  step = length - len(head)
  rows = [head + text[i:i + step] for i in range(0, len(text), step)]
  ids = np.zeros((len(rows), length), np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for r, row in enumerate(rows):
    ids[r, :len(row)] = row
    mask[r, :len(row)] = 1
  if ids.max() >= model.vocab_size:
    raise UserError(f'{tokenizer} gives ids up to {ids.max()}, beyond the '
                    f'vocabulary of {model.vocab_size}; give --calibration')
  return {'input_ids': ids, 'attention_mask': mask}


def scoring_batch(model, batch: dict):
  """(the model to score with, ids) so that exactly the masked tokens count
  as padding: the scores mark padding by `pad_id` (ids != pad_id are
  real). Without padding no id is padding (-1); with it, the padding is
  filled with an id no real token uses."""
  ids, mask = batch['input_ids'], batch['attention_mask'] > 0
  if mask.all():
    return model.clone(pad_id=-1), ids
  used = np.zeros(model.vocab_size, bool)
  used[ids[mask]] = True
  free = np.flatnonzero(~used)
  if not free.size:
    raise UserError('the calibration\'s real tokens use every id of the '
                    'vocabulary, so none is free to mark its padding; give '
                    'rows without padding')
  pad = (model.pad_id if 0 <= model.pad_id < model.vocab_size and
         not used[model.pad_id] else int(free[0]))
  return model.clone(pad_id=pad), np.where(mask, ids, pad).astype(np.int32)


def reordered(model, params, batch: dict, batch_size: int):
  """params with every layer's KV groups and neurons most important first
  on `batch` (the next-token loss's scores)."""
  scorer, ids = scoring_batch(model, batch)
  data = Split(images=ids, labels=np.zeros(len(ids), np.int32),
               index=np.arange(len(ids)))
  with jax.default_matmul_precision('highest'):
    heads, neurons = importance.importance_scores(
        scorer, params, data, batch_size, max_batches=len(ids))
  return importance.reorder(model, params, heads, neurons)


def export(spec, depth: float, width: float, output, calibration=None,
           batch_size: int = 8):
  """Writes the subnet folder; returns (subnet model, its params,
  SubnetConfig). `calibration`: arrays (input_ids, attention_mask) or
  None for the documented batch. Checks come before the weights load."""
  path = checkpoints.resolve(spec)
  model, hf_config = decoder_io.config_model(path, 'export')
  subnet = subnet_for(model, depth, width)
  if calibration is None:
    batch = default_calibration(path, model, hf_config)
  else:
    batch = decoder_io.prompts(model, calibration, flag='calibration')
  model, params, _ = checkpoints.load(path, num_classes=0)
  params = reordered(model, params, batch, batch_size)
  sub_model, dense = subnet_lib.extract(model, params, subnet,
                                        with_head=True)
  hf_decoder.export(sub_model, dense, output, base_config=hf_config,
                    tokenizer_dir=decoder_io.folder_of(path))
  return sub_model, dense, subnet


def run(checkpoint, depth, width, output, calibration=None, batch_size=8):
  """The command: every check, then DIR2."""
  check_flags(checkpoint, depth, width, output, calibration, batch_size)
  arrays = (decoder_io.load_inputs(calibration, 'calibration')
            if calibration else None)
  sub_model, _, subnet = export(checkpoint, depth, width, output, arrays,
                                batch_size)
  layers = ', '.join(map(str, subnet.layers))
  print(f'wrote {output}: {len(subnet.layers)} layers (the checkpoint\'s '
        f'{layers}), {subnet.heads[0]} query heads, '
        f'{tuple(sub_model.num_kv_heads)[0]} KV heads, '
        f'{subnet.neurons[0]} MLP neurons per layer')
  return subnet


def main_for(holders: dict):
  """main(argv) reading the flags `define_flags` returned."""
  return decoder_io.tool_main(run, holders)


if __name__ == '__main__':
  cli.run_tool(main_for(define_flags()))
