"""ACME on a decoder language model: a Llama-style decoder the cloud
pretrains on WordNet's glosses (next tokens and supersenses together),
customized into per-device subnets and headers that classify a user's
glosses into WordNet supersenses.

  python -m experiments.main --config=configs/decoder_wordnet.py \
      --workdir=runs/decoder
  python -m experiments.main --config=configs/decoder_wordnet.py:smoke \
      --workdir=runs/decoder_smoke    # a few minutes on a 2-core CPU

The tokenizer is a byte-level BPE trained on Debian's GCIDE dictionary
(`apt-get install dict-gcide`, GPL; text no device holds), the data Debian's
WordNet 3.0 glosses (`apt-get install wordnet-base`, the WordNet licence).
The supernet: 6 layers, 384 wide, 8 query heads sharing 4 KV groups of 48,
a SwiGLU MLP of 1,024, tied embeddings (as SmolLM2 and Qwen2.5's small
models); widths keep 4/3/2/1 KV groups and 100/75/50/25% of the MLP
(docs/decoder.md). The grid reports accuracy and perplexity per subnet.
"""
import ml_collections

from configs import common
from configs import default


def get_config(arg=None):
  arg = common.parse_arg(arg, 'configs/decoder_wordnet.py',
                         variants=('full', 'smoke')).variant
  config = default.get_config()
  config.data.name = 'wordnet'
  config.data.text.tokenizer = 'gcide-bpe:8192'
  config.data.text.max_length = 48
  config.data.text.max_examples_per_class = 120
  config.model.family = 'decoder'
  config.model.init_checkpoint = ''
  config.model.hidden_size = 384
  config.model.num_layers = 6
  config.model.num_heads = 8
  config.model.num_kv_heads = 4
  config.model.head_dim = 0              # hidden_size / num_heads
  config.model.mlp_dim = 1024
  config.model.vocab_size = 8192
  config.model.max_positions = 512
  config.model.rope_theta = 10000.0
  config.model.tie_word_embeddings = True
  config.model.layer_norm_eps = 1e-6     # RMSNorm's epsilon
  # The cloud first pretrains the language model on its own corpus (GCIDE
  # without its WordNet articles: 16,384 blocks of 48 tokens, ~0.8M tokens
  # per epoch), then the teacher learns the supersenses and the next tokens
  # of its share of the glosses together.
  config.cloud.pretrain = ml_collections.ConfigDict(dict(
      blocks=16384, epochs=2, learning_rate=1e-3, warmup_fraction=0.05,
      weight_decay=0.01, clip_norm=1.0, max_shift=0))
  config.cloud.lm_weight = 1.0
  config.cloud.batch_size = 32
  config.cloud.eval_batch_size = 128
  config.cloud.teacher.epochs = 6
  config.cloud.teacher.learning_rate = 1e-3
  for stage in (config.cloud.width_stage, config.cloud.depth_stage):
    stage.learning_rate = 3e-4
  config.cloud.width_stage.epochs = 1
  config.cloud.depth_stage.epochs = 2
  for stage in (config.cloud.teacher, config.cloud.width_stage,
                config.cloud.depth_stage):
    stage.max_shift = 0
  config.system.num_edges = 2
  config.system.devices_per_edge = (5,)
  config.system.header_allowance = 200_000
  config.header.num_channels = 32
  config.baselines.depth_fractions = (1.0, 0.5)
  config.baselines.repeats = 3
  config.aggregation.repeats = 3
  config.aggregation.setups = ('IID', 'C4')
  config.aggregation.fraction_per_class = 0.1
  if arg == 'smoke':
    _smoke(config)
  return config


def _smoke(config):
  """The real tokenizer and data; a small decoder and a few steps."""
  config.data.text.tokenizer = 'gcide-bpe:2048'
  config.model.vocab_size = 2048
  config.data.text.max_length = 32
  config.data.text.min_examples_per_class = 30
  config.data.text.max_examples_per_class = 30
  config.model.hidden_size = 96
  config.model.num_layers = 4
  config.model.num_heads = 4
  config.model.num_kv_heads = 2
  config.model.mlp_dim = 256
  config.cloud.importance_batches = 2
  config.cloud.pretrain.blocks = 2048
  config.cloud.pretrain.epochs = 1
  config.cloud.teacher.epochs = 4
  config.cloud.width_stage.epochs = 1
  config.cloud.depth_stage.epochs = 1
  config.cloud.width_mults = (1.0, 0.5)
  config.cloud.depth_mults = (1.0, 0.5)
  config.system.devices_per_edge = (3,)
  config.header.num_channels = 16
  config.header.num_nodes = 2
  config.header.search_epochs = 2
  config.header.finetune_epochs = 2
  config.header.finetune_lrs = (0.03,)
  config.header.controller_steps_per_epoch = 4
  config.aggregation.rounds = 1
  config.baselines.repeats = 1
  config.aggregation.repeats = 1
  config.aggregation.local_epochs = 1
  config.aggregation.finetune_epochs = 1
