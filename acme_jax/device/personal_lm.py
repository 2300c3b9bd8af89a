"""Personal language modelling on a device: a head between a frozen decoder's
final hidden states and its frozen LM head, trained on the user's own text.

A head is any `head_apply(params, hidden, arch) -> hidden` (B, T, D) that is
causal: the searched `causal_header.apply`, or the fixed baseline
`adapter_apply` (arch ignored). The frozen LM head is a callable
`lm_head(hidden, *lm_params) -> logits (B, T, V)`; pass its weights as
`lm_params` (traced arguments) rather than closing over them, so a large
vocabulary projection is not baked into every compiled program as a
constant (`lm_params=()` calls plain `lm_head(hidden)`).

Batches are right-padded: `mask` (B, T) is 1 on real tokens. Position t
predicts token t + 1, and a pair counts only when both are real tokens.

`search` is nas.py's ENAS loop on one device, simplified: the shared causal
header trains with Adam on architectures the controller samples within the
parameter budget; the controller's REINFORCE reward is minus the validation
mean next-token NLL (= -log perplexity) of its sample with the shared
weights. Why not -perplexity: it ranks architectures identically but is
exponential in the loss, so one poor early sample would swamp the moving
baseline and the advantages; why not next-token accuracy: on a user's few
hundred validation tokens it is coarse and often flat between archs, while
NLL moves with every change in the predicted distribution.
"""
import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax.device import causal_header
from acme_jax.device import controller as controller_lib

# ------------------------------------------------------------------ metrics


def token_sums(logits, ids, mask):
  """(total NLL, predicted tokens, correct next-token predictions), summed
  over the pairs (t, t + 1) where both tokens are real."""
  logits = logits[:, :-1].astype(jnp.float32)
  targets = ids[:, 1:]
  weights = (mask[:, :-1] * mask[:, 1:]).astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return (jnp.sum(nll * weights), jnp.sum(weights),
          jnp.sum(correct * weights))


def lm_loss(logits, ids, mask):
  """Mean next-token NLL over the predicted tokens (0 when there are none)."""
  total, count, _ = token_sums(logits, ids, mask)
  return total / jnp.maximum(count, 1.0)


def perplexity(logits, ids, mask):
  """exp(total NLL / number of predicted tokens)."""
  return jnp.exp(lm_loss(logits, ids, mask))


# ------------------------------------------------------- the fixed baseline


def adapter_param_count(feature_dim: int, rank: int) -> int:
  """down (D, r) + its bias r + up (r, D) + its bias D."""
  return rank * (2 * feature_dim + 1) + feature_dim


def adapter_rank(feature_dim: int, budget: int) -> int:
  """The largest bottleneck r whose adapter has at most `budget` params."""
  rank = (budget - feature_dim) // (2 * feature_dim + 1)
  if rank < 1:
    raise ValueError(f'budget {budget} is below the smallest adapter '
                     f'({adapter_param_count(feature_dim, 1)} params)')
  return rank


def init_adapter(feature_dim: int, budget: int, seed: int = 0) -> dict:
  """A bottleneck residual adapter D -> r -> D within `budget`: kaiming
  down projection, zero up projection (an untrained adapter is the
  backbone alone)."""
  rank = adapter_rank(feature_dim, budget)
  rng = np.random.default_rng(seed)
  down = rng.standard_normal((feature_dim, rank)) * np.sqrt(2.0 / feature_dim)
  return {'down': jnp.asarray(down, jnp.float32),
          'down_b': jnp.zeros((rank,)),
          'up': jnp.zeros((rank, feature_dim)),
          'up_b': jnp.zeros((feature_dim,))}


def adapter_apply(params, hidden, arch=None):
  """h + rms(h) * up(ReLU(down(h / rms(h)))), token by token, so causal.

  The input is RMS-normalised without parameters and the output scaled
  back (`causal_header.token_rms`, as the causal header does): a decoder's
  final hidden states (before its final norm) can have norms in the
  hundreds."""
  del arch
  h = hidden.astype(jnp.float32)
  rms = causal_header.token_rms(h)
  x = jax.nn.relu((h / rms) @ params['down'] + params['down_b'])
  return h + rms * (x @ params['up'] + params['up_b'])


# ----------------------------------------------------------------- training


class Trainer(NamedTuple):
  """Jitted programs for one (head, LM head, learning rate)."""
  init: Callable  # params -> opt_state
  step: Callable  # (params, opt_state, hidden, ids, mask, arch, lm_params)
  #                 -> (params, opt_state, loss)
  sums: Callable  # (params, hidden, ids, mask, arch, lm_params)
  #                 -> (total NLL, tokens, correct)


