"""Cloud step 2b: measure the trained supernet on its (depth, width) grid.

Every grid subnet runs through one compiled evaluation function: the subnet is
a `Masks` argument, not a constant baked into the program.
"""
import itertools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.models import subnet as subnet_lib
from acme_jax.models.vit import Masks, ViT
from acme_jax.system import mesh


def make_count_fn(model: ViT, num_classes: int):
  """Jitted (params, images, labels, weights, masks) -> (correct, total) per class."""

  @jax.jit
  def count(params, images, labels, weights, masks):
    logits = model.apply({'params': params}, images, masks)['logits']
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32) * weights
    onehot = jax.nn.one_hot(labels, num_classes) * weights[:, None]
    return correct @ jax.nn.one_hot(labels, num_classes), onehot.sum(0)

  return count


def per_class_correct(count_fn, params, data: Split, masks: Masks,
                      batch_size: int, par: Optional[mesh.Parallel] = None):
  par = par or mesh.single_device()
  correct, total = 0.0, 0.0
  for idx, weights in training.padded_batches(len(data), batch_size):
    c, t = count_fn(params, par.batch(data.images[idx]),
                    par.batch(data.labels[idx]), par.batch(weights), masks)
    correct, total = correct + mesh.host(c), total + mesh.host(t)
  return correct, total


def accuracy_record(correct, total):
  per_class = np.where(total > 0, correct / np.maximum(total, 1), np.nan)
  return float(correct.sum() / max(total.sum(), 1)), [
      None if np.isnan(a) else float(a) for a in per_class]


def grid_points(depth_mults, width_mults):
  """(depth, width) pairs, largest first."""
  return list(itertools.product(sorted(depth_mults, reverse=True),
                                sorted(width_mults, reverse=True)))


def measure_grid(model: ViT, params, data: Split, num_classes: int,
                 depth_mults, width_mults, batch_size: int,
                 par: Optional[mesh.Parallel] = None):
  """Records {depth_mult, width_mult, accuracy, per_class_accuracy, params, bytes}."""
  par = par or mesh.single_device()
  count_fn = make_count_fn(model, num_classes)
  placed = par.params(params)
  records = []
  for depth, width in grid_points(depth_mults, width_mults):
    sub = subnet_lib.for_model(model, width, depth)
    correct, total = per_class_correct(
        count_fn, placed, data, subnet_lib.masks(model, sub), batch_size, par)
    acc, per_class = accuracy_record(correct, total)
    n_params, n_bytes = subnet_lib.subnet_size(model, params, sub)
    records.append({'depth_mult': float(depth), 'width_mult': float(width),
                    'accuracy': acc, 'per_class_accuracy': per_class,
                    'params': n_params, 'bytes': n_bytes,
                    'layers': list(sub.layers), 'heads': sub.heads[0],
                    'neurons': sub.neurons[0]})
  return records
