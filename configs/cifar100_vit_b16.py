"""The paper's setup: ViT-B/16 on CIFAR-100 at 224x224, 5 users, C4 groups.

Needs the google/vit-base-patch16-224 checkpoint (HF safetensors directory) in
config.model.init_checkpoint and CIFAR-100 prepared for TFDS in array_record
format; a GPU/TPU machine for the training stages. Its communication ledger
needs neither, only shapes:

  python -m acme_jax.tools.plan --config=configs/cifar100_vit_b16.py
  python -m experiments.main --config=configs/cifar100_vit_b16.py \
      --workdir=runs/cifar100 --config.model.init_checkpoint=/path/to/vit-base
"""
from configs import default


def get_config():
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
  return config
