"""Header search on cached features: the prototype's ENAS loop (docs/method.md 5).

Per epoch (`train_search.py`): the shared child trains one minibatch per
sampled architecture (SGD, momentum 0.9, weight decay 1e-4, learning rate
constant within an epoch from cosine annealing with warm restarts); then the
controller takes REINFORCE steps, each on a batch of local validation data,
with reward = accuracy (in percent, as the prototype) + entropy_weight *
entropy against a moving-average baseline. An architecture whose header would
exceed the device's budget is never trained: the child resamples (up to
`resample_tries` draws, else the cheapest cell) and the controller gets
reward 0 for it.

The final architecture (`derive`): 'prototype' keeps, per epoch, the arch
sampled at the step where the epoch's running train accuracy peaked,
validates it on all local validation data, and returns the best over epochs;
'sample' draws `num_final_archs` archs from the trained controller and keeps
the best on validation (ENAS's derive step). The steps run as `child.py`'s
programs through the client engine, for many devices at once.
"""
import dataclasses
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from acme_jax import choices
from acme_jax import streams
from acme_jax.device import child as child_lib
from acme_jax.device import header as header_lib
from acme_jax.device.local_data import (Padded, index_batches, random_batch,
                                        split_rows)
from acme_jax.parallel import engine

DERIVES = choices.DERIVES


@dataclasses.dataclass(frozen=True)
class SearchHparams:
  epochs: int = 10
  batch_size: int = 128
  lr_max: float = 0.1
  lr_min: float = 5e-4
  lr_period: int = 10
  lr_period_mult: int = 2
  controller_steps_per_epoch: int = 300
  derive: str = 'prototype'
  num_final_archs: int = 10


class Device(NamedTuple):
  """One device's search: its PRNG key, the parameters its header may have,
  the header's cell count and the (ms, bytes) it may take on a latency
  table's machine (None: no such budget)."""
  key: Any
  limit: int
  n_layers: int
  cost_limit: Any = None


