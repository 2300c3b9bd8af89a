"""The encode, generate and export tools on decoder checkpoints, run
in-process (flags parsed into a FlagValues of their own, then each tool's
main inside the error boundary every entry point uses).

References: transformers' outputs on the source fixtures (expected.npz,
tests/fixtures/make_hf_decoder_fixture.py) and on the exported subnets
(transformers.npz). The subnet fixtures are what these commands write, run
from the repository root:

  python -m acme_jax.tools.export --checkpoint=tests/fixtures/hf_llama_tiny \\
      --depth=0.67 --width=0.5 \\
      --calibration=tests/fixtures/hf_llama_tiny/expected.npz \\
      --output=tests/fixtures/hf_llama_tiny_subnet
  python -m acme_jax.tools.export --checkpoint=tests/fixtures/hf_qwen2_tiny \\
      --depth=1 --width=0.67 --output=tests/fixtures/hf_qwen2_tiny_subnet

then inputs.npz (the source's expected.npz input_ids and attention_mask)
and `make_hf_decoder_fixture.py --check-export` for transformers.npz. The
llama fixture's tokenizer.json has ids beyond its 97-token vocabulary, so
its export is calibrated on --calibration (padded rows); the qwen2 one has
no tokenizer and takes the seeded random batch.
"""
import json
import pathlib

import jax
import numpy as np
import pytest
from absl import flags

from acme_jax import errors
from acme_jax.cloud import importance
from acme_jax.models import checkpoints
from acme_jax.models import hf_decoder
from acme_jax.models import subnet as subnet_lib
from acme_jax.tools import encode
from acme_jax.tools import export
from acme_jax.tools import generate

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
NAMES = ('hf_llama_tiny', 'hf_qwen2_tiny', 'hf_mistral_tiny')
LLAMA = FIXTURES / 'hf_llama_tiny'
TOL = 2e-5
# fixture -> the export flags that wrote it (module docstring).
EXPORTS = {
    'hf_llama_tiny_subnet': dict(
        checkpoint=LLAMA, depth=0.67, width=0.5,
        calibration=LLAMA / 'expected.npz'),
    'hf_qwen2_tiny_subnet': dict(
        checkpoint=FIXTURES / 'hf_qwen2_tiny', depth=1, width=0.67),
}
WRITTEN_BY_CHECK = ('inputs.npz', 'transformers.npz')


def _expected(name):
  return dict(np.load(FIXTURES / name / 'expected.npz'))


def _save_inputs(path, ids, mask):
  np.savez(path, input_ids=ids, attention_mask=mask)
  return path


def _tool(module, **values):
  """`python -m <module> --name=value ...`, in this process."""
  fv = flags.FlagValues()
  main = module.main_for(module.define_flags(fv))
  fv([module.__name__] + [f'--{k}={v}' for k, v in values.items()])
  return errors.boundary(main, [module.__name__])


def _one_line_error(capsys, module, **values) -> str:
  with pytest.raises(SystemExit) as stopped:
    _tool(module, **values)
  assert stopped.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  return lines[0]


def test_decoder_checkpoints_are_the_decoder_family():
  for name in NAMES:
    assert checkpoints.family(FIXTURES / name) == 'decoder'
  model, params, kind = checkpoints.load(LLAMA)
  assert kind == 'decoder' and model.num_classes == 0
  assert 'head' not in params and 'lm_head' in params
  model, params, _ = checkpoints.load(LLAMA, num_classes=3)
  assert model.num_classes == 3 and params['head']['kernel'].shape == (48, 3)
  assert 0 < np.std(params['head']['kernel']) < 0.05


@pytest.mark.parametrize('name', NAMES)
def test_encode_equals_transformers(name):
  e = _expected(name)
  out = encode.encode(FIXTURES / name, inputs=e, batch_size=2)
  assert sorted(out) == ['last_hidden_state', 'logits']
  real = e['attention_mask'] > 0
  assert out['logits'].shape == e['logits'].shape
  np.testing.assert_allclose(out['logits'][real], e['logits'][real],
                             rtol=0, atol=TOL)
  np.testing.assert_allclose(out['last_hidden_state'][real],
                             e['hidden'][-1][real], rtol=0, atol=TOL)


@pytest.mark.parametrize('name', [
    n if 'llama' in n else pytest.param(n, marks=pytest.mark.slow)
    for n in NAMES])
def test_generate_equals_transformers_greedy(name, tmp_path):
  e = _expected(name)
  inputs = _save_inputs(tmp_path / 'in.npz', e['input_ids'],
                        e['attention_mask'])
  out = tmp_path / 'out.npz'
  _tool(generate, checkpoint=FIXTURES / name, inputs=inputs,
        max_new_tokens=e['greedy'].shape[1], output=out)
  tokens = np.load(out)
  assert tokens.files == ['tokens'] and tokens['tokens'].dtype == np.int32
  np.testing.assert_array_equal(tokens['tokens'], e['greedy'])


