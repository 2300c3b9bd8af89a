"""The device tier of the loop (docs/method.md 5): each device's cached backbone
features, the header NAS within the budget its backbone leaves, training of
the found architecture, and the fixed heads a header is compared with.

`DeviceHparams` is config.header (and the engine section) turned once into
the typed values the device modules read; everything below takes it.
"""
import dataclasses
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np

from acme_jax import sizes
from acme_jax import streams
from acme_jax.device import controller as controller_lib
from acme_jax.device import features, heads
from acme_jax.device import header as header_lib
from acme_jax.device import local_data, nas
from acme_jax.device import child as child_lib
from acme_jax.device import state as state_lib
from acme_jax.models import subnet as subnet_lib
from acme_jax.parallel import engine


@dataclasses.dataclass(frozen=True)
class FixedHeadsHparams:
  """The fixed heads (config.baselines): AdamW for as many epochs as the
  header's search + fine-tuning, each at its best rate on local validation."""
  kinds: Tuple[str, ...]
  learning_rates: Tuple[float, ...]
  epochs: int
  batch_size: int
  num_channels: int        # the header's C: the heads' hidden sizes follow it


def header_spec(config, num_classes: int) -> header_lib.Spec:
  """The devices' header search space (config.header) over the features of
  the config's backbone."""
  feature_shape = sizes.feature_shape(config)
  return header_lib.Spec(num_classes=num_classes,
                         feature_dim=int(feature_shape[-1]),
                         grid_rank=len(feature_shape) - 2,
                         num_channels=config.header.num_channels,
                         num_nodes=config.header.num_nodes,
                         max_layers=sizes.max_header_cells(config),
                         dropout_rate=config.header.dropout_rate)


@dataclasses.dataclass(frozen=True)
class DeviceHparams:
  """config.header and config.engine, typed: one compile per `nas`."""
  nas: child_lib.NasConfig
  search: nas.SearchHparams
  schedule: state_lib.Schedule        # fine-tuning and the rounds' training
  finetune_epochs: int
  finetune_lrs: Tuple[float, ...]
  final_weights: str            # choices.FINAL_WEIGHTS
  num_layers: int               # 0: the prototype's rule
  features_from: str            # choices.FEATURE_SOURCES
  feature_batch_size: int
  strategy: engine.Options
  fixed_heads: FixedHeadsHparams

  @classmethod
  def from_config(cls, config, num_classes: int,
                  fleet=None) -> 'DeviceHparams':
    """`fleet` (a `hardware.fleet.Fleet`): the headers' search keeps within
    the devices' latency and memory budgets too."""
    header = config.header
    spec = header_spec(config, num_classes)
    ctrl = controller_lib.Controller(header.num_nodes,
                                     hidden=header.controller_hidden,
                                     temperature=header.temperature,
                                     tanh_constant=header.tanh_constant,
                                     op_tanh_reduce=header.op_tanh_reduce)
    nas_config = child_lib.NasConfig(spec,
                               ctrl,
                               momentum=header.momentum,
                               weight_decay=header.weight_decay,
                               grad_clip=header.grad_clip,
                               controller_lr=header.controller_lr,
                               entropy_weight=header.entropy_weight,
                               baseline_decay=header.baseline_decay,
                               reward_scale=header.reward_scale,
                               header_cost=(None if fleet is None
                                            else fleet.header_cost()))
    search = nas.SearchHparams(
        epochs=header.search_epochs,
        batch_size=header.batch_size,
        lr_max=header.lr_max,
        lr_min=header.lr_min,
        lr_period=header.lr_period,
        lr_period_mult=header.lr_period_mult,
        controller_steps_per_epoch=header.controller_steps_per_epoch,
        derive=header.derive,
        num_final_archs=header.num_final_archs)
    baselines = config.baselines
    return cls(nas=nas_config,
               search=search,
               schedule=state_lib.Schedule(header.batch_size, header.lr_min,
                                           header.lr_period,
                                           header.lr_period_mult,
                                           header.final_schedule),
               finetune_epochs=header.finetune_epochs,
               finetune_lrs=tuple(header.finetune_lrs),
               final_weights=header.final_weights,
               num_layers=header.num_layers,
               features_from=header.features_from,
               feature_batch_size=config.cloud.eval_batch_size,
               strategy=engine.options(config),
               fixed_heads=FixedHeadsHparams(
                   kinds=tuple(baselines.kinds),
                   learning_rates=tuple(baselines.learning_rates),
                   epochs=header.finetune_epochs,
                   batch_size=header.batch_size,
                   num_channels=header.num_channels))

  @property
  def batch_size(self) -> int:
    return self.schedule.batch_size


