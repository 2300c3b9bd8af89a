"""FedPer (Arivazhagan et al. 2019): the base layers are averaged across
devices as in FedAvg; each device's classification head is personal: it
trains with the base but never leaves the device (no ledger record)."""
import functools

from acme_jax.federated import fedavg, hierarchical
from acme_jax.federated.method import Method

METHOD = Method('fedper', personal=('head',))


def setup(model, params, budgets):
  """FedAvg's model: the largest subnet within the smallest budget."""
  return params, fedavg.smallest_budget_model(model, params, budgets)


# (model, hp, params, devices) -> the method's FederatedAlgorithm.
algorithm = functools.partial(hierarchical.algorithm, METHOD)
