"""Cloud step 0 for a decoder without pre-trained weights: pretrain the
language model on the cloud's own corpus (`data/cloud_corpus.py`), next
tokens only, before the teacher learns the task. A decoder imported from a
checkpoint skips it (`cloud.pretrain.blocks = 0`)."""
from typing import Optional

import jax
import numpy as np
import optax

from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.parallel import mesh


def train_lm(model, params, blocks: np.ndarray, hp: training.StageHparams,
             par: Optional[mesh.Parallel] = None, partial=None):
  """Next-token training on `blocks` (N, T) ids; returns (host params,
  per-epoch mean losses). The classifier head, if any, is left as it is."""
  par = par or mesh.single_device()
  lm = model.clone(num_classes=0, input_spec=None)
  steps = training.steps_per_epoch(len(blocks), hp.batch_size) * hp.epochs
  tx = training.adamw_with_warmup(hp.learning_rate, steps,
                                  hp.warmup_fraction, hp.weight_decay,
                                  hp.clip_norm)
  params = par.params(params)
  opt_state = tx.init(params)
  param_s, opt_s = par.param_shardings(params), par.param_shardings(opt_state)

  @jax.jit
  def step(params, opt_state, ids):
    def loss_fn(p):
      out = lm.apply({'params': p}, ids)
      return training.next_token_loss(out['lm_logits'], ids, model.pad_id)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (par.constrain(params, param_s), par.constrain(opt_state, opt_s),
            loss)

  def fit_step(state, ids, labels):
    del labels
    params, opt_state, loss = step(*state, par.batch(ids))
    return (params, opt_state), loss

  data = Split(images=blocks, labels=np.zeros(len(blocks), np.int32),
               index=np.arange(len(blocks)))
  (params, _), losses = training.fit(fit_step, (params, opt_state), data, hp,
                                     'pretrain', partial)
  return mesh.host(params), losses