class Target(NamedTuple):
  """What one device's header search needs besides its data: its id and
  edge, its PRNG key, the parameters its budget leaves the header, its
  header's cell count, the seed of its fresh header weights (one per
  edge, so the edge's devices' gate channels correspond) and the (ms,
  bytes) its latency and memory budgets leave the header on the latency
  table's machine (None: no such budgets)."""
  device: int
  edge: int
  key: jax.Array
  limit: int
  cells: int
  init_seed: int
  cost_limit: Any = None


def header_init_seed(key, edge: int) -> int:
  """The seed every header of `edge` starts from, drawn from a device-stage
  key (a repeat's, in the experiments: each repeat redraws it)."""
  return int(jax.random.randint(
      jax.random.fold_in(jax.random.fold_in(key, streams.HEADER_INIT), edge),
      (), 0, 2**31 - 1))


def targets(hp: 'DeviceHparams', records, key) -> List[Target]:
  """Each device's `Target` from its edge record (device, edge, budget,
  backbone params and multipliers) and the device-stage `key`."""
  search = jax.random.fold_in(key, streams.HEADER_SEARCH)
  return [Target(
      device=r['device'], edge=r['edge'],
      key=jax.random.fold_in(search, r['device']),
      limit=r['budget'] - r['params'],
      cells=header_cells(hp.num_layers, r['width_mult'], r['depth_mult']),
      init_seed=header_init_seed(key, r['edge']),
      cost_limit=r.get('header_cost_limit')) for r in records]


# -------------------------------------------------------------- features


