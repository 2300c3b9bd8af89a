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

An epoch is ceil(n / batch) Adam steps over a fresh permutation of the
device's n training sequences (the last batch filled from the epoch's
start, so every step has one shape). Training is Adam at one learning rate,
its state kept through the rounds: `aggregation.optimizer` must be
'header' (the prototype's SGD rounds are the encoders' alone). A gate also
takes its channel out of its LayerNorm's statistics
(`causal_header.layer_norm`), so a pruned channel has no effect at all.
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
from acme_jax.device import signature as signature_lib
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
  """(optimizer, jitted step): step(params, opt_state, sums, gates, batch,
  arch, lm_params) -> (params, opt_state, sums, loss), batch = (hidden, ids,
  mask), takes one
  Adam step on the header and adds the minibatch's first-order Taylor
  terms t = g * dL/dg to sums = (sum of t^2, sum of t), per gate channel."""
  tx = optax.adam(learning_rate)

  @jax.jit
  def step(params, opt_state, sums, gates, batch, arch, lm_params):
    hidden, ids, mask = batch
    lm_params = jax.lax.stop_gradient(lm_params)

    def loss_fn(p, g):
      logits = lm_head(causal_header.apply(p, hidden, arch, g), *lm_params)
      return plm.lm_loss(logits, ids, mask)

    loss, (grads, gate_grads) = jax.value_and_grad(loss_fn, (0, 1))(
        params, gates)
    updates, opt_state = tx.update(grads, opt_state, params)
    taylor = jax.tree.map(jnp.multiply, gates, gate_grads)
    squared, linear = sums
    sums = (jax.tree.map(lambda s, t: s + t ** 2, squared, taylor),
            jax.tree.map(jnp.add, linear, taylor))
    return optax.apply_updates(params, updates), opt_state, sums, loss

  return tx, step


def epoch_batches(n: int, batch_size: int, rng) -> list:
  """ceil(n / batch) row-index batches covering a permutation of n rows,
  the last filled from the permutation's start."""
  order = rng.permutation(n)
  steps = -(-n // batch_size)
  order = np.concatenate([order] * (-(-steps * batch_size // n)))
  return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


# --------------------------------------------------------------- signatures


def token_histogram(ids, mask, vocab_size: int) -> np.ndarray:
  """(V,) float32: the share of each token id among the real tokens."""
  ids = np.asarray(ids)[np.asarray(mask) > 0]
  return signature_lib.histogram_signature(ids, vocab_size).astype(
      np.float32)


def feature_signature(hidden, mask) -> np.ndarray:
  """(D,) float32: the mean over the real tokens of the final hidden states,
  each token's divided by its RMS. One fixed-size vector per device, so JS
  compares it entry by entry and W1 its values, as for any device."""
  h = np.asarray(hidden, np.float32)
  m = np.asarray(mask, np.float32)[..., None]
  h = h / np.asarray(causal_header.token_rms(h))
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
    """`epochs` epochs of Adam steps on d's training text; returns (d
    trained, {'squared': the mean over its steps of the Taylor terms
    squared, 'abs_sum': the magnitude of their mean}), as
    `state.importance` for the encoders' headers."""
    rng = np.random.default_rng((self.local.seed, d.device, r, phase))
    params, opt_state = d.params, d.opt_state
    gates = jax.tree.map(jnp.asarray, d.gates)
    zeros = jax.tree.map(jnp.zeros_like, gates)
    sums, steps = (zeros, zeros), 0
    for _ in range(epochs):
      for rows in epoch_batches(len(d.train[1]), self.local.batch_size, rng):
        params, opt_state, sums, _ = self.step(
            params, opt_state, sums, gates,
            tuple(np.asarray(a)[rows] for a in d.train), d.arch,
            self.lm_params)
        steps += 1
    scale = 1.0 / max(steps, 1)
    importance = {
        'squared': jax.tree.map(lambda v: np.asarray(v) * scale, sums[0]),
        'abs_sum': jax.tree.map(lambda v: np.abs(np.asarray(v)) * scale,
                                sums[1])}
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
    criterion = acme.smoothed(self.hp, d.criterion, received)
    layers = self.spec.num_layers
    gates = prune.prune_gates(
        criterion, prune.active_gates(self.spec, d.arch, layers),
        self.hp.ratio_after(r), d.gates, prunable=prune.active_gates(
            self.spec, d.arch, layers,
            separable_only=self.hp.prune_set == 'separable'))
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
  if hp.optimizer != 'header':
    raise ValueError(f'rounds on language-model headers train with Adam '
                     f'(aggregation.optimizer header), not {hp.optimizer!r}')
  clients = LMClients(hp, local, devices, lm_head, lm_params)
  _, history = algorithm_lib.run(acme.algorithm(hp), clients)
  return clients.devices, history
