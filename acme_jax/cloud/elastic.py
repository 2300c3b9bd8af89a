"""Cloud step 2: width- then width+depth-elastic distillation (DynaBERT-style, docs/method.md 3.3).

Each optimizer step distils a fixed teacher into every subnet of the stage:
loss = lambda_logits * softCE(student, teacher) + lambda_hidden * (MSE of the
embedding output + sum of the matched hidden-state MSEs); gradients are
summed over subnets, clipped and applied once.

Three ways to run the subnets, with the same losses and gradients (tested):

* 'static' (default): every subnet is a static slice of the supernet's
  params (its kept layers, heads and neurons), all unrolled in one program:
  every subnet costs its own FLOPs. One program per stage.
* 'sliced': per width a static slice, the stage's depths scanned with
  dropped layers skipped at run time (`lax.cond`); one traced body per width.
* 'masked': every subnet at full size with head, neuron and layer masks as
  data, scanned over the subnets (one body for all), at full cost each.

`benchmarks/elastic.py` measures them against each subnet run as its own
program: on a 12-layer, 384-wide ViT over the 4x4 grid on this CPU, static
0.86x, sliced 1.8x, masked 3.0x of that ideal's time. The unrolled program
compiles longer (48 s there, vs 20 s masked), once per stage.

Teachers (DynaBERT): stage 1 distils the fine-tuned teacher at full size;
stage 2's teacher is a config field: 'width_stage' (default, DynaBERT) runs the
width-elastic model of stage 1 at the student's width and full depth;
'width_stage_full' runs it at full width (what the prototype's code does: it
loads stage 1 as a plain model); 'teacher' is the fine-tuned teacher.
"""
import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax import choices
from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.models import subnet as subnet_lib
from acme_jax.models.vit import ViT
from acme_jax.parallel import mesh

SCHEMES = choices.ELASTIC_SCHEMES


def block_end_weights(layer_gates):
  """1 for layers whose output is compared with the teacher's, else 0.

  A kept layer followed by dropped ones replaces that whole block of teacher
  layers; since dropped layers are the identity, the student's state at the
  block's last layer equals the kept layer's output, and is matched to the
  teacher's state there. Layer l ends a block iff layer l+1 is kept or l is
  the last layer. With every layer kept, every layer is matched.
  """
  return jnp.concatenate([layer_gates[1:], jnp.ones((1,), layer_gates.dtype)])


# A decoder's next-token distillation temperature: 1, where the soft
# cross-entropy is the KL to the teacher up to its entropy (same gradients).
LM_TEMPERATURE = 1.0


def distillation_loss(out, teacher_out, layer_gates, lambda_logits,
                      lambda_hidden):
  """lambda_logits * softCE + lambda_hidden * (embedding MSE + matched
  hidden-state MSEs); MSE is the mean over batch, tokens and features. A
  decoder adds its next-token soft CE (mean over real tokens) to the
  logit term."""
  logit_loss = training.soft_cross_entropy(out['logits'],
                                           teacher_out['logits']).mean()
  per_layer_mse = jnp.mean((out['hidden'] - teacher_out['hidden'])**2,
                           axis=(1, 2, 3))
  embedding_mse = jnp.mean((out['embeddings'] - teacher_out['embeddings'])**2)
  hidden_loss = embedding_mse + jnp.sum(
      per_layer_mse * block_end_weights(layer_gates))
  if 'lm_logits' in out:  # a decoder: its next-token distributions too
    logit_loss = logit_loss + training.next_token_distillation(
        out['lm_logits'], teacher_out['lm_logits'], teacher_out['token_mask'],
        LM_TEMPERATURE)
  return lambda_logits * logit_loss + lambda_hidden * hidden_loss


TEACHERS = choices.STAGE2_TEACHERS


@dataclasses.dataclass(frozen=True)
class Stage:
  """The subnets of one elastic stage: every (depth, width) pair, largest
  first, whether each width has its own teacher (DynaBERT's stage 2), and
  the stage's name in progress lines."""
  depth_mults: Tuple[float, ...]
  width_mults: Tuple[float, ...]
  matched_teacher: bool = False
  name: str = 'elastic'

  @classmethod
  def of(cls, depth_mults, width_mults, matched_teacher=False,
         name='elastic') -> 'Stage':
    return cls(tuple(sorted(depth_mults, reverse=True)),
               tuple(sorted(width_mults, reverse=True)), matched_teacher,
               name)

  def pairs(self):
    return [(d, w) for d in self.depth_mults for w in self.width_mults]


