"""FjORD (Horvath et al. 2021): ordered dropout. A device holds the widest
nested submodel its budget allows (as HeteroFL) and at every local step
trains a width drawn uniformly from the widths up to its own; with
self-distillation, its widest submodel learns from the labels and teaches
the sampled one: CE(widest, y) + (1 - a) CE(sampled, y) + a T^2
KL(widest / T || sampled / T), the paper's form (Flower's code is a = 1,
T = 1). Each parameter is averaged over the devices that hold it, weighted
by their samples (as FjORD's aggregation of nested slices)."""
import functools

from acme_jax.federated import hierarchical, heterofl
from acme_jax.federated import holdings as holdings_lib
from acme_jax.federated.method import Method

METHOD = Method('fjord', fjord_kd=True)


def setup(model, params, budgets):
  """(the params the method trains, each device's holding with the widths
  it samples: 1, 2, ... heads up to its own)."""
  out = []
  for top in heterofl.widest_fitting(model, params, budgets):
    if top is not None:
      kept = int(top.masks.heads.max(0).sum())
      top = top._replace(widths=holdings_lib.levels(model.num_heads)[:kept])
    out.append(top)
  return params, out


# (model, hp, params, devices) -> the method's FederatedAlgorithm.
algorithm = functools.partial(hierarchical.algorithm, METHOD)
