"""A baseline's device-side work: local training and evaluation of each
device's part of the supernet on its raw data, through the client engine
(`for_each_device`): masks, widths, exits and learning rates are batch
data, so one compiled program serves every device of a method."""
import functools
from typing import Callable, List, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax import streams
from acme_jax import training
from acme_jax.device import child as child_lib
from acme_jax.device import features
from acme_jax.device import local_data
from acme_jax.federated import flops as flops_lib
from acme_jax.federated import holdings as holdings_lib
from acme_jax.models import decoder as decoder_lib
from acme_jax.federated.method import FederatedHparams, Method
from acme_jax.models import subnet as subnet_lib
from acme_jax.models.encoder import Masks
from acme_jax.parallel import engine

EVAL_BATCH = 256  # per-sample outputs do not depend on the batch


class Device(NamedTuple):
  id: int
  edge: int
  holding: holdings_lib.Holding
  data: local_data.DeviceData   # train, validation and test rows, padded
  sizes: dict                   # real rows per split
  classes: np.ndarray           # 0/1 per class seen in its train split


def devices(topology, splits, holdings, num_classes: int,
            label_split: bool = False) -> List[Device]:
  """Each device's raw local data (the engine's consts) and holding, for
  the devices that hold something (`holdings[id]` not None); with
  `label_split` (HeteroFL) a device holds the head of its train classes
  only."""
  locals_ = [features.LocalFeatures(tr.images, tr.labels, va.images,
                                    va.labels, te.images, te.labels, None)
             for tr, va, te in splits]
  padded = local_data.device_data(locals_, dtype=None)
  out = []
  for d in topology.devices:
    if holdings[d.id] is None:
      continue
    classes = np.zeros(num_classes, np.float32)
    classes[np.unique(np.asarray(splits[d.id][0].labels))] = 1
    holding = holdings[d.id]
    if label_split:
      holding = holdings_lib.with_classes(holding, classes)
    out.append(Device(d.id, d.edge_id, holding, padded.data[d.id],
                      padded.sizes[d.id], classes))
  return out


def summary_states(model, out):
  """(L, B, D) every block's summary token: an encoder's [CLS], a
  decoder's last real token (the only one that saw the whole sequence)."""
  if 'token_mask' not in out:
    return out['hidden'][:, :, 0]
  last = decoder_lib.last_real_index(out['token_mask'])
  return out['hidden'][:, jnp.arange(last.shape[0]), last]


def exit_logits(exits, cls, eps: float):
  """(L, B, classes) logits of every exit from the blocks' summary states
  `cls` (L, B, D)."""
  cls = cls.astype(jnp.float32)
  mean = cls.mean(-1, keepdims=True)
  var = ((cls - mean) ** 2).mean(-1, keepdims=True)
  normed = (cls - mean) * jax.lax.rsqrt(var + eps)
  normed = normed * exits['scale'][:, None] + exits['bias'][:, None]
  return (jnp.einsum('lbd,ldc->lbc', normed, exits['kernel']) +
          exits['head_bias'][:, None])


def kl(teacher_logits, student_logits, temperature):
  """KL(softmax(t / T) || softmax(s / T)) per row, times T^2 (Hinton)."""
  t = jax.nn.log_softmax(teacher_logits / temperature, -1)
  s = jax.nn.log_softmax(student_logits / temperature, -1)
  return jnp.sum(jnp.exp(t) * (t - s), -1) * temperature ** 2


def depthfl_loss(logits, on, ce, distil):
  """DepthFL's objective over a device's exits (`on`, 0/1 per exit): each
  exit's cross entropy plus the mean over the other exits of its
  distillation towards them (the other side held fixed).

  `ce(z)` is one exit's loss, `distil(t, s)` that of student s to teacher t.
  """
  k = jnp.maximum(on.sum(), 1.0)
  ce_each = jax.vmap(ce)(logits)
  fixed = jax.lax.stop_gradient(logits)
  pairs = jax.vmap(lambda t: jax.vmap(lambda s: distil(t, s))(logits))(fixed)
  others = on[:, None] * on[None, :] * (1 - jnp.eye(logits.shape[0]))
  towards = jnp.sum(pairs * others, 0) / jnp.maximum(k - 1, 1.0)
  return jnp.sum((ce_each + towards) * on)


