"""The edge and device stages of ACME's loop (ACME.md 4.4, 5, 6): each
device's local data, its backbone chosen at its edge, data signatures, the
header NAS and the aggregation rounds. Shared by the main loop
(`pipeline.py`) and the paper-table experiments, like `stages.py`'s cloud
and selection stages.
"""
import jax
import numpy as np

from acme_jax.config import ConfigError
from acme_jax.data import partition
from acme_jax.device import customize, features
from acme_jax.edge import choice, rounds, similarity
from acme_jax.models import subnet as subnet_lib
from acme_jax.system import engine
from acme_jax.system import transfers


# ------------------------------------------------------------ local data


def device_splits(config, device_data, num_devices: int, num_classes: int,
                  scheme=None, fraction_per_class=None, seed=None):
  """Each device's local (train, val, test) Splits from the configured partition."""
  sys_c = config.system
  seed = config.seed if seed is None else seed
  parts = partition.partition(
      device_data.labels, num_devices, scheme or sys_c.partition, seed,
      alpha=sys_c.dirichlet_alpha, shards_per_device=sys_c.shards_per_device,
      fraction_per_class=fraction_per_class or sys_c.fraction_per_class,
      num_classes=num_classes)
  splits = []
  for device, idx in enumerate(parts):
    local = partition.local_splits(idx, device_data.labels, seed + device,
                                   sys_c.local_val_fraction,
                                   sys_c.local_test_fraction)
    splits.append(tuple(device_data.take(i) for i in local))
  return splits


def check_partition(config, device_data, num_devices: int, num_classes: int,
                    scheme=None, fraction_per_class=None, field=None):
  """Partitions the devices' data as the run will (cheap: labels only) and
  turns any impossibility into one ConfigError naming the field to change,
  before any training: too many devices for the samples, a category setup
  that leaves a device without data, a device without a validation or test
  sample (the header search and its test need both)."""
  scheme = scheme or config.system.partition
  field = field or 'system.partition'
  try:
    splits = device_splits(config, device_data, num_devices, num_classes,
                           scheme=scheme,
                           fraction_per_class=fraction_per_class)
  except ValueError as e:
    raise ConfigError(field, scheme, f'cannot split the devices\' '
                      f'{len(device_data)} samples among {num_devices} '
                      f'devices: {e}') from e
  for device, (train, val, test) in enumerate(splits):
    if not (len(train) and len(val) and len(test)):
      raise ConfigError(
          field, scheme, f'device {device} gets {len(train)}/{len(val)}/'
          f'{len(test)} train/val/test samples; every device needs at least '
          f'one of each (fewer devices, or larger local fractions)')
  return splits


def class_matched_test(splits, test):
  """Each device's test set: the held-out test samples of its own classes.

  Category setups leave each device ~10 local test samples, too few to
  separate the modes; the test split restricted to the device's classes has
  the same label support and several times more samples.
  """
  out = []
  for train, val, _ in splits:
    keep = np.flatnonzero(np.isin(test.labels, np.unique(train.labels)))
    out.append((train, val, test.take(keep)))
  return out


# ------------------------------------------------------------------ edge


def edge_choice(config, selection, topology, splits, num_classes):
  """(label histograms, picks): each device's backbone chosen at its edge,
  from the front payload the edge receives (`transfers.front_payload`)."""
  histograms = [partition.label_histogram(train.labels, num_classes)
                for train, _, _ in splits]
  picks = choose(config, transfers.front_payload(selection['candidates']),
                 histograms, [d.budget for d in topology.devices])
  return histograms, picks


def choose(config, front, histograms, budgets):
  """The edge's choice (ACME.md 4.4) for devices with these label histograms
  and budgets, from the front payload alone: what an edge decides with."""
  return choice.choose_backbones(
      front['params'].astype(np.int64), front['per_class'], histograms,
      budgets, config.system.header_allowance,
      on_front=front['on_front'] > 0)


def reference_multipliers(config):
  """(width, depth) of the common backbone of feature signatures (ACME.md 6):
  the full supernet (the prototype's `dynavit`) or the smallest grid subnet."""
  c = config.cloud
  if config.aggregation.reference_backbone == 'full':
    return 1.0, 1.0
  return min(c.width_mults), min(c.depth_mults)


