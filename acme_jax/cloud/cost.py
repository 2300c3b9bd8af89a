"""What the cloud's training costs, in FLOPs, counted from the shapes each
step runs (2 FLOPs per multiply-add; `federated/flops.py`'s per-sample
count): the supernet's stages, and one model of one shape trained alone,
distilled from the teacher or from scratch.

A training step is three forward passes' worth (forward and backward) of
every student it trains, plus one forward pass of each teacher it reads.
"""
from typing import Dict, Sequence

from acme_jax.federated import flops as flops_lib
from acme_jax.models import subnet as subnet_lib


def reads_lm(model) -> bool:
  """True for a decoder with an LM head: the cloud's losses read its
  next-token logits (the teacher's and pretraining's task loss, and the
  distillation's next-token term), so the LM head's FLOPs are spent."""
  return bool(getattr(model, 'lm_head', False))


def sample_flops(model, params, depth: float, width: float) -> float:
  """Forward FLOPs of one sample through subnet (depth, width) of `model`
  (`params`: the supernet's, for the patch embedding's size)."""
  t = flops_lib.tokens(model)
  sub = subnet_lib.for_model(model, width, depth)
  return (flops_lib.embed_flops(model, params, t) + flops_lib.forward_flops(
      model, subnet_lib.masks(model, sub), t, lm=reads_lm(model)))


def distilled_step(model, params, depth, width, batch_size: int) -> float:
  """One step of shape (depth, width) distilled from the full teacher."""
  return batch_size * (flops_lib.TRAIN_FACTOR *
                       sample_flops(model, params, depth, width) +
                       sample_flops(model, params, 1.0, 1.0))


def scratch_step(model, params, depth, width, batch_size: int) -> float:
  """One supervised step of shape (depth, width)."""
  return batch_size * flops_lib.TRAIN_FACTOR * sample_flops(model, params, depth,
                                                       width)


def elastic_step(model, params, depth_mults: Sequence[float],
                 width_mults: Sequence[float], teacher_widths: Sequence[float],
                 batch_size: int, scheme: str = 'static',
                 remat: bool = False) -> float:
  """One elastic step: every (depth, width) student trained, and one
  teacher forward pass at each of `teacher_widths` (full depth), as the
  step's `scheme` runs them: `static` and `sliced` run each subnet at its
  own size (dropped layers skipped), `masked` every student and teacher at
  full size; `remat` recomputes each student's forward pass once more."""
  if scheme == 'masked':
    full = sample_flops(model, params, 1.0, 1.0)
    students = full * len(depth_mults) * len(width_mults)
    teachers = full * len(teacher_widths)
  else:
    students = sum(sample_flops(model, params, d, w)
                   for d in depth_mults for w in width_mults)
    teachers = sum(sample_flops(model, params, 1.0, w)
                   for w in teacher_widths)
  factor = flops_lib.TRAIN_FACTOR + (1 if remat else 0)
  return batch_size * (factor * students + teachers)


def supernet_flops(model, params, hp, num_examples: int,
                   pretrain_steps: int = 0) -> Dict[str, float]:
  """The cloud's training FLOPs by stage (`hp`: `cloud_stage.CloudHparams`)
  on `num_examples` cloud examples: the shared ones (a fresh decoder's
  pretraining, the teacher's fine-tuning, the importance scores when it
  reorders) and the supernet's own (the width and the width+depth
  stages, as their scheme runs them)."""
  full = sample_flops(model, params, 1.0, 1.0)
  factor = flops_lib.TRAIN_FACTOR

  def stage_flops(subnets, stage_hp):
    teacher_widths = (subnets.width_mults if subnets.matched_teacher
                      else (1.0,))
    return stage_hp.total_steps(num_examples) * elastic_step(
        model, params, subnets.depth_mults, subnets.width_mults,
        teacher_widths, stage_hp.batch_size, stage_hp.scheme, stage_hp.remat)

  return {
      'pretrain': pretrain_steps * hp.teacher.batch_size * factor * full,
      'teacher': (hp.teacher.total_steps(num_examples) *
                  hp.teacher.batch_size * factor * full),
      'importance': (hp.importance_batches * hp.importance_batch_size *
                     factor * full) if hp.reorder else 0.0,
      'width_stage': stage_flops(hp.width_stage_subnets(), hp.width_stage),
      'depth_stage': stage_flops(hp.depth_stage_subnets(), hp.depth_stage),
  }


def elastic_total(by_stage: Dict[str, float]) -> float:
  """The supernet's own training FLOPs (its two elastic stages)."""
  return by_stage['width_stage'] + by_stage['depth_stage']


def shared_total(by_stage: Dict[str, float]) -> float:
  """What the supernet and the distilled models both need first: the
  (pretrained) teacher, fine-tuned, and its importance scores."""
  return by_stage['pretrain'] + by_stage['teacher'] + by_stage['importance']


def equal_compute_steps(total_flops: float, step_flops: Sequence[float],
                        served: int) -> list:
  """Steps for each shape when `served` models together cost
  `total_flops`: each gets an equal share, total / served, spent in whole
  steps of `step_flops[i]` (at least one)."""
  share = total_flops / served
  return [max(int(share // f), 1) for f in step_flops]

