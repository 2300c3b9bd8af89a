"""ACME on a decoder language model: a Llama-style decoder the cloud
pretrains on WordNet's glosses (next tokens and supersenses together),
customized into per-device subnets and headers that classify a user's
glosses into WordNet supersenses.

  python -m experiments.main --config=configs/decoder_wordnet.py \
      --workdir=runs/decoder
  python -m experiments.main --config=configs/decoder_wordnet.py:smoke \
      --workdir=runs/decoder_smoke    # a few minutes on a 2-core CPU
  make tables-decoder                 # :fast in runs/decoder_fast: the
                                      # published results (docs/decoder.md)
  python -m benchmarks.latency --config=configs/decoder_wordnet.py:fast \
      --workdir=runs/latency_decoder  # latency, memory, predictors

`:fast` is the full data and loop with a smaller decoder (4 layers, 128
wide, 4 query heads in 2 KV groups, MLP 384, vocabulary 4,096) and the
federated baselines on the Dirichlet split alone, so the main job, personal
language modelling and the baselines, each over 3 repeats where they
repeat, fit about two hours of a 2-core CPU; the full model's main job
alone takes hours there and its baselines days (docs/decoder.md).

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
from configs import minilm_wordnet


def get_config(arg=None):
  arg = common.parse_arg(arg, 'configs/decoder_wordnet.py',
                         variants=('full', 'fast', 'smoke')).variant
  # The text regime on WordNet (data, devices, headers, tables) with the
  # decoder in place of MiniLM.
  config = minilm_wordnet.get_config('full' if arg == 'fast' else arg)
  config.data.text.tokenizer = 'gcide-bpe:8192'
  config.data.text.max_length = 48
  config.model.family = 'decoder'
  config.model.init_checkpoint = ''
  config.model.hidden_size = 384
  config.model.num_layers = 6
  config.model.num_heads = 8
  config.model.num_kv_heads = 4
  config.model.head_dim = 0              # hidden_size / num_heads
  config.model.mlp_dim = 1024
  config.model.vocab_size = 8192
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
  config.cloud.teacher.epochs = 6
  config.cloud.teacher.learning_rate = 1e-3
  for stage in (config.cloud.width_stage, config.cloud.depth_stage):
    stage.learning_rate = 3e-4
  config.cloud.width_stage.epochs = 1
  config.cloud.depth_stage.epochs = 2
  # The rounds on personal language-model headers (experiments.personal_lm)
  # run once per compared mode, each through the whole LM head at every
  # step: the plain modes and ACME's EMD mode at one temperature.
  config.aggregation.modes = ('wo_pruning', 'pruning_alone', 'pruning_avg',
                              'pruning_per_emd')
  config.aggregation.temperatures = (1.0,)
  if arg == 'fast':
    _fast(config)
  if arg == 'smoke':
    _smoke(config)
  return config


def _fast(config):
  config.data.text.tokenizer = 'gcide-bpe:4096'
  config.model.vocab_size = 4096
  config.model.hidden_size = 128
  config.model.num_layers = 4
  config.model.num_heads = 4
  config.model.num_kv_heads = 2
  config.model.mlp_dim = 384
  config.cloud.pretrain.blocks = 8192
  config.federated.setups = ('dirichlet',)
  config.federated.repeats = 3


def _smoke(config):
  """The real tokenizer and data (MiniLM's smoke sizes the data, devices
  and rounds); a small decoder and a few steps."""
  config.data.text.tokenizer = 'gcide-bpe:2048'
  config.model.vocab_size = 2048
  config.data.text.max_length = 32
  config.model.hidden_size = 96
  config.model.num_layers = 4
  config.model.num_heads = 4
  config.model.num_kv_heads = 2
  config.model.mlp_dim = 256
  config.cloud.pretrain.blocks = 2048
  config.cloud.pretrain.epochs = 1
  config.cloud.teacher.epochs = 4
  config.cloud.depth_stage.epochs = 1
