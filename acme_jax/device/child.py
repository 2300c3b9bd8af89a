"""The device stage's state and its jittable per-device programs (docs/method.md 5).

Everything per device is a pure step over (state, batch, consts). One
`DeviceState` holds a device's child weights and optimizer, controller,
baseline, budget, layer count, current architecture and gates, Taylor
importance sums and PRNG key; the consts hold its cached features (train,
then validation, then test rows, padded to a bucketed row count); batches
are row indices with 0/1 sample weights and a learning rate. Three programs
serve the whole device stage: `train_step` (search, final training and the
rounds' local training), `controller_step` and `eval_step`.
`acme_jax.parallel.engine` runs them for many devices at once (loop, vmap or
sharded), so one compiled program serves every device, architecture,
pruning state and data size in a bucket. `evaluate` tests whole splits.
"""
import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax import streams
from acme_jax import training
from acme_jax.device import controller as controller_lib
from acme_jax.device import header as header_lib
from acme_jax.device.local_data import Padded, index_batches, split_rows
from acme_jax.parallel import engine


@dataclasses.dataclass(frozen=True)
class NasConfig:
  """Static hyperparameters of the device stage: one compile per NasConfig."""
  spec: header_lib.Spec
  controller: controller_lib.Controller
  momentum: float = 0.9
  weight_decay: float = 1e-4
  grad_clip: float = 0.0         # 0 = none (prototype); ENAS clips at 5
  controller_lr: float = 0.0025  # prototype
  entropy_weight: float = 1e-4
  baseline_decay: float = 0.99
  reward_scale: float = 100.0    # prototype rewards accuracy in percent
  resample_tries: int = 10
  # The header's predicted latency and memory on a latency table's machine
  # (`hardware.budgets.HeaderCost`), when devices budget them: the search
  # then keeps each device's header within its `cost_limit` too.
  header_cost: Any = None


class ChildState(NamedTuple):
  params: dict
  batch_stats: dict
  opt_state: optax.OptState


class DeviceState(NamedTuple):
  child: ChildState
  ctrl_params: dict
  ctrl_opt: optax.OptState
  baseline: jax.Array       # moving-average reward
  has_baseline: jax.Array   # 0 until the first controller step
  key: jax.Array
  limit: jax.Array          # max header parameters on this device
  n_layers: jax.Array       # cells this device's header uses
  arch: jax.Array           # the fixed architecture (when not sampling)
  gates: dict               # 0/1 gate channels (header.gate_shapes)
  seen_correct: jax.Array   # this epoch's running train accuracy ...
  seen_count: jax.Array
  best_running: jax.Array   # ... its peak, and the arch sampled there
  epoch_arch: jax.Array
  taylor_squared: dict      # sums over steps of (g dL/dg)^2 ...
  taylor_linear: dict       # ... and of g dL/dg, per gate channel
  steps: jax.Array
  cost_limit: jax.Array     # (ms, bytes) the header may take on the latency
                            # table's machine (inf: no such budget)


def child_optimizer(cfg: NasConfig) -> optax.GradientTransformation:
  """torch SGD(momentum, weight_decay) without the learning rate (a batch
  field), after optional global-norm clipping."""
  parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
  return optax.chain(*parts, optax.add_decayed_weights(cfg.weight_decay),
                     optax.trace(cfg.momentum))


def init_child(cfg: NasConfig, seed: int) -> ChildState:
  variables = header_lib.init_variables(cfg.spec, seed)
  return ChildState(variables['params'], variables['batch_stats'],
                    child_optimizer(cfg).init(variables['params']))


def init_seeds(key):
  """(child seed, controller seed, the state's key) `init_state` draws from
  `key`: the search's shared weights start from the child seed."""
  seeds, key = jax.random.split(key)
  child_seed, ctrl_seed = (int(s) for s in jax.random.randint(
      seeds, (2,), 0, 2**31 - 1))
  return child_seed, ctrl_seed, key


def init_state(cfg: NasConfig, key, limit: int, n_layers: int, child=None,
               arch=None, gates=None, cost_limit=None) -> DeviceState:
  """A device's state: fresh child (or `child`) and controller, its budget
  (parameters; `cost_limit`: (ms, bytes) on the latency table's machine,
  default none), layer count, architecture (default: the cheapest) and
  gates (default: all on)."""
  child_seed, ctrl_seed, key = init_seeds(key)
  ctrl_params = cfg.controller.init(ctrl_seed)
  gates = header_lib.full_gates(cfg.spec) if gates is None else gates
  gates = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), gates)
  zeros = jax.tree.map(jnp.zeros_like, gates)
  smallest = header_lib.smallest_arch(cfg.spec.num_nodes)
  return DeviceState(
      child=init_child(cfg, child_seed) if child is None else child,
      ctrl_params=ctrl_params,
      ctrl_opt=controller_lib.optimizer(cfg.controller_lr).init(ctrl_params),
      baseline=jnp.zeros(()), has_baseline=jnp.zeros(()), key=key,
      limit=jnp.asarray(limit, jnp.int32),
      n_layers=jnp.asarray(n_layers, jnp.int32),
      arch=jnp.asarray(smallest if arch is None else arch, jnp.int32),
      gates=gates, seen_correct=jnp.zeros(()), seen_count=jnp.zeros(()),
      best_running=jnp.zeros(()), epoch_arch=jnp.asarray(smallest),
      taylor_squared=zeros, taylor_linear=zeros, steps=jnp.zeros(()),
      cost_limit=jnp.asarray(no_cost_limit() if cost_limit is None
                             else cost_limit, jnp.float32))