@functools.lru_cache(maxsize=None)
def trainer(head_apply: Callable, lm_head: Callable,
            learning_rate: float = 1e-3) -> Trainer:
  """Adam on the head's params; the backbone's hidden states and the LM
  head are frozen (no gradient reaches `lm_params`). `arch` is traced data
  (None for the adapter)."""
  tx = optax.adam(learning_rate)

  def logits_of(params, hidden, arch, lm_params):
    lm_params = jax.lax.stop_gradient(lm_params)
    return lm_head(head_apply(params, hidden, arch), *lm_params)

  @jax.jit
  def step(params, opt_state, hidden, ids, mask, arch=None, lm_params=()):
    loss, grads = jax.value_and_grad(lambda p: lm_loss(
        logits_of(p, hidden, arch, lm_params), ids, mask))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def sums(params, hidden, ids, mask, arch=None, lm_params=()):
    return token_sums(logits_of(params, hidden, arch, lm_params), ids, mask)

  return Trainer(tx.init, step, sums)


def evaluate(t: Trainer, params, data, arch=None, lm_params=(),
             batch_size: int = 8) -> dict:
  """{'perplexity', 'accuracy', 'tokens'} over all rows of data = (hidden,
  ids, mask), in fixed-size batches (the last padded with masked rows, so
  one compiled program serves every split)."""
  hidden, ids, mask = (np.asarray(a) for a in data)
  total = count = correct = 0.0
  for start in range(0, len(ids), batch_size):
    rows = np.arange(start, start + batch_size)
    real = (rows < len(ids)).astype(mask.dtype)
    rows = np.minimum(rows, len(ids) - 1)
    s = t.sums(params, hidden[rows], ids[rows], mask[rows] * real[:, None],
               arch, lm_params)
    total, count, correct = (a + float(b) for a, b in
                             zip((total, count, correct), s))
  return {'perplexity': float(np.exp(total / max(count, 1.0))),
          'accuracy': correct / max(count, 1.0), 'tokens': int(count)}


# ------------------------------------------------------------------- search


@dataclasses.dataclass(frozen=True)
class SearchHparams:
  epochs: int = 10
  child_steps: int = 20          # shared-header Adam steps per epoch
  controller_steps: int = 10     # REINFORCE steps per epoch
  batch_size: int = 8
  child_lr: float = 1e-3
  controller_lr: float = 0.0025  # child.NasConfig's prototype values
  entropy_weight: float = 1e-4
  baseline_decay: float = 0.99
  resample_tries: int = 10
  num_final_archs: int = 8
  seed: int = 0                  # header init, controller, batches, draws


def _batch(data, rng, batch_size):
  rows = rng.choice(len(data[1]), batch_size,
                    replace=len(data[1]) < batch_size)
  return tuple(np.asarray(a)[rows] for a in data)


class _SearchPrograms(NamedTuple):
  trainer: Trainer
  ctx: optax.GradientTransformation
  sample_arch: Callable    # (ctrl_params, key, budget) -> arch
  controller_step: Callable
  final_archs: Callable    # (ctrl_params, keys) -> archs


@functools.lru_cache(maxsize=None)
def _search_programs(spec, hp, lm_head, ctrl) -> _SearchPrograms:
  """The search's jitted programs, built once per (spec, hparams without
  the seed, LM head, controller): the budget is traced data, so every
  device of a run shares them (one compile, not one per device)."""
  t = trainer(causal_header.apply, lm_head, hp.child_lr)
  ctx = controller_lib.optimizer(hp.controller_lr)
  smallest = causal_header.smallest_arch(spec.num_nodes)

  @jax.jit
  def sample_arch(ctrl_params, key, budget):
    return controller_lib.sample_within(ctrl, ctrl_params, key,
                                        causal_header.fits(spec, budget),
                                        smallest, hp.resample_tries)

  @jax.jit
  def controller_step(ctrl_state, params, key, batch, lm_params, budget):
    """ctrl_state: (params, optimizer state, baseline, has_baseline)."""
    ctrl_params, ctrl_opt, baseline, has_baseline = ctrl_state
    arch, _, entropy = ctrl.sample(ctrl_params, key)
    hidden, ids, mask = batch
    logits = lm_head(causal_header.apply(params, hidden, arch), *lm_params)
    worst = jnp.log(jnp.asarray(logits.shape[-1], jnp.float32))
    fits = causal_header.fits(spec, budget)
    reward = (jnp.where(fits(arch), -lm_loss(logits, ids, mask), -worst) +
              hp.entropy_weight * entropy)
    baseline = jnp.where(has_baseline > 0, baseline - (
        1 - hp.baseline_decay) * (baseline - reward), reward)
    grads = controller_lib.reinforce_grads(ctrl, ctrl_params, arch,
                                           reward - baseline)
    updates, ctrl_opt = ctx.update(grads, ctrl_opt, ctrl_params)
    return (optax.apply_updates(ctrl_params, updates), ctrl_opt, baseline,
            jnp.ones(()))

  final_archs = jax.jit(jax.vmap(lambda p, k: ctrl.sample(p, k)[0],
                                 in_axes=(None, 0)))
  return _SearchPrograms(t, ctx, sample_arch, controller_step, final_archs)