def _sgd(momentum: float, weight_decay: float):
  """torch's SGD(momentum, weight_decay), the rate applied per step."""
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.trace(momentum))


class Programs(NamedTuple):
  train_step: Callable
  eval_step: Callable


class Consts(NamedTuple):
  x: np.ndarray        # the device's stored inputs
  y: np.ndarray
  holder: dict         # what it holds (what its steps may change)
  classes: np.ndarray  # 0/1 per class (HeteroFL's label mask)


def _backbone(params):
  return {k: v for k, v in params.items() if k != 'exits'}


def programs(model, method: Method, hp: FederatedHparams) -> Programs:
  """The per-device train and eval steps of `method` (one pair, so one
  compilation, for every rate, seed and round: those are data)."""
  return _programs(model, method, hp.momentum, hp.weight_decay,
                   hp.kd_weight, hp.kd_temperature)


@functools.lru_cache(maxsize=None)
def _programs(model, method: Method, momentum: float, weight_decay: float,
              kd_weight: float, kd_temperature: float) -> Programs:
  tx = _sgd(momentum, weight_decay)

  def outputs(params, x, masks, classes):
    out = model.apply({'params': _backbone(params)}, x, masks)
    if method.loss == 'depthfl':
      return exit_logits(params['exits'], summary_states(model, out),
                         getattr(model, 'layer_norm_eps', None) or
                         model.rms_norm_eps)
    if method.label_split:  # masked_fill(label_mask == 0, 0), as HeteroFL
      return jnp.where(classes > 0, out['logits'], 0.0)
    return out['logits']

  def loss_fn(params, batch, x, y, classes):
    w = batch['w']
    total = jnp.maximum(w.sum(), 1.0)
    ce = lambda z: jnp.sum(training.cross_entropy(z, y) * w) / total  # noqa
    soft = lambda t, s: jnp.sum(  # noqa: E731
        kl(t, s, kd_temperature) * w) / total
    masks = Masks(batch['heads'], batch['neurons'], batch['layers'])
    logits = outputs(params, x, masks, classes)
    if method.loss == 'depthfl':
      return depthfl_loss(logits, batch['exits'], ce, soft)
    if not method.fjord_kd:
      return ce(logits)
    # FjORD's self-distillation: the device's widest subnet learns from the
    # labels and teaches the sampled one.
    widest = outputs(params, x, Masks(batch['full_heads'],
                                      batch['full_neurons'], batch['layers']),
                     classes)
    return (ce(widest) + (1 - kd_weight) * ce(logits) +
            kd_weight * soft(jax.lax.stop_gradient(widest), logits))

  def train_step(state, batch, consts):
    params, opt_state = state
    x, y = consts.x[batch['idx']], consts.y[batch['idx']]
    grads = jax.grad(loss_fn)(params, batch, x, y, consts.classes)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u, m: p - batch['lr'] * u * m, params,
                          updates, consts.holder)
    return params, opt_state

  def eval_step(carry, batch, consts):
    params, sums = carry
    x, y = consts.x[batch['idx']], consts.y[batch['idx']]
    masks = Masks(batch['heads'], batch['neurons'], batch['layers'])
    z = outputs(params, x, masks, consts.classes)
    if method.loss == 'depthfl':  # the mean of its exits' logits
      z = jnp.sum(z * batch['exits'][:, None, None], 0)
    correct = jnp.sum((jnp.argmax(z, -1) == y) * batch['w'])
    return params, sums + jnp.stack([correct, batch['w'].sum()])

  return Programs(train_step, eval_step)


def mask_fields(masks: Masks, prefix: str = '') -> dict:
  return {f'{prefix}heads': np.asarray(masks.heads, np.float32),
          f'{prefix}neurons': np.asarray(masks.neurons, np.float32),
          'layers': np.asarray(masks.layers, np.float32)}


def width_masks(model, masks: Masks, width: float) -> Masks:
  """The first `width` of every kept layer's heads and neurons."""
  kept = subnet_lib.num_kept_heads(model.num_heads, width)
  heads = np.zeros_like(np.asarray(masks.heads, np.float32))
  neurons = np.zeros_like(np.asarray(masks.neurons, np.float32))
  heads[:, :kept] = 1
  neurons[:, :int(kept / model.num_heads * model.mlp_dim)] = 1
  on = np.asarray(masks.layers, np.float32)[:, None]
  return Masks(heads * on, neurons * on, masks.layers)


