"""One device's side of ACME's loop, from its own workdir (ACME.md 5, 6).

The networked mode runs each device as its own process (a Flower SuperNode
whose ClientApp starts afresh for every message), so every step here loads
what the device holds from its workdir, calls the in-process stages on this
one device, and saves before it answers. Nothing leaves the device but the
ledger's records: its label histogram, data signature, importances and
closing metrics.

Every step is idempotent: a step asked again (an edge that restarted, a
reply that was lost) returns the answer it saved the first time.
"""
import pathlib
import pickle

import jax
import numpy as np

from acme_jax import device_stages
from acme_jax import stages
from acme_jax import workdir as workdir_lib
from acme_jax.data import partition
from acme_jax.device import customize, features
from acme_jax.edge import rounds, similarity
from acme_jax.models import subnet as subnet_lib


class Device:
  """Device `device_id` of `config`, keeping its state under `workdir`."""

  def __init__(self, config, workdir, device_id: int, edge_id: int,
               budget: int):
    self.config = config
    self.dir = pathlib.Path(workdir)
    self.dir.mkdir(parents=True, exist_ok=True)
    self.id, self.edge, self.budget = int(device_id), int(edge_id), int(budget)

  # ------------------------------------------------------------ storage

  def _load(self, name):
    path = self.dir / f'{name}.pkl'
    return pickle.loads(path.read_bytes()) if path.exists() else None

  def _save(self, name, value):
    workdir_lib.atomic_write_bytes(self.dir / f'{name}.pkl',
                                   pickle.dumps(value))

  def _once(self, step: str, compute):
    """`compute()`'s answer for `step`, computed at most once."""
    saved = self._load(f'reply_{step}')
    if saved is None:
      saved = compute()
      self._save(f'reply_{step}', saved)
    return saved

  # --------------------------------------------------------------- data

  def splits(self):
    """This device's (train, val, test): its share of the data, as the
    in-process run partitions it (the device owns these samples)."""
    cached = self._load('splits')
    if cached is None:
      dataset, _, device_data = stages.load_data(self.config, log=_quiet)
      all_splits = device_stages.device_splits(
          self.config, device_data, stages.num_devices(self.config),
          dataset.num_classes)
      cached = (all_splits[self.id], dataset.num_classes)
      self._save('splits', cached)
    return cached

  def histogram(self) -> np.ndarray:
    (train, _, _), num_classes = self.splits()
    return partition.label_histogram(train.labels,
                                     num_classes).astype(np.float32)

  # -------------------------------------------------- backbone, header

  def receive_backbone(self, width: float, depth: float, backbone,
                       reference=None) -> dict:
    """Caches the backbone's features of every local sample (the backbone
    is frozen), the linear probe and, with feature signatures, this
    device's signature through the reference backbone."""
    def compute():
      splits, _ = self.splits()
      model = self._model()
      sub = subnet_lib.for_model(model, width, depth)
      tokens = self._tokens(model, backbone, sub, [s.images for s in splits])
      local = customize.local_features_from_tokens(model, splits, tokens)
      probe = features.linear_probe_accuracy(
          tokens[0][:, 0], splits[0].labels, tokens[2][:, 0],
          splits[2].labels, self.config.seed)
      if self.config.aggregation.signature == 'histogram':
        signature = similarity.histogram_signature(splits[0].labels,
                                                   self._num_classes())
      elif rounds.is_personalized(self.config.aggregation.mode):
        ref = device_stages.reference_subnet(self.config, model)
        cls = self._tokens(model, reference if reference is not None
                           else backbone, ref, [splits[0].images])[0][:, 0]
        signature = device_stages.feature_signature(
            self.config, cls, splits[0].labels, self.config.seed + self.id)
      else:  # the mode never reads a feature signature
        signature = None
      self._save('features', {'local': local, 'width': width, 'depth': depth,
                              'params': subnet_lib.param_count(backbone),
                              'bytes': subnet_lib.param_bytes(backbone),
                              'signature': signature})
      return {'linear_probe_test_accuracy': probe,
              'local_samples': [len(s) for s in splits]}
    return self._once('backbone', compute)

  def _num_classes(self) -> int:
    return self.splits()[1]

  def _model(self):
    """The supernet's description (its static fields; params unused: the
    device computes with the backbone it received)."""
    dataset, _, _ = stages.load_data(self.config, log=_quiet)
    return stages.build_model(self.config, dataset,
                              jax.random.key(self.config.seed))[0]

  def _tokens(self, model, backbone, sub, image_sets):
    device_model, params = subnet_lib.as_supernet(model, backbone, sub)
    return [features.backbone_tokens(
        device_model, params, sub, images, self.config.cloud.eval_batch_size,
        source=self.config.header.features_from) for images in image_sets]

  def search_header(self) -> dict:
    """Header NAS within the budget left by the backbone, then fine-tuning
    (the in-process `device_stages.device_headers` for this one device)."""
    def compute():
      config, got = self.config, self._load('features')
      key = jax.random.fold_in(jax.random.key(config.seed), stages.DEVICES)
      header, = customize.search_headers(
          config, [got['local']], self._num_classes(),
          [jax.random.fold_in(jax.random.fold_in(key, 0), self.id)],
          [self.budget - got['params']],
          [customize.header_cells(config, got['width'], got['depth'])],
          [self.id], [self.edge])
      header.signature = got['signature']
      self._save('header', header)
      r = header.result
      return {'header_arch': r['arch'], 'header_cells': r['n_layers'],
              'nas_header_params': r['nas_header_params'],
              'nas_test_accuracy': r['test_accuracy'],
              'finetune_lr': r['finetune_lr']}
    return self._once('header', compute)

  # ------------------------------------------------------------- rounds

  def _rounds_args(self):
    header = self._load('header')
    cfg = customize.nas_config(self.config, header.data.x.shape,
                               self._num_classes())
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(self.config.seed), stages.DEVICES),
        1)
    return header, cfg, customize.schedule(self.config), key

  def signature(self):
    """This device's data signature (float32), None without features."""
    got = self._load('features')
    return (None if got['signature'] is None else
            np.asarray(got['signature'], np.float32))

  def train_round(self, r: int) -> dict:
    """Round `r`'s local training; returns the importances for the edge."""
    def compute():
      header, cfg, schedule, key = self._rounds_args()
      a = self.config.aggregation
      train_key, finetune_key = rounds.round_keys(key, r)
      imp, = rounds.train(cfg, schedule, [header], a.local_epochs, train_key,
                          device_stages.engine.options(self.config))
      if a.mode == 'wo_pruning':
        rounds.train(cfg, schedule, [header], a.finetune_epochs, finetune_key,
                     device_stages.engine.options(self.config))
      self._save('header', header)
      return {'importance': jax.tree.map(
          lambda x: np.asarray(x, np.float32), imp[a.taylor]),
              'train_samples': header.sizes['train']}
    return self._once(f'train_{r}', compute)

  def prune_round(self, r: int, aggregated) -> dict:
    """Round `r`'s pruning with the edge's aggregated importances, then
    fine-tuning with the gates fixed."""
    def compute():
      header, cfg, schedule, key = self._rounds_args()
      a = self.config.aggregation
      rounds.prune_device(cfg, header, aggregated,
                          rounds.prune_ratio_at(a.prune_ratio, r, a.rounds))
      rounds.train(cfg, schedule, [header], a.finetune_epochs,
                   rounds.round_keys(key, r)[1],
                   device_stages.engine.options(self.config))
      self._save('header', header)
      digests = self._load('digests') or {}
      digests[r] = rounds.digest(self._load(f'reply_train_{r}')['importance'])
      self._save('digests', digests)
      return {'round': r}
    return self._once(f'prune_{r}', compute)

  def metrics(self) -> dict:
    """The closing metrics: test accuracy and total parameters (to the
    edge), and this device's full record (kept in its workdir)."""
    header, cfg, _, _ = self._rounds_args()
    got = self._load('features')
    acc, = rounds.test_accuracy(cfg, [header], self.config.header.batch_size,
                                device_stages.engine.options(self.config))
    n = header.header_params(cfg.spec)
    digests = self._load('digests') or {}
    record = dict(
        device=self.id, edge=self.edge, budget=self.budget,
        width_mult=got['width'], depth_mult=got['depth'],
        params=got['params'], bytes=got['bytes'], header_params=n,
        total_params=got['params'] + n,
        test_accuracy=float(acc),
        importance_sha256=[digests[r] for r in sorted(digests)],
        gate_channels_live=int(sum(np.sum(np.asarray(g) > 0)
                                   for g in jax.tree.leaves(header.gates))),
        label_histogram=self.histogram().astype(int).tolist(),
        **self._load('reply_backbone'), **self._load('reply_header'))
    workdir_lib.atomic_write_json(self.dir / 'record.json', record)
    return record


def _quiet(*_):
  pass
