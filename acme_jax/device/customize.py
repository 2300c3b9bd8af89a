"""The device side of the loop: cached backbone features and the header search.

Glue between the config and the device modules (features, nas, heads), shared
by the main flow and the comparison experiments in the pipeline.
"""
import jax
import numpy as np

from acme_jax.device import features, heads
from acme_jax.device import header as header_lib
from acme_jax.device import nas
from acme_jax.models import subnet as subnet_lib


def local_features(model, supernet, sub: subnet_lib.SubnetConfig,
                   splits) -> features.LocalFeatures:
  """Runs the frozen backbone once over a device's train/val/test data."""
  masks = subnet_lib.masks(model, sub)
  tokens = [features.backbone_tokens(model, supernet, masks, s.images)
            for s in splits]
  grid = features.patch_grid(model, splits[0].images.shape[1:])
  grids = [features.token_grid(t, grid) for t in tokens]
  train, val, test = splits
  return features.LocalFeatures(grids[0], train.labels, grids[1], val.labels, grids[2],
                       test.labels, tokens[0][:, 0])


def header_layers(config, width_mult: float, depth_mult: float) -> int:
  if config.header.num_layers:
    return config.header.num_layers
  return header_lib.default_num_layers(width_mult, depth_mult)


def search_header(config, local: features.LocalFeatures, num_classes: int, key,
                  max_header_params: int, num_layers: int) -> dict:
  """NAS on cached features, then fine-tuning of the best architecture."""
  h = config.header
  search_key, finetune_key = jax.random.split(key)
  result = nas.search(
      local.x_train, local.y_train, local.x_val, local.y_val, num_classes,
      search_key, num_channels=h.num_channels, num_nodes=h.num_nodes,
      num_layers=num_layers, max_header_params=max_header_params,
      epochs=h.search_epochs, batch_size=h.batch_size, lr_max=h.lr_max,
      lr_min=h.lr_min, lr_period=h.lr_period,
      lr_period_mult=h.lr_period_mult, momentum=h.momentum,
      weight_decay=h.weight_decay, grad_clip=h.grad_clip,
      dropout_rate=h.dropout_rate, controller_hidden=h.controller_hidden,
      temperature=h.temperature, tanh_constant=h.tanh_constant,
      controller_lr=h.controller_lr,
      controller_steps_per_epoch=h.controller_steps_per_epoch,
      entropy_weight=h.entropy_weight, baseline_decay=h.baseline_decay,
      num_final_archs=h.num_final_archs)
  # Fine-tune the best architecture at each configured peak learning rate and
  # keep the one best on local validation (the fixed heads get the same).
  tuned = [nas.finetune(result, local.x_train, local.y_train, local.x_val,
                        local.y_val, finetune_key, epochs=h.finetune_epochs,
                        batch_size=h.batch_size, lr_max=lr, lr_min=h.lr_min,
                        momentum=h.momentum, weight_decay=h.weight_decay,
                        grad_clip=h.grad_clip)
           for lr in h.finetune_lrs]
  best = max(range(len(tuned)), key=lambda i: (tuned[i]['val_accuracy'], -i))
  result = dict(tuned[best], finetune_lr=h.finetune_lrs[best])
  steps = nas.child_steps(result['header'], h.momentum, h.weight_decay,
                          h.grad_clip)
  gates = np.ones((h.num_channels,), np.float32)
  result['test_accuracy'] = nas.accuracy(steps, result['state'],
                                         np.asarray(result['arch'], np.int32),
                                         gates, local.x_test, local.y_test)
  return result


def train_kwargs(config) -> dict:
  h = config.header
  return dict(batch_size=h.batch_size, momentum=h.momentum,
              weight_decay=h.weight_decay, grad_clip=h.grad_clip)


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
        strategy=config.engine.strategy, **sizes.get(kind, {}))
            for lr in config.baselines.learning_rates]
    best = max(range(len(runs)),
               key=lambda i: (np.mean(runs[i]['val_accuracy']), -i))
    out[kind] = dict(runs[best],
                     learning_rate=config.baselines.learning_rates[best])
  return out
