"""Cloud step 2: width- then width+depth-elastic distillation (DynaBERT-style, ACME.md 3.3).

Each optimizer step distils a fixed teacher into every subnet of the stage:
loss = lambda_logits * softCE(student, teacher) + lambda_hidden * (MSE of the
embedding output + sum of the matched hidden-state MSEs); gradients are
summed over subnets, clipped and applied once. The subnets are a stacked
`Masks` scanned inside one jitted step, so a stage compiles once however many
subnets it trains.

Teachers (DynaBERT): stage 1 distils the fine-tuned teacher at full size;
stage 2's teacher is a config field: 'width_stage' (default, DynaBERT) runs the
width-elastic model of stage 1 at the student's width and full depth;
'width_stage_full' runs it at full width (what the prototype's code does: it
loads stage 1 as a plain model); 'teacher' is the fine-tuned teacher.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.models import subnet as subnet_lib
from acme_jax.models.vit import Masks, ViT


def block_end_weights(layer_gates):
  """1 for layers whose output is compared with the teacher's, else 0.

  A kept layer followed by dropped ones replaces that whole block of teacher
  layers; since dropped layers are the identity, the student's state at the
  block's last layer equals the kept layer's output, and is matched to the
  teacher's state there. Layer l ends a block iff layer l+1 is kept or l is
  the last layer. With every layer kept, every layer is matched.
  """
  return jnp.concatenate([layer_gates[1:], jnp.ones((1,), layer_gates.dtype)])


def distillation_loss(out, teacher_out, masks: Masks, lambda_logits,
                      lambda_hidden):
  """lambda_logits * softCE + lambda_hidden * (embedding MSE + matched
  hidden-state MSEs); MSE is the mean over batch, tokens and features."""
  logit_loss = training.soft_cross_entropy(out['logits'],
                                           teacher_out['logits']).mean()
  per_layer_mse = jnp.mean((out['hidden'] - teacher_out['hidden'])**2,
                           axis=(1, 2, 3))
  embedding_mse = jnp.mean((out['embeddings'] - teacher_out['embeddings'])**2)
  hidden_loss = embedding_mse + jnp.sum(
      per_layer_mse * block_end_weights(masks.layers))
  return lambda_logits * logit_loss + lambda_hidden * hidden_loss


TEACHERS = ('width_stage', 'width_stage_full', 'teacher')


def make_elastic_step(model: ViT, tx, lambda_logits: float,
                      lambda_hidden: float):
  """Jitted step over a stacked `Masks` (leading axis = subnets).

  step(params, opt_state, teacher_params, images, subnet_masks,
  teacher_masks, teacher_index): the teacher runs once per entry of the
  stacked `teacher_masks`, and subnet i is distilled from entry
  `teacher_index[i]`.
  """

  @jax.jit
  def step(params, opt_state, teacher_params, images, subnet_masks: Masks,
           teacher_masks: Masks, teacher_index):
    teacher_outs = jax.lax.stop_gradient(jax.lax.map(
        lambda m: model.apply({'params': teacher_params}, images, m),
        teacher_masks))

    def subnet_loss(p, masks, index):
      out = model.apply({'params': p}, images, masks)
      teacher_out = jax.tree.map(lambda a: a[index], teacher_outs)
      return distillation_loss(out, teacher_out, masks, lambda_logits,
                               lambda_hidden)

    def accumulate(grad_sum, xs):
      masks, index = xs
      loss, grads = jax.value_and_grad(subnet_loss)(params, masks, index)
      return jax.tree.map(jnp.add, grad_sum, grads), loss

    grads, losses = jax.lax.scan(
        accumulate, jax.tree.map(jnp.zeros_like, params),
        (subnet_masks, teacher_index))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, losses

  return step


def stage_subnets(model: ViT, depth_mults, width_mults) -> Masks:
  """Stacked masks of every (depth, width) pair, largest first."""
  pairs = [(d, w) for d in sorted(depth_mults, reverse=True)
           for w in sorted(width_mults, reverse=True)]
  return subnet_lib.stack_masks(
      [subnet_lib.masks(model, subnet_lib.for_model(model, w, d))
       for d, w in pairs])


def stage_teachers(model: ViT, depth_mults, width_mults, matched: bool):
  """(stacked teacher masks, teacher index per subnet of `stage_subnets`).

  `matched`: one full-depth teacher per width, subnet (d, w) distilled from
  width w (DynaBERT); else one full teacher for all.
  """
  widths = sorted(width_mults, reverse=True)
  pairs = [(d, w) for d in sorted(depth_mults, reverse=True) for w in widths]
  if not matched:
    return (subnet_lib.stack_masks([subnet_lib.masks(
        model, subnet_lib.for_model(model, 1.0, 1.0))]),
            np.zeros(len(pairs), np.int32))
  masks = subnet_lib.stack_masks([subnet_lib.masks(
      model, subnet_lib.for_model(model, w, 1.0)) for w in widths])
  return masks, np.array([widths.index(w) for _, w in pairs], np.int32)


def train_elastic(model: ViT, params, teacher_params, data: Split,
                  subnet_masks: Masks, stage_config, batch_size: int, seed: int,
                  desc: str, teachers=None):
  """Distil into every subnet of `subnet_masks`; returns (params, epoch losses).

  `teachers` = (teacher masks, index per subnet) from `stage_teachers`;
  default: the full teacher for every subnet.
  """
  if teachers is None:
    teachers = (subnet_lib.stack_masks([subnet_lib.masks(
        model, subnet_lib.for_model(model, 1.0, 1.0))]),
                np.zeros(len(subnet_masks.layers), np.int32))
  steps = training.steps_per_epoch(len(data), batch_size) * stage_config.epochs
  tx = training.adamw_with_warmup(
      stage_config.learning_rate, steps, stage_config.warmup_fraction,
      stage_config.weight_decay, stage_config.clip_norm)
  opt_state = tx.init(params)
  step = make_elastic_step(model, tx, stage_config.lambda_logits,
                           stage_config.lambda_hidden)
  rng = np.random.default_rng(seed)
  losses = []
  with tqdm(total=steps, desc=desc, leave=False, disable=None) as bar:
    for _ in range(stage_config.epochs):
      epoch_loss = []
      for idx in training.epoch_batches(len(data), batch_size, rng):
        images = training.random_shift(data.images[idx],
                                       stage_config.get('max_shift', 0), rng)
        params, opt_state, loss = step(params, opt_state, teacher_params,
                                       images, subnet_masks, *teachers)
        epoch_loss.append(loss)
        bar.update()
      losses.append(float(np.mean(jax.device_get(epoch_loss))))
      bar.set_postfix(loss=f'{losses[-1]:.3f}')
  return params, losses
