"""One device's side of ACME's loop, from its own workdir (docs/method.md 5, 6).

The networked mode runs each device as its own process (a Flower SuperNode
whose ClientApp starts afresh for every message), so every step here loads
what the device holds from its workdir, calls the in-process stages on this
one device, and saves before it answers. Nothing leaves the device but the
ledger's records: its label histogram, data signature, importances and
closing metrics.

Every step is idempotent: a step asked again (an edge that restarted, a
reply that was lost) returns the answer it saved the first time.
"""
import dataclasses
import pathlib
import pickle

import jax
import numpy as np

from acme_jax import choices
from acme_jax import streams
from acme_jax import workdir as workdir_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.data import partition
from acme_jax.data import stage as data_stage
from acme_jax.device import features
from acme_jax.device import signature as signature_lib
from acme_jax.device import stage as device_stage
from acme_jax.device import state as state_lib
from acme_jax.federated import acme
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

  def _local(self):
    """(this device's (train, val, test), class count, the supernet's
    description): its share of the data, as the in-process run partitions
    it (the device owns these samples), loaded once and kept."""
    cached = self._load('local')
    if cached is None:
      dataset, _, device_data = data_stage.load(self.config, log=_quiet)
      splits = data_stage.device_splits(
          data_stage.PartitionHparams.from_config(self.config), device_data,
          dataset.num_classes)
      # The model's static fields only (params unused: the device computes
      # with the backbone it received).
      model = cloud_stage.build_model(self.config, dataset,
                                      jax.random.key(self.config.seed))[0]
      cached = (splits[self.id], dataset.num_classes, model)
      self._save('local', cached)
    return cached

  def splits(self):
    return self._local()[0]

  def _num_classes(self) -> int:
    return self._local()[1]

  def _model(self):
    return self._local()[2]

  def _device_hp(self) -> device_stage.DeviceHparams:
    return device_stage.DeviceHparams.from_config(self.config,
                                                  self._num_classes())

  def histogram(self) -> np.ndarray:
    train, _, _ = self.splits()
    return partition.label_histogram(train.labels,
                                     self._num_classes()).astype(np.float32)

  # -------------------------------------------------- backbone, header

  def receive_backbone(self, width: float, depth: float, backbone,
                       reference=None) -> dict:
    """Caches the backbone's features of every local sample (the backbone
    is frozen), the linear probe and, with feature signatures, this
    device's signature through the reference backbone."""
    def compute():
      splits, model = self.splits(), self._model()
      sub = subnet_lib.for_model(model, width, depth)
      tokens = self._tokens(model, backbone, sub, [s.images for s in splits])
      local = device_stage.local_features_from_tokens(model, splits, tokens)
      probe = device_stage.linear_probe(local, self.config.seed)
      aggregation = self.config.aggregation
      if aggregation.signature == 'histogram':
        signature = signature_lib.histogram_signature(splits[0].labels,
                                                      self._num_classes())
      elif aggregation.mode in choices.PERSONALIZED_MODES:
        hp = signature_lib.SignatureHparams.from_config(self.config)
        ref = subnet_lib.for_model(model, *hp.reference)
        cls = features.summary_tokens(model, self._tokens(
            model, reference if reference is not None else backbone, ref,
            [splits[0].images])[0], splits[0].images)
        signature = signature_lib.device_feature_signature(
            hp, cls, splits[0].labels, self.id)
      else:  # the mode never reads a feature signature
        signature = None
      self._save('features', {'local': local, 'width': width, 'depth': depth,
                              'params': subnet_lib.param_count(backbone),
                              'bytes': subnet_lib.param_bytes(backbone),
                              'signature': signature})
      return {'linear_probe_test_accuracy': probe,
              'local_samples': [len(s) for s in splits]}
    return self._once('backbone', compute)

  def _tokens(self, model, backbone, sub, image_sets):
    device_model, params = subnet_lib.as_supernet(model, backbone, sub)
    return [features.backbone_tokens(
        device_model, params, sub, images, self.config.cloud.eval_batch_size,
        source=self.config.header.features_from) for images in image_sets]

  def search_header(self) -> dict:
    """Header NAS within the budget left by the backbone, then fine-tuning
    (the in-process device stage, for this one device)."""
    def compute():
      config, got = self.config, self._load('features')
      hp = self._device_hp()
      key = jax.random.fold_in(jax.random.key(config.seed), streams.DEVICES)
      target, = device_stage.targets(hp, [{
          'device': self.id, 'edge': self.edge, 'budget': self.budget,
          'params': got['params'], 'width_mult': got['width'],
          'depth_mult': got['depth']}], key)
      header, = device_stage.search_headers(hp, [got['local']], [target])
      header = dataclasses.replace(header, signature=got['signature'])
      self._save('header', header)
      r = header.result
      return {'header_arch': r['arch'], 'header_cells': r['n_layers'],
              'nas_header_params': r['nas_header_params'],
              'nas_test_accuracy': r['test_accuracy'],
              'finetune_lr': r['finetune_lr']}
    return self._once('header', compute)

  # ------------------------------------------------------------- rounds

  def _clients(self) -> acme.EngineClients:
    """This device alone as the rounds' clients (the in-process device
    side of a round, run here)."""
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(self.config.seed), streams.DEVICES),
        streams.ROUNDS)
    return acme.EngineClients(acme.RoundsHparams.from_config(self.config),
                              self._device_hp().nas, [self._load('header')],
                              key)

  def train_round(self, r: int, introduce: bool = False) -> dict:
    """Round `r`'s local training; returns the importances for the edge
    (and, introducing itself, its signature and header layout)."""
    def compute():
      clients = self._clients()
      report = clients.train(r, [self.id],
                             {self.id} if introduce else set())[self.id]
      self._save('header', clients.devices[0])
      return {'importance': report.importance,
              'train_samples': report.train_samples,
              'signature': report.signature, 'layout': report.layout}
    return self._once(f'train_{r}', compute)

  def prune_round(self, r: int, aggregated) -> dict:
    """Round `r`'s pruning with the edge's aggregated importances (None:
    no pruning, `wo_pruning`), then fine-tuning with the gates fixed."""
    def compute():
      clients = self._clients()
      clients.finetune(r, [self.id], None if aggregated is None
                       else {self.id: aggregated})
      self._save('header', clients.devices[0])
      if aggregated is not None:
        digests = self._load('digests') or {}
        digests[r] = state_lib.digest(
            self._load(f'reply_train_{r}')['importance'])
        self._save('digests', digests)
      return {'round': r}
    return self._once(f'prune_{r}', compute)

  def metrics(self) -> dict:
    """The closing metrics: test accuracy and total parameters (to the
    edge), and this device's full record (kept in its workdir)."""
    header, hp = self._load('header'), self._device_hp()
    got = self._load('features')
    acc, = state_lib.test_accuracy(hp.nas, [header], hp.strategy)
    n = header.header_params(hp.nas.spec)
    digests = self._load('digests') or {}
    record = dict(
        device=self.id, edge=self.edge, budget=self.budget,
        width_mult=got['width'], depth_mult=got['depth'],
        params=got['params'], bytes=got['bytes'], header_params=n,
        total_params=got['params'] + n,
        test_accuracy=float(acc),
        importance_sha256=[digests[r] for r in sorted(digests)],
        gate_channels_live=state_lib.live_gate_channels(header),
        label_histogram=self.histogram().astype(int).tolist(),
        **self._load('reply_backbone'), **self._load('reply_header'))
    workdir_lib.atomic_write_json(self.dir / 'record.json', record)
    return record


def _quiet(*_):
  pass
