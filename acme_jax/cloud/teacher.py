"""Cloud step 1: fine-tune the (pre-trained or fresh) model on the cloud's data."""
from typing import Optional

import jax
import optax

from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.models.vit import ViT
from acme_jax.parallel import mesh


def make_train_step(model: ViT, tx: optax.GradientTransformation,
                    par: mesh.Parallel, params, opt_state,
                    lm_weight: float = 1.0):
  """One jitted supervised step of the full model (no masks), data-parallel
  over `par`'s mesh with params and optimizer state kept in its layout. A
  decoder also learns its next tokens (`lm_weight`): the cloud pretrains
  the language model on its text while it learns the task."""
  param_s = par.param_shardings(params)
  opt_s = par.param_shardings(opt_state)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      out = model.apply({'params': p}, images)
      return training.task_loss(out, labels, images,
                                getattr(model, 'pad_id', 0), lm_weight)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (par.constrain(params, param_s), par.constrain(opt_state, opt_s),
            loss)

  return step


def train_teacher(model: ViT, params, data: Split,
                  hp: training.StageHparams, desc: str = 'teacher',
                  par: Optional[mesh.Parallel] = None, partial=None,
                  lm_weight: float = 1.0):
  """Supervised fine-tuning; returns (host params, per-epoch mean losses).
  `partial` (a `resume.Partial`): save and resume mid-stage."""
  par = par or mesh.single_device()
  tx = training.stage_optimizer(hp, len(data))
  params = par.params(params)
  opt_state = tx.init(params)
  step = make_train_step(model, tx, par, params, opt_state, lm_weight)

  def fit_step(state, images, labels):
    params, opt_state, loss = step(*state, par.batch(images),
                                   par.batch(labels))
    return (params, opt_state), loss

  (params, _), losses = training.fit(fit_step, (params, opt_state), data, hp,
                                     desc, partial)
  return mesh.host(params), losses
