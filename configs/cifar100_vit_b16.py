"""The paper's setup: ViT-B/16 on CIFAR-100 at 224x224, 5 users, C4 groups.

The default argument is the real setup: it needs the
google/vit-base-patch16-224 checkpoint (HF safetensors directory) in
config.model.init_checkpoint, CIFAR-100 prepared for TFDS in array_record
format, and accelerators for the training stages. Its communication ledger
needs neither, only shapes:

  python -m acme_jax.tools.plan --config=configs/cifar100_vit_b16.py
  python -m experiments.main --config=configs/cifar100_vit_b16.py \
      --workdir=runs/cifar100 --config.model.init_checkpoint=/path/to/vit-base

`:synthetic_smoke` runs the whole loop on the exact ViT-B/16 at 224x224
(random weights) from the synthetic CIFAR-100 source, with a few steps per
stage and a few dozen samples per user, so it finishes on a 2-core CPU:

  python -m experiments.main \
      --config=configs/cifar100_vit_b16.py:synthetic_smoke --workdir=runs/smoke
"""
from configs import common
from configs import default


def get_config(arg=None):
  arg = common.parse_arg(arg, 'configs/cifar100_vit_b16.py',
                         variants=('real', 'synthetic_smoke')).variant
  config = default.get_config()
  config.data.name = 'cifar100'
  config.data.image_size = 224          # images resized to 224 (paper)
  config.data.cloud_fraction = 0.5

  # ViT-B/16 (google/vit-base-patch16-224).
  config.model.patch_size = 16
  config.model.hidden_size = 768
  config.model.num_layers = 12
  config.model.num_heads = 12
  config.model.mlp_dim = 3072
  config.model.init_checkpoint = ''     # set to the HF checkpoint directory

  config.cloud.batch_size = 32
  config.cloud.eval_batch_size = 128
  # 16 ViT-B/16 subnets' activations at once exceed any one accelerator
  # at this batch; recompute them per subnet in the backward pass.
  config.cloud.remat = True
  config.cloud.importance_batches = 32
  config.cloud.teacher.epochs = 3
  config.cloud.teacher.learning_rate = 2e-5  # prototype
  config.cloud.teacher.weight_decay = 0.0
  config.cloud.teacher.max_shift = 0
  for stage in (config.cloud.width_stage, config.cloud.depth_stage):
    stage.epochs = 3                         # prototype
    stage.learning_rate = 2e-5               # prototype
    stage.weight_decay = 0.0
    stage.max_shift = 0

  # Prototype scenario: 5 users under one edge, CIFAR-100 C4 category groups
  # of 25 classes, 10% of each class per user.
  config.system.num_edges = 1
  config.system.devices_per_edge = (5,)
  config.system.partition = 'C4'
  config.system.fraction_per_class = 0.1
  config.system.header_allowance = 1_500_000

  # Header NAS at the prototype's scale.
  config.header.num_channels = 256
  config.header.num_nodes = 5
  config.header.search_epochs = 20
  config.header.finetune_epochs = 20
  config.header.batch_size = 64
  config.header.controller_steps_per_epoch = 30
  config.baselines.depth_fractions = (1.0, 0.83, 0.67, 0.5, 0.33, 0.17)
  config.aggregation.fraction_per_class = 0.1   # prototype
  config.aggregation.test_on = 'local'
  if arg == 'synthetic_smoke':
    _smoke(config)
  return config


def _smoke(config):
  """The exact model and resolution; tiny data and step counts."""
  config.data.name = 'synthetic'
  config.data.synthetic.like = 'cifar100'
  config.data.synthetic.num_train = 240  # 24 validation, 43 cloud,
  config.data.synthetic.num_test = 16    # 173 for the 5 users
  config.data.cloud_fraction = 0.2       # ~11 steps per cloud stage
  config.model.init_checkpoint = ''      # random weights
  config.cloud.batch_size = 4
  config.cloud.eval_batch_size = 8
  config.cloud.importance_batches = 1
  # One compiled body for all 16 subnets: the CPU compiles the unrolled
  # 'static' program of 16 ViT-B/16 subnets far longer than it runs them.
  config.cloud.elastic_scheme = 'masked'
  for stage in (config.cloud.teacher, config.cloud.width_stage,
                config.cloud.depth_stage):
    stage.epochs = 1
  config.system.partition = 'iid'        # ~22 samples per user
  config.system.header_allowance = 400_000
  config.header.num_channels = 16
  config.header.num_nodes = 2
  config.header.search_epochs = 1
  config.header.finetune_epochs = 1
  config.header.finetune_lrs = (0.03,)
  config.header.batch_size = 16
  config.header.controller_steps_per_epoch = 2
  config.aggregation.rounds = 1
  config.aggregation.local_epochs = 1
  config.aggregation.finetune_epochs = 1
