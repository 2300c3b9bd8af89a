"""Personal language modelling on a decoder: each user's held-out perplexity
with the backbone alone, a fixed adapter, and a searched causal header.

  python -m experiments.personal_lm --config=configs/decoder_wordnet.py \
      --workdir=runs/decoder
  python -m experiments.personal_lm --config=configs/decoder_wordnet.py:smoke \
      --workdir=runs/decoder_smoke

Every device gets the full-width backbone cut at depth
`baselines.depth_fractions[0]` and keeps it frozen, with the frozen LM head
(final RMSNorm and projection). Between them sits a head trained on the
user's own text (its training glosses, next-token loss), within
`system.header_allowance` parameters:

  backbone   no head: the delivered model as it is
  adapter    a fixed per-token bottleneck adapter, the largest rank that
             fits the allowance (`device/personal_lm.py`)
  adapter_same_size
             the same adapter, the largest rank within the searched
             header's own parameter count (the search's control at equal
             size: a header with few channels uses far less than the
             allowance)
  searched   the ENAS controller's causal header (`device/causal_header.py`:
             causal separable convolutions, causal pools, identity; no op
             sees a later token), searched on the user's validation split
             (`header.search_epochs` epochs of `header.controller_steps_per_
             epoch` controller steps), then trained from fresh weights

The adapters and the found header get the same final training:
`header.finetune_epochs` epochs of the same number of Adam steps (lr 1e-3,
batches of `header.batch_size`), every device's header from one draw of
initial weights (so devices whose searches agree share channels).

Then ACME's aggregation rounds run on the searched headers, once per
column of the aggregation experiment (`aggregation.modes`, each
personalized mode at each of `aggregation.temperatures`), every column
from the same trained headers (`device/lm_rounds.py`: `aggregation.rounds`
rounds of `local_epochs` with Taylor importance, the edge's mix, pruning to
`prune_ratio` and `finetune_epochs`); arm `rounds:<column>`. `wo_pruning`
trains as long and exchanges nothing, so each mode's paired difference to
it is what the exchange (and pruning) does.

Metric: perplexity on the user's test split, exp(mean next-token NLL over
its real tokens). Repeat r redraws the device data and every key; the CIs
(over `baselines.repeats`) cover those, not the cloud's training. Paired
differences are in mean log perplexity (NLL per token); a difference holds
where its CI excludes 0.
"""
import dataclasses
import functools

import numpy as np

from acme_jax import report
from acme_jax import stats
from acme_jax import streams
from acme_jax import world as world_lib
from acme_jax.cloud import stage as cloud_stage
from acme_jax.device import causal_header
from acme_jax.device import features
from acme_jax.device import lm_rounds
from acme_jax.device import personal_lm as plm
from acme_jax.federated import acme
from acme_jax.errors import UserError
from acme_jax.models import decoder as decoder_lib
from acme_jax.models import subnet as subnet_lib
from experiments import aggregation
from experiments import table

SECTIONS = cloud_stage.SECTIONS + ('system', 'header', 'baselines',
                                   'aggregation')
ARMS = ('backbone', 'adapter', 'adapter_same_size', 'searched')
ROUNDS = 'rounds:'   # the prefix of the rounds' arms ...
LIVE = ':live'       # ... and the suffix of their live gate shares
LEARNING_RATE = 1e-3


def arms_of(rows) -> list:
  """The arms a repeat's rows hold: the four heads, then the rounds'."""
  return list(ARMS) + [k for k in rows[0]
                       if k.startswith(ROUNDS) and not k.endswith(LIVE)]


EXPERIMENT = table.Experiment('personal_lm', SECTIONS, repeats_in='baselines',
                              markdown=report.personal_lm_table)


def _hidden(world, sub, split, batch_size):
  """(frozen hidden states before the final norm, ids, real-token mask)."""
  model = world.cloud.model
  hidden = features.backbone_tokens(model, world.cloud.supernet, sub,
                                    split.images, batch_size,
                                    source='last_hidden')
  ids = np.asarray(split.images)
  return hidden, ids, (ids != model.pad_id).astype(np.float32)