def _layer_gates(model: ViT, depth_mults) -> np.ndarray:
  """(depths, L) 0/1 gates of each depth multiplier."""
  gates = np.zeros((len(depth_mults), model.num_layers), np.float32)
  for i, d in enumerate(depth_mults):
    gates[i, list(subnet_lib.kept_layer_indices(model.num_layers, d))] = 1
  return gates


def _width(model: ViT, width_mult: float) -> Tuple[int, int]:
  sub = subnet_lib.for_model(model, width_mult, 1.0)
  return sub.heads[0], sub.neurons[0]


def _maybe_remat(fn, remat: bool):
  """With remat, a subnet's activations are recomputed in the backward pass
  instead of kept: peak memory is one subnet's, not the sum over the grid
  (ViT-B/16's 16 subnets do not fit 24 GB at batch 4 otherwise), for about
  a third more compute."""
  return jax.checkpoint(fn) if remat else fn


def masked_losses(model: ViT, params, teacher_params, inputs, stage: Stage,
                  lambda_logits, lambda_hidden, remat: bool = False):
  """Per-subnet losses (stage.pairs() order), every subnet at full size
  with masks as data, scanned: one traced body for all subnets."""
  pairs = stage.pairs()
  masks = subnet_lib.stack_masks([subnet_lib.masks(
      model, subnet_lib.for_model(model, w, d)) for d, w in pairs])
  widths = list(stage.width_mults) if stage.matched_teacher else [1.0]
  teacher_masks = subnet_lib.stack_masks([subnet_lib.masks(
      model, subnet_lib.for_model(model, w, 1.0)) for w in widths])
  index = np.array([widths.index(w) if stage.matched_teacher else 0
                    for _, w in pairs], np.int32)
  teacher_outs = jax.lax.stop_gradient(jax.lax.map(
      lambda m: model.apply({'params': teacher_params}, inputs, m),
      teacher_masks))

  def one(_, xs):
    m, i = xs
    out = model.apply({'params': params}, inputs, m)
    teacher = jax.tree.map(lambda a: a[i], teacher_outs)
    return None, distillation_loss(out, teacher, m.layers, lambda_logits,
                                   lambda_hidden)

  return jax.lax.scan(_maybe_remat(one, remat), None,
                      (masks, jnp.asarray(index)))[1]


def sliced_losses(model: ViT, params, teacher_params, inputs, stage: Stage,
                  lambda_logits, lambda_hidden, remat: bool = False):
  """Per-subnet losses (stage.pairs() order): per width a statically sliced
  model, its depths scanned with dropped layers skipped."""
  gates = jnp.asarray(_layer_gates(model, stage.depth_mults))
  teacher_full = None
  by_width = []
  for w in stage.width_mults:
    heads, neurons = _width(model, w)
    sub, sliced = subnet_lib.width_slice(model, params, heads, neurons)
    if stage.matched_teacher:
      _, teacher_sliced = subnet_lib.width_slice(model, teacher_params, heads,
                                                 neurons)
      teacher = sub.apply({'params': teacher_sliced}, inputs)
    else:
      if teacher_full is None:
        teacher_full = model.apply({'params': teacher_params}, inputs)
      teacher = teacher_full
    teacher = jax.lax.stop_gradient(teacher)

    def one(_, g, sub=sub, sliced=sliced, teacher=teacher):
      out = sub.apply({'params': sliced}, inputs, layer_gates=g)
      return None, distillation_loss(out, teacher, g, lambda_logits,
                                     lambda_hidden)

    by_width.append(jax.lax.scan(_maybe_remat(one, remat), None,
                                 gates)[1])  # (depths,)
  return jnp.stack(by_width, axis=1).reshape(-1)  # (depth, width) order


