"""Continue prompts with a decoder checkpoint (Llama / Qwen2 / Mistral).

  python -m acme_jax.tools.generate --checkpoint=DIR --inputs=IN.npz \\
      --max_new_tokens=N --output=OUT.npz

--checkpoint is a Hugging Face decoder folder (or `pip:<dist>`,
`models/checkpoints.py`). IN.npz holds `input_ids` and `attention_mask`
(B, T) integers, right-padded: each row is its prompt, 1s then 0s in the
mask, at least one real token; other arrays in it are ignored. Each row
continues its own real prompt (its first new token follows its last real
one), exactly as the row would alone.

OUT.npz holds `tokens` (B, N) int32: the new tokens only, N of them per row
(no stop at an end-of-sequence token: transformers' `generate` with
min_new_tokens=N gives the same).

Greedy by default (the most probable token, as `do_sample=False`). With
--temperature > 0 tokens are sampled from softmax(logits / temperature),
restricted with --top_p < 1 to the nucleus (the smallest set of most
probable tokens whose mass reaches top_p); --seed (default 0) fixes the
draw, which also depends on --batch_size (each chunk of rows its own
stream). --top_p and --seed apply only to sampling and are refused without
it.

Every flag is checked before the weights load, against the checkpoint's
config.json: N >= 1, the longest real prompt plus N within
max_position_embeddings, ids within the vocabulary, the mask 0/1 and right
padding, --output writable and no input's file. OUT.npz is written whole or
not at all. Matmuls run at 'highest' precision by default (--precision): a
GPU's TF32 passes can flip a greedy choice between two close logits.
"""
from typing import NamedTuple, Optional

import jax
import numpy as np
from absl import flags

from acme_jax import checks
from acme_jax import cli
from acme_jax.errors import UserError
from acme_jax.models import checkpoints
from acme_jax.models import generate as generate_lib
from acme_jax.tools import decoder_io
from acme_jax.tools import flag_checks
from acme_jax.tools import output_file

PRECISIONS = ('default', 'high', 'highest')


def define_flags(flag_values=flags.FLAGS) -> dict:
  """This tool's flags (name -> holder), defined when it runs: the encode
  tool defines --checkpoint, --inputs and --output too, and a process that
  imports both (the tests) may hold one definition of each."""
  fv = dict(flag_values=flag_values)
  return {
      'checkpoint': flags.DEFINE_string(
          'checkpoint', None, 'A Hugging Face decoder folder, or pip:<dist>.',
          **fv),
      'inputs': flags.DEFINE_string(
          'inputs', None, '.npz with input_ids and attention_mask (B, T), '
          'right-padded prompts.', **fv),
      'max_new_tokens': flags.DEFINE_integer(
          'max_new_tokens', None, 'New tokens per row (N >= 1).', **fv),
      'output': flags.DEFINE_string(
          'output', None, 'The .npz to write: tokens (B, N).', **fv),
      'temperature': flags.DEFINE_float(
          'temperature', 0.0, '0: greedy; > 0: sample from '
          'softmax(logits / temperature).', **fv),
      'top_p': flags.DEFINE_float(
          'top_p', 1.0, 'Nucleus sampling: keep the most probable tokens '
          'whose mass reaches top_p (needs --temperature > 0).', **fv),
      'seed': flags.DEFINE_integer(
          'seed', None, 'The sampling seed (needs --temperature > 0; '
          'default 0).', **fv),
      'batch_size': flags.DEFINE_integer(
          'batch_size', 32, 'Rows per model call.', **fv),
      'precision': flags.DEFINE_enum(
          'precision', 'highest', list(PRECISIONS),
          'Matmul precision (jax_default_matmul_precision).', **fv),
  }


def _temperature(config, field):
  return checks.check(
      config, field, lambda v: checks.is_number(v) and (
          v == 0 or v >= checks.MIN_POSITIVE),
      f'must be 0 (greedy) or a finite number >= {checks.MIN_POSITIVE:.7g}')


