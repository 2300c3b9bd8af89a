"""Header search on cached features: ENAS micro search with REINFORCE (ACME.md 5).

Architectures are data, so the jitted steps built by `child_steps` and
`controller_steps` (cached per module config) serve every sampled architecture
and every device whose features have the same shape.

Loop per epoch: train the shared child one minibatch per sampled architecture
(SGD, momentum, weight decay, cosine lr with warm restarts), then train the
controller with reward = validation accuracy + entropy_weight * entropy against
a moving-average baseline. At the end, the best of `num_final_archs` sampled
architectures (validation accuracy) is returned; `finetune` trains it further
from the shared weights. No architecture over `max_header_params` is ever
trained as the final pick or returned.
"""
import dataclasses
import functools
import math
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax import training
from acme_jax.device import header as header_lib


class ChildState(NamedTuple):
  params: dict
  batch_stats: dict
  opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class Controller:
  """LSTM policy over (input_a, op_a, input_b, op_b) per node.

  Pure functions over a params dict, scanned over the 4 * num_nodes decisions
  (one compiled step body). `apply(params, key, arch=None)` -> (arch,
  log_prob, entropy); with `arch` given it scores that architecture (teacher
  forcing) instead of sampling.
  """
  num_nodes: int
  num_ops: int = header_lib.NUM_OPS
  hidden: int = 100
  temperature: float = 5.0
  tanh_constant: float = 1.1

  def shapes(self):
    h, n = self.hidden, self.num_nodes + 1
    return {'lstm_x': (h, 4 * h), 'lstm_h': (h, 4 * h), 'lstm_b': (4 * h,),
            'input_embed': (n, h), 'op_embed': (self.num_ops, h),
            'input_head_w': (h, n), 'input_head_b': (n,),
            'op_head_w': (h, self.num_ops), 'op_head_b': (self.num_ops,),
            'start': (h,)}

  def apply(self, params, key=None, arch=None):
    width = max(self.num_nodes + 1, self.num_ops)
    steps = 4 * self.num_nodes
    node, column = jnp.divmod(jnp.arange(steps), 4)
    is_op = column % 2 == 1
    valid = jnp.where(is_op[:, None], jnp.arange(width) < self.num_ops,
                      jnp.arange(width) < node[:, None] + 2)
    forced = (jnp.zeros(steps, jnp.int32) if arch is None
              else jnp.asarray(arch, jnp.int32).reshape(-1))
    keys = jax.random.split(jax.random.key(0) if key is None else key, steps)
    pad = lambda a: jnp.pad(a, [(0, 0)] * (a.ndim - 1) +  # noqa: E731
                            [(0, width - a.shape[-1])])

    def step(carry, inputs):
      x, h, c = carry
      op_step, mask, forced_action, step_key = inputs
      z = x @ params['lstm_x'] + h @ params['lstm_h'] + params['lstm_b']
      i, f, g, o = jnp.split(z, 4)
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      logits = jnp.where(
          op_step, pad(h @ params['op_head_w'] + params['op_head_b']),
          pad(h @ params['input_head_w'] + params['input_head_b']))
      logits = self.tanh_constant * jnp.tanh(logits / self.temperature)
      logits = jnp.where(mask, logits, -1e9)
      logp = jax.nn.log_softmax(logits)
      action = (jax.random.categorical(step_key, logits) if arch is None
                else forced_action)
      entropy = -jnp.sum(jnp.where(mask, jnp.exp(logp) * logp, 0.0))
      x = jnp.where(op_step, params['op_embed'][jnp.minimum(
          action, self.num_ops - 1)], params['input_embed'][jnp.minimum(
              action, self.num_nodes)])
      return (x, h, c), (action, logp[action], entropy)

    zeros = jnp.zeros(self.hidden)
    _, (actions, logps, entropies) = jax.lax.scan(
        step, (params['start'], zeros, zeros), (is_op, valid, forced, keys))
    return (actions.reshape(self.num_nodes, 4).astype(jnp.int32),
            logps.sum(), entropies.sum())


def init_controller(controller: Controller, seed: int = 0):
  """Uniform(-0.1, 0.1) parameters (ENAS), built on the host."""
  rng = np.random.default_rng(seed)
  return {name: jnp.asarray(rng.uniform(-0.1, 0.1, shape), jnp.float32)
          for name, shape in controller.shapes().items()}