def test_generate_sampling_is_seeded(tmp_path):
  e = _expected('hf_llama_tiny')
  inputs = _save_inputs(tmp_path / 'in.npz', e['input_ids'],
                        e['attention_mask'])
  drawn = []
  for i in range(2):
    out = tmp_path / f'out{i}.npz'
    _tool(generate, checkpoint=LLAMA, inputs=inputs, max_new_tokens=6,
          output=out, temperature=1.5, top_p=0.9, seed=7)
    drawn.append(np.load(out)['tokens'])
  np.testing.assert_array_equal(drawn[0], drawn[1])
  assert drawn[0].shape == (3, 6) and drawn[0].max() < 97
  # Greedy tokens differ from a draw at temperature 1.5 somewhere.
  assert (drawn[0][:, :5] != e['greedy']).any()


# Each export recompiles the importance program (~10 s): the llama subnet
# runs in the default suite, qwen2's in the slow one.
@pytest.mark.parametrize('fixture', [
    pytest.param(f, marks=pytest.mark.slow) if 'qwen2' in f else f
    for f in sorted(EXPORTS)])
def test_export_is_the_committed_subnet_and_transformers_agrees(
    fixture, tmp_path, monkeypatch):
  committed = FIXTURES / fixture
  values = EXPORTS[fixture]
  output = tmp_path / fixture
  seen = {}  # what the tool scored, and the subnet it extracted

  def spy(name, fn):
    def wrapped(*args, **kwargs):
      seen[name] = (args, fn(*args, **kwargs))
      return seen[name][1]
    return wrapped

  monkeypatch.setattr(importance, 'importance_scores', spy(
      'scores', importance.importance_scores))
  monkeypatch.setattr(hf_decoder, 'export', spy('export', hf_decoder.export))
  _tool(export, output=output, **values)
  # The same command writes the same bytes.
  assert sorted(p.name for p in output.iterdir()) == sorted(
      p.name for p in committed.iterdir() if p.name not in WRITTEN_BY_CHECK)
  for name in ('config.json', 'model.safetensors'):
    assert (output / name).read_bytes() == (committed / name).read_bytes()
  # The scores came from the documented batch, padding never a real id.
  model, params = hf_decoder.load(values['checkpoint'])
  config = json.loads((values['checkpoint'] / 'config.json').read_text())
  if 'calibration' in values:
    batch = dict(np.load(values['calibration']))
  else:
    batch = export.default_calibration(values['checkpoint'], model, config)
  (scorer, _, data, *_), (heads, _) = seen['scores']
  real = batch['attention_mask'] > 0
  np.testing.assert_array_equal(data.images[real], batch['input_ids'][real])
  assert (data.images != scorer.pad_id).sum() == real.sum()
  # Every kept layer keeps its most important KV group first.
  sub = subnet_lib.for_model(model, values['width'], values['depth'])
  size = subnet_lib.group_size(model)
  (sub_model, dense, _), _ = seen['export']
  for new, layer in enumerate(sub.layers):
    best = np.argmax(importance.group_scores(heads, size)[layer])
    np.testing.assert_array_equal(
        dense[f'block_{new}']['attn']['k']['kernel'][:, 0],
        np.asarray(params[f'block_{layer}']['attn']['k']['kernel'])[:, best])
  # The subnet the tool extracted is what the folder holds, imported back
  # (the same tensors, bit for bit) ...
  again_model, again = hf_decoder.load(output)
  flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v)  # noqa: E731
                       for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  assert flat(again).keys() == flat(dense).keys()
  for k, v in flat(dense).items():
    np.testing.assert_array_equal(flat(again)[k], v, err_msg=k)
  assert again_model.clone(num_heads=sub_model.num_heads,
                           num_kv_heads=sub_model.num_kv_heads,
                           mlp_dim=sub_model.mlp_dim) == sub_model
  inputs = np.load(committed / 'inputs.npz')
  ours = np.asarray(again_model.apply(
      {'params': again}, inputs['input_ids'],
      attention_mask=inputs['attention_mask'])['lm_logits'])
  real = inputs['attention_mask'] > 0
  # ... and what transformers computes from it, at the subnet's sizes.
  reference = np.load(committed / 'transformers.npz')
  np.testing.assert_allclose(ours[real], reference['logits'][real], rtol=0,
                             atol=TOL)
  assert reference['sizes'].tolist() == [len(sub.layers), sub.heads[0],
                                         sub.heads[0] // size, sub.neurons[0]]
  assert str(reference['architecture']) == hf_decoder.ARCHITECTURES[
      config['model_type']]


def test_padding_is_marked_by_an_id_no_real_token_uses():
  model = hf_decoder.load(LLAMA)[0]
  ids = np.array([[5, 0, 7], [8, 9, 9]])  # a real 0: the config's pad id
  scorer, filled = export.scoring_batch(
      model, {'input_ids': ids, 'attention_mask': np.array([[1, 1, 1],
                                                              [1, 1, 0]])})
  assert scorer.pad_id == 1 and filled.tolist() == [[5, 0, 7], [8, 9, 1]]
  scorer, filled = export.scoring_batch(
      model, {'input_ids': ids, 'attention_mask': np.ones((2, 3))})
  assert scorer.pad_id == -1 and filled is ids


def test_default_calibration_batches(tmp_path):
  """The paragraph through a tokenizer that fits the vocabulary, and the
  seeded random ids without one."""
  import tokenizers
  from tokenizers import models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE(unk_token='<unk>'))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.train_from_iterator([export.CALIBRATION_TEXT], trainers.BpeTrainer(
      vocab_size=90, special_tokens=['<pad>', '<s>', '</s>', '<unk>'],
      show_progress=False))
  folder = tmp_path / 'ckpt'
  folder.mkdir()
  (folder / 'config.json').write_bytes((LLAMA / 'config.json').read_bytes())
  tok.save(str(folder / 'tokenizer.json'))
  model = hf_decoder.load(LLAMA)[0]
  config = json.loads((LLAMA / 'config.json').read_text())
  batch = export.default_calibration(folder, model, config)
  ids, mask = batch['input_ids'], batch['attention_mask']
  assert ids.shape[1] == 64 and (ids[:, 0] == 1).all()  # bos_token_id
  assert mask[:-1].all() and not mask[-1].all() and ids.max() < 97
  text = tok.encode(export.CALIBRATION_TEXT, add_special_tokens=False).ids
  assert ids[mask > 0].tolist() == [
      t for r in range(len(ids)) for t in ([1] + text[63 * r:63 * r + 63])]
  random = export.default_calibration(FIXTURES / 'hf_qwen2_tiny', model,
                                      config)
  assert random['input_ids'].shape == (8, 64) and random[
      'attention_mask'].all()
  np.testing.assert_array_equal(
      random['input_ids'],
      export.default_calibration(FIXTURES / 'hf_qwen2_tiny', model,
                                 config)['input_ids'])