class Draw(NamedTuple):
  """How tokens are drawn: --temperature (0: greedy), --top_p, --seed."""
  temperature: float = 0.0
  top_p: float = 1.0
  seed: Optional[int] = None


GREEDY = Draw()


def check_flags(checkpoint, inputs, max_new_tokens, output, draw=GREEDY,
                batch_size=32, precision='highest'):
  """The flags alone, before any file is read."""
  temperature, top_p, seed = draw
  if not checkpoint:
    raise UserError('--checkpoint is required (a decoder folder or '
                    'pip:<dist>)')
  if not inputs:
    raise UserError('--inputs is required (an .npz with input_ids and '
                    'attention_mask)')
  if not output:
    raise UserError('--output is required (an .npz path)')
  if max_new_tokens is None:
    raise UserError('--max_new_tokens is required (N >= 1)')
  flag_checks.flag(checks.positive_int, 'max_new_tokens', max_new_tokens)
  flag_checks.flag(_temperature, 'temperature', temperature)
  flag_checks.flag(lambda c, f: checks.fraction(c, f, high_open=False),
                   'top_p', top_p)
  if seed is not None:
    flag_checks.flag(checks.non_negative_int, 'seed', seed)
  if temperature == 0 and (top_p != 1 or seed is not None):
    given = '--top_p' if top_p != 1 else '--seed'
    raise UserError(f'{given} applies to sampling; give --temperature > 0 '
                    f'(greedy decoding draws nothing)')
  flag_checks.flag(checks.positive_int, 'batch_size', batch_size)
  flag_checks.flag(lambda c, f: checks.one_of(c, f, PRECISIONS),
                   'precision', precision)


def generate(spec, inputs: dict, max_new_tokens: int, draw: Draw = GREEDY,
             batch_size: int = 32, precision: str = 'highest') -> dict:
  """{'tokens': (B, N) int32}; `inputs` checked against config.json before
  the weights load."""
  path = checkpoints.resolve(spec)
  model, _ = decoder_io.config_model(path, 'generate')
  feed = decoder_io.prompts(model, inputs, max_new_tokens)
  model, params, _ = checkpoints.load(path, num_classes=0)
  key = jax.random.key(0 if draw.seed is None else draw.seed)

  def run(index, input_ids, attention_mask):
    tokens = generate_lib.generate(
        model, params, input_ids, attention_mask, max_new_tokens,
        key=jax.random.fold_in(key, index),
        sampling=generate_lib.Sampling(draw.temperature, draw.top_p))
    return {'tokens': tokens}

  with jax.default_matmul_precision(precision):
    out = decoder_io.batched(run, feed, batch_size)
  return {'tokens': out['tokens'].astype(np.int32)}


def run(checkpoint, inputs, max_new_tokens, output, draw=GREEDY,
        batch_size=32, precision='highest'):
  """The command: every check, then OUT.npz."""
  check_flags(checkpoint, inputs, max_new_tokens, output, draw, batch_size,
              precision)
  output_file.check(output, {'inputs': inputs})
  arrays = decoder_io.load_inputs(inputs)
  decoder_io.check_checkpoint(checkpoint, output)
  out = generate(checkpoint, arrays, max_new_tokens, draw, batch_size,
                 precision)
  output_file.save(output, lambda f: np.savez(f, **out))
  print(f'wrote {output}: ' + ', '.join(
      f'{k} {tuple(v.shape)}' for k, v in out.items()))
  return out


def main_for(holders: dict):
  """main(argv) reading the flags `define_flags` returned; the three
  sampling flags travel as one Draw."""
  def run_flags(temperature, top_p, seed, **rest):
    return run(**rest, draw=Draw(temperature, top_p, seed))
  return decoder_io.tool_main(run_flags, holders)


if __name__ == '__main__':
  cli.run_tool(main_for(define_flags()))
