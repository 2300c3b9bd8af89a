"""Frozen-backbone features, computed once per device and cached (docs/method.md 5).

The backbone is frozen on the device, so its hidden states are computed once
and every later step (linear probe, header search, pruning) reads the cache.
Features come from each backbone's static form (width-sliced supernet,
dropped layers skipped): one compiled program per width, the same numbers
as the extracted subnet.
"""
import dataclasses
import functools
from typing import Optional

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression

from acme_jax import choices
from acme_jax import training
from acme_jax.models import decoder as decoder_lib
from acme_jax.models import subnet as subnet_lib
from acme_jax.models import vit
from acme_jax.models.vit import ViT


@dataclasses.dataclass
class LocalFeatures:
  """One device's cached backbone outputs: header grids and CLS tokens (the
  linear probe reads those of train and test)."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  cls_train: np.ndarray
  cls_test: Optional[np.ndarray] = None


FEATURE_SOURCES = choices.FEATURE_SOURCES


@functools.lru_cache(maxsize=None)
def _tokens_fn(model: ViT, source: str):
  if source not in FEATURE_SOURCES:
    raise ValueError(f'feature source must be one of {FEATURE_SOURCES}, got '
                     f'{source!r}')

  def forward(params, x, layer_gates):
    out = model.apply({'params': params}, x, layer_gates=layer_gates)
    return out['hidden'][-1] if source == 'last_hidden' else out['tokens']

  return jax.jit(forward)


def backbone_tokens(model: ViT, params, sub: subnet_lib.SubnetConfig,
                    images: np.ndarray, batch_size: int = 256,
                    source: str = 'last_hidden') -> np.ndarray:
  """Tokens (N, T, D) of `images` through the subnet `sub` of the supernet.

  The subnet runs in its static form (width-sliced, dropped layers skipped):
  the masked supernet's numbers at the subnet's own FLOPs, one compiled
  program per width.

  `source` 'last_hidden': the last encoder block's output before the final
  LayerNorm (HF `hidden_states[-1]`, what the prototype's header and
  signatures read); 'final_norm': after it (HF `last_hidden_state`). A
  skipped layer passes its input on, so `hidden[-1]` is the last kept
  layer's output.
  """
  sub_model, sliced, gates = subnet_lib.static_form(model, params, sub)
  forward = _tokens_fn(sub_model, source)
  out = []
  for idx, _ in training.padded_batches(len(images), batch_size):
    out.append(np.asarray(forward(sliced, images[idx], gates)))
  return np.concatenate(out)[:len(images)]


def is_causal(model) -> bool:
  """A decoder: no [CLS] token; each position sees only its prefix."""
  return isinstance(model, decoder_lib.Decoder)


def summary_tokens(model, tokens: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """(N, D) one vector per example (the linear probe's and signatures'
  input): the [CLS] token of an encoder, a decoder's last real token (the
  only one that has seen the whole sequence, as HF's sequence classifiers
  read it)."""
  if not is_causal(model):
    return tokens[:, 0]
  last = np.asarray(decoder_lib.last_real_index(np.asarray(ids) !=
                                                model.pad_id))
  return tokens[np.arange(len(tokens)), last]


def header_tokens(model, tokens: np.ndarray, grid_shape=None) -> np.ndarray:
  """The header's input: a decoder's every token, else `token_grid`."""
  if is_causal(model):
    return tokens
  return token_grid(tokens, grid_shape)


def token_grid(tokens: np.ndarray, grid_shape=None) -> np.ndarray:
  """Tokens without CLS as the header's grid.

  `grid_shape` is the backbone's patch grid, e.g. (H / p, W / p) for images:
  (N, *grid_shape, D). Without one (text) the tokens stay a 1-D sequence
  (N, T, D).
  """
  patches = tokens[:, 1:]
  if grid_shape is None:
    return patches
  return patches.reshape((patches.shape[0],) + tuple(grid_shape) +
                         (patches.shape[-1],))


def patch_grid(model, image_shape):
  """The (rows, cols) patch grid a ViT makes of (stored) images of shape
  (H, W, C): of its input spec's resolution when it has one. None for text
  (a 1-D token sequence)."""
  if not hasattr(model, 'patch_size'):
    return None
  h, w = vit.input_size(model, image_shape)
  return (h // model.patch_size, w // model.patch_size)


def linear_probe_accuracy(train_x, train_y, test_x, test_y, seed: int) -> float:
  """Test accuracy of a logistic-regression probe fitted on frozen features."""
  if len(np.unique(train_y)) < 2:  # a one-class device: the probe is constant
    return float(np.mean(test_y == train_y[0]))
  probe = LogisticRegression(max_iter=2000, random_state=seed)
  probe.fit(train_x, train_y)
  return float(np.mean(probe.predict(test_x) == test_y))
