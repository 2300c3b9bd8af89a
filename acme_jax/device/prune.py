"""Channel pruning of the final header by first-order Taylor importance (ACME.md 6).

The header's one gate vector g (C,) multiplies every C-channel feature, so
dL/dg_c sums the channel's effect over every place it appears; |dL/dg_c * g_c|
accumulated over local training steps (NVlabs Taylor pruning) is the channel's
importance. Every device's vector has length C, whatever its architecture, so
the edge can average them.
"""
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import training
from acme_jax.device import header as header_lib
from acme_jax.device import nas


def taylor_importance(header: header_lib.Header, state: nas.ChildState, arch,
                      features_train, labels_train, *, epochs: int, key,
                      gates=None, **train_kwargs):
  """Train with fixed gates, accumulating |grad_g * g| per step.

  Returns (importance (C,) numpy, mean over steps; the trained state).
  Gates default to all ones; pruned (0) channels get importance 0.
  """
  gates = (np.ones((header.num_channels,), np.float32) if gates is None
           else np.asarray(gates, np.float32))
  total = []

  def on_step(metrics):
    total.append(jnp.abs(metrics['gate_grad'] * gates))

  state = nas.train_header(header, state, arch, gates, features_train,
                           labels_train, epochs=epochs, key=key,
                           on_step=on_step, **train_kwargs)
  importance = (np.asarray(jnp.stack(total).mean(0)) if total
                else np.zeros_like(gates))
  return importance, state


def prune_gates(importance, ratio: float, current_gates=None) -> np.ndarray:
  """0/1 gates with the lowest-importance floor(ratio * C) channels removed.

  Channels already off in `current_gates` are counted first (they stay off).
  At least one channel is always kept.
  """
  importance = np.asarray(importance, np.float64)
  num_channels = importance.size
  if not 0 <= ratio < 1:
    raise ValueError(f'ratio must be in [0, 1), got {ratio}')
  num_pruned = min(int(np.floor(ratio * num_channels + 1e-9)),
                   num_channels - 1)
  score = importance.copy()
  if current_gates is not None:
    off = np.asarray(current_gates) <= 0
    num_pruned = max(num_pruned, int(off.sum()))
    score[off] = -np.inf
  order = np.argsort(score, kind='stable')
  gates = np.ones(num_channels, np.float32)
  gates[order[:num_pruned]] = 0.0
  return gates


def pruned_param_count(header: header_lib.Header, arch, gates, *,
                       feature_dim: int, grid_rank: int) -> int:
  """Exact parameter count of the extracted header keeping `gates`' channels."""
  return header_lib.header_param_count(
      arch, int((np.asarray(gates) > 0).sum()), feature_dim=feature_dim,
      num_classes=header.num_classes, grid_rank=grid_rank,
      num_layers=header.num_layers)


def prune_and_finetune(header: header_lib.Header, state: nas.ChildState, arch,
                       importance, ratio: float, features_train, labels_train,
                       features_val, labels_val, *, epochs: int, key,
                       current_gates=None, eval_batch_size: int = 256,
                       **train_kwargs) -> dict:
  """Prune by `importance` (own or edge-aggregated), fine-tune with fixed gates.

  Returns gates, state, val_accuracy (deployment mode) and header_params.
  """
  gates = prune_gates(importance, ratio, current_gates)
  state = nas.train_header(header, state, arch, gates, features_train,
                           labels_train, epochs=epochs, key=key,
                           **train_kwargs)
  steps = nas.child_steps(header, *(train_kwargs.get(k, d) for k, d in (
      ('momentum', 0.9), ('weight_decay', 1e-4), ('grad_clip', 5.0))))
  val = nas.accuracy(steps, state, jnp.asarray(arch, jnp.int32),
                     jnp.asarray(gates), np.asarray(features_val, np.float32),
                     np.asarray(labels_val, np.int32), eval_batch_size)
  features_shape = np.shape(features_train)
  return {'gates': gates, 'state': state, 'val_accuracy': val,
          'header_params': pruned_param_count(
              header, arch, gates, feature_dim=features_shape[-1],
              grid_rank=len(features_shape) - 2)}


@functools.lru_cache(maxsize=None)
def _gate_loss_and_grad(header: header_lib.Header):

  @jax.jit
  def fn(state, arch, gates, features, labels, key):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}

    def loss(g):
      logits, _ = header.apply(variables, features, arch, g, train=True,
                               rngs={'dropout': key}, mutable=['batch_stats'])
      return training.cross_entropy(logits, labels).mean()
    return jax.value_and_grad(loss)(gates)
  return fn


def gate_gradient(header: header_lib.Header, state: nas.ChildState, arch,
                  gates, features, labels, key: Optional[jax.Array] = None):
  """(loss, dL/dg) on one batch in training mode, updating nothing."""
  key = jax.random.key(0) if key is None else key
  return _gate_loss_and_grad(header)(
      state, jnp.asarray(arch, jnp.int32), jnp.asarray(gates, jnp.float32),
      jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.int32), key)
