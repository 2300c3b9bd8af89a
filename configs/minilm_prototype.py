"""ACME on text in the prototype's device regime: the real pre-trained
all-MiniLM-L6-v2 on WordNet glosses, with the prototype's per-user data.

Five users under one edge, each sampled on its own (the prototype's
`sampling.py`) from 42% of the device share of each of its classes: about
1,250 training and 450 test samples per user, as the prototype's ~1,250 /
500 on CIFAR-100. The 24 supersenses with at least 1,000 glosses (capped at
1,200) make 4 groups of 6 for the category setups IID, C2, C3, C4. The
aggregation rounds are the prototype's (`configs/common.prototype_rounds`).
The cloud fine-tunes and distils a 2 x 2 grid on 10% of the training set.

  python -m experiments.main --config=configs/minilm_prototype.py --workdir=runs/proto
  python -m experiments.headers --config=configs/minilm_prototype.py --workdir=runs/proto
  python -m experiments.aggregation --config=configs/minilm_prototype.py --workdir=runs/proto
  python -m experiments.header_budget --config=configs/minilm_prototype.py --workdir=runs/proto
  python -m experiments.baselines --config=configs/minilm_prototype.py --workdir=runs/proto

The federated baselines train the whole 22M-parameter MiniLM (its 11.7M
word embeddings included) on every device: about 4 minutes per local epoch
of all five users on a 2-core CPU, so they run 3 rounds on the config's own
partition (C4).

`:fast` keeps the data and the rounds and trims what the tables repeat
(the full-depth backbone in the header table, 2 setups in the aggregation
table, the 'default' and 'prototype' budgets) towards an hour of a 2-core
CPU per table; docs/text.md says which ran and how long it took.
"""
from configs import common
from configs import minilm_wordnet


def get_config(arg=None):
  arg = common.parse_arg(arg, 'configs/minilm_prototype.py',
                         variants=('full', 'fast')).variant
  config = minilm_wordnet.get_config()
  text = config.data.text
  text.max_length = 32                 # glosses: ~21 WordPiece tokens
  text.min_examples_per_class = 1000   # 24 supersenses ...
  text.max_examples_per_class = 1200   # ... of 1,000 to 1,200 glosses
  config.data.cloud_fraction = 0.1
  config.cloud.width_mults = (1.0, 0.5)
  config.cloud.depth_mults = (1.0, 0.5)
  config.cloud.teacher.epochs = 2
  config.cloud.width_stage.epochs = 1
  config.cloud.depth_stage.epochs = 2

  system = config.system
  system.num_edges = 1
  system.devices_per_edge = (5,)
  system.partition = 'C4'
  system.fraction_per_class = 0.42
  system.category_sampling = 'independent'   # the prototype's
  system.local_val_fraction = 0.1
  system.local_test_fraction = 0.25
  system.header_allowance = 200_000

  header = config.header
  header.batch_size = 128              # prototype
  header.search_epochs = 8
  header.controller_steps_per_epoch = 10
  header.finetune_epochs = 20

  baselines = config.baselines
  baselines.depth_fractions = (1.0, 0.5)
  baselines.train_sizes = (70, 300, 1250)
  baselines.search_budgets = ('default', 'x4', 'prototype')
  baselines.repeats = 3

  common.prototype_rounds(config)
  aggregation = config.aggregation
  aggregation.setups = ('IID', 'C2', 'C3', 'C4')
  aggregation.fraction_per_class = 0.42
  aggregation.test_on = 'local'
  aggregation.repeats = 3
  federated = config.federated
  federated.setups = ('C4',)
  federated.rounds = 3
  federated.cloud_every = 1            # one edge
  federated.finetune_epochs = 1
  if arg == 'fast':
    aggregation.setups = ('IID', 'C4')
    baselines.search_budgets = ('default', 'prototype')
    baselines.depth_fractions = (1.0,)
  return config
