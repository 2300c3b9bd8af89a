"""Many users: the whole ACME loop for 256 users on synthetic data.

A small supernet and header on a synthetic digits-shaped source (8x8x1
uint8, 10 classes, 24,000 training samples: ~38 per user after the cloud's
share and local validation/test), 8 edges of 32 users. The device stage
(features, header search, fine-tuning, aggregation rounds) runs through the
client engine, `engine.chunk` users at a time:

  python -m experiments.main --config=configs/many_users.py --workdir=runs/many
  python -m experiments.main --config=configs/many_users.py:1024 \
      --workdir=runs/many1024 --config.engine.strategy=vmap   # on a GPU

The argument is the user count (a multiple of the 8 edges; default 256).
The training sample count grows with it, ~94 per user.
"""
from configs import common
from configs import default

EDGES = 8


def get_config(arg=None):
  users = common.parse_arg(arg, 'configs/many_users.py', users=256).users
  if users <= 0 or users % EDGES:
    raise ValueError(f'configs/many_users.py takes a user count that is a '
                     f'positive multiple of {EDGES}, not {arg!r}')
  config = default.get_config()
  config.data.name = 'synthetic'
  config.data.synthetic.like = 'digits'
  config.data.synthetic.num_train = 94 * users
  config.data.synthetic.num_test = 2000
  config.data.image_size = 16
  config.model.hidden_size = 32
  config.model.num_layers = 4
  config.model.num_heads = 4
  config.model.mlp_dim = 64
  config.cloud.teacher.epochs = 3
  config.cloud.width_stage.epochs = 1
  config.cloud.depth_stage.epochs = 1
  config.cloud.importance_batches = 4
  config.system.num_edges = EDGES
  config.system.devices_per_edge = (users // EDGES,)
  config.system.header_allowance = 20_000
  config.header.num_channels = 16
  config.header.num_nodes = 2
  config.header.search_epochs = 2
  config.header.finetune_epochs = 2
  config.header.finetune_lrs = (0.03,)
  config.header.controller_steps_per_epoch = 4
  config.aggregation.rounds = 1
  config.aggregation.local_epochs = 1
  config.aggregation.finetune_epochs = 1
  config.aggregation.signature_samples = 32
  config.engine.chunk = 64
  return config
