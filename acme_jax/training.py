"""Small training utilities shared by the cloud and device stages."""
import dataclasses
import math
import sys
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class StageHparams:
  """One cloud training stage (the teacher or an elastic stage): AdamW with
  warm-up, the data order (`seed`), augmentation and, for the elastic
  stages, the distillation loss's weights and how subnets run."""
  epochs: int
  learning_rate: float
  batch_size: int
  seed: int = 0
  weight_decay: float = 0.0
  warmup_fraction: float = 0.1
  clip_norm: float = 1.0
  max_shift: int = 0            # random-shift augmentation (pixels)
  lambda_logits: float = 1.0    # elastic stages: soft cross-entropy ...
  lambda_hidden: float = 0.1    # ... and hidden-state MSE weights
  scheme: str = 'static'        # elastic stages: static | sliced | masked
  remat: bool = False           # recompute each subnet's activations
  steps: int = 0                # > 0: this many steps instead of `epochs`
                                # (a budget; the last epoch may be partial)

  def total_steps(self, num_examples: int) -> int:
    """Optimizer steps of the stage on `num_examples` examples."""
    return self.steps or steps_per_epoch(num_examples,
                                         self.batch_size) * self.epochs

  @classmethod
  def from_config(cls, section, batch_size: int, seed: int,
                  **fields) -> 'StageHparams':
    """A config stage section (cloud.teacher, width_stage, depth_stage)."""
    names = {f.name for f in dataclasses.fields(cls)}
    own = {k: v for k, v in section.items() if k in names}
    return cls(**own, batch_size=batch_size, seed=seed, **fields)


def decay_mask(params):
  """True for weights AdamW decays: not biases, not LayerNorm scales (the
  prototype's and HF's no_decay = ['bias', 'LayerNorm.weight'])."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) not in ('bias', 'scale'),
      params)


def adamw_with_warmup(learning_rate: float, total_steps: int,
                      warmup_fraction: float, weight_decay: float,
                      clip_norm: float) -> optax.GradientTransformation:
  """AdamW with linear warm-up then linear decay to 0, after global-norm
  clipping; biases and LayerNorm scales are not decayed (`decay_mask`)."""
  total_steps = max(int(total_steps), 1)
  warmup = max(int(round(warmup_fraction * total_steps)), 1)
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, warmup),
       optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup, 1))],
      [warmup])
  return optax.chain(optax.clip_by_global_norm(clip_norm),
                     optax.adamw(schedule, weight_decay=weight_decay,
                                 mask=decay_mask))


def stage_optimizer(hp: StageHparams, num_examples: int):
  """A cloud stage's AdamW, its warm-up and decay spanning the stage's
  steps (`hp.epochs` epochs of full batches over `num_examples`)."""
  return adamw_with_warmup(hp.learning_rate, hp.total_steps(num_examples), hp.warmup_fraction,
                           hp.weight_decay, hp.clip_norm)


def epoch_batches(num_examples: int, batch_size: int,
                  rng: np.random.Generator) -> Iterator[np.ndarray]:
  """Shuffled full batches of indices (the ragged tail is dropped, so shapes stay static)."""
  order = rng.permutation(num_examples)
  batch_size = min(batch_size, num_examples)
  for start in range(0, num_examples - batch_size + 1, batch_size):
    yield order[start:start + batch_size]


def fit(step, state, data, hp: StageHparams, desc: str, partial=None):
  """The cloud stages' loop: `hp.epochs` shuffled epochs of full batches
  (or `hp.steps` steps, the last epoch cut short), random shifts on the
  images, `state, loss = step(state, images, labels)` per batch; returns
  (state, per-epoch mean losses). With a
  `resume.Partial`, the loop state is saved every `partial.every` steps and
  a rerun resumes from it, byte-identical to an uninterrupted run."""
  from acme_jax import resume
  partial = partial or resume.NONE
  n = len(data)
  batch_size = min(hp.batch_size, n)
  per_epoch = steps_per_epoch(n, hp.batch_size)
  total = hp.total_steps(n)
  epochs = -(-total // per_epoch)
  rng = np.random.default_rng(hp.seed)
  losses, epoch_loss, order, done = [], [], None, 0
  saved = partial.load(state)
  if saved is not None:
    state, loop = saved
    resume.set_rng_state(rng, loop['rng'])
    losses, done = loop['losses'], loop['steps']
    epoch_loss = [np.asarray(l, np.float32) for l in loop['epoch_loss']]
    order = np.asarray(loop['order'], np.int64)
    if done % per_epoch == 0 and epoch_loss:
      # Saved on an epoch's last step, before its mean was taken.
      losses = losses + [float(np.mean(epoch_loss))]
  progress = Progress(total, epochs, desc)
  try:
    for epoch in range(done // per_epoch, epochs):
      if done % per_epoch == 0:  # a new epoch (not one resumed mid-way)
        order, epoch_loss = rng.permutation(n), []
      for b in range(done % per_epoch, min(per_epoch,
                                           total - epoch * per_epoch)):
        idx = order[b * batch_size:(b + 1) * batch_size]
        images = random_shift(data.images[idx], hp.max_shift, rng)
        state, loss = step(state, images, data.labels[idx])
        epoch_loss.append(loss)
        done += 1
        progress.step()
        if partial.due(done) and done < total:
          epoch_loss = list(jax.device_get(epoch_loss))
          partial.save(state, {
              'rng': resume.rng_state(rng), 'losses': losses, 'steps': done,
              'epoch_loss': [np.asarray(l).tolist() for l in epoch_loss],
              'order': order.tolist()}, done)
      losses.append(float(np.mean(jax.device_get(epoch_loss))))
      progress.epoch(epoch, losses[-1])
  finally:
    progress.close()
  partial.finish()
  return state, losses


# A batch larger than the whole set is cut to the set's size rounded up to
# this many rows: padding stays bounded (an evaluation batch of 100000 on
# 270 examples computed 100000 rows), and batches up to it keep their shape.
PAD_ROUND = 1024


def padded_batches(num_examples: int, batch_size: int, multiple: int = 1):
  """Ordered batches padded to a static size: (indices, weights) with 0
  weight on padding. `multiple`: the batch must stay a multiple of it (the
  devices it is split over)."""
  unit = math.lcm(PAD_ROUND, multiple)
  batch_size = min(batch_size, max(-(-num_examples // unit), 1) * unit)
  for start in range(0, num_examples, batch_size):
    idx = np.arange(start, start + batch_size)
    weights = (idx < num_examples).astype(np.float32)
    yield np.minimum(idx, num_examples - 1), weights


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def soft_cross_entropy(student_logits, teacher_logits):
  """Cross-entropy against the teacher's softmax (temperature 1)."""
  return -jnp.sum(jax.nn.softmax(teacher_logits) *
                  jax.nn.log_softmax(student_logits), axis=-1)


