"""Cloud step 0 for a decoder without pre-trained weights: pretrain the
language model on the cloud's own corpus (`data/cloud_corpus.py`), next
tokens only, before the teacher learns the task. A decoder imported from a
checkpoint skips it (`cloud/stage.pretrain_hparams`)."""
from typing import Optional

import numpy as np

from acme_jax import training
from acme_jax.cloud import teacher
from acme_jax.data.base import Split
from acme_jax.parallel import mesh


def train_lm(model, params, blocks: np.ndarray, hp: training.StageHparams,
             par: Optional[mesh.Parallel] = None, partial=None):
  """Next-token training on `blocks` (N, T) ids: the teacher's loop on the
  model without its classifier (whose head is left as it is); returns
  (host params, per-epoch mean losses)."""
  data = Split(images=blocks, labels=np.zeros(len(blocks), np.int32),
               index=np.arange(len(blocks)))
  return teacher.train_teacher(model.clone(num_classes=0, input_spec=None),
                               params, data, hp, 'pretrain', par, partial,
                               lm_weight=1.0)
