"""HeteroFL (Diao et al. 2021): each device trains the width-nested
submodel its budget allows (the first heads and MLP neurons of every
layer, full depth); each parameter is averaged over the devices that hold
it, every holder counting once. As the paper: the Scaler divides a
width-r submodel's attention and MLP outputs by r in training, and the
masked cross-entropy trains (and a device predicts over) only the classes
its data has, so a device holds only those columns of the head. The hidden
size stays whole (the supernet's residual width is not elastic).

Two departures from the authors' code, kept so every method and ACME
share one optimizer and one family of shapes:
* Width is cut in whole heads (the first h of H, each whole), where the
  reference keeps every head and narrows each one's dimension by r. Our
  supernet's width is elastic in whole heads, importance-reordered, and
  FjORD and ACME's subnets are cut the same way; a narrowed head is a
  shape none of them has.
* No gradient-norm clipping, where the reference clips at 1: no method's
  local SGD clips here (one optimizer for all, annealed to zero), so
  clipping HeteroFL alone would give it a different optimizer."""
import functools

from acme_jax.federated import hierarchical
from acme_jax.federated import holdings as holdings_lib
from acme_jax.federated.method import Method

METHOD = Method('heterofl', weighting='count', scaler=True,
                label_split=True)


def widest_fitting(model, params, budgets):
  """Per device the widest full-depth submodel (1, 2, ... heads and the
  same share of MLP neurons per layer) within its budget, or None."""
  options = [holdings_lib.grid_holding(model, params, w, 1.0)
             for w in holdings_lib.levels(model.num_heads)]
  return [holdings_lib.largest_fitting(options, b) for b in budgets]


def setup(model, params, budgets):
  """(the params the method trains, each device's holding); the label
  split narrows each head when the devices' data is known
  (`local.devices`)."""
  return params, widest_fitting(model, params, budgets)


# (model, hp, params, devices) -> the method's FederatedAlgorithm.
algorithm = functools.partial(hierarchical.algorithm, METHOD)