def next_token_pairs(ids, pad_id: int, weights=None):
  """(targets (B, T-1), 0/1 pair weights): position t predicts token t+1
  where both are real (right padding), times the example's weight."""
  ids = jnp.asarray(ids)
  real = (ids != pad_id).astype(jnp.float32)
  pairs = real[:, :-1] * real[:, 1:]
  if weights is not None:
    pairs = pairs * jnp.asarray(weights, jnp.float32)[:, None]
  return ids[:, 1:], pairs


def next_token_loss(lm_logits, ids, pad_id: int, weights=None):
  """Mean next-token cross-entropy over the real (position, next) pairs."""
  targets, pairs = next_token_pairs(ids, pad_id, weights)
  losses = cross_entropy(lm_logits[:, :-1], targets)
  return jnp.sum(losses * pairs) / jnp.maximum(jnp.sum(pairs), 1.0)


def next_token_distillation(lm_logits, teacher_lm_logits, real,
                            temperature: float = 1.0):
  """Soft cross-entropy of the student's next-token distributions against
  the teacher's at `temperature` (KL up to the teacher's entropy, the same
  gradients), times temperature^2, over the real positions (`real` (B, T)
  0/1)."""
  losses = soft_cross_entropy(lm_logits / temperature,
                              teacher_lm_logits / temperature)
  return temperature ** 2 * jnp.sum(losses * real) / jnp.maximum(
      jnp.sum(real), 1.0)


def task_loss(out, labels, ids=None, pad_id: int = 0, lm_weight: float = 1.0,
              weights=None):
  """The cloud's supervised loss: mean cross-entropy of `logits`, plus, for
  a language model (`lm_logits` in `out`), lm_weight x next-token loss."""
  loss = 0.0
  if 'logits' in out:  # a language model alone (pretraining) has none
    losses = cross_entropy(out['logits'], labels)
    if weights is None:
      loss = losses.mean()
    else:
      loss = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  if 'lm_logits' in out and lm_weight:
    loss = loss + lm_weight * next_token_loss(out['lm_logits'], ids, pad_id,
                                              weights)
  return loss


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return max(num_examples // min(batch_size, num_examples), 1)


def random_shift(images: np.ndarray, max_shift: int,
                 rng: np.random.Generator) -> np.ndarray:
  """Translate each image by up to `max_shift` pixels (edge-padded): cheap
  augmentation. Token ids (N, T) pass through: text is not shifted."""
  if max_shift <= 0 or images.ndim != 4:
    return images
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)),
                  mode='edge')
  dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
  rows = dy[:, None] + np.arange(h)[None]
  cols = dx[:, None] + np.arange(w)[None]
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


class Progress:
  """A tqdm bar on a terminal; otherwise one line per epoch (logs and CI
  show progress inside long stages too)."""

  def __init__(self, total_steps: int, epochs: int, desc: str):
    self.epochs, self.desc, self.start = epochs, desc, time.time()
    self.tty = sys.stderr.isatty()
    self.bar = None
    if self.tty:
      from tqdm import tqdm
      self.bar = tqdm(total=total_steps, desc=desc, leave=False)

  def step(self):
    if self.bar is not None:
      self.bar.update()

  def epoch(self, index: int, loss: float):
    if self.bar is not None:
      self.bar.set_postfix(loss=f'{loss:.3f}')
    else:
      print(f'[{self.desc}] epoch {index + 1}/{self.epochs}: loss '
            f'{loss:.4f} ({time.time() - self.start:.0f}s)', file=sys.stderr,
            flush=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()
