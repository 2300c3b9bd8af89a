"""ACME's aggregation rounds on personal language-model headers.

The device side of `federated/acme.py`'s rounds (`acme.Clients`) for the
causal headers of personal language modelling (`device/personal_lm.py`), so
the same edge step aggregates them: each round a device trains its gated
header on its own text (next-token loss) while it sums the first-order
Taylor importance of every gate channel, (g dL/dg)^2 per minibatch (NVlabs'
criterion, as the encoders' rounds); the edge mixes the importances of the
devices that share a channel, with the mode's weights (similarity of the
devices' signatures in ACME's personalized modes); the device smooths what
it receives (`criterion_momentum`), turns off its lowest channels until
`prune_ratio * (r + 1) / rounds` of its prunable ones are off, and
fine-tunes with the gates fixed.

The causal header's gates have `header.gate_shapes`' layout
(`causal_header.gate_shapes`), so `prune.shared_gates` says which channels
two devices share: the same start (all devices of a run start their final
training from one draw), the same layer, and the same input and sep-conv op
in a branch.

Signatures (`aggregation.signature`): 'histogram' is the device's
normalised token histogram over the vocabulary (what it says about its text
without the text); 'features' the mean of its training text's final hidden
states over the real tokens, each token's divided by its RMS (the backbone
is the same on every device, so these are comparable; a (D,) vector, since
JS compares entry by entry and sequences have no order to align them by).

Training is Adam at one learning rate, its state kept through the rounds
(`aggregation.optimizer` and the header's schedule are the encoders'
headers' and do not apply). Gating does not shrink a LayerNorm's
statistics, so a pruned header is reported by its live gate channels, not
a dense extraction.
"""
import dataclasses
import functools
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from acme_jax.device import causal_header
from acme_jax.device import personal_lm as plm
from acme_jax.device import prune
from acme_jax.device import state as state_lib
from acme_jax.federated import acme
from acme_jax.federated import algorithm as algorithm_lib


def gated_apply(params, hidden, arch_and_gates):
  """`causal_header.apply` with the gates riding in the arch slot, so
  `personal_lm.trainer` and `evaluate` serve a gated header unchanged."""
  arch, gates = arch_and_gates
  return causal_header.apply(params, hidden, arch, gates)


@functools.lru_cache(maxsize=None)
def taylor_step(lm_head: Callable, learning_rate: float):
  """Jitted (params, opt_state, gates, hidden, ids, mask, arch, lm_params)
  -> (params, opt_state, loss, g * dL/dg): one Adam step on the header and
  its gates' first-order Taylor terms on that minibatch."""
  tx = optax.adam(learning_rate)

  @jax.jit
  def step(params, opt_state, gates, hidden, ids, mask, arch, lm_params):
    lm_params = jax.lax.stop_gradient(lm_params)

    def loss_fn(p, g):
      logits = lm_head(causal_header.apply(p, hidden, arch, g), *lm_params)
      return plm.lm_loss(logits, ids, mask)

    loss, (grads, gate_grads) = jax.value_and_grad(loss_fn, (0, 1))(
        params, gates)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, loss,
            jax.tree.map(jnp.multiply, gates, gate_grads))

  return tx, step


# --------------------------------------------------------------- signatures


def token_histogram(ids, mask, vocab_size: int) -> np.ndarray:
  """(V,) float32: the share of each token id among the real tokens."""
  ids, mask = np.asarray(ids), np.asarray(mask) > 0
  counts = np.bincount(ids[mask].ravel(), minlength=vocab_size)[:vocab_size]
  return (counts / max(counts.sum(), 1)).astype(np.float32)


def feature_signature(hidden, mask) -> np.ndarray:
  """(D,) float32: the mean over the real tokens of the final hidden states,
  each token's divided by its RMS. One fixed-size vector per device, so JS
  compares it entry by entry and W1 its values, as for any device."""
  h = np.asarray(hidden, np.float32)
  m = np.asarray(mask, np.float32)[..., None]
  h = h / np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + 1e-6)
  return (np.sum(h * m, axis=(0, 1)) / max(float(m.sum()), 1.0)).astype(
      np.float32)


# ------------------------------------------------------------------ devices


@dataclasses.dataclass
class LMDevice:
  """One device's header through the rounds."""
  device: int
  edge: int
  arch: np.ndarray              # (N, 4), its searched architecture
  params: dict                  # the trained header
  start: int                    # the seed its weights started from
  train: tuple                  # (hidden, ids, mask) of its training text
  signature: np.ndarray
  gates: Optional[dict] = None  # None: all on (set by LMClients)
  criterion: Optional[dict] = None
  opt_state: object = None


@dataclasses.dataclass(frozen=True)
class LocalHparams:
  """How a device trains in the rounds."""
  steps_per_epoch: int
  batch_size: int
  learning_rate: float
  seed: int