@functools.lru_cache(maxsize=None)
def controller_steps(controller: Controller, learning_rate: float = 0.0035):
  """Jitted (sample, update, optimizer) for one controller config.

  sample(params, key) -> (arch, log_prob, entropy);
  update(params, opt_state, arch, advantage) -> (params, opt_state).
  """
  optimizer = optax.adam(learning_rate)

  @jax.jit
  def sample(params, key):
    return controller.apply(params, key)

  @jax.jit
  def update(params, opt_state, arch, advantage):
    def loss(p):
      _, log_prob, _ = controller.apply(p, None, arch)
      return -advantage * log_prob
    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return sample, update, optimizer


class ChildSteps(NamedTuple):
  optimizer: optax.GradientTransformation
  train: Callable  # (state, arch, gates, x, y, lr, key) -> state, metrics
  evaluate: Callable  # (state, arch, gates, x, y, w, norm_from_batch) -> sums


@functools.lru_cache(maxsize=None)
def child_steps(header: header_lib.Header, momentum: float = 0.9,
                weight_decay: float = 1e-4,
                grad_clip: float = 5.0) -> ChildSteps:
  """Jitted train / eval steps for one header config; arch and gates are data.

  `train` also returns the loss gradient w.r.t. the gates (Taylor importance).
  The learning rate is an argument, so any schedule reuses the same program.
  """
  optimizer = optax.chain(optax.clip_by_global_norm(grad_clip),
                          optax.add_decayed_weights(weight_decay),
                          optax.trace(momentum))

  @jax.jit
  def train(state, arch, gates, x, y, lr, key):
    def loss_fn(params, gates):
      logits, new = header.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x, arch,
          gates, train=True, rngs={'dropout': key}, mutable=['batch_stats'])
      loss = training.cross_entropy(logits, y).mean()
      return loss, (logits, new['batch_stats'])
    (loss, (logits, stats)), (grads, gate_grad) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.params, gates)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = jax.tree_util.tree_map(lambda p, u: p - lr * u, state.params,
                                    updates)
    accuracy = (logits.argmax(-1) == y).mean()
    return ChildState(params, stats, opt_state), {
        'loss': loss, 'accuracy': accuracy, 'gate_grad': gate_grad}

  @functools.partial(jax.jit, static_argnames='norm_from_batch')
  def evaluate(state, arch, gates, x, y, weights, norm_from_batch=False):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    if norm_from_batch:
      logits, _ = header.apply(variables, x, arch, gates, norm_from_batch=True,
                               mutable=['batch_stats'])
    else:
      logits = header.apply(variables, x, arch, gates)
    correct = (logits.argmax(-1) == y).astype(jnp.float32)
    return jnp.sum(correct * weights), jnp.sum(weights)

  return ChildSteps(optimizer, train, evaluate)


def init_child(header: header_lib.Header, steps: ChildSteps, features_shape,
               seed: int = 0) -> ChildState:
  variables = header_lib.init_variables(header, features_shape, seed)
  return ChildState(variables['params'], variables['batch_stats'],
                    steps.optimizer.init(variables['params']))


def sgdr_learning_rate(step: int, steps_per_epoch: int, lr_max: float = 0.1,
                       lr_min: float = 5e-4, period: float = 10,
                       period_mult: float = 2) -> float:
  """Cosine annealing with warm restarts (periods in epochs, as in ENAS)."""
  epoch = step / max(steps_per_epoch, 1)
  while epoch >= period:
    epoch -= period
    period *= period_mult
  return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * epoch /
                                                          period))


def accuracy(steps: ChildSteps, state: ChildState, arch, gates, features,
             labels, batch_size: int = 256, norm_from_batch=False) -> float:
  """Accuracy over a whole set in padded fixed-size batches."""
  correct = total = 0.0
  batch_size = min(batch_size, len(labels))
  for idx, weights in training.padded_batches(len(labels), batch_size):
    c, t = steps.evaluate(state, arch, gates, features[idx], labels[idx],
                          weights, norm_from_batch=norm_from_batch)
    correct, total = correct + float(c), total + float(t)
  return correct / max(total, 1.0)


