"""Cloud step 2b: measure the trained supernet on its (depth, width) grid.

Each grid subnet runs in its static form (width-sliced supernet, dropped
layers skipped at run time): it costs its own FLOPs, not the full model's,
and the subnets of one width share a compiled program (a handful of
programs for the whole grid, whatever its depths).
"""
import functools
import itertools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.models import subnet as subnet_lib
from acme_jax.models.vit import ViT
from acme_jax.parallel import mesh


@functools.lru_cache(maxsize=None)
def make_count_fn(model: ViT, num_classes: int):
  """Jitted (params, images, labels, weights, layer_gates) -> (correct,
  total) per class, and a language model's summed next-token NLL and
  predicted-token count (zeros for an encoder)."""

  @jax.jit
  def count(params, images, labels, weights, layer_gates):
    out = model.apply({'params': params}, images, layer_gates=layer_gates)
    logits = out['logits']
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32) * weights
    onehot = jax.nn.one_hot(labels, num_classes) * weights[:, None]
    nll = tokens = jnp.zeros(())
    if 'lm_logits' in out:
      targets, pairs = training.next_token_pairs(images, model.pad_id,
                                                 weights)
      losses = training.cross_entropy(out['lm_logits'][:, :-1], targets)
      nll, tokens = jnp.sum(losses * pairs), jnp.sum(pairs)
    return (correct @ jax.nn.one_hot(labels, num_classes), onehot.sum(0),
            nll, tokens)

  return count


def _count(sub_model, placed, gates, data: Split, num_classes: int,
           batch_size: int, par: mesh.Parallel):
  """Per-class (correct, total) of a static form (`placed` params, layer
  `gates`) on `data`."""
  count_fn = make_count_fn(sub_model, num_classes)
  sums = [0.0] * 4   # correct, total (per class), NLL, predicted tokens
  for idx, weights in training.padded_batches(len(data), batch_size,
                                              par.size):
    parts = count_fn(placed, par.batch(data.images[idx]),
                     par.batch(data.labels[idx]), par.batch(weights), gates)
    sums = [a + np.asarray(mesh.host(b), np.float64)
            for a, b in zip(sums, parts)]
  return sums


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
  """Records {depth_mult, width_mult, accuracy, per_class_accuracy, params,
  bytes} of every grid subnet, largest first."""
  return measure_points(model, params, data, num_classes,
                        grid_points(depth_mults, width_mults), batch_size,
                        par)


def measure_points(model: ViT, params, data: Split, num_classes: int,
                   points, batch_size: int,
                   par: Optional[mesh.Parallel] = None):
  """`measure_grid`'s records for the subnets at (depth, width) `points`,
  in their order. Each width's static form is sliced and placed once and
  serves every depth of that width (only its layer gates differ)."""
  par = par or mesh.single_device()
  params = jax.tree.map(np.asarray, params)
  by_width = {}
  for width in sorted({w for _, w in points}, reverse=True):
    sub_model, sliced, _ = subnet_lib.static_form(
        model, params, subnet_lib.for_model(model, width, 1.0))
    by_width[width] = (sub_model, par.params(sliced))
  records = []
  for depth, width in points:
    sub = subnet_lib.for_model(model, width, depth)
    sub_model, placed = by_width[width]
    n_params, n_bytes = subnet_lib.subnet_size(model, params, sub)
    records.append({'depth_mult': float(depth), 'width_mult': float(width),
                    **_measured(sub_model, placed,
                                subnet_lib.layer_gates(model, sub), data,
                                num_classes, batch_size, par),
                    'params': n_params, 'bytes': n_bytes,
                    'layers': list(sub.layers), 'heads': sub.heads[0],
                    'neurons': sub.neurons[0]})
  return records


def measure_model(model, params, data: Split, num_classes: int,
                  batch_size: int, par: Optional[mesh.Parallel] = None):
  """{accuracy, per_class_accuracy[, perplexity]} of a dense model (every
  layer run) on `data`."""
  par = par or mesh.single_device()
  return _measured(model, par.params(jax.tree.map(np.asarray, params)),
                   np.ones((model.num_layers,), np.float32), data,
                   num_classes, batch_size, par)


def _measured(sub_model, placed, gates, data, num_classes, batch_size, par):
  correct, total, nll, tokens = _count(sub_model, placed, gates, data,
                                       num_classes, batch_size, par)
  acc, per_class = accuracy_record(correct, total)
  out = {'accuracy': acc, 'per_class_accuracy': per_class}
  if tokens:  # a language model: exp(mean next-token NLL) on the split
    out['perplexity'] = float(np.exp(nll / tokens))
  return out


def between_points(model: ViT, depth_mults, width_mults, shapes):
  """The (depth, width) `shapes` that are subnets no grid cell is (widths
  snap to whole heads, depths to whole layers, so many multipliers between
  the grid's land on a cell), each distinct subnet once, in order; and, per
  shape that is a cell's, that cell: ([(d, w)], {(d, w): (cell d, w)})."""
  cells = {subnet_lib.for_model(model, w, d): (float(d), float(w))
           for d, w in grid_points(depth_mults, width_mults)}
  new, coincide, seen = [], {}, set()
  for d, w in shapes:
    sub = subnet_lib.for_model(model, w, d)
    if sub in cells:
      coincide[(float(d), float(w))] = cells[sub]
    elif sub not in seen:
      seen.add(sub)
      new.append((float(d), float(w)))
  return new, coincide


def distinct_uniform_shapes(model: ViT, resolution: int = 1024) -> int:
  """How many distinct uniform subnets (every kept layer as wide) the
  supernet holds at all: widths snap to whole heads (a decoder's MLP width
  to whole neurons), depths to whole layers. No family of one model per
  budget needs more models than this to match what it can deliver."""
  shapes = set()
  for k in range(1, model.num_layers + 1):
    for w in np.arange(1, resolution + 1) / resolution:
      try:
        shapes.add(subnet_lib.for_model(model, float(w), k / model.num_layers))
      except ValueError:  # too narrow to keep a head
        continue
  return len(shapes)
