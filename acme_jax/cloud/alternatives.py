"""The supernet's shapes got the other ways: one model per shape, trained
on its own on the cloud's data (`experiments/supernet_value.py`).

* distilled: the fine-tuned, importance-reordered teacher cut to the shape
  (its first heads and neurons, its kept layers, its classifier) and
  distilled from the full teacher with the elastic stages' losses (soft
  cross-entropy on the logits, the embedding's and each kept layer's
  hidden-state MSE against the teacher layer that ends its block; a
  decoder's next-token term): pruning then distillation, one model per
  size, as Minitron and Sheared-LLaMA do.
* scratch: the shape freshly initialised and trained on the labels (and a
  decoder's next tokens) with the teacher's supervised loss.

Each trains the dense model of its shape (its own FLOPs, its own optimizer
state), `training.fit`'s loop over a step budget; the supernet's repeats
retrain its two elastic stages with redrawn data order.
"""
import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax import training
from acme_jax.cloud import elastic, teacher
from acme_jax.data.base import Split
from acme_jax.models import subnet as subnet_lib
from acme_jax.parallel import mesh


def cut(model, params, depth: float, width: float):
  """(model, params) of `params` cut to subnet (depth, width), classifier
  kept: the distilled arm's starting point."""
  return subnet_lib.extract(model, params,
                            subnet_lib.for_model(model, width, depth),
                            with_head=True)


def block_ends(num_layers: int, depth: float) -> np.ndarray:
  """The teacher layer each kept layer is compared with: the last of the
  block of layers it replaces (`elastic.block_end_weights`)."""
  kept = subnet_lib.kept_layer_indices(num_layers, depth)
  return np.array([nxt - 1 for nxt in kept[1:]] + [num_layers - 1])


def distillation_loss(student, params, teacher_out, inputs, ends, hp):
  """The elastic stages' loss of dense `student` against the full
  teacher's outputs, its hidden states matched at the block `ends`."""
  target = dict(teacher_out, hidden=teacher_out['hidden'][ends])
  return elastic.distillation_loss(
      student.apply({'params': params}, inputs), target,
      jnp.ones((len(ends),)), hp.lambda_logits, hp.lambda_hidden)


def make_distil_step(student, full, ends, tx, hp: training.StageHparams,
                     par: mesh.Parallel, params, opt_state):
  """Jitted step(params, opt_state, teacher_params, images) -> (params,
  opt_state, loss) of `student` distilled from model `full`."""
  spec = full.input_spec
  bare_student = student.clone(input_spec=None)
  bare_full = full.clone(input_spec=None)
  param_s = par.param_shardings(params)
  opt_s = par.param_shardings(opt_state)

  @jax.jit
  def step(params, opt_state, teacher_params, images):
    inputs = spec.prepare(images) if spec is not None else images
    teacher_out = jax.lax.stop_gradient(
        bare_full.apply({'params': teacher_params}, inputs))
    loss, grads = jax.value_and_grad(
        lambda p: distillation_loss(bare_student, p, teacher_out, inputs,
                                    ends, hp))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (par.constrain(params, param_s), par.constrain(opt_state, opt_s),
            loss)

  return step


def train_distilled(model, teacher_params, data: Split, depth: float,
                    width: float, hp: training.StageHparams,
                    par: Optional[mesh.Parallel] = None):
  """(model, host params, epoch losses) of the teacher cut to (depth,
  width) and distilled from it for `hp`'s steps."""
  par = par or mesh.single_device()
  student, params = cut(model, teacher_params, depth, width)
  tx = training.stage_optimizer(hp, len(data))
  params = par.params(params)
  opt_state = tx.init(params)
  placed_teacher = par.params(teacher_params)
  step = make_distil_step(student, model, block_ends(model.num_layers, depth),
                          tx, hp, par, params, opt_state)

  def fit_step(state, images, labels):
    del labels  # the teacher's outputs are the targets
    params, opt_state, loss = step(*state, placed_teacher, par.batch(images))
    return (params, opt_state), loss

  (params, _), losses = training.fit(fit_step, (params, opt_state), data, hp,
                                     f'distilled d{depth:g} w{width:g}')
  return student, mesh.host(params), losses


def scratch_init(model, params, data: Split, depth: float, width: float,
                 key):
  """(model, fresh params) of shape (depth, width): its own initialisation
  (as a model built at that size), not a cut of the supernet's."""
  student, _ = cut(model, params, depth, width)
  return student, student.init(key, np.asarray(data.images[:1]))['params']


def train_scratch(model, params, data: Split, shape: Tuple[float, float],
                  hp: training.StageHparams, key, lm_weight: float = 1.0,
                  par: Optional[mesh.Parallel] = None):
  """(model, host params, epoch losses) of `shape` (depth, width) trained
  from a fresh initialisation with the teacher's supervised loss."""
  depth, width = shape
  student, init = scratch_init(model, params, data, depth, width, key)
  trained, losses = teacher.train_teacher(
      student, init, data, hp, desc=f'scratch d{depth:g} w{width:g}',
      par=par, lm_weight=lm_weight)
  return student, trained, losses


def reseeded(hp: training.StageHparams, repeat: int,
             **fields) -> training.StageHparams:
  """`hp` with repeat `repeat`'s data order (repeat 0: `hp`'s own)."""
  return dataclasses.replace(hp, seed=hp.seed + 1000 * repeat, **fields)


def retrain_supernet(model, reordered, data: Split, hp, repeat: int,
                     par: Optional[mesh.Parallel] = None):
  """The cloud's width then width+depth stages again from the reordered
  teacher, with repeat `repeat`'s data order (`hp`:
  `cloud_stage.CloudHparams`)."""
  width_params, _ = elastic.train_elastic(
      model, reordered, reordered, data, hp.width_stage_subnets(),
      reseeded(hp.width_stage, repeat), par=par)
  supernet, _ = elastic.train_elastic(
      model, width_params, hp.depth_stage_teacher(reordered, width_params),
      data, hp.depth_stage_subnets(), reseeded(hp.depth_stage, repeat),
      par=par)
  return supernet