def step_masks(model, method: Method, holding, rng) -> Masks:
  """The masks of one training step: the device's subnet, or (FjORD) a
  width drawn uniformly from those up to its own."""
  masks = holding.masks
  if holding.widths:
    masks = width_masks(model, masks,
                        holding.widths[rng.integers(len(holding.widths))])
  return holdings_lib.scaled(masks) if method.scaler else masks


def cosine(peak: float, step: int, total: int) -> float:
  """The rate at `step` of `total`, annealed from `peak` towards 0."""
  return 0.5 * peak * (1 + np.cos(np.pi * step / max(total, 1)))


def _exit_field(model, holding) -> np.ndarray:
  return (np.arange(model.num_layers) < holding.exits).astype(np.float32)


def _first(state):
  return state[0]


def train(model, method: Method, hp: FederatedHparams, devices_, params,
          key, epochs: range, total_epochs: int):
  """Every device trains its own params (`params[d]`) for `epochs` (of
  `total_epochs`, over which its rate anneals from `hp.lr`) on its train
  split; returns (trained params per device, training FLOPs per device)."""
  p = programs(model, method, hp)
  t = flops_lib.tokens(model, devices_[0].data.x.shape[1:])
  embed = flops_lib.embed_flops(model, next(iter(params.values())), t)
  batches, flops = [], []
  for device in devices_:
    rng = child_lib.seeded_rng(jax.random.fold_in(key, device.id),
                               streams.TRAIN_BATCHES)
    rows = local_data.split_rows(device.sizes, 'train')
    per_epoch = -(-len(rows) // hp.batch_size)
    fixed = dict(mask_fields(device.holding.masks, 'full_'),
                 exits=_exit_field(model, device.holding))
    steps, spent = [], 0.0
    for epoch in epochs:
      for b, batch in enumerate(local_data.index_batches(
          rows, hp.batch_size, rng, **fixed)):
        masks = step_masks(model, method, device.holding, rng)
        batch.update(mask_fields(masks), lr=np.float32(cosine(
            hp.lr, epoch * per_epoch + b, total_epochs * per_epoch)))
        steps.append(batch)
        forward = embed + flops_lib.forward_flops(model, masks, t)
        if method.fjord_kd:  # the widest subnet runs too
          forward += embed + flops_lib.forward_flops(
              model, device.holding.masks, t)
        spent += float(batch['w'].sum()) * flops_lib.TRAIN_FACTOR * forward
    batches.append(steps)
    flops.append(spent)
  tx = _sgd(hp.momentum, hp.weight_decay)
  inputs = [(params[d.id], tx.init(params[d.id])) for d in devices_]
  trained = engine.for_each_device(
      child_lib.identity, p.train_step, _first, inputs, batches,
      device_consts=[_consts(d) for d in devices_], strategy=hp.strategy)
  return {d.id: t for d, t in zip(devices_, trained)}, flops


def _consts(device: Device) -> Consts:
  return Consts(device.data.x, device.data.y, device.holding.holder,
                device.classes)


def _eval_init(params):
  return params, jnp.zeros(2)


def _eval_sums(carry):
  return carry[1]


def accuracy(model, method: Method, hp: FederatedHparams, devices_, params,
             split: str) -> List[float]:
  """Each device's accuracy on its whole `split` with its deployed model
  (its subnet; DepthFL: its exits' ensemble)."""
  p = programs(model, method, hp)
  batch_size = min(EVAL_BATCH, child_lib.whole_split_batch(
      [d.sizes for d in devices_], split))
  batches = [local_data.index_batches(
      local_data.split_rows(d.sizes, split), batch_size, None,
      exits=_exit_field(model, d.holding), **mask_fields(d.holding.masks))
             for d in devices_]
  sums = engine.for_each_device(
      _eval_init, p.eval_step, _eval_sums, [params[d.id] for d in devices_],
      batches, device_consts=[_consts(d) for d in devices_],
      strategy=hp.strategy)
  return [float(s[0]) / max(float(s[1]), 1.0) for s in sums]