def test_bad_export_flags_are_one_line(capsys, tmp_path):
  good = dict(checkpoint=LLAMA, depth=1, width=0.5,
              output=tmp_path / 'out')
  cases = [
      (dict(checkpoint=tmp_path / 'missing'), 'no such checkpoint'),
      (dict(width=0), '--width=0.0 is invalid: must be a number in (0, 1]'),
      (dict(depth=1.5), '--depth=1.5 is invalid: must be a number in (0, 1]'),
      (dict(depth=0.1), 'keeps round(0.1 * 3) = 0'),
      (dict(output=tmp_path), 'exists; give a new folder'),
      (dict(output=tmp_path / 'no' / 'out'), 'does not exist'),
      (dict(checkpoint=FIXTURES / 'hf_bert_tiny'), 'needs a decoder'),
      (dict(), 'beyond the vocabulary of 97; give --calibration'),
  ]
  for change, message in cases:
    line = _one_line_error(capsys, export, **dict(good, **change))
    assert message in line, (change, line)
  assert list(tmp_path.iterdir()) == []


def test_bad_decoder_inputs_are_one_line(capsys, tmp_path):
  e = _expected('hf_llama_tiny')
  ids, mask = e['input_ids'], e['attention_mask']
  out = tmp_path / 'out.npz'
  good = dict(checkpoint=LLAMA, inputs=_save_inputs(tmp_path / 'in.npz', ids,
                                                    mask),
              max_new_tokens=3, output=out)
  bad_ids = _save_inputs(tmp_path / 'ids.npz', ids + 90, mask)
  left = _save_inputs(tmp_path / 'left.npz', ids, mask[:, ::-1])
  cases = [
      (dict(inputs=bad_ids), 'input_ids values must lie in [0, 97)'),
      (dict(max_new_tokens=0), '--max_new_tokens=0 is invalid'),
      (dict(max_new_tokens=56), 'the longest prompt (9 tokens) plus 56 new '
       'tokens exceeds the model\'s max_position_embeddings 64'),
      (dict(inputs=left), 'is not right padding'),
      (dict(top_p=0.5), '--top_p applies to sampling'),
      (dict(temperature=-1), '--temperature=-1.0 is invalid'),
      (dict(checkpoint=tmp_path / 'missing'), 'no such checkpoint'),
  ]
  for change, message in cases:
    line = _one_line_error(capsys, generate, **dict(good, **change))
    assert message in line, (change, line)
  for inputs, message in ((bad_ids, 'input_ids values must lie in [0, 97)'),
                          (left, 'is not right padding')):
    flags.FLAGS(['encode', f'--checkpoint={LLAMA}', f'--inputs={inputs}',
                 f'--output={out}'])
    try:
      with pytest.raises(SystemExit) as stopped:
        errors.boundary(encode.main, ['encode'])
    finally:
      flags.FLAGS.unparse_flags()
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
  with pytest.raises(errors.UserError, match='--text is for sentence'):
    encode.encode(LLAMA, sentences=['a sentence'])
  assert not out.exists()