def local_features(hp: DeviceHparams, model, supernet,
                   subs: Sequence[subnet_lib.SubnetConfig],
                   device_splits) -> List[features.LocalFeatures]:
  """Every device's cached features (`subs[d]` its backbone, its splits
  `device_splits[d]`), computed in batches across devices: devices with the
  same backbone share one stream of full batches through its static form
  (one compiled program per width), not one padded tail per device."""
  groups = {}
  for d, sub in enumerate(subs):
    groups.setdefault(sub, []).append(d)
  tokens = [None] * len(subs)
  for sub, members in groups.items():
    parts = [s.images for d in members for s in device_splits[d]]
    out = features.backbone_tokens(model, supernet, sub,
                                   np.concatenate(parts),
                                   hp.feature_batch_size,
                                   source=hp.features_from)
    bounds = np.cumsum([0] + [len(p) for p in parts])
    pieces = [out[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    for k, d in enumerate(members):
      tokens[d] = pieces[3 * k:3 * k + 3]
  return [local_features_from_tokens(model, splits, toks)
          for splits, toks in zip(device_splits, tokens)]


def local_features_from_tokens(model, splits,
                               tokens) -> features.LocalFeatures:
  """A device's cached header inputs from its splits' backbone tokens."""
  grid = features.patch_grid(model, splits[0].images.shape[1:])
  grids = [features.header_tokens(model, t, grid) for t in tokens]
  train, val, test = splits
  return features.LocalFeatures(
      grids[0], train.labels, grids[1], val.labels, grids[2], test.labels,
      features.summary_tokens(model, tokens[0], train.images),
      features.summary_tokens(model, tokens[2], test.images))


def linear_probe(local: features.LocalFeatures, seed: int) -> float:
  """Test accuracy of a logistic-regression probe on the backbone's CLS
  features: how much the delivered backbone alone knows of the device's
  data."""
  return features.linear_probe_accuracy(local.cls_train, local.y_train,
                                        local.cls_test, local.y_test, seed)


# ----------------------------------------------------------------- header


def header_cells(num_layers: int, width_mult: float,
                 depth_mult: float) -> int:
  """Cells of a device's header over this backbone: num_layers + 2 (the
  prototype's child; num_layers 0: its rule from the multipliers)."""
  layers = num_layers or header_lib.default_num_layers(width_mult, depth_mult)
  return layers + 2


def _check_budgets(hp: DeviceHparams, targets: Sequence[Target]):
  spec = hp.nas.spec
  for t in targets:
    smallest = int(header_lib.param_count(
        spec, header_lib.smallest_arch(spec.num_nodes), t.cells))
    if t.limit < smallest:
      raise ValueError(f'a header budget of {t.limit} parameters is below '
                       f'the smallest header ({smallest} with {t.cells} '
                       f'cells and {spec.num_channels} channels)')
    if t.cost_limit is not None and hp.nas.header_cost is not None:
      ms, nbytes = (float(v) for v in hp.nas.header_cost(
          spec, header_lib.smallest_arch(spec.num_nodes), t.cells))
      # The slack covers float32 (the search) against the edge's float64.
      if (ms > t.cost_limit[0] * (1 + 1e-5) or
          nbytes > t.cost_limit[1] * (1 + 1e-5)):
        raise ValueError(
            f'device {t.device}: its latency and memory budgets leave the '
            f'header {t.cost_limit[0]:.3g} ms and {t.cost_limit[1]:.3g} '
            f'bytes, below the smallest header ({ms:.3g} ms, {nbytes:.3g} '
            f'bytes predicted)')


def finetune(hp: DeviceHparams, states, padded: local_data.Padded, keys,
             epochs: int):
  """The final training: each state's arch trained `epochs` epochs (the
  schedule annealed to its end) at every `finetune_lrs` peak, keeping per
  device the one best on local validation (ties: the first), the rule
  every compared head follows. Returns [(state, lr, val accuracy)]."""
  candidates = []
  for lr in hp.finetune_lrs:
    tuned = state_lib.train_fixed(
        hp.nas, states, padded,
        [jax.random.fold_in(k, streams.FINETUNE) for k in keys],
        hp.schedule, epochs, lr, hp.strategy)
    val = child_lib.evaluate(hp.nas, tuned, padded, 'val', hp.strategy)
    candidates.append((tuned, lr, val))
  out = []
  for d in range(len(states)):
    tuned, lr, val = max(candidates, key=lambda c: c[2][d])
    out.append((tuned[d], float(lr), float(val[d])))
  return out


def search_headers(hp: DeviceHparams,
                   locals_: Sequence[features.LocalFeatures],
                   targets: Sequence[Target], archs=None,
                   log: Optional[Callable[[str], None]] = None,
                   partial=None) -> List[state_lib.DeviceHeader]:
  """NAS within each device's header budget, then the final training of
  the found architecture: from the search's shared weights (`final_weights
  = 'shared'`, the prototype) or from fresh weights ('scratch', ENAS's
  retraining; the edge's seed, `Target.init_seed`), `finetune_epochs`
  epochs at the best of `finetune_lrs` on local validation. With `archs`
  given, no search: those architectures get the same final training from
  fresh weights (the random-architecture control, ablations). `partial`:
  the search's mid-stage checkpoint (`resume.Partial`).

  Returns the devices' headers, ready for the aggregation rounds, each with
  `.result` = {arch, n_layers, nas_header_params, val_accuracy,
  test_accuracy, finetune_lr, search_val_accuracy, history, child_steps,
  controller_steps, final_train_steps}.
  """
  cfg = hp.nas
  padded = local_data.device_data(locals_)
  _check_budgets(hp, targets)
  keys = [t.key for t in targets]
  if archs is None:
    found = nas.search(cfg, hp.search, padded,
                       [nas.Device(t.key, t.limit, t.cells, t.cost_limit)
                        for t in targets],
                       hp.strategy, log, partial)
  else:
    found = [{'arch': np.asarray(a, np.int32), 'val_accuracy': None,
              'n_layers': t.cells, 'history': [], 'child_steps': 0,
              'controller_steps': 0,
              'header_params': int(header_lib.param_count(cfg.spec, a,
                                                          t.cells)),
              'state': child_lib.init_state(cfg, t.key, t.limit, t.cells,
                                            arch=a, cost_limit=t.cost_limit)}
             for a, t in zip(archs, targets)]
  fresh = archs is not None or hp.final_weights == 'scratch'
  # Fresh weights from the edge's seed (not the device's): every header of
  # an edge starts alike, so their gate channels correspond.
  starts = [t.init_seed if fresh else child_lib.init_seeds(t.key)[0]
            for t in targets]
  states = [f['state'] for f in found]
  if fresh:
    states = [s._replace(child=child_lib.init_child(cfg, seed))
              for s, seed in zip(states, starts)]
  tuned = finetune(hp, states, padded, keys, hp.finetune_epochs)
  out = []
  for d, (t, f, (state, lr, val)) in enumerate(zip(targets, found, tuned)):
    out.append(state_lib.DeviceHeader(
        device=t.device, edge=t.edge, state=state, lr=lr,
        data=padded.data[d], sizes=padded.sizes[d], start=starts[d],
        result={'arch': f['arch'].tolist(), 'n_layers': t.cells,
                'nas_header_params': f['header_params'],
                'search_val_accuracy': f['val_accuracy'],
                'val_accuracy': val, 'finetune_lr': lr,
                'history': f['history'], 'child_steps': f['child_steps'],
                'controller_steps': f['controller_steps'],
                'final_train_steps': state_lib.steps(
                    padded.sizes[d], hp.batch_size, hp.finetune_epochs)}))
  test = state_lib.test_accuracy(cfg, out, hp.strategy)
  for d, acc in zip(out, test):
    d.result['test_accuracy'] = float(acc)
  return out


def random_archs(hp: DeviceHparams, targets: Sequence[Target]) -> list:
  """Per device a uniformly random architecture of the search space within
  its budget (redrawn until it fits): the standard control for NAS."""
  spec = hp.nas.spec
  out = []
  for t in targets:
    key = jax.random.fold_in(t.key, streams.RANDOM_ARCH)
    while True:
      key, sub = jax.random.split(key)
      arch = np.asarray(controller_lib.uniform_arch(sub, spec.num_nodes))
      if bool(child_lib.fits(hp.nas, t.limit, t.cells, t.cost_limit)(arch)):
        out.append(arch)
        break
  return out


# ------------------------------------------------------------ fixed heads


def fixed_heads(hp: DeviceHparams, locals_, seed: int) -> dict:
  """Every fixed head on every device, with the header's final training:
  the same epochs and batch size (so the same steps per device), a
  schedule annealed to its end, and per device the learning rate best on
  local validation (ties: the first). Per head and device: val and test
  accuracy, parameters, the chosen rate and the steps trained."""
  fixed = hp.fixed_heads
  c = fixed.num_channels
  widths = {'mlp': dict(hidden=c * 2),
            'mixer': dict(token_hidden=c // 2, channel_hidden=c * 2),
            'cnn_project': dict(channels=c)}
  out = {}
  for kind in fixed.kinds:
    runs = [heads.train_and_test(
        kind, hp.nas.spec.num_classes, locals_, epochs=fixed.epochs,
        batch_size=fixed.batch_size, learning_rate=lr, seed=seed,
        strategy=hp.strategy, **widths.get(kind, {}))
            for lr in fixed.learning_rates]
    chosen = [max(range(len(runs)),
                  key=lambda i: (runs[i]['val_accuracy'][d], -i))
              for d in range(len(locals_))]
    out[kind] = {field: [runs[i][field][d] for d, i in enumerate(chosen)]
                 for field in ('val_accuracy', 'test_accuracy', 'params',
                               'train_steps')}
    out[kind]['learning_rate'] = [fixed.learning_rates[i] for i in chosen]
  return out
