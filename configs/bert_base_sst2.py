"""ACME on GLUE SST-2 from bert-base-uncased (DynaBERT's setting).

Needs, prepared on a connected machine:
* bert-base-uncased as an HF safetensors directory (config.json,
  model.safetensors, tokenizer.json), e.g.
    huggingface-cli download google-bert/bert-base-uncased \
        config.json model.safetensors tokenizer.json --local-dir bert-base
* TFDS glue/sst2 in array_record format:
    tfds build glue/sst2 --file_format=array_record --data_dir=~/tensorflow_datasets

  python -m experiments.main --config=configs/bert_base_sst2.py \
      --workdir=runs/sst2 --config.model.init_checkpoint=/path/to/bert-base

Accelerators for the cloud stages (12 layers x 768 hidden at 64 tokens);
its communication ledger needs only shapes:

  python -m acme_jax.tools.plan --config=configs/bert_base_sst2.py
"""
from configs import common
from configs import default


def get_config(arg=None):
  common.parse_arg(arg, 'configs/bert_base_sst2.py')  # no variants
  config = default.get_config()
  config.data.name = 'glue/sst2'
  config.data.text.max_length = 64
  config.model.family = 'bert'
  config.model.init_checkpoint = ''     # set to the bert-base-uncased dir
  config.model.hidden_size = 768
  config.model.num_layers = 12
  config.model.num_heads = 12
  config.model.mlp_dim = 3072
  config.model.vocab_size = 30522
  config.model.max_positions = 512
  config.model.type_vocab_size = 2
  config.cloud.batch_size = 32
  config.cloud.eval_batch_size = 128
  # DynaBERT: lr 2e-5, 3 epochs for the teacher and each elastic stage.
  for stage in (config.cloud.teacher, config.cloud.width_stage,
                config.cloud.depth_stage):
    stage.epochs = 3
    stage.learning_rate = 2e-5
    stage.max_shift = 0
  config.system.num_edges = 2
  config.system.devices_per_edge = (5,)
  config.system.header_allowance = 400_000
  config.header.num_channels = 64
  return config