class Budget:
  """Exact header parameter counts against `max_header_params`."""

  def __init__(self, header: header_lib.Header, feature_shape,
               max_header_params: Optional[int], num_channels_kept=None):
    self.kwargs = dict(feature_dim=int(feature_shape[-1]),
                       num_classes=header.num_classes,
                       grid_rank=len(feature_shape) - 2,
                       num_layers=header.num_layers)
    self.channels = (header.num_channels if num_channels_kept is None
                     else num_channels_kept)
    self.limit = max_header_params
    self.smallest = header_lib.smallest_arch(header.num_nodes)
    if not self.feasible(self.smallest):
      raise ValueError(
          f'max_header_params={max_header_params} is below the smallest '
          f'header ({self.count(self.smallest)} params with '
          f'{self.channels} channels): lower num_channels')

  def count(self, arch) -> int:
    return header_lib.header_param_count(arch, self.channels, **self.kwargs)

  def feasible(self, arch) -> bool:
    return self.limit is None or self.count(arch) <= self.limit


def search(features_train, labels_train, features_val, labels_val,
           num_classes: int, key, *, num_channels: int = 256,
           num_nodes: int = 5, num_layers: int = 1,
           max_header_params: Optional[int] = None, epochs: int = 10,
           batch_size: int = 128, eval_batch_size: int = 256,
           lr_max: float = 0.1, lr_min: float = 5e-4,
           lr_period: float = 10, lr_period_mult: float = 2,
           momentum: float = 0.9, weight_decay: float = 1e-4,
           grad_clip: float = 5.0, dropout_rate: float = 0.1,
           controller_hidden: int = 100, temperature: float = 5.0,
           tanh_constant: float = 1.1, controller_lr: float = 0.0035,
           controller_steps_per_epoch: int = 30,
           entropy_weight: float = 1e-4, baseline_decay: float = 0.99,
           num_final_archs: int = 10, max_resamples: int = 10,
           log: Optional[Callable[[str], None]] = None) -> dict:
  """ENAS search on cached features (N, *grid, D); returns the best header.

  Result: arch (num_nodes, 4) int array, val_accuracy (shared weights, batch
  norm statistics), header_params (exact, all C channels), header (module),
  state (shared ChildState, the start for `finetune`), controller (params),
  history (per-epoch dicts), seconds.
  """
  start_time = time.time()
  features_train = np.asarray(features_train, np.float32)
  features_val = np.asarray(features_val, np.float32)
  labels_train = np.asarray(labels_train, np.int32)
  labels_val = np.asarray(labels_val, np.int32)
  header = header_lib.Header(num_classes, num_channels, num_nodes, num_layers,
                             dropout_rate)
  budget = Budget(header, features_train.shape, max_header_params)
  steps = child_steps(header, momentum, weight_decay, grad_clip)
  controller = Controller(num_nodes, hidden=controller_hidden,
                          temperature=temperature,
                          tanh_constant=tanh_constant)
  sample, update, ctrl_opt = controller_steps(controller, controller_lr)
  seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  state = init_child(header, steps, features_train.shape, seed)
  ctrl_params = init_controller(controller, seed)
  ctrl_state = ctrl_opt.init(ctrl_params)
  gates = jnp.ones((num_channels,), jnp.float32)
  per_epoch = training.steps_per_epoch(len(labels_train), batch_size)
  val_batch = min(batch_size, len(labels_val))
  key = jax.random.key(seed)
  baseline = None
  history = []

  def feasible_sample(key):
    for _ in range(max_resamples):
      key, sub = jax.random.split(key)
      arch = np.asarray(sample(ctrl_params, sub)[0])
      if budget.feasible(arch):
        return arch
    return budget.smallest

  step = 0
  for epoch in range(epochs):
    losses, accs = [], []
    for idx in training.epoch_batches(len(labels_train), batch_size, rng):
      key, sample_key, dropout_key = jax.random.split(key, 3)
      arch = feasible_sample(sample_key)
      lr = sgdr_learning_rate(step, per_epoch, lr_max, lr_min, lr_period,
                              lr_period_mult)
      state, metrics = steps.train(state, arch, gates, features_train[idx],
                                   labels_train[idx], lr, dropout_key)
      losses.append(metrics['loss'])
      accs.append(metrics['accuracy'])
      step += 1
    rewards, val_accs = [], []
    for _ in range(controller_steps_per_epoch):
      key, sub = jax.random.split(key)
      arch, _, entropy = sample(ctrl_params, sub)
      if budget.feasible(np.asarray(arch)):
        idx = rng.choice(len(labels_val), val_batch, replace=False)
        c, t = steps.evaluate(state, arch, gates, features_val[idx],
                              labels_val[idx], np.ones(val_batch, np.float32),
                              norm_from_batch=True)
        val_acc = float(c) / float(t)
      else:
        val_acc = 0.0  # over budget: the worst reward teaches avoidance
      reward = val_acc + entropy_weight * float(entropy)
      baseline = reward if baseline is None else (
          baseline_decay * baseline + (1 - baseline_decay) * reward)
      ctrl_params, ctrl_state = update(ctrl_params, ctrl_state, arch,
                                       reward - baseline)
      rewards.append(reward)
      val_accs.append(val_acc)
    record = {'epoch': epoch, 'child_loss': float(np.mean(losses)),
              'child_accuracy': float(np.mean(accs)),
              'reward': float(np.mean(rewards)) if rewards else None,
              'sampled_val_accuracy': (float(np.mean(val_accs))
                                       if val_accs else None),
              'baseline': baseline, 'seconds': time.time() - start_time}
    history.append(record)
    if log:
      log(f'nas epoch {epoch}: {record}')

  candidates = {}
  for _ in range(num_final_archs):
    key, sub = jax.random.split(key)
    arch = np.asarray(sample(ctrl_params, sub)[0])
    if budget.feasible(arch):
      candidates[arch.tobytes()] = arch
  if not candidates:
    candidates[budget.smallest.tobytes()] = budget.smallest
  scored = [(accuracy(steps, state, arch, gates, features_val, labels_val,
                      eval_batch_size, norm_from_batch=True), i, arch)
            for i, arch in enumerate(candidates.values())]
  best_acc, _, best = max(scored, key=lambda t: (t[0], -t[1]))
  return {'arch': best, 'val_accuracy': best_acc,
          'header_params': budget.count(best), 'header': header,
          'state': state, 'controller': ctrl_params, 'history': history,
          'candidates': [(a.tolist(), acc) for acc, _, a in scored],
          'seconds': time.time() - start_time}