class LMClients(acme.Clients):
  """The devices' causal headers, trained in this process one after the
  other (`personal_lm`'s loop: the searched headers differ per device)."""

  def __init__(self, hp: acme.RoundsHparams, local: LocalHparams,
               devices: Sequence[LMDevice], lm_head: Callable, lm_params):
    self.hp, self.local = hp, local
    self.spec = hp.gates
    self.lm_params = lm_params
    self.tx, self.step = taylor_step(lm_head, local.learning_rate)
    self.devices = {d.device: dataclasses.replace(
        d, gates=(causal_header.full_gates(self.spec) if d.gates is None
                  else d.gates),
        opt_state=self.tx.init(d.params)) for d in devices}

  def members(self) -> List[int]:
    return sorted(self.devices)

  def layout(self, d: LMDevice) -> prune.Layout:
    return prune.Layout(d.start, self.spec.num_layers, d.arch)

  def _train(self, d: LMDevice, epochs: int, r: int, phase: int):
    """`epochs` of Adam steps on d's training text; returns (d trained,
    the mean over its steps of the Taylor terms squared and of their sum's
    magnitude)."""
    rng = np.random.default_rng((self.local.seed, d.device, r, phase))
    params, opt_state = d.params, d.opt_state
    gates = jax.tree.map(jnp.asarray, d.gates)
    squared = linear = jax.tree.map(jnp.zeros_like, gates)
    steps = epochs * self.local.steps_per_epoch
    n = len(d.train[1])
    for _ in range(steps):
      rows = rng.choice(n, self.local.batch_size,
                        replace=n < self.local.batch_size)
      params, opt_state, _, taylor = self.step(
          params, opt_state, gates, *(np.asarray(a)[rows] for a in d.train),
          d.arch, self.lm_params)
      squared = jax.tree.map(lambda s, t: s + t ** 2, squared, taylor)
      linear = jax.tree.map(jnp.add, linear, taylor)
    scale = 1.0 / max(steps, 1)
    importance = {
        'squared': jax.tree.map(lambda v: np.asarray(v) * scale, squared),
        'abs_sum': jax.tree.map(lambda v: np.abs(np.asarray(v)) * scale,
                                linear)}
    return dataclasses.replace(d, params=params,
                               opt_state=opt_state), importance

  def train(self, r, devices, introduce) -> Dict[int, acme.Report]:
    reports = {}
    for i in devices:
      d, importance = self._train(self.devices[i], self.hp.local_epochs, r, 0)
      self.devices[i] = d
      first = i in introduce
      reports[i] = acme.Report(
          edge=d.edge, importance=state_lib.float32(importance[self.hp.taylor]),
          train_samples=len(d.train[1]),
          signature=(np.asarray(d.signature, np.float32)
                     if first and self.hp.personalized else None),
          layout=self.layout(d).pack() if first else None)
    return reports

  def finetune(self, r, devices, aggregated) -> List[int]:
    hp = self.hp
    if aggregated is not None:
      for i in devices:
        if i in aggregated:
          self.devices[i] = self._pruned(self.devices[i], aggregated[i], r)
    if r == hp.rounds - 1 and not hp.finetune_last:
      return sorted(devices)
    for i in devices:
      self.devices[i] = self._train(self.devices[i], hp.finetune_epochs,
                                    r, 1)[0]
    return sorted(devices)

  def _pruned(self, d: LMDevice, received, r: int) -> LMDevice:
    m = self.hp.criterion_momentum
    criterion = (received if d.criterion is None or m == 0 else
                 jax.tree.map(lambda old, new: m * old + (1 - m) * new,
                              d.criterion, received))
    active = causal_header.active_gates(self.spec, d.arch)
    prunable = dict(active)
    if self.hp.prune_set == 'separable':
      prunable['stem'] = np.zeros_like(active['stem'])
      prunable['final'] = np.zeros_like(active['final'])
    gates = prune.prune_gates(criterion, active, self.hp.ratio_after(r),
                              d.gates, prunable=prunable)
    return dataclasses.replace(d, gates=gates, criterion=criterion)


def live_share(spec: causal_header.Spec, d: LMDevice) -> float:
  """The share of the gate channels its architecture uses that are on."""
  active = causal_header.active_gates(spec, d.arch)
  on = sum(float(np.sum((np.asarray(g) > 0) * a))
           for g, a in zip(jax.tree.leaves(d.gates), jax.tree.leaves(active)))
  return on / sum(float(np.sum(a)) for a in jax.tree.leaves(active))


def run(hp: acme.RoundsHparams, local: LocalHparams,
        devices: Sequence[LMDevice], lm_head: Callable, lm_params=()):
  """`hp.rounds` rounds of `hp.mode` (hp.gates: the causal header's Spec)
  on `devices`, through the federated driver. Returns the devices after
  them (id -> LMDevice) and, per device, its diagnostics per round."""
  if not isinstance(hp.gates, causal_header.Spec):
    raise TypeError('lm_rounds.run needs hp.gates = causal_header.Spec')
  clients = LMClients(hp, local, devices, lm_head, lm_params)
  _, history = algorithm_lib.run(acme.algorithm(hp), clients)
  return clients.devices, history