def _train(trainer, params, arch, data, steps, batch_size, lm_params, rng):
  opt_state = trainer.init(params)
  for _ in range(steps):
    rows = rng.choice(len(data[1]), batch_size,
                      replace=len(data[1]) < batch_size)
    params, opt_state, _ = trainer.step(
        params, opt_state, *(a[rows] for a in data), arch, lm_params)
  return params


def one_device(world, sub, splits, seed: int, start: int,
               steps_per_epoch: int):
  """The four heads on one device's (train, val, test); returns (its row,
  the searched header after its final training, its train and test data)."""
  config, model = world.config, world.cloud.model
  h = config.header
  batch = h.batch_size
  train, val, test = (_hidden(world, sub, s, config.cloud.eval_batch_size)
                      for s in splits)
  lm_head = decoder_lib.frozen_lm_head(model.rms_norm_eps)
  lm_params = decoder_lib.lm_head_params(model, world.cloud.supernet)
  budget = config.system.header_allowance
  rng = np.random.default_rng(seed)
  adapter = plm.trainer(plm.adapter_apply, lm_head, LEARNING_RATE)
  evaluate = functools.partial(plm.evaluate, lm_params=lm_params,
                               batch_size=batch)
  first = plm.init_adapter(model.hidden_size, budget, seed)
  out = {'backbone': evaluate(adapter, first, test)['perplexity']}
  steps = h.finetune_epochs * steps_per_epoch
  trained = _train(adapter, first, None, train, steps, batch, lm_params, rng)
  out['adapter'] = evaluate(adapter, trained, test)['perplexity']
  spec = _spec(world)
  hp = plm.SearchHparams(epochs=h.search_epochs, child_steps=steps_per_epoch,
                         controller_steps=h.controller_steps_per_epoch,
                         batch_size=batch, child_lr=LEARNING_RATE, seed=seed)
  found = plm.search(spec, train, val, lm_head, budget, hp, lm_params)
  # The searched header uses what its channels and ops allow, often far
  # less than the allowance: an adapter of its size separates the search
  # from the size.
  same = plm.init_adapter(model.hidden_size, found['header_params'], seed)
  same = _train(adapter, same, None, train, steps, batch, lm_params,
                np.random.default_rng((seed, 1)))
  out['adapter_same_size'] = evaluate(adapter, same, test)['perplexity']
  header = plm.trainer(causal_header.apply, lm_head, LEARNING_RATE)
  fresh = causal_header.init_variables(spec, start)['params']
  trained = _train(header, fresh, found['arch'], train, steps, batch,
                   lm_params, rng)
  out['searched'] = evaluate(header, trained, test, found['arch'])[
      'perplexity']
  d = model.hidden_size
  row = dict(out, adapter_params=plm.adapter_param_count(
      d, plm.adapter_rank(d, budget)),
             adapter_same_size_params=plm.adapter_param_count(
                 d, plm.adapter_rank(d, found['header_params'])),
             header_params=found['header_params'],
             arch=np.asarray(found['arch']).tolist(),
             test_tokens=int(test[2][:, 1:].sum()))
  return row, trained, train, test


def _spec(world) -> causal_header.Spec:
  h = world.config.header
  return causal_header.Spec(world.cloud.model.hidden_size, h.num_channels,
                            h.num_nodes)


def _signature(config, train) -> np.ndarray:
  hidden, ids, mask = train
  if config.aggregation.signature == 'histogram':
    return lm_rounds.token_histogram(ids, mask, config.model.vocab_size)
  return lm_rounds.feature_signature(hidden, mask)


def rounds_arms(world, devices, tests, local) -> dict:
  """Each aggregation column's rounds from the same trained headers ->
  {arm: (per device test perplexity, per device live gate share)}."""
  model = world.cloud.model
  lm_head = decoder_lib.frozen_lm_head(model.rms_norm_eps)
  lm_params = decoder_lib.lm_head_params(model, world.cloud.supernet)
  gated = plm.trainer(lm_rounds.gated_apply, lm_head, LEARNING_RATE)
  spec = _spec(world)
  out = {}
  for name, mode, temperature in aggregation.columns(world.config):
    hp = dataclasses.replace(
        acme.RoundsHparams.from_config(world.config, mode, temperature),
        gates=spec)
    after, _ = lm_rounds.run(hp, local, devices, lm_head, lm_params)
    out[ROUNDS + name] = (
        [plm.evaluate(gated, after[d.device].params, test,
                      (after[d.device].arch, after[d.device].gates),
                      lm_params, local.batch_size)['perplexity']
         for d, test in zip(devices, tests)],
        [lm_rounds.live_share(spec, after[d.device]) for d in devices])
  return out


