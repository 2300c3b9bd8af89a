"""One elastic training step over a 4x4 (depth, width) grid, three ways.

  python -m benchmarks.elastic [--layers=12 --hidden=384 --heads=6 --mlp=1536
                                --image=64 --patch=8 --batch=16 --reps=3]
  python -m benchmarks.elastic --family=decoder [--layers=6 --hidden=384
      --heads=8 --kv_heads=4 --mlp=1024 --vocab=8192 --seq=48 --batch=16]

--family=decoder times the decoder (models/decoder.py) on random token ids:
its widths keep whole KV groups and its distillation adds the next-token
term over the vocabulary.

* masked: every subnet at full size with masks as data (one program);
* sliced: per width a static slice of the params, the depths scanned with
  dropped layers skipped (one program, one traced body per width);
* static (the default): every subnet a static slice of its layers and
  widths, all unrolled in one program;
* ideal: each subnet run as its own dense, extracted model: a separate
  program per subnet (and per teacher width), timed one after another.

All three compute the same losses (up to float reassociation; checked
below); the step times are best of --reps after one warm-up call. Compile
counts are the programs each way needs, compile seconds the first call's
extra time. The last line compares the default scheme's step (static) and
the masked one with the ideal.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from acme_jax import cli
from acme_jax import errors
from acme_jax import report
from acme_jax import training
from acme_jax.cloud import elastic
from acme_jax.models import decoder as decoder_lib
from acme_jax.models import subnet, vit
from benchmarks import inputs

_LAYERS = flags.DEFINE_integer('layers', 12, 'encoder layers')
_HIDDEN = flags.DEFINE_integer('hidden', 384, 'hidden size')
_HEADS = flags.DEFINE_integer('heads', 6, 'attention heads')
_MLP = flags.DEFINE_integer('mlp', 1536, 'MLP width')
_IMAGE = flags.DEFINE_integer('image', 64, 'image side')
_PATCH = flags.DEFINE_integer('patch', 8, 'patch side')
_BATCH = flags.DEFINE_integer('batch', 16, 'batch size')
_REPS = flags.DEFINE_integer('reps', 3, 'timed calls (best kept)')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'compute dtype')
_FAMILY = flags.DEFINE_enum('family', 'vit', ['vit', 'decoder'],
                            'the model family timed')
_KV_HEADS = flags.DEFINE_integer('kv_heads', 2, 'decoder: KV groups')
_VOCAB = flags.DEFINE_integer('vocab', 8192, 'decoder: vocabulary')
_SEQ = flags.DEFINE_integer('seq', 48, 'decoder: tokens per example')

GRID = inputs.GRID


def _best(fn, reps, first=None):
  start = time.perf_counter()
  jax.block_until_ready(fn())  # warm-up (compiles)
  if first is not None:
    first.append(time.perf_counter() - start)
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def _model_and_inputs(decoder: bool):
  """(model, params, inputs): a ViT on random images, or a decoder on
  random token ids (none of them padding)."""
  dtype = jnp.dtype(_DTYPE.value)
  if decoder:
    model = decoder_lib.Decoder(
        num_classes=10, vocab_size=_VOCAB.value, hidden_size=_HIDDEN.value,
        num_layers=_LAYERS.value, num_heads=_HEADS.value,
        num_kv_heads=_KV_HEADS.value, mlp_dim=_MLP.value,
        head_dim=_HIDDEN.value // _HEADS.value, dtype=dtype)
    ids = jax.random.randint(jax.random.key(1), (_BATCH.value, _SEQ.value),
                             1, _VOCAB.value)
    return model, decoder_lib.init_params(model, jax.random.key(0),
                                          _SEQ.value), ids
  model = vit.ViT(num_classes=10, patch_size=_PATCH.value,
                  hidden_size=_HIDDEN.value, num_layers=_LAYERS.value,
                  num_heads=_HEADS.value, mlp_dim=_MLP.value,
                  head_dim=_HIDDEN.value // _HEADS.value, dtype=dtype)
  shape = (_IMAGE.value, _IMAGE.value, 3)
  return (model, vit.init_params(model, jax.random.key(0), shape),
          jax.random.normal(jax.random.key(1), (_BATCH.value,) + shape))


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  inputs.elastic(dict(layers=_LAYERS.value, hidden=_HIDDEN.value,
                      heads=_HEADS.value, mlp=_MLP.value, image=_IMAGE.value,
                      patch=_PATCH.value, batch=_BATCH.value,
                      reps=_REPS.value, dtype=_DTYPE.value,
                      family=_FAMILY.value, kv_heads=_KV_HEADS.value,
                      vocab=_VOCAB.value, seq=_SEQ.value))
  decoder = _FAMILY.value == 'decoder'
  model, params, images = _model_and_inputs(decoder)
  teacher = jax.tree.map(lambda a: a * 1.01, params)
  stage = elastic.Stage.of(GRID, GRID, matched_teacher=True)
  tx = optax.adamw(1e-4)
  opt_state = tx.init(params)

  rows, losses = [], {}
  for scheme in ('masked', 'sliced', 'static'):
    step = elastic.make_elastic_step(model, tx, stage, training.StageHparams(
        epochs=1, learning_rate=1e-4, batch_size=_BATCH.value,
        lambda_logits=1.0, lambda_hidden=1.0, scheme=scheme))
    first = []
    seconds = _best(lambda: step(params, opt_state, teacher, images),
                    _REPS.value, first)
    losses[scheme] = np.asarray(step(params, opt_state, teacher, images)[2])
    rows.append((scheme, seconds, step._cache_size(), first[0] - seconds))

  # The ideal: every subnet as its own dense model, one program each.
  def dense_loss(sub_model, teacher_out, gates):
    def loss(p):
      out = sub_model.apply({'params': p}, images)
      return elastic.distillation_loss(out, teacher_out, gates, 1.0, 1.0)
    return jax.jit(jax.value_and_grad(loss))

  programs, work = 0, []
  teachers = {}
  for w in stage.width_mults:
    cfg = subnet.for_model(model, w, 1.0)
    t_model, t_params = subnet.extract(model, teacher, cfg, with_head=True)
    forward = jax.jit(lambda p, m=t_model: m.apply({'params': p}, images))
    teachers[w] = jax.jit(lambda p, m=t_model: m.apply({'params': p},
                                                       images))(t_params)
    work.append(lambda f=forward, p=t_params: f(p))
    programs += 1
  for d, w in stage.pairs():
    cfg = subnet.for_model(model, w, d)
    sub_model, dense = subnet.extract(model, params, cfg, with_head=True)
    # Match the kept layers' states to the teacher's at the ends of the
    # blocks they replace (what block_end_weights does on full-size states).
    ends = [nxt - 1 for nxt in cfg.layers[1:]] + [model.num_layers - 1]
    t = dict(teachers[w], hidden=teachers[w]['hidden'][np.array(ends)])
    fn = dense_loss(sub_model, t, jnp.ones(len(cfg.layers)))
    work.append(lambda f=fn, p=dense: f(p))
    programs += 1
  first = []
  ideal = sum(_best(job, _REPS.value, first) for job in work)
  ideal_losses = [float(job()[0]) for job in work[len(teachers):]]
  rows.append(('ideal', ideal, programs, sum(first) - ideal))

  for scheme in ('masked', 'static'):
    np.testing.assert_allclose(losses[scheme], losses['sliced'], rtol=2e-3,
                               atol=2e-4)
  np.testing.assert_allclose(losses['sliced'], ideal_losses, rtol=2e-3,
                             atol=2e-4)
  data = (f'{_KV_HEADS.value} KV groups, vocabulary {_VOCAB.value}, '
          f'{_SEQ.value} tokens' if decoder else
          f'{_IMAGE.value}x{_IMAGE.value} images, patch {_PATCH.value}')
  print(f'{_FAMILY.value}: {_LAYERS.value} layers x {_HIDDEN.value} hidden, '
        f'{_HEADS.value} heads, MLP {_MLP.value}, {data}, '
        f'batch {_BATCH.value}, {_DTYPE.value}; '
        f'{len(stage.pairs())} subnets (4 depths x 4 widths), matched '
        f'teachers; backend {jax.default_backend()}\n')
  print(report.markdown_table(
      ['scheme', 'step seconds', 'vs ideal', 'compiled programs',
       'compile seconds'],
      [[name, f'{t:.3f}', f'{t / ideal:.2f}x', n, f'{c:.1f}']
       for name, t, n, c in rows]))
  times = {name: t for name, t, _, _ in rows}
  print(f'\nelastic step vs sliced ideal: {times["static"] / ideal:.2f}x '
        f'(masked: {times["masked"] / ideal:.2f}x)')


if __name__ == '__main__':
  cli.run_tool(main)