def search(cfg: child_lib.NasConfig, hp: SearchHparams, padded: Padded,
           devices: Sequence[Device], strategy: str = 'auto',
           log: Optional[Callable[[str], None]] = None,
           partial=None) -> List[dict]:
  """ENAS search for every device (`padded`'s data, in `devices`' order);
  returns per device {arch, val_accuracy,
  n_layers, header_params, state (`child.DeviceState`, the shared weights),
  history, child_steps, controller_steps}. With `partial` (a
  `resume.Partial`), the search's state is saved at the end of an epoch
  once `partial.every` child steps (summed over devices) have passed since
  the last save, and at the end of the search (the caller's `finish()`
  removes it when its stage is done); a rerun resumes from it.
  """
  from acme_jax import resume
  partial = partial or resume.NONE
  data, sizes = padded
  if hp.derive not in DERIVES:
    raise ValueError(f'derive must be one of {DERIVES}, got {hp.derive!r}')
  p = child_lib.programs(cfg)
  keys = [d.key for d in devices]
  states = [child_lib.init_state(cfg, d.key, d.limit, d.n_layers,
                                 cost_limit=d.cost_limit)
            for d in devices]
  rngs = [child_lib.seeded_rng(k, streams.SEARCH_BATCHES) for k in keys]
  best = [(-1.0, None)] * len(states)
  history = [[] for _ in states]
  child_steps = [0] * len(states)
  first = 0
  saved = partial.load(states)
  if saved is not None:
    states, loop = saved
    for rng, state in zip(rngs, loop['rngs']):
      resume.set_rng_state(rng, state)
    best = [(acc, None if arch is None else np.asarray(arch, np.int32))
            for acc, arch in loop['best']]
    history, child_steps, first = (loop['history'], loop['child_steps'],
                                   loop['epoch'] + 1)
  identity = child_lib.identity
  for epoch in range(first, hp.epochs):
    lr = np.float32(child_lib.sgdr(epoch, hp.lr_max, hp.lr_min, hp.lr_period,
                                   hp.lr_period_mult))
    states = [s._replace(seen_correct=jnp.zeros(()), seen_count=jnp.zeros(()),
                         best_running=jnp.zeros(())) for s in states]
    child_batches = [index_batches(split_rows(n, 'train'), hp.batch_size, rng,
                                   lr=lr, sample=np.int32(1))
                     for n, rng in zip(sizes, rngs)]
    states = engine.for_each_device(identity, p.train_step, identity,
                                    states, child_batches, device_consts=data,
                                    strategy=strategy)
    child_steps = [c + len(b) for c, b in zip(child_steps, child_batches)]
    ctrl_batches = [[random_batch(split_rows(n, 'val'), hp.batch_size, rng)
                     for _ in range(hp.controller_steps_per_epoch)]
                    for n, rng in zip(sizes, rngs)]
    states = engine.for_each_device(identity, p.controller_step, identity,
                                    states, ctrl_batches, device_consts=data,
                                    strategy=strategy)
    if hp.derive == 'prototype':
      archs = [np.asarray(s.epoch_arch) for s in states]
      accs = child_lib.evaluate(cfg, child_lib.with_arch(states, archs),
                                padded, 'val', strategy)
      best = [(a, arch) if a > b[0] else b
              for a, arch, b in zip(accs, archs, best)]
    for d, s in enumerate(states):
      history[d].append({'epoch': epoch, 'lr': float(lr),
                         'train_accuracy': float(s.seen_correct /
                                                 max(float(s.seen_count), 1)),
                         'baseline': float(s.baseline)})
    if log:
      log(f'nas epoch {epoch + 1}/{hp.epochs}: mean train accuracy '
          f'{np.mean([h[-1]["train_accuracy"] for h in history]):.3f}')
    # The last epoch is saved too: an interruption after the search (in
    # the final training or the rounds) does not search again. The caller
    # removes the checkpoint once its whole stage is done.
    if partial.due(sum(child_steps)) or epoch + 1 == hp.epochs:
      partial.save(states, {
          'epoch': epoch, 'rngs': [resume.rng_state(r) for r in rngs],
          'best': [(float(acc), None if arch is None else
                    np.asarray(arch).tolist()) for acc, arch in best],
          'history': history, 'child_steps': child_steps}, sum(child_steps))

  if hp.derive == 'sample':
    candidates = [np.asarray(p.sample_archs(s, hp.num_final_archs))
                  for s in states]
    scored = []
    for i in range(hp.num_final_archs):
      archs = [c[i] for c in candidates]
      scored.append((child_lib.evaluate(cfg, child_lib.with_arch(
          states, archs), padded, 'val', strategy), archs))
    best = []
    for d, s in enumerate(states):
      ok_fits = child_lib.fits(cfg, s.limit, s.n_layers, s.cost_limit)
      # Highest validation accuracy among feasible draws; ties: first drawn.
      ok = [(accs[d], -i, archs[d]) for i, (accs, archs) in enumerate(scored)
            if bool(ok_fits(archs[d]))]
      top = max(ok, key=lambda t: t[:2]) if ok else None
      best.append((top[0], top[2]) if top else (0.0, None))

  results = []
  for d, s in enumerate(states):
    acc, arch = best[d]
    within = child_lib.fits(cfg, s.limit, s.n_layers, s.cost_limit)
    if arch is None or not bool(within(arch)):
      arch = header_lib.smallest_arch(cfg.spec.num_nodes)
    arch = np.asarray(arch, np.int32)
    results.append({'arch': arch, 'val_accuracy': float(acc),
                    'n_layers': int(s.n_layers),
                    'header_params': int(header_lib.param_count(
                        cfg.spec, arch, int(s.n_layers))),
                    'state': s._replace(arch=jnp.asarray(arch)),
                    'history': history[d], 'child_steps': child_steps[d],
                    'controller_steps': (hp.epochs *
                                         hp.controller_steps_per_epoch)})
  return results