def reference_subnet(config, model):
  return subnet_lib.for_model(model, *reference_multipliers(config))


def signatures(config, cloud, splits, num_classes: int, seed: int):
  """Each device's data signature: label histogram, or the CLS features of up
  to `signature_samples` local samples through the reference backbone."""
  a = config.aggregation
  if a.signature == 'histogram':
    return [similarity.histogram_signature(train.labels, num_classes)
            for train, _, _ in splits]
  model, supernet = cloud['model'], cloud['supernet']
  # One stream of full batches through the reference backbone for all
  # devices, not a padded tail per device.
  trains = [train for train, _, _ in splits]
  tokens = features.backbone_tokens(
      model, supernet, reference_subnet(config, model),
      np.concatenate([t.images for t in trains]),
      config.cloud.eval_batch_size, source=config.header.features_from)[:, 0]
  bounds = np.cumsum([0] + [len(t) for t in trains])
  return [feature_signature(config, tokens[bounds[d]:bounds[d + 1]],
                            train.labels, seed + d)
          for d, train in enumerate(trains)]


def feature_signature(config, cls, labels, seed: int):
  """One device's feature signature from its train samples' reference CLS
  features (`seed` = run seed + device id)."""
  n = config.aggregation.signature_samples
  if len(labels) < n:
    # The prototype samples n per device; smaller devices resample with
    # replacement so every signature has the same shape (JS is entry-wise).
    idx = np.random.default_rng(seed).choice(len(labels), n, replace=True)
    cls, labels = cls[idx], labels[idx]
  return similarity.feature_signature(cls, n, seed, labels=labels)


# ---------------------------------------------------------------- device


def device_headers(config, cloud, topology, splits, choices, key,
                   num_classes: int, log=print):
  """Per device: cached features of its backbone, NAS header within its
  budget, fine-tuning, data signature. `choices[d]` = (width, depth,
  backbone params). Returns the devices' `rounds.DeviceHeader`s."""
  model, supernet = cloud['model'], cloud['supernet']
  subs, limits, cells = [], [], []
  for device, (width, depth, backbone_params) in zip(topology.devices,
                                                     choices):
    subs.append(subnet_lib.for_model(model, width, depth))
    limits.append(device.budget - backbone_params)
    cells.append(customize.header_cells(config, width, depth))
  locals_ = customize.many_local_features(
      config, model, supernet, subs, [splits[d.id] for d in topology.devices])
  keys = [jax.random.fold_in(key, d.id) for d in topology.devices]
  headers = customize.search_headers(
      config, locals_, num_classes, keys, limits, cells,
      [d.id for d in topology.devices], [d.edge_id for d in topology.devices],
      log=log)
  for header, signature in zip(headers, signatures(
      config, cloud, splits, num_classes, config.seed)):
    header.signature = signature
  return headers


def self_weight(config):
  w = config.aggregation.self_weight
  return None if w < 0 else w


def run_rounds(config, headers, num_classes: int, mode: str, key,
               temperature=None, ledger=None):
  """ACME's aggregation rounds (ACME.md 6) on the devices' headers."""
  a = config.aggregation
  cfg = customize.nas_config(config, headers[0].data.x.shape,
                             num_classes)
  return rounds.run_rounds(
      cfg, customize.schedule(config), headers, mode, rounds=a.rounds,
      prune_ratio=a.prune_ratio, local_epochs=a.local_epochs,
      finetune_epochs=a.finetune_epochs, key=key,
      signature_kind=a.signature,
      temperature=a.temperature if temperature is None else temperature,
      self_weight=self_weight(config), js_variant=a.js_variant,
      taylor=a.taylor, ledger=ledger, strategy=engine.options(config))


def test_accuracies(config, headers, num_classes: int) -> np.ndarray:
  cfg = customize.nas_config(config, headers[0].data.x.shape,
                             num_classes)
  return rounds.test_accuracy(cfg, headers, config.header.batch_size,
                              engine.options(config))


def header_params(config, headers, num_classes: int) -> list:
  cfg = customize.nas_config(config, headers[0].data.x.shape,
                             num_classes)
  return [h.header_params(cfg.spec) for h in headers]

