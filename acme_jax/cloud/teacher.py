"""Cloud step 1: fine-tune the (pre-trained or fresh) model on the cloud's data."""
import jax
import numpy as np
import optax
from tqdm import tqdm

from acme_jax import training
from acme_jax.data.base import Split
from acme_jax.models.vit import ViT


def make_train_step(model: ViT, tx: optax.GradientTransformation):
  """One jitted supervised step of the full model (no masks)."""

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      logits = model.apply({'params': p}, images)['logits']
      return training.cross_entropy(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def train_teacher(model: ViT, params, data: Split, stage_config, batch_size: int,
                  seed: int, desc: str = 'teacher'):
  """Supervised fine-tuning; returns (params, per-epoch mean losses)."""
  steps = training.steps_per_epoch(len(data), batch_size) * stage_config.epochs
  tx = training.adamw_with_warmup(
      stage_config.learning_rate, steps, stage_config.warmup_fraction,
      stage_config.weight_decay, stage_config.clip_norm)
  opt_state = tx.init(params)
  step = make_train_step(model, tx)
  rng = np.random.default_rng(seed)
  losses = []
  with tqdm(total=steps, desc=desc, leave=False, disable=None) as bar:
    for _ in range(stage_config.epochs):
      epoch_loss = []
      for idx in training.epoch_batches(len(data), batch_size, rng):
        images = training.random_shift(data.images[idx],
                                       stage_config.get('max_shift', 0), rng)
        params, opt_state, loss = step(params, opt_state, images,
                                       data.labels[idx])
        epoch_loss.append(loss)
        bar.update()
      losses.append(float(np.mean(jax.device_get(epoch_loss))))
      bar.set_postfix(loss=f'{losses[-1]:.3f}')
  return params, losses