def train_header(header: header_lib.Header, state: ChildState, arch, gates,
                 features_train, labels_train, *, epochs: int, key,
                 batch_size: int = 128, lr_max: float = 0.05,
                 lr_min: float = 5e-4, momentum: float = 0.9,
                 weight_decay: float = 1e-4, grad_clip: float = 5.0,
                 on_step: Optional[Callable[[dict], None]] = None):
  """Train one fixed architecture (cosine lr, one cycle); returns the state.

  `on_step(metrics)` sees each step's metrics (incl. `gate_grad`).
  """
  steps = child_steps(header, momentum, weight_decay, grad_clip)
  features_train = np.asarray(features_train, np.float32)
  labels_train = np.asarray(labels_train, np.int32)
  arch = jnp.asarray(arch, jnp.int32)
  gates = jnp.asarray(gates, jnp.float32)
  seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  per_epoch = training.steps_per_epoch(len(labels_train), batch_size)
  total = max(epochs * per_epoch, 1)
  step = 0
  for _ in range(epochs):
    for idx in training.epoch_batches(len(labels_train), batch_size, rng):
      key, sub = jax.random.split(key)
      lr = lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * step /
                                                            total))
      state, metrics = steps.train(state, arch, gates, features_train[idx],
                                   labels_train[idx], lr, sub)
      if on_step is not None:
        on_step(metrics)
      step += 1
  return state


def finetune(result: dict, features_train, labels_train, features_val,
             labels_val, key, *, epochs: int = 10, gates=None,
             batch_size: int = 128, lr_max: float = 0.05,
             lr_min: float = 5e-4, eval_batch_size: int = 256,
             **train_kwargs) -> dict:
  """Fine-tune `result['arch']` from the shared weights of `search`.

  Returns a copy of `result` with the new `state`, `val_accuracy` (running
  norm statistics, i.e. deployment mode) and `finetune_epochs`.
  """
  header = result['header']
  gates = (jnp.ones((header.num_channels,), jnp.float32) if gates is None
           else jnp.asarray(gates, jnp.float32))
  state = train_header(header, result['state'], result['arch'], gates,
                       features_train, labels_train, epochs=epochs, key=key,
                       batch_size=batch_size, lr_max=lr_max, lr_min=lr_min,
                       **train_kwargs)
  steps = child_steps(header, *(train_kwargs.get(k, d) for k, d in (
      ('momentum', 0.9), ('weight_decay', 1e-4), ('grad_clip', 5.0))))
  val = accuracy(steps, state, jnp.asarray(result['arch'], jnp.int32), gates,
                 np.asarray(features_val, np.float32),
                 np.asarray(labels_val, np.int32), eval_batch_size)
  return dict(result, state=state, val_accuracy=val, finetune_epochs=epochs)
