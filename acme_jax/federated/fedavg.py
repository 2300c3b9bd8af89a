"""FedAvg with local fine-tuning (McMahan et al. 2017; the fine-tuning
baseline of personalized FL): one model that fits the smallest budget,
trained by every device and averaged by samples at the edges and the cloud;
after the rounds each device fine-tunes it on its own data."""
import functools

from acme_jax.federated import hierarchical
from acme_jax.federated import holdings as holdings_lib
from acme_jax.federated.method import Method

METHOD = Method('fedavg', finetune=True)


def smallest_budget_model(model, params, budgets):
  """The largest subnet (any number of heads and layers) within the
  smallest budget, for everyone; None for all when none fits."""
  one = holdings_lib.largest_fitting(
      [holdings_lib.grid_holding(model, params, w, d)
       for d in holdings_lib.levels(model.num_layers)
       for w in holdings_lib.levels(model.num_heads)], min(budgets))
  return [one] * len(budgets)


def setup(model, params, budgets):
  """(the params the method trains, each device's holding)."""
  return params, smallest_budget_model(model, params, budgets)


# (model, hp, params, devices) -> the method's FederatedAlgorithm.
algorithm = functools.partial(hierarchical.algorithm, METHOD)
