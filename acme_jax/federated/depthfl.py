"""DepthFL (Kim et al. 2023): each device trains the first k blocks its
budget allows (full width) with a classifier after each of them; the
classifiers learn from the labels and from each other (mutual
self-distillation, the other side held fixed); a device predicts with the
mean of its classifiers' logits. Each block and classifier is a plain
average over the devices that hold it. This is the FedAvg form of DepthFL
(Flower's baseline with `feddyn=false`): no FedDyn correction, and no
ramp-up of the distillation weight (the reference ramps it over its first
300 of 1,000 rounds; a 10-round run would barely distil at all)."""
import functools

import jax
import numpy as np

from acme_jax.federated import hierarchical
from acme_jax.federated import holdings as holdings_lib
from acme_jax.federated.method import Method

METHOD = Method('depthfl', loss='depthfl', weighting='count')
# The model's own final norm, pooler and head are not used: the exits
# replace them, so no device holds them.
UNUSED = ('ln_final', 'head', 'pooler')


def setup(model, params, budgets):
  """(the params with their exits, each device's deepest prefix of blocks
  with its exits within its budget, or None)."""
  params = holdings_lib.with_exits(params, model.num_layers)
  options = []
  for d in holdings_lib.levels(model.num_layers):
    h = holdings_lib.grid_holding(model, params, 1.0, d, prefix=True,
                                  exits=True)
    holder = {k: (jax.tree.map(np.zeros_like, v) if k in UNUSED else v)
              for k, v in h.holder.items()}
    options.append(h._replace(holder=holder))
  return params, [holdings_lib.largest_fitting(options, b) for b in budgets]


# (model, hp, params, devices) -> the method's FederatedAlgorithm.
algorithm = functools.partial(hierarchical.algorithm, METHOD)