def no_cost_limit():
  return (np.inf, np.inf)


# ----------------------------------------------------------- pure functions


def train_child(cfg: NasConfig, child: ChildState, arch, n_layers, gates,
                batch, key):
  """One SGD step of the header on `batch` {x, y, w (row weights), lr};
  returns (child, correct, dL/dgates)."""
  header = header_lib.Header(cfg.spec)
  x, y, w, lr = batch['x'], batch['y'], batch['w'], batch['lr']

  def loss_fn(params, gates):
    logits, new = header.apply(
        {'params': params, 'batch_stats': child.batch_stats}, x, arch,
        n_layers, gates, w, train=True, rngs={'dropout': key},
        mutable=['batch_stats'])
    loss = jnp.sum(training.cross_entropy(logits, y) * w) / jnp.maximum(
        jnp.sum(w), 1.0)
    correct = jnp.sum((jnp.argmax(logits, -1) == y) * w)
    return loss, (new['batch_stats'], correct)

  (_, (stats, correct)), (grads, gate_grads) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True)(child.params, gates)
  updates, opt_state = child_optimizer(cfg).update(grads, child.opt_state,
                                                   child.params)
  params = jax.tree.map(lambda p, u: p - lr * u, child.params, updates)
  return ChildState(params, stats, opt_state), correct, gate_grads


def eval_sums(cfg: NasConfig, child: ChildState, arch, n_layers, gates, x, y,
              w):
  """(correct, total) in evaluation mode: stem running statistics, cell
  batch statistics (the prototype's model.eval()), no dropout."""
  logits = header_lib.Header(cfg.spec).apply(
      {'params': child.params, 'batch_stats': child.batch_stats}, x, arch,
      n_layers, gates, w)
  return jnp.sum((jnp.argmax(logits, -1) == y) * w), jnp.sum(w)


def fits(cfg: NasConfig, limit, n_layers, cost_limit=None):
  """Whether a header arch keeps within `limit` parameters and, where the
  config predicts header costs, `cost_limit` (ms, bytes); jittable."""
  def within(arch):
    ok = header_lib.param_count(cfg.spec, arch, n_layers) <= limit
    if cfg.header_cost is not None and cost_limit is not None:
      ms, nbytes = cfg.header_cost(cfg.spec, arch, n_layers)
      ok = ok & (ms <= cost_limit[0]) & (nbytes <= cost_limit[1])
    return ok
  return within


class Programs(NamedTuple):
  train_step: Callable       # (DeviceState, batch, consts) -> DeviceState
  controller_step: Callable  # (DeviceState, batch, consts) -> DeviceState
  eval_step: Callable        # ((DeviceState, sums), batch, consts) -> same
  sample_archs: Callable     # (DeviceState, count) -> archs