def search(spec: causal_header.Spec, train: Sequence, val: Sequence,
           lm_head: Callable, budget: int, hp: SearchHparams = SearchHparams(),
           lm_params=(), ctrl=None) -> dict:
  """ENAS over causal headers within `budget` parameters on one device.

  train, val: (hidden (B, T, D), ids (B, T), mask (B, T)). Per epoch the
  shared header takes `child_steps` Adam steps, each on an arch sampled
  within budget (`controller.sample_within`, else the cheapest cell), then
  the controller takes `controller_steps` REINFORCE steps on validation
  batches (reward -NLL + entropy bonus, against a moving baseline; an arch
  over budget gets the NLL of a uniform prediction, log V). The result is
  the best of `num_final_archs` controller samples within budget by
  validation perplexity with the shared weights: {arch, val_perplexity,
  header_params, params (the shared weights), ctrl_params, history}.
  """
  seed = hp.seed
  smallest = causal_header.smallest_arch(spec.num_nodes)
  if int(causal_header.param_count(spec, smallest)) > budget:
    raise ValueError(f'budget {budget} is below the smallest causal header '
                     f'({int(causal_header.param_count(spec, smallest))})')
  ctrl = ctrl or causal_header.controller(spec)
  fits = causal_header.fits(spec, budget)
  programs = _search_programs(spec, dataclasses.replace(hp, seed=0), lm_head,
                              ctrl)
  t, ctx = programs.trainer, programs.ctx
  budget = jnp.asarray(budget, jnp.int32)
  key = jax.random.key(seed)
  params = causal_header.init_variables(spec, seed)['params']
  opt_state = t.init(params)
  ctrl_params = ctrl.init(seed)
  ctrl_state = (ctrl_params, ctx.init(ctrl_params), jnp.zeros(()),
                jnp.zeros(()))
  rng = np.random.default_rng(seed)
  sample_arch = functools.partial(programs.sample_arch, budget=budget)
  controller_step = functools.partial(programs.controller_step,
                                      budget=budget)

  history = []
  for epoch in range(hp.epochs):
    losses = []
    for _ in range(hp.child_steps):
      key, arch_key = jax.random.split(key)
      arch = sample_arch(ctrl_state[0], arch_key)
      params, opt_state, loss = t.step(params, opt_state,
                                       *_batch(train, rng, hp.batch_size),
                                       arch, lm_params)
      losses.append(float(loss))
    for _ in range(hp.controller_steps):
      key, step_key = jax.random.split(key)
      ctrl_state = controller_step(ctrl_state, params, step_key,
                                   _batch(val, rng, hp.batch_size), lm_params)
    history.append({'epoch': epoch, 'train_loss': float(np.mean(losses)),
                    'baseline': float(ctrl_state[2])})
  ctrl_params = ctrl_state[0]

  best_ppl, best_arch = np.inf, smallest
  keys = jax.random.split(jax.random.fold_in(key, 1), hp.num_final_archs)
  archs = programs.final_archs(ctrl_params, keys)
  for arch in np.asarray(archs):
    if not bool(fits(arch)):
      continue
    ppl = evaluate(t, params, val, arch, lm_params, hp.batch_size)[
        'perplexity']
    if ppl < best_ppl:
      best_ppl, best_arch = ppl, arch
  if not np.isfinite(best_ppl):
    best_ppl = evaluate(t, params, val, smallest, lm_params, hp.batch_size)[
        'perplexity']
  return {'arch': best_arch, 'val_perplexity': float(best_ppl),
          'header_params': int(causal_header.param_count(spec, best_arch)),
          'params': params, 'ctrl_params': ctrl_params, 'history': history}
