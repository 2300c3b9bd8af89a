"""The device side of the loop, from the config: cached features, header NAS,
fine-tuning and the fixed-head baselines, for many devices at once.

Glue between the config and the device modules (features, nas, heads); the
main loop and the comparison experiments call these.
"""
from typing import Callable, List, Optional, Sequence

import jax
import numpy as np

from acme_jax.device import controller as controller_lib
from acme_jax.device import features, heads
from acme_jax.device import header as header_lib
from acme_jax.device import local_data
from acme_jax.device import nas
from acme_jax.edge import rounds
from acme_jax.models import subnet as subnet_lib
from acme_jax.system import engine


def local_features(config, model, supernet, sub: subnet_lib.SubnetConfig,
                   splits) -> features.LocalFeatures:
  """Runs the frozen backbone once over a device's train/val/test data."""
  return many_local_features(config, model, supernet, [sub], [splits])[0]


def many_local_features(config, model, supernet,
                        subs: Sequence[subnet_lib.SubnetConfig],
                        device_splits) -> List[features.LocalFeatures]:
  """Every device's cached features, computed in batches across devices:
  devices with the same backbone share one stream of full batches through
  its static form (one compiled program per width), instead of one padded
  tail per device and split."""
  groups = {}
  for d, sub in enumerate(subs):
    groups.setdefault(sub, []).append(d)
  tokens = [None] * len(subs)
  for sub, members in groups.items():
    parts = [s.images for d in members for s in device_splits[d]]
    out = features.backbone_tokens(model, supernet, sub,
                                   np.concatenate(parts),
                                   config.cloud.eval_batch_size,
                                   source=config.header.features_from)
    bounds = np.cumsum([0] + [len(p) for p in parts])
    pieces = [out[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    for k, d in enumerate(members):
      tokens[d] = pieces[3 * k:3 * k + 3]
  return [local_features_from_tokens(model, splits, toks)
          for splits, toks in zip(device_splits, tokens)]


def local_features_from_tokens(model, splits, tokens) -> features.LocalFeatures:
  """A device's cached header inputs from its splits' backbone tokens."""
  grid = features.patch_grid(model, splits[0].images.shape[1:])
  grids = [features.token_grid(t, grid) for t in tokens]
  train, val, test = splits
  return features.LocalFeatures(grids[0], train.labels, grids[1], val.labels,
                                grids[2], test.labels, tokens[0][:, 0])


def header_cells(config, width_mult: float, depth_mult: float) -> int:
  """Cells of a device's header: num_layers + 2 (prototype's child)."""
  layers = config.header.num_layers or header_lib.default_num_layers(
      width_mult, depth_mult)
  return layers + 2


def max_cells(config) -> int:
  return (config.header.num_layers or 3) + 2


def nas_config(config, feature_shape, num_classes: int) -> nas.NasConfig:
  """The static NasConfig for features of shape (..., *grid, D)."""
  h = config.header
  spec = header_lib.Spec(
      num_classes=num_classes, feature_dim=int(feature_shape[-1]),
      grid_rank=len(feature_shape) - 2, num_channels=h.num_channels,
      num_nodes=h.num_nodes, max_layers=max_cells(config),
      dropout_rate=h.dropout_rate)
  ctrl = controller_lib.Controller(
      h.num_nodes, hidden=h.controller_hidden, temperature=h.temperature,
      tanh_constant=h.tanh_constant, op_tanh_reduce=h.op_tanh_reduce)
  return nas.NasConfig(
      spec, ctrl, momentum=h.momentum, weight_decay=h.weight_decay,
      grad_clip=h.grad_clip, controller_lr=h.controller_lr,
      entropy_weight=h.entropy_weight, baseline_decay=h.baseline_decay,
      reward_scale=h.reward_scale)


def search_hparams(config) -> nas.SearchHparams:
  h = config.header
  return nas.SearchHparams(
      epochs=h.search_epochs, batch_size=h.batch_size, lr_max=h.lr_max,
      lr_min=h.lr_min, lr_period=h.lr_period, lr_period_mult=h.lr_period_mult,
      controller_steps_per_epoch=h.controller_steps_per_epoch,
      derive=h.derive, num_final_archs=h.num_final_archs)


def schedule(config) -> rounds.TrainSchedule:
  h = config.header
  return rounds.TrainSchedule(h.batch_size, h.lr_min, h.lr_period,
                              h.lr_period_mult)


def _check_budgets(cfg, limits, cells):
  for limit, n in zip(limits, cells):
    smallest = int(header_lib.param_count(
        cfg.spec, header_lib.smallest_arch(cfg.spec.num_nodes), n))
    if limit < smallest:
      raise ValueError(f'a header budget of {limit} parameters is below the '
                       f'smallest header ({smallest} with {n} cells and '
                       f'{cfg.spec.num_channels} channels)')


def finetune(config, cfg, states, data, sizes, keys, epochs: int):
  """Trains each state's arch at every `header.finetune_lrs` peak and keeps,
  per device, the one best on local validation (the fixed heads choose their
  learning rate the same way). Returns [(state, lr, val accuracy)]."""
  h = config.header
  candidates = []
  for lr in h.finetune_lrs:
    tuned = nas.train_fixed(
        cfg, states, data, sizes, [jax.random.fold_in(k, 11) for k in keys],
        epochs=epochs, batch_size=h.batch_size, lr_max=lr, lr_min=h.lr_min,
        lr_period=h.lr_period, lr_period_mult=h.lr_period_mult,
        strategy=engine.options(config))
    val = nas.evaluate(cfg, tuned, data, sizes, 'val', h.batch_size,
                       engine.options(config))
    candidates.append((tuned, lr, val))
  out = []
  for d in range(len(states)):
    tuned, lr, val = max(candidates, key=lambda c: c[2][d])
    out.append((tuned[d], float(lr), float(val[d])))
  return out


def search_headers(config, locals_: Sequence[features.LocalFeatures],
                   num_classes: int, keys, limits: Sequence[int],
                   cells: Sequence[int], device_ids: Sequence[int],
                   edge_ids: Sequence[int], archs=None,
                   log: Optional[Callable[[str], None]] = None
                   ) -> List[rounds.DeviceHeader]:
  """NAS within each device's header budget, then training of the found
  architecture: from the search's shared weights (`header.final_weights =
  'shared'`, the prototype) or from fresh weights ('scratch', ENAS's
  retraining), `header.finetune_epochs` epochs at the best of
  `header.finetune_lrs` on local validation. With `archs` given, no search:
  those architectures are trained from fresh weights (ablations).

  Returns the devices' headers, ready for the aggregation rounds, each with
  `.result` = {arch, n_layers, nas_header_params, val_accuracy,
  test_accuracy, finetune_lr, search_val_accuracy, history}.
  """
  h = config.header
  strategy = engine.options(config)
  cfg = nas_config(config, locals_[0].x_train.shape, num_classes)
  data, sizes = local_data.device_data(locals_)
  _check_budgets(cfg, limits, cells)
  if archs is None:
    found = nas.search(cfg, search_hparams(config), data, sizes, keys,
                       limits, cells, strategy, log)
  else:
    found = [{'arch': np.asarray(a, np.int32), 'val_accuracy': None,
              'n_layers': n, 'history': [],
              'header_params': int(header_lib.param_count(cfg.spec, a, n)),
              'state': nas.init_state(cfg, k, l, n, arch=a)}
             for a, k, l, n in zip(archs, keys, limits, cells)]
  states = [f['state'] for f in found]
  if archs is None and h.final_weights == 'scratch':
    # Seeded by device id, not list position: a device's header does not
    # depend on which devices are searched beside it.
    states = [s._replace(child=nas.init_child(cfg, 1000 + d))
              for d, s in zip(device_ids, states)]
  tuned = finetune(config, cfg, states, data, sizes, keys, h.finetune_epochs)
  out = []
  for d, (f, (state, lr, val)) in enumerate(zip(found, tuned)):
    out.append(rounds.DeviceHeader(
        device=device_ids[d], edge=edge_ids[d], state=state, lr=lr,
        data=data[d], sizes=sizes[d],
        result={'arch': f['arch'].tolist(), 'n_layers': cells[d],
                'nas_header_params': f['header_params'],
                'search_val_accuracy': f['val_accuracy'],
                'val_accuracy': val, 'finetune_lr': lr,
                'history': f['history']}))
  test = rounds.test_accuracy(cfg, out, h.batch_size, strategy)
  for d, acc in zip(out, test):
    d.result['test_accuracy'] = float(acc)
  return out


def baseline_accuracies(config, locals_, num_classes: int, seed: int) -> dict:
  """Every fixed head on every device, for the same epochs as the NAS header.

  Each head gets its best learning rate from `baselines.learning_rates`, by
  mean local validation accuracy (the NAS header also selects on validation).
  """
  h = config.header
  sizes = {'mlp': dict(hidden=h.num_channels * 2),
           'mixer': dict(token_hidden=h.num_channels // 2,
                         channel_hidden=h.num_channels * 2),
           'cnn_project': dict(channels=h.num_channels)}
  out = {}
  for kind in config.baselines.kinds:
    runs = [heads.train_and_test(
        kind, num_classes, locals_, epochs=h.search_epochs + h.finetune_epochs,
        batch_size=h.batch_size, learning_rate=lr, seed=seed,
        strategy=engine.options(config), **sizes.get(kind, {}))
            for lr in config.baselines.learning_rates]
    best = max(range(len(runs)),
               key=lambda i: (np.mean(runs[i]['val_accuracy']), -i))
    out[kind] = dict(runs[best],
                     learning_rate=config.baselines.learning_rates[best])
  return out