@functools.lru_cache(maxsize=None)
def programs(cfg: NasConfig) -> Programs:
  """The jittable per-device steps of the device stage for one NasConfig."""
  smallest = header_lib.smallest_arch(cfg.spec.num_nodes)
  tx = controller_lib.optimizer(cfg.controller_lr)

  def train_step(state: DeviceState, batch, consts):
    """One child step: on a freshly sampled arch within budget (batch
    'sample' = 1, the search) or on the state's arch with its gates."""
    key, arch_key, drop_key = jax.random.split(state.key, 3)
    arch = jax.lax.cond(
        batch['sample'] > 0,
        lambda: controller_lib.sample_within(
            cfg.controller, state.ctrl_params, arch_key,
            fits(cfg, state.limit, state.n_layers, state.cost_limit), smallest,
            cfg.resample_tries),
        lambda: state.arch)
    rows = {'x': consts.x[batch['idx']], 'y': consts.y[batch['idx']],
            'w': batch['w'], 'lr': batch['lr']}
    child, correct, gate_grads = train_child(
        cfg, state.child, arch, state.n_layers, state.gates, rows, drop_key)
    seen_correct = state.seen_correct + correct
    seen_count = state.seen_count + jnp.sum(batch['w'])
    running = seen_correct / jnp.maximum(seen_count, 1.0)
    better = running > state.best_running
    # First-order Taylor on each gate (NVlabs method 22): (g * dL/dg)^2.
    taylor = jax.tree.map(jnp.multiply, state.gates, gate_grads)
    return state._replace(
        child=child, key=key, seen_correct=seen_correct,
        seen_count=seen_count,
        best_running=jnp.where(better, running, state.best_running),
        epoch_arch=jnp.where(better, arch, state.epoch_arch),
        taylor_squared=jax.tree.map(lambda s, t: s + t ** 2,
                                    state.taylor_squared, taylor),
        taylor_linear=jax.tree.map(jnp.add, state.taylor_linear, taylor),
        steps=state.steps + 1)

  def controller_step(state: DeviceState, batch, consts):
    key, arch_key = jax.random.split(state.key)
    arch, _, entropy = cfg.controller.sample(state.ctrl_params, arch_key)
    x, y = consts.x[batch['idx']], consts.y[batch['idx']]
    correct, total = eval_sums(cfg, state.child, arch, state.n_layers,
                               state.gates, x, y, batch['w'])
    feasible = fits(cfg, state.limit, state.n_layers, state.cost_limit)(arch)
    reward = (jnp.where(feasible, cfg.reward_scale * correct / total, 0.0) +
              cfg.entropy_weight * entropy)
    baseline = jnp.where(state.has_baseline > 0, state.baseline - (
        1 - cfg.baseline_decay) * (state.baseline - reward), reward)
    grads = controller_lib.reinforce_grads(
        cfg.controller, state.ctrl_params, arch, reward - baseline)
    updates, ctrl_opt = tx.update(grads, state.ctrl_opt, state.ctrl_params)
    return state._replace(
        ctrl_params=optax.apply_updates(state.ctrl_params, updates),
        ctrl_opt=ctrl_opt, baseline=baseline, has_baseline=jnp.ones(()),
        key=key)

  def eval_step(carry, batch, consts):
    state, sums = carry
    x, y = consts.x[batch['idx']], consts.y[batch['idx']]
    c, t = eval_sums(cfg, state.child, state.arch, state.n_layers,
                     state.gates, x, y, batch['w'])
    return state, sums + jnp.stack([c, t])

  def sample_archs(state: DeviceState, count: int):
    keys = jax.random.split(jax.random.fold_in(state.key, streams.FINAL_ARCHS),
                            count)
    return jax.vmap(lambda k: cfg.controller.sample(state.ctrl_params, k)[0])(
        keys)

  return Programs(train_step, controller_step, eval_step, sample_archs)


def identity(x):
  return x


def _with_sums(state):
  return state, jnp.zeros(2)


def _sums(carry):
  return carry[1]


# ------------------------------------------------------------ host drivers


def sgdr(epoch: int, lr_max: float, lr_min: float, period: int,
         period_mult: int) -> float:
  """The prototype's per-epoch cosine annealing with warm restarts
  (`utils.LRScheduler`), state machine included: at a restart epoch it has
  already doubled the period, so that epoch gets the middle of the new
  cycle's curve, and the next starts near lr_max."""
  last_reset, t0, t_curr = 0, period, 0
  for e in range(epoch + 1):
    t_curr = e - last_reset
    if t_curr == t0:
      last_reset = e
      t0 *= period_mult
  rate = t_curr / t0 * math.pi
  return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(rate))


def seeded_rng(key, salt: int) -> np.random.Generator:
  return np.random.default_rng(int(jax.random.randint(
      jax.random.fold_in(key, salt), (), 0, 2**31 - 1)))


def evaluate(cfg: NasConfig, states: Sequence[DeviceState], padded: Padded,
             split: str, strategy: str) -> np.ndarray:
  """Accuracy of each state's (arch, gates) header on its whole `split`.

  The split is one batch, so the cells' BatchNorm statistics are the
  split's own: the accuracy does not depend on how the samples are ordered
  or batched (the batch is padded to a power of two shared by the devices,
  padding at weight 0)."""
  p = programs(cfg)
  batch_size = whole_split_batch(padded.sizes, split)
  batches = [index_batches(split_rows(s, split), batch_size, None)
             for s in padded.sizes]
  sums = engine.for_each_device(_with_sums, p.eval_step, _sums, list(states),
                                batches, device_consts=padded.data,
                                strategy=strategy)
  return np.array([float(s[0]) / max(float(s[1]), 1.0) for s in sums])


def whole_split_batch(sizes: Sequence[dict], split: str) -> int:
  """One batch that holds every device's whole `split`: the largest, up to
  a power of two (so calls with similar sizes share a compiled program)."""
  largest = max(max(s[split] for s in sizes), 1)
  return 1 << (largest - 1).bit_length()


def with_arch(states, archs):
  return [s._replace(arch=jnp.asarray(a, jnp.int32))
          for s, a in zip(states, archs)]