def one_repeat(world: world_lib.World, repeat: int, log):
  model = world.cloud.model
  if not isinstance(model, decoder_lib.Decoder):
    raise UserError('experiments.personal_lm needs a decoder '
                    '(model.family = decoder)')
  config = world.config
  inputs = table.repeat_inputs(world, repeat, streams.PERSONAL_LM_EXPERIMENT)
  sub = subnet_lib.for_model(model, 1.0, config.baselines.depth_fractions[0])
  batch = config.header.batch_size
  # One step count for every device (one compiled search serves them all):
  # an epoch of the median device's training split.
  sizes = [len(s[0]) for s in inputs.splits]
  steps_per_epoch = max(1, int(np.median(sizes)) // batch)
  # Every device's final header starts from one draw (device ids < 999).
  start = inputs.seed * 1000 + 999
  rows, devices, tests = [], [], []
  for d in world.topology.devices:
    seed = inputs.seed * 1000 + d.id
    row, trained, train, test = one_device(
        world, sub, inputs.splits[d.id], seed, start, steps_per_epoch)
    rows.append(dict(row, device=d.id))
    devices.append(lm_rounds.LMDevice(
        device=d.id, edge=d.edge_id,
        arch=np.asarray(row['arch'], np.int32),
        params=trained, start=start, train=train,
        signature=_signature(config, train)))
    tests.append(test)
    log(f'[personal_lm] repeat {repeat} device {d.id}: ' + ', '.join(
        f'{k} {row[k]:.2f}' for k in ARMS))
  local = lm_rounds.LocalHparams(batch, LEARNING_RATE, inputs.seed)
  for arm, (ppl, live) in rounds_arms(world, devices, tests, local).items():
    for row, p, share in zip(rows, ppl, live):
      row[arm], row[arm + LIVE] = p, share
    log(f'[personal_lm] repeat {repeat} {arm}: geometric mean perplexity '
        f'{float(np.exp(np.mean(np.log(ppl)))):.2f}')
  return rows


def _mean_log(rows, arm) -> float:
  return float(np.mean([np.log(r[arm]) for r in rows]))


def summarize(repeats) -> dict:
  arms = arms_of(repeats[0])
  logs = {arm: [_mean_log(rows, arm) for rows in repeats] for arm in arms}
  perplexity = {arm: stats.mean_ci(np.exp(v)) for arm, v in logs.items()}
  pairs = [('searched', 'adapter'), ('searched', 'adapter_same_size'),
           ('searched', 'backbone'), ('adapter', 'backbone')]
  base = ROUNDS + 'wo_pruning'
  if base in logs:
    pairs += [(arm, base) for arm in arms
              if arm.startswith(ROUNDS) and arm != base]
    pairs.append((base, 'searched'))
  live = {arm: stats.mean_ci([float(np.mean([r[arm + LIVE] for r in rows]))
                              for rows in repeats])
          for arm in arms if arm.startswith(ROUNDS)}
  return {
      'perplexity': perplexity,
      'live_share': live,
      'log_perplexity_difference': {
          f'{a} - {b}': stats.paired(logs[a], logs[b]) for a, b in pairs},
      'repeats': len(repeats), 'rows': repeats,
  }


def run(config, workdir, log=print, shard=None):
  # Before any work: the rounds on language-model headers train with Adam.
  if config.aggregation.optimizer != 'header':
    raise UserError(f'config.aggregation.optimizer: experiments.personal_lm'
                    f'\'s rounds train with Adam; got '
                    f'{config.aggregation.optimizer!r}, allowed: header')
  return EXPERIMENT.run(config, workdir, log, shard, one_repeat, summarize)


if __name__ == '__main__':
  from acme_jax import cli
  cli.main(run, shards=True)