def static_losses(model: ViT, params, teacher_params, inputs, stage: Stage,
                  lambda_logits, lambda_hidden, remat: bool = False):
  """Per-subnet losses (stage.pairs() order): every subnet a statically
  sliced dense model (its kept layers and widths), unrolled in one program."""
  teachers = {}
  out = []
  for d, w in stage.pairs():
    heads, neurons = _width(model, w)
    tw = w if stage.matched_teacher else 1.0
    if tw not in teachers:
      t_heads, t_neurons = _width(model, tw)
      t_model, t_params = subnet_lib.width_slice(model, teacher_params,
                                                 t_heads, t_neurons)
      teachers[tw] = jax.lax.stop_gradient(
          t_model.apply({'params': t_params}, inputs))
    kept = subnet_lib.kept_layer_indices(model.num_layers, d)
    ends = [nxt - 1 for nxt in kept[1:]] + [model.num_layers - 1]
    teacher = dict(teachers[tw], hidden=teachers[tw]['hidden'][
        np.array(ends)])

    def student_loss(p, teacher, heads=heads, neurons=neurons, kept=kept):
      sub, sliced = subnet_lib.width_slice(model, p, heads, neurons)
      dense = {k: v for k, v in sliced.items() if not k.startswith('block_')}
      for new, layer in enumerate(kept):
        dense[f'block_{new}'] = sliced[f'block_{layer}']
      student = sub.clone(num_layers=len(kept)).apply({'params': dense},
                                                      inputs)
      return distillation_loss(student, teacher, jnp.ones(len(kept)),
                               lambda_logits, lambda_hidden)

    out.append(_maybe_remat(student_loss, remat)(params, teacher))
  return jnp.stack(out)


def make_elastic_step(model: ViT, tx, stage: Stage,
                      hp: training.StageHparams,
                      par: Optional[mesh.Parallel] = None, params=None,
                      opt_state=None):
  """Jitted step(params, opt_state, teacher_params, images) -> (params,
  opt_state, per-subnet losses), data-parallel over `par`'s mesh, with
  `hp`'s loss weights, scheme and remat. The images are prepared (resized,
  normalised) once per step."""
  if hp.scheme not in SCHEMES:
    raise ValueError(f'elastic scheme must be one of {SCHEMES}, got '
                     f'{hp.scheme!r}')
  losses_fn = {'sliced': sliced_losses, 'masked': masked_losses,
               'static': static_losses}[hp.scheme]
  lambda_logits, lambda_hidden, remat = (hp.lambda_logits, hp.lambda_hidden,
                                         hp.remat)
  bare = model.clone(input_spec=None)
  par = par or mesh.single_device()
  param_s = par.param_shardings(params) if params is not None else None
  opt_s = par.param_shardings(opt_state) if opt_state is not None else None

  @jax.jit
  def step(params, opt_state, teacher_params, images):
    inputs = (model.input_spec.prepare(images) if model.input_spec is not None
              else images)
    total = lambda p: (lambda l: (jnp.sum(l), l))(  # noqa: E731
        losses_fn(bare, p, teacher_params, inputs, stage, lambda_logits,
                  lambda_hidden, remat))
    (_, losses), grads = jax.value_and_grad(total, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if param_s is not None:
      params = par.constrain(params, param_s)
      opt_state = par.constrain(opt_state, opt_s)
    return params, opt_state, losses

  return step


def train_elastic(model: ViT, params, teacher_params, data: Split,
                  stage: Stage, hp: training.StageHparams,
                  par: Optional[mesh.Parallel] = None, partial=None):
  """Distil into every subnet of `stage`; returns (host params, epoch
  losses). `partial` (a `resume.Partial`): save and resume mid-stage."""
  par = par or mesh.single_device()
  tx = training.stage_optimizer(hp, len(data))
  params = par.params(params)
  teacher_params = par.params(teacher_params)
  opt_state = tx.init(params)
  step = make_elastic_step(model, tx, stage, hp, par, params, opt_state)

  def fit_step(state, images, labels):
    del labels  # distillation: the teacher's outputs are the targets
    params, opt_state, loss = step(*state, teacher_params, par.batch(images))
    return (params, opt_state), loss

  (params, _), losses = training.fit(fit_step, (params, opt_state), data, hp,
                                     stage.name, partial)
  return mesh.host(params), losses
